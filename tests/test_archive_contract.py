"""The `eventsourcing` library's own recorder test cases, run against the archive's recorders
on a real PostgreSQL (see archive_pg.py): text originator ids, one schema per test."""

from __future__ import annotations

from uuid import uuid4

from eventsourcing.persistence import (
    AggregateRecorder,
    ApplicationRecorder,
    InfrastructureFactory,
    ProcessRecorder,
    TrackingRecorder,
)
# Imported as a module: pytest would collect the abstract cases if their names stood here.
from eventsourcing.tests import persistence as contract
from eventsourcing.utils import Environment

from archive_pg import drop_schema, make_partitioned_events, new_schema, server_url
from chatledger.sync.archive.connection import ArchiveDatastore
from chatledger.sync.archive.persistence import (
    ArchiveAggregateRecorder,
    ArchiveApplicationRecorder,
    ArchiveFactory,
    ArchiveProcessRecorder,
    ArchiveTrackingRecorder,
)


class OnPostgres:
    __test__ = True

    def setUp(self) -> None:
        self.schema = new_schema()
        self.datastore = ArchiveDatastore(server_url(), schema=self.schema, pool_size=4)
        super().setUp()

    def tearDown(self) -> None:
        super().tearDown()
        self.datastore.close()
        drop_schema(self.schema)

    def new_originator_id(self) -> str:
        return f"messaging:{uuid4()}"


class TestAggregateRecorder(OnPostgres, contract.AggregateRecorderTestCase):
    def create_recorder(self) -> AggregateRecorder:
        recorder = ArchiveAggregateRecorder(self.datastore, user_id="alice")
        recorder.create_table()
        return recorder


class TestApplicationRecorder(OnPostgres, contract.ApplicationRecorderTestCase):
    def create_recorder(self) -> ApplicationRecorder:
        recorder = ArchiveApplicationRecorder(self.datastore, user_id="alice")
        recorder.create_table()
        return recorder

    def test_insert_subscribe(self) -> None:
        self.optional_test_insert_subscribe()

    def test_concurrent_no_conflicts(self, initial_position: int = 0) -> None:
        super().test_concurrent_no_conflicts(initial_position)

    def test_streams_of_two_users_are_apart(self) -> None:
        from eventsourcing.persistence import StoredEvent

        alice = self.create_recorder()
        bob = ArchiveApplicationRecorder(self.datastore, user_id="bob")
        alice.insert_events([StoredEvent("messaging:general", 1, "t", b"alice's")])
        bob.insert_events([StoredEvent("messaging:general", 1, "t", b"bob's")])
        self.assertEqual([e.state for e in alice.select_events("messaging:general")], [b"alice's"])
        self.assertEqual([e.state for e in bob.select_events("messaging:general")], [b"bob's"])


class TestApplicationRecorderOnPartitionedTable(TestApplicationRecorder):
    """The same cases on an events table partitioned by user (docs/archive.md, "Scaling"),
    whose index of notification ids cannot be unique."""

    def create_recorder(self) -> ApplicationRecorder:
        if not getattr(self, "_partitioned", False):
            make_partitioned_events(self.schema)
            self._partitioned = True
        recorder = ArchiveApplicationRecorder(self.datastore, user_id="alice")
        recorder.index_partitioned_table()
        recorder.create_table()
        return recorder


class TestTrackingRecorder(OnPostgres, contract.TrackingRecorderTestCase):
    def create_recorder(self) -> TrackingRecorder:
        recorder = ArchiveTrackingRecorder(self.datastore)
        recorder.create_table()
        return recorder


class TestProcessRecorder(OnPostgres, contract.ProcessRecorderTestCase):
    def create_recorder(self) -> ProcessRecorder:
        recorder = ArchiveProcessRecorder(self.datastore, user_id="alice")
        recorder.create_table()
        return recorder


class TestNonInterleaving(OnPostgres, contract.NonInterleavingNotificationIDsBaseCase):
    def create_recorder(self) -> ApplicationRecorder:
        recorder = ArchiveApplicationRecorder(self.datastore, user_id="alice")
        recorder.create_table()
        return recorder


class CustomTrackingRecorder(ArchiveTrackingRecorder):
    pass


class TestFactory(contract.InfrastructureFactoryTestCase[ArchiveFactory]):
    __test__ = True

    def expected_factory_class(self) -> type[ArchiveFactory]:
        return ArchiveFactory

    def expected_aggregate_recorder_class(self) -> type[AggregateRecorder]:
        return ArchiveAggregateRecorder

    def expected_application_recorder_class(self) -> type[ApplicationRecorder]:
        return ArchiveApplicationRecorder

    def expected_tracking_recorder_class(self) -> type[TrackingRecorder]:
        return ArchiveTrackingRecorder

    def tracking_recorder_subclass(self) -> type[TrackingRecorder]:
        return CustomTrackingRecorder

    def expected_process_recorder_class(self) -> type[ProcessRecorder]:
        return ArchiveProcessRecorder

    def setUp(self) -> None:
        import psycopg.conninfo

        self.schema = new_schema()
        params = psycopg.conninfo.conninfo_to_dict(server_url())
        self.env = Environment("TestCase")
        self.env[InfrastructureFactory.PERSISTENCE_MODULE] = "chatledger.sync.archive.persistence"
        self.env[ArchiveFactory.POSTGRES_DBNAME] = str(params.get("dbname", "postgres"))
        self.env[ArchiveFactory.POSTGRES_HOST] = str(params.get("host", "127.0.0.1"))
        self.env[ArchiveFactory.POSTGRES_PORT] = str(params.get("port", "5432"))
        self.env[ArchiveFactory.POSTGRES_USER] = str(params.get("user", ""))
        self.env[ArchiveFactory.POSTGRES_PASSWORD] = str(params.get("password", ""))
        self.env[ArchiveFactory.POSTGRES_SCHEMA] = self.schema
        self.env[ArchiveFactory.ORIGINATOR_ID_TYPE] = "text"
        super().setUp()

    def tearDown(self) -> None:
        super().tearDown()
        drop_schema(self.schema)
