"""The archive's recorders: `eventsourcing`'s PostgreSQL recorders over the archive's table.

Select them with ``PERSISTENCE_MODULE=chatledger.sync.archive.persistence`` and the library's
``POSTGRES_*`` settings (``ORIGINATOR_ID_TYPE`` is always ``text``: streams are named by
channel ids and command ids). They are the library's own classes, with two differences:

- The events table holds many users' logs, so a row belongs to a user (`user_id`) and a
  recorder to one user (the constructor's `user_id`, default ''): the same stream name
  (`messaging:general`) is a different stream in each user's log. Notification ids stay global:
  the table is one application sequence of everything pushed, in commit order.
- Each row also carries the envelope of its entry in the user's store (its log position, how
  the payload is encoded, source, received time, event time, connection id) and the message ids
  it names (for `archive find`). Rows inserted through the library's own API have no log
  position: they are not from a store.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import UUID

from eventsourcing.persistence import StoredEvent
# The factory's base is reached through the module: the library finds a persistence module's
# factory as the one factory class the module holds.
from eventsourcing import postgres
from eventsourcing.postgres import (
    PostgresAggregateRecorder,
    PostgresApplicationRecorder,
    PostgresDatastore,
    PostgresProcessRecorder,
    PostgresTrackingRecorder,
)
from eventsourcing.utils import Environment, EnvType
from psycopg import Cursor
from psycopg.rows import DictRow
from psycopg.sql import SQL, Composed, Identifier, Literal

EVENTS_TABLE = "chatledger_events"
TRACKING_TABLE = "chatledger_tracking"

# The events table. The primary key is the library's (originator id, version), per user; the
# other indexes serve the archive: a user's log in position order (push's high-water mark, pull)
# and the messages an entry names (find). Entries that name no message are left out of that
# index (NULL), which is most of them.
_EVENTS_COLUMNS = (
    "user_id text NOT NULL DEFAULT '', "
    "originator_id text NOT NULL, "
    "originator_version bigint NOT NULL, "
    "topic text, "
    "state bytea, "
    "notification_id bigserial, "
    "position bigint, "
    "codec integer NOT NULL DEFAULT 0, "
    "source smallint NOT NULL DEFAULT 0, "
    "received_at bigint NOT NULL DEFAULT (extract(epoch FROM clock_timestamp()) * 1000000)::bigint, "
    "event_at bigint, "
    "connection_id text, "
    "message_ids text[], "
    "PRIMARY KEY (user_id, originator_id, originator_version))"
)
_AUTOVACUUM = (
    " WITH (autovacuum_vacuum_threshold = 100000000, autovacuum_vacuum_scale_factor = 0.5)")
_CREATE_EVENTS = "CREATE TABLE IF NOT EXISTS {schema}.{table} (" + _EVENTS_COLUMNS + _AUTOVACUUM
# The same table split by user into hash partitions (`partition_by_user`), and one partition.
_CREATE_PARTITIONED_EVENTS = ("CREATE TABLE IF NOT EXISTS {schema}.{table} (" + _EVENTS_COLUMNS
                              + " PARTITION BY HASH (user_id)")
_CREATE_PARTITION = (
    "CREATE TABLE IF NOT EXISTS {schema}.{partition} PARTITION OF {schema}.{table} "
    "FOR VALUES WITH (MODULUS {modulus}, REMAINDER {remainder})" + _AUTOVACUUM)
_CREATE_POSITION_INDEX = (
    "CREATE UNIQUE INDEX IF NOT EXISTS {index} ON {schema}.{table} (user_id, position)")
_CREATE_MESSAGES_INDEX = (
    "CREATE INDEX IF NOT EXISTS {index} ON {schema}.{table} USING gin (message_ids) "
    "WHERE message_ids IS NOT NULL")
# The index of notification ids on an events table partitioned by user (see
# `ArchiveApplicationRecorder.index_partitioned_table`).
_CREATE_NOTIFICATION_INDEX = (
    "CREATE INDEX IF NOT EXISTS {index} ON {schema}.{table} (notification_id)")
_INSERT_EVENTS = (
    "INSERT INTO {schema}.{table} (user_id, originator_id, originator_version, topic, state) "
    "SELECT %s, originator_id, originator_version, topic, state "
    "FROM unnest(%s::{schema}.{stored_event_type}[])"
)
_SELECT_EVENTS = (
    "SELECT originator_id, originator_version, topic, state FROM {schema}.{table} "
    "WHERE user_id = %s AND originator_id = %s"
)


def check_partitions(partitions: int) -> None:
    """Refuse a number of hash partitions the events table cannot be split into."""
    if partitions < 1:
        raise ValueError(f"partitions must be 1 or more, not {partitions}")


class _UserRows(PostgresAggregateRecorder):
    """The library's row-level insert and select, for the rows of one user."""

    user_id: str = ""

    def _use_archive_table(self) -> None:
        """Replace the library's table and row statements by the archive's (called once the
        library's constructors have built theirs)."""
        names = {"schema": Identifier(self.datastore.schema),
                 "table": Identifier(self.events_table_name)}
        self.sql_create_statements[self.create_table_statement_index] = SQL(
            _CREATE_EVENTS).format(**names)
        self.sql_create_statements.append(SQL(_CREATE_POSITION_INDEX).format(
            index=Identifier(f"{self.events_table_name}_position_idx"), **names))
        self.sql_create_statements.append(SQL(_CREATE_MESSAGES_INDEX).format(
            index=Identifier(f"{self.events_table_name}_message_ids_idx"), **names))
        insert: Composed = SQL(_INSERT_EVENTS).format(
            stored_event_type=Identifier(self.stored_event_type_name), **names)
        if isinstance(self, PostgresApplicationRecorder):
            insert += SQL(" RETURNING notification_id")
        self.insert_events_statement = insert
        self.select_events_statement = SQL(_SELECT_EVENTS).format(**names)

    def _insert_stored_events(
        self, curs: Cursor[DictRow], stored_events: Sequence[StoredEvent], **_: Any,
    ) -> None:
        rows = [
            self.construct_pg_stored_event(e.originator_id, e.originator_version, e.topic, e.state)
            for e in stored_events
        ]
        curs.execute(self.insert_events_statement, (self.user_id, rows))

    def select_events(
        self, originator_id: UUID | str, *, gt: int | None = None, lte: int | None = None,
        desc: bool = False, limit: int | None = None,
    ) -> Sequence[StoredEvent]:
        statement = self.select_events_statement
        params: list[Any] = [self.user_id, str(originator_id)]
        if gt is not None:
            params.append(gt)
            statement += SQL(" AND originator_version > %s")
        if lte is not None:
            params.append(lte)
            statement += SQL(" AND originator_version <= %s")
        statement += SQL(" ORDER BY originator_version DESC" if desc
                         else " ORDER BY originator_version ASC")
        if limit is not None:
            params.append(limit)
            statement += SQL(" LIMIT %s")
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(statement, params, prepare=True)
            return [
                StoredEvent(originator_id=row["originator_id"],
                            originator_version=row["originator_version"],
                            topic=row["topic"], state=bytes(row["state"]))
                for row in curs.fetchall()
            ]


