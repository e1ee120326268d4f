"""The `eventsourcing` library's own recorder test cases, run against the APSW module.

Each case runs twice: on an in-memory database and on a file (WAL mode), as the library's own
SQLite tests do.
"""

from __future__ import annotations

import os
import tempfile
from uuid import uuid4

import apsw
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


# -- the recorder's in-transaction methods, which the log and the projection engine call --------


def test_insert_rows_returns_positions_seen_inside_the_callers_transaction() -> None:
    datastore = APSWDatastore(":memory:")
    try:
        recorder = APSWProcessRecorder(datastore)
        recorder.create_table()
        # Rows of an aggregate (source 0): its versions are unique.
        rows = [("stream-a", version, "t", b"{}", 0, 0, 1, None, None) for version in (1, 2, 3)]
        with datastore.transaction(commit=True) as c:
            assert recorder.max_notification_id_in(c) is None
            assert recorder.insert_rows(c, []) == []
            assert recorder.insert_rows(c, rows[:1]) == [1]
            # The transaction's own rows count, before it commits.
            assert recorder.max_notification_id_in(c) == 1
            assert recorder.insert_rows(c, rows[1:]) == [2, 3]
        assert recorder.max_notification_id() == 3
        # The caller commits or rolls back: a failed transaction leaves nothing.
        with pytest.raises(RuntimeError):
            with datastore.transaction(commit=True) as c:
                recorder.insert_rows(c, [("stream-a", 4, "t", b"{}", 0, 0, 1, None, None)])
                raise RuntimeError("the caller gives up")
        assert recorder.max_notification_id() == 3
        # The same version twice is the caller's to judge (the log raises its IntegrityError).
        with datastore.transaction(commit=True) as c:
            with pytest.raises(apsw.ConstraintError):
                recorder.insert_rows(c, rows[:1])
        assert recorder.max_notification_id() == 3
    finally:
        datastore.close()


def test_max_tracking_id_in_reads_inside_the_callers_transaction() -> None:
    datastore = APSWDatastore(":memory:")
    try:
        recorder = APSWProcessRecorder(datastore)
        recorder.create_table()
        with datastore.transaction(commit=True) as c:
            assert recorder.max_tracking_id_in(c, "tables") is None
            c.execute("INSERT INTO tracking (application_name, notification_id) VALUES (?, ?)",
                      ("tables", 7))
            assert recorder.max_tracking_id_in(c, "tables") == 7
            assert recorder.max_tracking_id_in(c, "other") is None
        assert recorder.max_tracking_id("tables") == 7
    finally:
        datastore.close()
