"""Keeping the read tables in step with the log: live, on upgrade, on demand, and for checking.

- Live: `Projections` is an `AppendListener` of the log, so each append updates the tables in its
  own transaction, and the tracking record (the `eventsourcing` library's) says which log position
  the tables reflect.
- On open: tables built by another projection version are rebuilt from the log; tables behind the
  log (appended by a program that did not project) catch up.
- `rebuild()` replays the whole log into fresh tables in one transaction, so readers see the old
  tables or the new, never half of either. `verify()` replays into a scratch database and lists
  every row that differs from the live tables.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, cast

import apsw

from chatledger.eventstore.codec import PayloadCodec
from chatledger.eventstore.datastore import STATEMENT_CACHE_SIZE
from chatledger.eventstore.log import AppendedEntry, EventLog
from chatledger.projections.item import Item
from chatledger.projections.projector import Projector
from chatledger.projections.schema import INDEXES, LOOKUP_INDEXES, PROJECTION_VERSION, TABLES

TRACKING_NAME = "projections"
_VERSION_KEY = "projection_version"
_REPLAY_CHUNK = 5_000

ProgressCallback = Callable[[int, int], None]  # (entries applied, entries in all)

# The statements, each built once. `{events}` is the log's table (`live.stored_events` when a
# check reads the live file from a scratch database), `{schema}` a database's name.
_ENTRIES_AFTER = "SELECT COUNT(*), MAX(rowid) FROM {events} WHERE rowid>? AND rowid<=?"
_ENTRY_CHUNK = ("SELECT rowid, topic, originator_id, codec, state, received_at FROM {events} "
                "WHERE rowid>? AND rowid<=? ORDER BY rowid LIMIT ?")
# (position, type, stream, codec, stored payload, received_at): one row of `_ENTRY_CHUNK`.
_EntryRow = tuple[int, str, str, int, bytes, int]
_TABLE_NAMES = "SELECT name FROM sqlite_schema WHERE type='table'"
_DROP_TABLE = "DROP TABLE IF EXISTS {schema}.{name}"
_TRACK = ("INSERT INTO tracking (application_name, notification_id) VALUES (?, ?) "
          "ON CONFLICT (application_name) DO UPDATE SET notification_id=excluded.notification_id")
_TRACKED = "SELECT notification_id FROM {schema}.tracking WHERE application_name=?"
_SET_META = ("INSERT INTO chatledger_meta (key, value) VALUES (?, ?) "
             "ON CONFLICT (key) DO UPDATE SET value=excluded.value")
_ATTACH_LIVE = "ATTACH DATABASE ? AS live"
# The rows of `{name}` in database `{first}` that database `{second}` lacks.
_ROWS_LACKING = "SELECT * FROM {first}.{name} EXCEPT SELECT * FROM {second}.{name}"
_ALL_ROWS = "SELECT * FROM {name}"


@dataclass(frozen=True, slots=True)
class Difference:
    """A row that a fresh rebuild has and the live tables lack, or the other way round."""

    table: str
    side: str  # "missing" (only in the rebuild) or "extra" (only in the live tables)
    row: tuple[Any, ...]


def create_tables(cursor: apsw.Cursor, schema: str = "main", *,
                  with_indexes: bool = True) -> None:
    for ddl in TABLES.values():
        cursor.execute(ddl.replace("CREATE TABLE ", f"CREATE TABLE {schema}.", 1))
    indexes = LOOKUP_INDEXES + (INDEXES if with_indexes else [])
    for ddl in indexes:
        cursor.execute(ddl.replace(" INDEX ", f" INDEX {schema}.", 1))


def drop_tables(cursor: apsw.Cursor, schema: str = "main") -> None:
    for name in TABLES:
        cursor.execute(_DROP_TABLE.format(schema=schema, name=name))


@contextmanager
def collector_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector for a replay (rebuild, verify, as-of, explain): replays
    build many short-lived objects, and the collector only slows them down."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def replay(
    source: apsw.Cursor,
    target: apsw.Cursor,
    events_table: str,
    codec: PayloadCodec,
    projector: Projector,
    *,
    upto: int | None = None,
    after: int = 0,
    on_progress: ProgressCallback | None = None,
) -> int:
    """Apply the log's entries after `after` (up to `upto`), read through `source`, to the tables
    that `target` writes; returns the last position applied. Reads in chunks by position."""
    total, last = cast("tuple[int, int | None]", source.execute(
        _ENTRIES_AFTER.format(events=events_table),
        (after, upto if upto is not None else 2**62),
    ).fetchone())
    stop = last or after
    chunk = _ENTRY_CHUNK.format(events=events_table)
    reader = source.connection.cursor()
    done = 0
    position = after
    decode = codec.decode
    while position < stop:
        rows = cast("list[_EntryRow]", reader.execute(
            chunk, (position, stop, _REPLAY_CHUNK)).fetchall())
        if not rows:
            break
        projector.apply(target, [
            Item(entry_position, topic, stream, decode(codec, state, entry_position), received_at)
            for entry_position, topic, stream, codec, state, received_at in rows
        ])
        position = rows[-1][0]  # the chunk's last position: the next chunk starts after it
        done += len(rows)
        if on_progress is not None:
            on_progress(done, total)
    return stop


class Projections:
    """The read tables of one log, kept up to date as the log grows."""

    def __init__(self, log: EventLog, own_user_id: str | None) -> None:
        self.log = log
        self.own_user_id = own_user_id
        self.projector = Projector(own_user_id)

    # -- installation --------------------------------------------------------------------------

    def install(self, on_progress: ProgressCallback | None = None) -> str:
        """Make the tables current, then follow every append. Returns what was needed:
        "ready", "caught up", or "rebuilt" (first use, or built by another version)."""
        outcome = "ready"
        version = self.log.get_meta(_VERSION_KEY)
        if version != PROJECTION_VERSION or not self._tables_exist():
            self.rebuild(on_progress)
            outcome = "rebuilt"
        elif (self.position() or 0) < self.log.max_position():
            self.catch_up(on_progress)
            outcome = "caught up"
        self.log.listeners.append(self)
        return outcome

    def _tables_exist(self) -> bool:
        with self.log.datastore.transaction(commit=False) as cursor:
            names = {name for (name,) in cursor.execute(_TABLE_NAMES)}
        return set(TABLES) <= names

    def position(self) -> int | None:
        """The log position the tables reflect."""
        return self.log.recorder.max_tracking_id(TRACKING_NAME)

    # -- live ----------------------------------------------------------------------------------

    def appended(self, cursor: apsw.Cursor, entries: Sequence[AppendedEntry]) -> None:
        try:
            self.projector.apply(
                cursor,
                [Item(appended.position, appended.entry.type, appended.entry.stream,
                      appended.entry.payload, appended.received_at)
                 for appended in entries],
            )
        except BaseException:
            self.projector.forget_cache()  # the rows it remembered are rolled back
            raise
        self._track(cursor, entries[-1].position)

    def rolled_back(self) -> None:
        """The transaction the last entries came in was rolled back (see EventLog)."""
        self.projector.forget_cache()

    def _track(self, cursor: apsw.Cursor, position: int) -> None:
        cursor.execute(_TRACK, (TRACKING_NAME, position))

    # -- rebuild, catch up, verify -------------------------------------------------------------

    def rebuild(self, on_progress: ProgressCallback | None = None) -> int:
        """Replay the whole log into fresh tables, in one transaction; returns the position."""
        log = self.log
        self.projector.forget_cache()
        with collector_paused(), log.datastore.transaction(commit=True) as cursor:
            drop_tables(cursor)
            create_tables(cursor, with_indexes=False)
            position = replay(cursor, cursor, log.recorder.events_table_name, log.datastore.codec,
                              self.projector, on_progress=on_progress)
            for ddl in INDEXES:
                cursor.execute(ddl)
            self._track(cursor, position)
            cursor.execute(_SET_META, (_VERSION_KEY, PROJECTION_VERSION))
        return position

    def catch_up(self, on_progress: ProgressCallback | None = None) -> int:
        """Apply the entries appended since the tables' position."""
        log = self.log
        with collector_paused(), log.datastore.transaction(commit=True) as cursor:
            after = log.recorder.max_tracking_id_in(cursor, TRACKING_NAME) or 0
            position = replay(cursor, cursor, log.recorder.events_table_name, log.datastore.codec,
                              self.projector, after=after, on_progress=on_progress)
            if position > after:
                self._track(cursor, position)
        return position

    def verify(self, on_progress: ProgressCallback | None = None) -> list[Difference]:
        """Rebuild into a scratch database and list the rows that differ from the live tables.

        The replay and the comparison read one snapshot of the file, so appends made meanwhile
        (by this process or another) neither disturb nor fail the check.
        """
        log = self.log
        table = log.recorder.events_table_name
        # A replay's ~100 statements: the store's statement cache size, not APSW's 100.
        shadow = apsw.Connection(":memory:", flags=_MEMORY_FLAGS,
                                 statementcachesize=STATEMENT_CACHE_SIZE)
        try:
            target = shadow.cursor()
            create_tables(target, with_indexes=False)
            projector = Projector(self.own_user_id)
            with collector_paused():
                if log.datastore.path is None:  # an in-memory store: compare in Python
                    return self._verify_in_memory(shadow, projector, on_progress)
                target.execute(_ATTACH_LIVE,
                               (f"{log.datastore.path.resolve().as_uri()}?mode=ro",))
                target.execute("BEGIN")
                try:
                    position = _tracked(target, "live") or 0
                    replay(target, target, f"live.{table}", log.datastore.codec, projector,
                           upto=position, on_progress=on_progress)
                    return [
                        Difference(name, side, tuple(row))
                        for name in TABLES
                        for side, first, second in (("missing", "main", "live"),
                                                    ("extra", "live", "main"))
                        for row in target.execute(
                            _ROWS_LACKING.format(first=first, name=name, second=second))
                    ]
                finally:
                    target.execute("COMMIT")
        finally:
            shadow.close()

    def _verify_in_memory(
        self, shadow: apsw.Connection, projector: Projector,
        on_progress: ProgressCallback | None,
    ) -> list[Difference]:
        log = self.log
        target = shadow.cursor()
        with log.datastore.transaction(commit=False) as cursor:
            position = _tracked(cursor, "main") or 0
            replay(cursor, target, log.recorder.events_table_name, log.datastore.codec, projector,
                   upto=position, on_progress=on_progress)
            live = {name: set(cursor.execute(_ALL_ROWS.format(name=name))) for name in TABLES}
        differences: list[Difference] = []
        for name in TABLES:
            rebuilt = set(target.execute(_ALL_ROWS.format(name=name)))
            differences += [Difference(name, "missing", tuple(row)) for row in rebuilt - live[name]]
            differences += [Difference(name, "extra", tuple(row)) for row in live[name] - rebuilt]
        return differences


_MEMORY_FLAGS = apsw.SQLITE_OPEN_READWRITE | apsw.SQLITE_OPEN_CREATE | apsw.SQLITE_OPEN_URI


def _tracked(cursor: apsw.Cursor, schema: str) -> int | None:
    row = cast("tuple[int] | None", cursor.execute(
        _TRACKED.format(schema=schema), (TRACKING_NAME,)).fetchone())
    if row is None:
        return None
    (position,) = row
    return position