class ArchiveAggregateRecorder(_UserRows):
    """The library's aggregate recorder, over the archive's table, for one user."""

    def __init__(self, datastore: PostgresDatastore, *, user_id: str = "",
                 events_table_name: str = EVENTS_TABLE) -> None:
        self.user_id = user_id
        super().__init__(datastore, events_table_name=events_table_name)
        self._use_archive_table()


class ArchiveApplicationRecorder(PostgresApplicationRecorder, _UserRows):
    """The library's application recorder (table lock, notification ids in commit order,
    LISTEN/NOTIFY subscriptions), over the archive's table, for one user."""

    def __init__(self, datastore: PostgresDatastore, *, user_id: str = "",
                 events_table_name: str = EVENTS_TABLE) -> None:
        self.user_id = user_id
        super().__init__(datastore, events_table_name=events_table_name)
        self._use_archive_table()

    def partition_by_user(self, partitions: int) -> None:
        """Make `create_table` make the events table split by `user_id` into `partitions` hash
        partitions (`chatledger_events_0`, ...), indexed as `index_partitioned_table` says.
        Each user's entries, mark and lookups stay in one partition, whose indexes are a
        fraction of the whole's (docs/archive.md, "Scaling")."""
        check_partitions(partitions)
        names = {"schema": Identifier(self.datastore.schema),
                 "table": Identifier(self.events_table_name)}
        position = self.create_table_statement_index
        self.sql_create_statements[position] = SQL(_CREATE_PARTITIONED_EVENTS).format(**names)
        self.sql_create_statements[position + 1:position + 1] = [
            SQL(_CREATE_PARTITION).format(
                partition=Identifier(f"{self.events_table_name}_{remainder}"),
                modulus=Literal(partitions), remainder=Literal(remainder), **names)
            for remainder in range(partitions)
        ]
        self.index_partitioned_table()

    def index_partitioned_table(self) -> None:
        """Make `create_table` fit an events table made beforehand partitioned by `user_id`
        (docs/archive.md, "Scaling"). PostgreSQL refuses a unique index on a partitioned table
        unless it holds the partition key, so the library's unique index of notification ids
        becomes a plain one under the same name. The ids stay unique (one sequence gives them
        all, under the table's lock) and in order, which is what the library reads them by."""
        names = {"index": Identifier(self.notification_id_index_name),
                 "schema": Identifier(self.datastore.schema),
                 "table": Identifier(self.events_table_name)}
        self.sql_create_statements = [
            SQL(_CREATE_NOTIFICATION_INDEX).format(**names)
            if self.notification_id_index_name in statement.as_string()
            and "UNIQUE" in statement.as_string() else statement
            for statement in self.sql_create_statements
        ]


