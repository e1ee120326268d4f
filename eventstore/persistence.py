"""A persistence module for the `eventsourcing` library on APSW.

Select it with ``PERSISTENCE_MODULE=chatledger.eventstore.persistence`` and name the database with
``APSW_DBNAME`` (a file path, a ``file:`` URI, or ``:memory:``), as the library's stock SQLite
module uses ``SQLITE_DBNAME``. Unlike the stock module, the application recorder can subscribe:
a subscription is woken by commits in this process and polls for commits made by others.

Other settings: ``APSW_LOCK_TIMEOUT`` (seconds a writer waits for the lock, default 5),
``APSW_SYNCHRONOUS`` (``NORMAL`` or ``FULL``), ``ORIGINATOR_ID_TYPE`` (``uuid`` or ``text``),
``CREATE_TABLE``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, cast
from uuid import UUID

import apsw
from eventsourcing.persistence import (
    AggregateRecorder,
    ApplicationRecorder,
    InfrastructureFactory,
    IntegrityError,
    ListenNotifySubscription,
    Notification,
    ProcessRecorder,
    StoredEvent,
    Subscription,
    Tracking,
    TrackingRecorder,
)
from eventsourcing.utils import Environment, EnvType, resolve_topic, strtobool

from chatledger.eventstore import links, schema
from chatledger.eventstore.codec import PayloadCodec
from chatledger.eventstore.datastore import APSWDatastore, OriginatorIdType, Synchronous

__all__ = [
    "APSWAggregateRecorder",
    "APSWApplicationRecorder",
    "APSWDatastore",
    "APSWFactory",
    "APSWProcessRecorder",
    "APSWSubscription",
    "APSWTrackingRecorder",
    "Factory",
]

# A row ready for INSERT: see schema.events_table for the columns.
EventRow = tuple[str, int, str, bytes, int, int, int, "int | None", "str | None"]

_HEX = frozenset("0123456789abcdef")

_IS_BACKEND_STREAM = "SELECT 1 FROM streams WHERE name=?"


def now_us() -> int:
    return time.time_ns() // 1000


def originator_key(originator_id: UUID | str) -> str:
    """How an originator id is stored: UUIDs as 32 hex digits (as the stock module does)."""
    return originator_id.hex if isinstance(originator_id, UUID) else originator_id


class APSWRecorder:
    """Shared by the recorders: the datastore, and the statements that create their tables."""

    def __init__(self, datastore: APSWDatastore) -> None:
        if not isinstance(datastore, APSWDatastore):
            raise TypeError(f"expected an APSWDatastore, got {type(datastore).__name__}")
        self.datastore = datastore

    def create_table_statements(self) -> list[str]:
        return [schema.META_TABLE]

    def create_table(self) -> None:
        with self.datastore.transaction(commit=True) as cursor:
            for statement in self.create_table_statements():
                cursor.execute(statement)
            self._after_create_table(cursor)

    def _after_create_table(self, cursor: apsw.Cursor) -> None:
        pass


class APSWAggregateRecorder(APSWRecorder, AggregateRecorder):
    """Stores and selects the events of aggregates (streams), compressing their state."""

    def __init__(self, datastore: APSWDatastore, events_table_name: str = "stored_events") -> None:
        super().__init__(datastore)
        if not events_table_name.replace("_", "").isalnum():
            raise ValueError(f"not a valid table name: {events_table_name!r}")
        self.events_table_name = events_table_name
        self.insert_statement = (
            f"INSERT INTO {events_table_name} (originator_id, originator_version, topic, state,"
            " codec, source, received_at, event_at, connection_id, chain)"
            " VALUES (?,?,?,?,?,?,?,?,?,?)"
        )
        self.max_notification_id_statement = f"SELECT MAX(rowid) FROM {events_table_name}"
        # A stream's events; `select_events` adds the filters and the order.
        self.select_events_statement = (
            f"SELECT originator_id, originator_version, topic, state, codec, rowid "
            f"FROM {events_table_name} WHERE originator_id=?")
        # Entries by position; `select_notifications` adds the WHERE clause, then " LIMIT ?".
        self.select_notifications_statement = (
            "SELECT rowid, originator_id, originator_version, topic, state, codec "
            f"FROM {events_table_name} {{where}}ORDER BY rowid LIMIT ?")

    @property
    def codec(self) -> PayloadCodec:
        return self.datastore.codec

    def create_table_statements(self) -> list[str]:
        return [
            *super().create_table_statements(),
            *schema.events_table(self.events_table_name),
            schema.STREAMS_TABLE,
            links.LINKS_TABLE,
            schema.DICTIONARIES_TABLE,
        ]

    def _after_create_table(self, cursor: apsw.Cursor) -> None:
        super()._after_create_table(cursor)
        self.codec.load(cursor)

    def _originator_id(self, stored: str) -> UUID | str:
        if (
            self.datastore.originator_id_type == "uuid"
            and len(stored) == 32
            and _HEX.issuperset(stored)
        ):
            return UUID(stored)
        return stored

    # -- writing -------------------------------------------------------------------------------

    def insert_events(
        self, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        with self.datastore.transaction(commit=True) as cursor:
            return self._insert_events(cursor, stored_events, **kwargs)

    def _insert_events(
        self, cursor: apsw.Cursor, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        # An aggregate sequence has no notification ids to return.
        self.insert_rows(cursor, self._rows(stored_events))
        return None

    def _rows(self, stored_events: Sequence[StoredEvent]) -> list[EventRow]:
        """The library's events as rows: decided locally, state compressed when it pays."""
        received_at = now_us()
        encode = self.codec.encode
        rows: list[EventRow] = []
        for stored_event in stored_events:
            codec, state = encode(stored_event.state)
            rows.append(
                (
                    originator_key(stored_event.originator_id),
                    stored_event.originator_version,
                    stored_event.topic,
                    state,
                    codec,
                    schema.Source.LOCAL,
                    received_at,
                    None,
                    None,
                )
            )
        return rows

    def insert_rows(self, cursor: apsw.Cursor, rows: Sequence[EventRow]) -> list[int]:
        """Insert rows already encoded (see `EventRow`) and return their positions.

        Contract: `cursor` belongs to a write transaction the caller holds
        (`datastore.transaction(commit=True)`); nothing is committed here, the caller commits or
        rolls back. The rows are sealed (encrypted and chained) on the way in. Returns the
        notification ids (rowids) of the rows, in their order, one per row (empty for no rows).
        A version recorded twice raises `apsw.ConstraintError`; the caller decides what that means.
        """
        if not rows:
            return []
        # Encrypted (with a key) and chained to the entry before, for the positions after the
        # log's tail read in this transaction: the one statement more an append costs.
        stored = self.datastore.sealer.rows_for_insert(cursor, self.events_table_name, rows)
        if len(stored) == 1:
            cursor.execute(self.insert_statement, stored[0])
        else:
            cursor.executemany(self.insert_statement, stored)
        # Inside the write transaction nobody else inserts, and nothing is ever deleted from
        # the end of the log, so the rowids of one executemany are consecutive, and follow the
        # tail the sealer read.
        last = cursor.connection.last_insert_rowid()
        return list(range(last - len(rows) + 1, last + 1))

    # -- reading -------------------------------------------------------------------------------

    def select_events(
        self,
        originator_id: UUID | str,
        *,
        gt: int | None = None,
        lte: int | None = None,
        desc: bool = False,
        limit: int | None = None,
    ) -> Sequence[StoredEvent]:
        key = originator_key(originator_id)
        with self.datastore.transaction(commit=False) as cursor:
            # An aggregate's events are found through the aggregate index; a stream of backend
            # events has no index (see schema.events_table) and is read by a scan.
            is_backend_stream = cursor.execute(_IS_BACKEND_STREAM, (key,)).fetchone()
            statement = (self.select_events_statement
                         + ("" if is_backend_stream else " AND source=0"))
            return self._select_events(cursor, statement, key, gt, lte, desc, limit)

    def _select_events(
        self, cursor: apsw.Cursor, statement: str, key: str, gt: int | None, lte: int | None,
        desc: bool, limit: int | None,
    ) -> list[StoredEvent]:
        params: list[Any] = [key]
        if gt is not None:
            statement += " AND originator_version>?"
            params.append(gt)
        if lte is not None:
            statement += " AND originator_version<=?"
            params.append(lte)
        statement += " ORDER BY originator_version " + ("DESC" if desc else "ASC")
        if limit is not None:
            statement += " LIMIT ?"
            params.append(limit)
        decode = self.codec.decode
        return [
            StoredEvent(
                originator_id=self._originator_id(oid),
                originator_version=version,
                topic=topic,
                state=decode(codec, state, position),
            )
            for oid, version, topic, state, codec, position in cursor.execute(statement, params)
        ]


