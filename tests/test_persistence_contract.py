"""The `eventsourcing` library's own recorder test cases, run against the APSW module.

Each case runs twice: on an in-memory database and on a file (WAL mode), as the library's own
SQLite tests do.
"""

from __future__ import annotations

import os
import tempfile
from uuid import uuid4

import pytest
from eventsourcing.persistence import (
    AggregateRecorder,
    ApplicationRecorder,
    InfrastructureFactory,
    ProcessRecorder,
    StoredEvent,
    TrackingRecorder,
)
# Imported as a module: pytest would collect the abstract cases if their names stood here.
from eventsourcing.tests import persistence as contract
from eventsourcing.utils import Environment

from chatledger.eventstore.persistence import (
    APSWAggregateRecorder,
    APSWApplicationRecorder,
    APSWDatastore,
    APSWFactory,
    APSWProcessRecorder,
    APSWTrackingRecorder,
)


class InMemory:
    __test__ = True

    def setUp(self) -> None:
        super().setUp()
        self.datastore = APSWDatastore(":memory:")

    def tearDown(self) -> None:
        self.datastore.close()
        super().tearDown()


class OnFile:
    __test__ = True

    def setUp(self) -> None:
        super().setUp()
        self._dir = tempfile.TemporaryDirectory()
        self.db_path = os.path.join(self._dir.name, "recorder.db")
        self.datastore = APSWDatastore(self.db_path)

    def tearDown(self) -> None:
        self.datastore.close()
        self._dir.cleanup()
        super().tearDown()


# -- aggregate ---------------------------------------------------------------------------------


class AggregateContract(contract.AggregateRecorderTestCase):
    __test__ = False

    def create_recorder(self) -> AggregateRecorder:
        recorder = APSWAggregateRecorder(self.datastore)
        recorder.create_table()
        return recorder


class TestAggregateRecorderInMemory(InMemory, AggregateContract):
    pass


class TestAggregateRecorderOnFile(OnFile, AggregateContract):
    pass


# -- application -------------------------------------------------------------------------------


class ApplicationContract(contract.ApplicationRecorderTestCase):
    __test__ = False

    def create_recorder(self) -> ApplicationRecorder:
        recorder = APSWApplicationRecorder(self.datastore)
        recorder.create_table()
        return recorder

    def test_insert_subscribe(self) -> None:
        self.optional_test_insert_subscribe()

    def test_concurrent_no_conflicts(self, initial_position: int = 0) -> None:
        super().test_concurrent_no_conflicts(initial_position)


class TestApplicationRecorderInMemory(InMemory, ApplicationContract):
    pass


class TestApplicationRecorderOnFile(OnFile, ApplicationContract):
    def test_subscription_sees_commits_of_another_connection(self) -> None:
        recorder = self.create_recorder()
        other = APSWDatastore(self.datastore.db_name)
        try:
            other_recorder = APSWApplicationRecorder(other)
            other_recorder.create_table()
            with recorder.subscribe(gt=None) as subscription:
                originator_id = uuid4()
                other_recorder.insert_events(
                    [StoredEvent(originator_id, 1, "topic", b"from another connection")]
                )
                notification = next(subscription)
                self.assertEqual(notification.state, b"from another connection")
        finally:
            other.close()


class TestApplicationRecorderTextIds(InMemory, ApplicationContract):
    def setUp(self) -> None:
        super().setUp()
        self.datastore.close()
        self.datastore = APSWDatastore(":memory:", originator_id_type="text")

    def new_originator_id(self) -> str:
        return f"messaging:{uuid4()}"


# -- tracking and process ----------------------------------------------------------------------


class TrackingContract(contract.TrackingRecorderTestCase):
    __test__ = False

    def create_recorder(self) -> TrackingRecorder:
        recorder = APSWTrackingRecorder(self.datastore)
        recorder.create_table()
        return recorder


class TestTrackingRecorderInMemory(InMemory, TrackingContract):
    pass


class TestTrackingRecorderOnFile(OnFile, TrackingContract):
    pass


class ProcessContract(contract.ProcessRecorderTestCase):
    __test__ = False

    def create_recorder(self) -> ProcessRecorder:
        recorder = APSWProcessRecorder(self.datastore)
        recorder.create_table()
        return recorder


class TestProcessRecorderInMemory(InMemory, ProcessContract):
    pass


class TestProcessRecorderOnFile(OnFile, ProcessContract):
    pass


class NonInterleavingContract(contract.NonInterleavingNotificationIDsBaseCase):
    __test__ = False

    def create_recorder(self) -> ApplicationRecorder:
        recorder = APSWApplicationRecorder(self.datastore)
        recorder.create_table()
        return recorder


class TestNonInterleavingInMemory(InMemory, NonInterleavingContract):
    pass


class TestNonInterleavingOnFile(OnFile, NonInterleavingContract):
    pass


# -- the factory, selected by PERSISTENCE_MODULE -----------------------------------------------


class FactoryContract(contract.InfrastructureFactoryTestCase[APSWFactory]):
    __test__ = False

    def expected_factory_class(self) -> type[APSWFactory]:
        return APSWFactory

    def expected_aggregate_recorder_class(self) -> type[AggregateRecorder]:
        return APSWAggregateRecorder

    def expected_application_recorder_class(self) -> type[ApplicationRecorder]:
        return APSWApplicationRecorder

    def expected_tracking_recorder_class(self) -> type[TrackingRecorder]:
        return APSWTrackingRecorder

    def tracking_recorder_subclass(self) -> type[TrackingRecorder]:
        return CustomTrackingRecorder

    def expected_process_recorder_class(self) -> type[ProcessRecorder]:
        return APSWProcessRecorder


class CustomTrackingRecorder(APSWTrackingRecorder):
    pass


class TestFactoryInMemory(FactoryContract):
    __test__ = True

    def setUp(self) -> None:
        self.env = Environment("TestCase")
        self.env[InfrastructureFactory.PERSISTENCE_MODULE] = "chatledger.eventstore.persistence"
        self.env[APSWFactory.APSW_DBNAME] = ":memory:"
        super().setUp()


class TestFactoryOnFile(FactoryContract):
    __test__ = True

    def setUp(self) -> None:
        self._dir = tempfile.TemporaryDirectory()
        self.env = Environment("TestCase")
        self.env[InfrastructureFactory.PERSISTENCE_MODULE] = "chatledger.eventstore.persistence"
        self.env[APSWFactory.APSW_DBNAME] = os.path.join(self._dir.name, "factory.db")
        self.env[APSWFactory.APSW_SYNCHRONOUS] = "FULL"
        super().setUp()

    def tearDown(self) -> None:
        super().tearDown()
        self._dir.cleanup()


def test_factory_refuses_a_missing_database_name() -> None:
    env = Environment("Missing")
    env[InfrastructureFactory.PERSISTENCE_MODULE] = "chatledger.eventstore.persistence"
    with pytest.raises(OSError, match="APSW database name not found"):
        InfrastructureFactory.construct(env)


def test_factory_refuses_a_bad_lock_timeout() -> None:
    env = Environment()
    env[InfrastructureFactory.PERSISTENCE_MODULE] = "chatledger.eventstore.persistence"
    env[APSWFactory.APSW_DBNAME] = ":memory:"
    env[APSWFactory.APSW_LOCK_TIMEOUT] = "soon"
    with pytest.raises(OSError, match="APSW_LOCK_TIMEOUT"):
        InfrastructureFactory.construct(env)