class ArchiveTrackingRecorder(PostgresTrackingRecorder):
    """The library's tracking recorder, with the archive's table name by default."""

    def __init__(self, datastore: PostgresDatastore, *,
                 tracking_table_name: str = TRACKING_TABLE, **kwargs: Any) -> None:
        super().__init__(datastore, tracking_table_name=tracking_table_name, **kwargs)


class ArchiveProcessRecorder(PostgresProcessRecorder, _UserRows):
    """The library's process recorder over the archive's tables, for one user."""

    def __init__(self, datastore: PostgresDatastore, *, user_id: str = "",
                 events_table_name: str = EVENTS_TABLE,
                 tracking_table_name: str = TRACKING_TABLE) -> None:
        self.user_id = user_id
        super().__init__(datastore, events_table_name=events_table_name,
                         tracking_table_name=tracking_table_name)
        self._use_archive_table()


class ArchiveFactory(postgres.PostgresFactory):
    """The library's PostgreSQL factory, building the archive's recorders (text originator ids)."""

    aggregate_recorder_class = ArchiveAggregateRecorder
    application_recorder_class = ArchiveApplicationRecorder
    tracking_recorder_class = ArchiveTrackingRecorder
    process_recorder_class = ArchiveProcessRecorder

    def __init__(self, env: Environment | EnvType | None) -> None:
        super().__init__(env)
        if self.datastore.originator_id_type != "text":
            raise OSError(f"the archive's streams are named by text: set "
                          f"{self.ORIGINATOR_ID_TYPE}=text, not "
                          f"{self.datastore.originator_id_type!r}")


Factory = ArchiveFactory

__all__ = ["ArchiveAggregateRecorder", "ArchiveApplicationRecorder", "ArchiveFactory",
           "ArchiveProcessRecorder", "ArchiveTrackingRecorder", "EVENTS_TABLE", "Factory",
           "TRACKING_TABLE", "check_partitions"]