class APSWApplicationRecorder(APSWAggregateRecorder, ApplicationRecorder):
    """Adds the application sequence: notification ids, selection by position, subscriptions."""

    def _insert_events(
        self, cursor: apsw.Cursor, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        return self.insert_rows(cursor, self._rows(stored_events))

    def select_notifications(
        self,
        start: int | None,
        limit: int,
        stop: int | None = None,
        topics: Sequence[str] = (),
        *,
        inclusive_of_start: bool = True,
    ) -> Sequence[Notification]:
        clauses: list[str] = []
        params: list[Any] = []
        if start is not None:
            clauses.append("rowid>=?" if inclusive_of_start else "rowid>?")
            params.append(start)
        if stop is not None:
            clauses.append("rowid<=?")
            params.append(stop)
        if topics:
            clauses.append(f"topic IN ({','.join('?' * len(topics))})")
            params.extend(topics)
        where = f"WHERE {' AND '.join(clauses)} " if clauses else ""
        statement = self.select_notifications_statement.format(where=where)
        params.append(limit)
        decode = self.codec.decode
        with self.datastore.transaction(commit=False) as cursor:
            return [
                Notification(
                    id=rowid,
                    originator_id=self._originator_id(oid),
                    originator_version=version,
                    topic=topic,
                    state=decode(codec, state, rowid),
                )
                for rowid, oid, version, topic, state, codec in cursor.execute(statement, params)
            ]

    def max_notification_id(self) -> int | None:
        with self.datastore.transaction(commit=False) as cursor:
            return self.max_notification_id_in(cursor)

    def max_notification_id_in(self, cursor: apsw.Cursor) -> int | None:
        """The position of the last entry of the log as `cursor`'s transaction sees it (None for
        an empty log).

        Contract: `cursor` belongs to a transaction the caller holds (read or write); inside a
        write transaction the answer includes the rows it inserted so far.
        """
        row = cast("tuple[int | None] | None",
                   cursor.execute(self.max_notification_id_statement).fetchone())
        (position,) = row or (None,)
        return position

    def subscribe(
        self, gt: int | None = None, topics: Sequence[str] = ()
    ) -> Subscription[ApplicationRecorder]:
        return APSWSubscription(recorder=self, gt=gt, topics=topics)


class APSWSubscription(ListenNotifySubscription[APSWApplicationRecorder]):
    """Yields notifications after `gt`, then blocks for new ones.

    Commits by this process wake it at once; commits by other processes (another program
    writing the same file) are found by polling every `poll_interval` seconds.
    """

    poll_interval = 0.1

    def __init__(
        self, recorder: APSWApplicationRecorder, gt: int | None = None, topics: Sequence[str] = ()
    ) -> None:
        super().__init__(recorder=recorder, gt=gt, topics=topics)
        recorder.datastore.listen(self._has_been_notified)

    def __exit__(self, *args: object, **kwargs: Any) -> None:
        try:
            super().__exit__(*args, **kwargs)
        finally:
            self._recorder.datastore.unlisten(self._has_been_notified)

    def _loop_on_pull(self) -> None:
        try:
            self._pull()
            while not self._has_been_stopped:
                self._has_been_notified.wait(timeout=self.poll_interval)
                if self._recorder.datastore.closed:
                    break
                self._pull()
        except BaseException as error:  # the iterating thread re-raises it
            if self._thread_error is None:
                self._thread_error = error
            self.stop()


class APSWTrackingRecorder(APSWRecorder, TrackingRecorder):
    """Records how far a downstream processor (a projection) has got, one row per name."""

    insert_tracking_statement = (
        "INSERT INTO tracking (application_name, notification_id) VALUES (?, ?) "
        "ON CONFLICT (application_name) DO UPDATE SET notification_id = excluded.notification_id "
        "WHERE tracking.notification_id < excluded.notification_id "
        "RETURNING notification_id"
    )
    select_tracking_statement = "SELECT notification_id FROM tracking WHERE application_name=?"

    def create_table_statements(self) -> list[str]:
        return [*super().create_table_statements(), schema.TRACKING_TABLE]

    def insert_tracking(self, tracking: Tracking) -> None:
        with self.datastore.transaction(commit=True) as cursor:
            self._insert_tracking(cursor, tracking)

    def _insert_tracking(self, cursor: apsw.Cursor, tracking: Tracking) -> None:
        row = cursor.execute(
            self.insert_tracking_statement,
            (tracking.application_name, tracking.notification_id),
        ).fetchone()
        if row is None:
            raise IntegrityError(
                f"tracking for {tracking.application_name!r} is already at or past "
                f"{tracking.notification_id}"
            )

    def max_tracking_id(self, application_name: str) -> int | None:
        with self.datastore.transaction(commit=False) as cursor:
            return self.max_tracking_id_in(cursor, application_name)

    def max_tracking_id_in(self, cursor: apsw.Cursor, application_name: str) -> int | None:
        """How far `application_name` has processed the log, as `cursor`'s transaction sees it.

        Contract: `cursor` belongs to a transaction the caller holds (read or write), so the
        caller can read the position and write what follows it without another writer in
        between. None when the name has no tracking row yet.
        """
        row = cast("tuple[int] | None",
                   cursor.execute(self.select_tracking_statement, (application_name,)).fetchone())
        (position,) = row or (None,)
        return position


class APSWProcessRecorder(APSWTrackingRecorder, APSWApplicationRecorder, ProcessRecorder):
    """Events and the tracking record of what caused them, in one transaction."""

    def __init__(self, datastore: APSWDatastore, events_table_name: str = "stored_events") -> None:
        APSWApplicationRecorder.__init__(self, datastore, events_table_name)

    def _insert_events(
        self, cursor: apsw.Cursor, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        notification_ids = super()._insert_events(cursor, stored_events, **kwargs)
        tracking: Tracking | None = kwargs.get("tracking")
        if tracking is not None:
            self._insert_tracking(cursor, tracking)
        return notification_ids


class APSWFactory(InfrastructureFactory[APSWTrackingRecorder]):
    """Builds APSW recorders for `eventsourcing` applications from environment settings."""

    APSW_DBNAME = "APSW_DBNAME"
    APSW_LOCK_TIMEOUT = "APSW_LOCK_TIMEOUT"
    APSW_SYNCHRONOUS = "APSW_SYNCHRONOUS"
    ORIGINATOR_ID_TYPE = "ORIGINATOR_ID_TYPE"
    CREATE_TABLE = "CREATE_TABLE"

    aggregate_recorder_class = APSWAggregateRecorder
    application_recorder_class = APSWApplicationRecorder
    tracking_recorder_class = APSWTrackingRecorder
    process_recorder_class = APSWProcessRecorder

    def __init__(self, env: Environment | EnvType | None) -> None:
        super().__init__(env)
        db_name = self.env.get(self.APSW_DBNAME)
        if not db_name:
            keys = ", ".join(self.env.create_keys(self.APSW_DBNAME))
            raise OSError(f"APSW database name not found in environment with keys: {keys}")
        timeout_text = (self.env.get(self.APSW_LOCK_TIMEOUT) or "").strip()
        try:
            lock_timeout = float(timeout_text) if timeout_text else 5.0
        except ValueError:
            raise OSError(
                f"{self.APSW_LOCK_TIMEOUT} must be a number of seconds, not {timeout_text!r}"
            ) from None
        synchronous = (self.env.get(self.APSW_SYNCHRONOUS) or "NORMAL").upper()
        if synchronous not in ("NORMAL", "FULL"):
            raise OSError(f"{self.APSW_SYNCHRONOUS} must be NORMAL or FULL, not {synchronous!r}")
        originator_id_type = (self.env.get(self.ORIGINATOR_ID_TYPE) or "uuid").lower()
        if originator_id_type not in ("uuid", "text"):
            raise OSError(
                f"Invalid {self.ORIGINATOR_ID_TYPE} {originator_id_type!r}, must be 'uuid' or 'text'"
            )
        self.datastore = APSWDatastore(
            db_name,
            lock_timeout=lock_timeout,
            synchronous=cast(Synchronous, synchronous),
            originator_id_type=cast(OriginatorIdType, originator_id_type),
        )

    def _recorder(self, cls: type[APSWRecorder], topic_key: str | None = None, **kwargs: Any) -> Any:
        if topic_key and (topic := self.env.get(topic_key)):
            cls = resolve_topic(topic)
        recorder = cls(datastore=self.datastore, **kwargs)
        if self.env_create_table():
            recorder.create_table()
        return recorder

    def aggregate_recorder(self, purpose: str = "events") -> AggregateRecorder:
        return cast(
            AggregateRecorder,
            self._recorder(self.aggregate_recorder_class, events_table_name="stored_" + purpose),
        )

    def application_recorder(self) -> ApplicationRecorder:
        return cast(
            ApplicationRecorder,
            self._recorder(self.application_recorder_class, self.APPLICATION_RECORDER_TOPIC),
        )

    def tracking_recorder(
        self, tracking_recorder_class: type[APSWTrackingRecorder] | None = None
    ) -> APSWTrackingRecorder:
        if tracking_recorder_class is not None:
            return cast(APSWTrackingRecorder, self._recorder(tracking_recorder_class))
        return cast(
            APSWTrackingRecorder,
            self._recorder(self.tracking_recorder_class, self.TRACKING_RECORDER_TOPIC),
        )

    def process_recorder(self) -> ProcessRecorder:
        return cast(
            ProcessRecorder,
            self._recorder(self.process_recorder_class, self.PROCESS_RECORDER_TOPIC),
        )

    def env_create_table(self) -> bool:
        return bool(strtobool(self.env.get(self.CREATE_TABLE) or "yes"))

    def close(self) -> None:
        self.datastore.close()


Factory = APSWFactory

