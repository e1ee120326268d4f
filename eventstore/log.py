"""The event log of one user: appending what arrives, reading it back, and its statistics.

Appends go straight through the recorder's table as stored events (the wire bytes are the state;
no aggregate is built per received event). A batch is one transaction. Whoever must see an append
in the same transaction (the projections) registers an `AppendListener`.
"""

from __future__ import annotations

import json
import os
import threading
import urllib.parse
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Protocol, cast

import apsw
import zstandard
from eventsourcing.persistence import DatabaseError, IntegrityError, OperationalError, StoredEvent

from chatledger.errors import KeyRequired, StoreError
from chatledger.eventstore import ingest, links, schema, seal, wire
from chatledger.eventstore.codec import MIN_COMPRESS_SIZE, RAW
from chatledger.eventstore.datastore import APSWDatastore, Synchronous, filesystem_path
from chatledger.eventstore.ingest import Entry, Payload, Rejection
from chatledger.eventstore.userfiles import symlinked_files
from chatledger.eventstore.persistence import (
    APSWProcessRecorder,
    EventRow,
    now_us,
    originator_key,
)
from chatledger.eventstore.streams import StreamHeads

# Train the compression dictionary once this many payloads are on file: enough samples for a
# dictionary several times smaller than them, early enough that almost the whole log benefits.


TRAIN_AFTER_EVENTS = 2_000
TRAIN_SAMPLE_EVENTS = 20_000
_SOURCE_CODES = {s.name.lower(): int(s) for s in schema.Source}
# Handing a batch to the compression thread pays off from about this many events.
_BACKGROUND_MIN_BATCH = 64
# What `_write` appends: entries, and the rejections it quarantines.
_Items = list[Entry | Rejection]


@dataclass(frozen=True, slots=True)
class Quarantined:
    """An input item the log refused, kept in the quarantine table with the reason."""

    index: int  # position of the item in the input
    reason: str
    quarantine_id: int


@dataclass(frozen=True, slots=True)
class AppendResult:
    """What an append did: a log position for each stored item, None where quarantined."""

    positions: list[int | None]
    quarantined: list[Quarantined]

    @property
    def stored(self) -> int:
        return sum(p is not None for p in self.positions)

    @property
    def last_position(self) -> int | None:
        return max((p for p in self.positions if p is not None), default=None)


@dataclass(frozen=True, slots=True)
class AppendedEntry:
    """An entry as appended: what listeners (projections) receive."""

    position: int
    entry: Entry
    received_at: int  # epoch microseconds, as recorded in the envelope


class AppendListener(Protocol):
    """Called inside the append transaction, after the rows are written, before the commit.

    An exception aborts the whole transaction: the log and whatever the listener keeps never
    disagree.
    """

    def appended(self, cursor: apsw.Cursor, entries: Sequence[AppendedEntry]) -> None: ...


# SQLite's codes for a write that found no room: the disk is full (SQLITE_FULL), or a write,
# a truncate, or creating or growing the -shm failed (most often for the same reason).
_NO_ROOM = (apsw.SQLITE_FULL, apsw.SQLITE_IOERR_WRITE, apsw.SQLITE_IOERR_SHMOPEN,
            apsw.SQLITE_IOERR_SHMSIZE, apsw.SQLITE_IOERR_SHMMAP, apsw.SQLITE_IOERR_TRUNCATE,
            apsw.SQLITE_IOERR_FSYNC)


def no_room(error: BaseException) -> bool:
    """Whether an error (or what it wraps) is SQLite failing to write: a full disk, mostly."""
    cause: BaseException | None = error
    while cause is not None:
        if isinstance(cause, apsw.FullError):
            return True
        if isinstance(cause, apsw.Error) and getattr(cause, "extendedresult", None) in _NO_ROOM:
            return True
        cause = cause.__cause__
    return False


def _why_not_written(error: BaseException) -> str:
    if no_room(error):
        return (f"SQLite could not write beside it ({error}): the disk is full (or the "
                "directory is not writable); free some space and try again")
    return str(error)


class _NewCompanions:
    """The -wal and -shm files an open creates: removed again when the open fails for want of
    room, so that a failed open (a full disk) leaves nothing behind. Only files this open
    created, and only while no connection uses them: every connection to a store in WAL mode
    writes a header into the -shm first, so a -shm of zeros (or none) means none does, and
    then an empty -wal holds nothing."""

    def __init__(self, db_path: Path | None) -> None:
        self.wal = self.shm = None
        if db_path is not None:
            self.wal, self.shm = Path(f"{db_path}-wal"), Path(f"{db_path}-shm")
        self.created = [path for path in (self.wal, self.shm)
                        if path is not None and not os.path.lexists(path)]

    @staticmethod
    def _blank(path: Path) -> bool:
        try:
            with open(path, "rb") as handle:
                return not handle.read(4096).strip(b"\x00")
        except FileNotFoundError:
            return True
        except OSError:
            return False

    def remove_if_unused(self, error: BaseException) -> None:
        if not self.created or not no_room(error) or self.shm is None:
            return
        if not self._blank(self.shm):
            return  # a connection has set the -shm up: the files are in use
        for path in self.created:
            if self._blank(path):
                path.unlink(missing_ok=True)


@dataclass(frozen=True, slots=True)
class Damage:
    """What SQLite's integrity check finds wrong with a store's file."""

    problems: list[str]  # SQLite's own lines, the first few
    log_hit: bool  # a table of the log itself is hit (not only read tables or free pages)

    def advice(self) -> str:
        """One sentence: what to do about it."""
        if self.log_hit:
            return ("the log itself is hit: restore the store from a backup "
                    "(`chatledger backup` makes one)")
        return ("the log reads back whole, only the read tables are hit: run `chatledger "
                "rebuild`, then `chatledger verify` again (restore a backup if it still fails)")


_GET_META = "SELECT value FROM chatledger_meta WHERE key=?"
_SET_META = ("INSERT INTO chatledger_meta (key, value) VALUES (?, ?) "
             "ON CONFLICT (key) DO UPDATE SET value = excluded.value")
_DELETE_META = "DELETE FROM chatledger_meta WHERE key=?"
_NEXT_QUARANTINE_ID = "SELECT COALESCE(MAX(id), 0) + 1 FROM quarantine"
_INSERT_QUARANTINE_WITH_ID = (
    "INSERT INTO quarantine (id, received_at, source, connection_id, reason, size, codec, raw) "
    "VALUES (?,?,?,?,?,?,?,?)")

# The integrity check stops after this many problems: enough to say where the damage is.
_MAX_PROBLEMS = 20
# The tables that hold the log (the rest are read tables, rebuilt from it). Constant names: a
# pragma's table argument cannot be a parameter.
_LOG_TABLES = ("chatledger_meta", "streams", links.LINKS_TABLE_NAME, "zstd_dictionaries", "quarantine")
# The same, for other modules of the log (a bundle keeps these and drops the read tables).
LOG_TABLES = _LOG_TABLES
_CHECK_FILE = f"PRAGMA integrity_check({_MAX_PROBLEMS})"
_CHECK_TABLE = "PRAGMA integrity_check({})"  # a table of the log, by name
_SCHEMA_VERSION = "PRAGMA schema_version"
_SET_SCHEMA_VERSION = "PRAGMA schema_version={:d}"
_WRITABLE_SCHEMA_ON = "PRAGMA writable_schema=ON"
_WRITABLE_SCHEMA_OFF = "PRAGMA writable_schema=OFF"
# Tables, their indexes (SQLite's automatic ones too) and triggers, but for the log's tables
# (the placeholders) and SQLite's own (sqlite_sequence, sqlite_stat1).
_FORGET_TABLES = ("DELETE FROM sqlite_schema WHERE tbl_name NOT IN ({}) "
                  "AND tbl_name NOT LIKE 'sqlite\\_%' ESCAPE '\\'")


@dataclass(frozen=True, slots=True)
class LogEntry:
    """One entry of the log, as stored: the envelope and the exact payload bytes."""

    position: int
    stream: str
    version: int
    type: str
    source: str
    received_at: int  # epoch microseconds
    event_at: int | None
    connection_id: str | None
    payload: bytes

    def json(self) -> Any:
        """The payload decoded; never fails (see `wire.decode_stored`)."""
        return wire.decode_stored(self.payload)

    @property
    def received(self) -> datetime:
        """`received_at` (epoch microseconds) as an aware UTC datetime."""
        return _EPOCH + timedelta(microseconds=self.received_at)

    @property
    def event_time(self) -> datetime | None:
        """`event_at`, the event's own `created_at`, as an aware UTC datetime."""
        return None if self.event_at is None else _EPOCH + timedelta(microseconds=self.event_at)


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


@dataclass(frozen=True, slots=True)
class StoredRow:
    """One entry exactly as the file keeps it: the envelope and the payload as encoded
    (`codec` 0 raw, else the id of the dictionary that compressed `state`). What copies of a
    log (the archive) carry, so that a restored log holds the same bytes at the same positions.
    """

    position: int
    stream: str
    version: int
    type: str
    codec: int
    state: bytes
    source: int  # schema.Source
    received_at: int
    event_at: int | None
    connection_id: str | None


@dataclass(frozen=True, slots=True)
class StoredDictionary:
    """A compression dictionary of the file, as stored (ids are never reused or changed)."""

    id: int
    created_at: int
    trained_on: int
    level: int
    data: bytes


_SELECT_STORED_ROWS = (
    "SELECT rowid, originator_id, originator_version, topic, codec, state, source, received_at,"
    " event_at, connection_id FROM {table} WHERE rowid>? AND rowid<=? ORDER BY rowid LIMIT ?"
)
_STREAMS_COLUMNS = "PRAGMA table_info(streams)"
_AMONG = "rowid IN (SELECT value FROM json_each(?))"
# `EventLog.entries`: the filters' WHERE, the ORDER BY and a LIMIT follow.
_SELECT_ENTRIES = (
    "SELECT rowid, originator_id, originator_version, topic, source, received_at, event_at,"
    " connection_id, codec, state FROM {table}")
_SELECT_DICTIONARIES = (
    "SELECT id, created_at, trained_on, level, data FROM zstd_dictionaries ORDER BY id")
_RESTORE_DICTIONARY = (
    "INSERT INTO zstd_dictionaries (id, created_at, trained_on, level, data) VALUES (?,?,?,?,?) "
    "ON CONFLICT (id) DO NOTHING")
_SELECT_DICTIONARY_DATA = "SELECT data FROM zstd_dictionaries WHERE id=?"
_RESTORE_ROW = (
    "INSERT INTO {table} (rowid, originator_id, originator_version, topic, codec, state, source,"
    " received_at, event_at, connection_id) VALUES (?,?,?,?,?,?,?,?,?,?)")
_RESTORE_STREAM = "INSERT OR IGNORE INTO streams (name, head) VALUES (?, 0)"

_SELECT_QUARANTINE = ("SELECT id, received_at, source, connection_id, reason, size, codec, raw "
                      "FROM quarantine ORDER BY id DESC")
_SELECT_QUARANTINE_NEWEST = f"{_SELECT_QUARANTINE} LIMIT ?"
# Opening: what a store has set up, and which schema it was written with.
_TABLE_NAMES = "SELECT name FROM sqlite_schema WHERE type='table'"
_HAS_SCHEMA_VERSION = "SELECT 1 FROM chatledger_meta WHERE key='schema_version'"
_GET_SCHEMA_VERSION = "SELECT value FROM chatledger_meta WHERE key='schema_version'"
_SET_FIRST_SCHEMA_VERSION = ("INSERT OR IGNORE INTO chatledger_meta (key, value) "
                             "VALUES ('schema_version', ?)")
# A local aggregate's events, in order (`EventLog.select_local`).
_SELECT_LOCAL = ("SELECT rowid, originator_version, topic, codec, state FROM {table} "
                 "WHERE originator_id=? AND source=0 ORDER BY originator_version")
# The compression dictionary: how many rows wait for it, what it learns from, what it re-encodes.
_COUNT_RAW = "SELECT COUNT(*) FROM {table} WHERE codec=? AND length(state)>=?"
_TRAINING_SAMPLES = ("SELECT codec, state, rowid FROM {table} WHERE length(state)>=? "
                     "ORDER BY rowid DESC LIMIT ?")
_RAW_ROWS = "SELECT rowid, state FROM {table} WHERE codec=? AND length(state)>=?"
_REENCODE_ROW = "UPDATE {table} SET codec=?, state=? WHERE rowid=?"
# `EventLog.stats`.
_PAYLOAD_SIZE_FUNCTION = "payload_size"
_SIZES = ("SELECT COUNT(*), COALESCE(SUM(payload_size(codec, state)), 0), "
          "COALESCE(SUM(length(state)), 0), COUNT(DISTINCT originator_id) FROM {table}")
_COUNT_BY_TYPE = "SELECT topic, COUNT(*) FROM {table} GROUP BY topic ORDER BY 2 DESC"
_COUNT_BY_SOURCE = "SELECT source, COUNT(*) FROM {table} GROUP BY source"
_COUNT_QUARANTINED = "SELECT COUNT(*) FROM quarantine"
_COUNT_DICTIONARIES = "SELECT COUNT(*) FROM zstd_dictionaries"
_COUNT_CHANNELS = ("SELECT COUNT(DISTINCT originator_id) FROM {table} "
                   "WHERE originator_id LIKE '%:%' AND source != ?")
_PAGE_SIZE = "PRAGMA page_size"
_PAGE_COUNT = "PRAGMA page_count"
# A local action inside a batch of them (`write_transaction` joined): undone alone on failure.
_SAVEPOINT = "SAVEPOINT chatledger_action"
_ROLLBACK_TO_SAVEPOINT = "ROLLBACK TO chatledger_action"
_RELEASE_SAVEPOINT = "RELEASE chatledger_action"
_INSERT_QUARANTINE = (
    "INSERT INTO quarantine (received_at, source, connection_id, reason, size, codec, raw) "
    "VALUES (?,?,?,?,?,?,?)")


@dataclass(frozen=True, slots=True)
class _TableStatements:
    """The statements over the events table, its name filled into the templates once, at open."""

    select_stored_rows: str
    select_entries: str
    restore_row: str
    select_local: str
    count_raw: str
    training_samples: str
    raw_rows: str
    reencode_row: str
    sizes: str
    count_by_type: str
    count_by_source: str
    count_channels: str
    # The integrity check of each table of the log, and the statement that forgets every other
    # table (its parameters: `log_tables`).
    check_log_tables: tuple[str, ...]
    forget_read_tables: str
    log_tables: tuple[str, ...]

    @classmethod
    def over(cls, table: str) -> _TableStatements:
        log_tables = (table, *_LOG_TABLES)
        return cls(
            select_stored_rows=_SELECT_STORED_ROWS.format(table=table),
            select_entries=_SELECT_ENTRIES.format(table=table),
            restore_row=_RESTORE_ROW.format(table=table),
            select_local=_SELECT_LOCAL.format(table=table),
            count_raw=_COUNT_RAW.format(table=table),
            training_samples=_TRAINING_SAMPLES.format(table=table),
            raw_rows=_RAW_ROWS.format(table=table),
            reencode_row=_REENCODE_ROW.format(table=table),
            sizes=_SIZES.format(table=table),
            count_by_type=_COUNT_BY_TYPE.format(table=table),
            count_by_source=_COUNT_BY_SOURCE.format(table=table),
            count_channels=_COUNT_CHANNELS.format(table=table),
            check_log_tables=tuple(_CHECK_TABLE.format(name) for name in log_tables),
            forget_read_tables=_FORGET_TABLES.format(",".join("?" * len(log_tables))),
            log_tables=log_tables,
        )


class EventLog:
    """Append-only log of one user's chat events and commands, in one SQLite file."""

    def __init__(
        self, datastore: APSWDatastore, *, compression: bool = True, key: bytes | None = None,
        stream_links: bool = True,
    ) -> None:
        self.datastore = datastore
        self.recorder = APSWProcessRecorder(datastore)
        self._keys = seal.StoreKeys(self.recorder.events_table_name)
        self._sql = _TableStatements.over(self.recorder.events_table_name)
        # Opening an existing store only reads, so it never waits for another process's writer.
        with datastore.transaction(commit=False) as cursor:
            # Before anything is created: a file from a newer version is left exactly as it is.
            version = self._check_schema_version(cursor)
            ready = self._is_set_up(cursor)
            if ready:
                # Before any dictionary is read (a sealed store keeps them encrypted); a missing
                # or wrong key is refused here, before anything is written.
                _unlock(self._keys, cursor, datastore, key, new=False)
                datastore.codec.load(cursor)
        if not ready:
            self.recorder.create_table()
            with datastore.transaction(commit=True) as cursor:
                cursor.execute(schema.QUARANTINE_TABLE)
                cursor.execute(_SET_FIRST_SCHEMA_VERSION, (schema.SCHEMA_VERSION,))
                _unlock(self._keys, cursor, datastore, key, new=True)
        else:
            if version is not None and version < schema.CHAIN_SCHEMA_VERSION:
                self._add_chain()
            if version is not None and version < schema.LINKS_SCHEMA_VERSION:
                self._add_links()
        self._finish_chain()
        # An upgraded file, or one appended to without links: compute them now.
        self.finish_links()
        # Whether appends write the streams' back-pointers (`links.py`). Only a measurement of
        # what they cost turns them off; the next open computes the ones left out.
        self.stream_links = stream_links
        self.compression = compression
        self.listeners: list[AppendListener] = []
        self._heads = StreamHeads(self.recorder.events_table_name)
        self._raw_rows: int | None = None
        self._encoder: ThreadPoolExecutor | None = None
        # The thread and cursor of the open `write_transaction`, which nested ones join.
        self._local_owner: int | None = None
        self._local_cursor: apsw.Cursor | None = None

    @classmethod
    def open(
        cls,
        path: str | Path,
        *,
        synchronous: Synchronous = "NORMAL",
        compression: bool = True,
        lock_timeout: float = 5.0,
        key: bytes | None = None,
        stream_links: bool = True,
    ) -> EventLog:
        """Open (or create) the log in the SQLite file at `path` (or ":memory:").

        `key` (32 bytes): the key of a sealed store, or of a new one to seal. A sealed store
        opened without its key, or with another, is refused (`StoreError`) before anything
        is written. `stream_links=False` appends without the streams' back-pointers (only to
        measure what they cost): the next open computes them."""
        name = str(path)
        existing = filesystem_path(name)
        if existing is not None and (links := symlinked_files(existing)):
            raise StoreError(f"refusing to open {existing}: {links[0].name} is a symbolic link "
                             "(a store's files must be plain files; remove the link)")
        if existing is not None and existing.exists() and existing.stat().st_size > 0:
            cls._inspect(existing)
        beside = _NewCompanions(existing)
        try:
            datastore = APSWDatastore(name, synchronous=synchronous, lock_timeout=lock_timeout)
        except OperationalError as error:  # first: it is a DatabaseError to the library too
            beside.remove_if_unused(error)
            raise StoreError(f"cannot open {name}: {_why_not_written(error)}") from error
        except DatabaseError as error:
            beside.remove_if_unused(error)
            raise StoreError(f"{name} is not a chatledger store ({error})") from error
        try:
            return cls(datastore, compression=compression, key=key, stream_links=stream_links)
        except (DatabaseError, OperationalError) as error:
            datastore.close()
            beside.remove_if_unused(error)
            raise StoreError(f"cannot open {name}: {_why_not_written(error)}") from error
        except StoreError:
            datastore.close()
            raise

    @classmethod
    def _inspect(cls, path: Path) -> None:
        """Refuse a file that is not a store this version can open, before touching it."""
        # A read-only connection to a WAL-mode file creates its -wal and -shm files and cannot
        # remove them again: a refused file would leave two files behind. When neither exists
        # (no process has the file open, none crashed with it open, no rollback journal is
        # waiting), the file alone is the whole database: read it as immutable, which creates
        # nothing beside it.
        alone = not any(Path(f"{path}{suffix}").exists()
                        for suffix in ("-wal", "-shm", "-journal"))
        name = f"file:{urllib.parse.quote(str(path))}?immutable=1" if alone else str(path)
        flags = (apsw.SQLITE_OPEN_READONLY | apsw.SQLITE_OPEN_NOFOLLOW
                 | (apsw.SQLITE_OPEN_URI if alone else 0))
        try:
            connection = apsw.Connection(name, flags=flags)
        except apsw.Error as error:
            raise StoreError(f"cannot open {path}: {error}") from error
        try:
            connection.set_busy_timeout(5_000)
            cls._check_schema_version(connection.cursor())
        except apsw.Error as error:
            raise StoreError(f"{path} is not a chatledger store ({error})") from error
        finally:
            connection.close()

    def _is_set_up(self, cursor: apsw.Cursor) -> bool:
        tables = {name for (name,) in cursor.execute(_TABLE_NAMES)}
        needed = {self.recorder.events_table_name, "streams", "zstd_dictionaries", "tracking",
                  "chatledger_meta", "quarantine"}
        return needed <= tables and cursor.execute(_HAS_SCHEMA_VERSION).fetchone() is not None

    @staticmethod
    def _check_schema_version(cursor: apsw.Cursor) -> int | None:
        """The file's schema version (None for a new file); refuses a newer one."""
        tables = {cast(str, name) for (name,) in cursor.execute(_TABLE_NAMES)}
        if "chatledger_meta" not in tables:
            if tables:
                raise StoreError(
                    "this is an SQLite database of something else (tables: "
                    f"{', '.join(sorted(tables)[:5])}); chatledger leaves it alone"
                )
            return None
        row = cursor.execute(_GET_SCHEMA_VERSION).fetchone()
        if row is None:
            return None
        (stored_version,) = row
        if int(stored_version) > schema.SCHEMA_VERSION:
            raise StoreError(
                f"this file was written by a newer chatledger (schema {stored_version}, this "
                f"version reads up to {schema.SCHEMA_VERSION}); upgrade chatledger to open it"
            )
        return int(stored_version)

    # -- the chain and the key -----------------------------------------------------------------

    def _add_chain(self) -> None:
        """Upgrade a version 1 file: the chain column, then its values (`_finish_chain`)."""
        table = self.recorder.events_table_name
        with self.datastore.transaction(commit=True) as cursor:
            if self._check_schema_version(cursor) != 1:
                return  # another process upgraded it meanwhile
            cursor.execute(schema.add_chain_column(table))
            cursor.execute(_SET_META, (seal.META_CHAIN_PENDING, 0))
            cursor.execute(_SET_META, ("schema_version", schema.CHAIN_SCHEMA_VERSION))

    def _add_links(self) -> None:
        """Upgrade a version 2 file: the links table and the streams' positions, computed
        afterwards (`finish_links`)."""
        with self.datastore.transaction(commit=True) as cursor:
            if self._check_schema_version(cursor) != schema.LINKS_SCHEMA_VERSION - 1:
                return  # another process upgraded it meanwhile
            cursor.execute(links.LINKS_TABLE)
            if "position" not in {name for _, name, *_ in cursor.execute(_STREAMS_COLUMNS)}:
                cursor.execute(schema.ADD_STREAM_POSITION)
            links.mark_pending(cursor, 0)
            cursor.execute(_SET_META, ("schema_version", schema.LINKS_SCHEMA_VERSION))

    def finish_links(self, on_page: Any = None) -> None:
        """Compute the streams' back-pointers still missing (an upgraded file), a page of the log
        per transaction; until they are whole, the audit reads scan the log as before."""
        if self.get_meta(links.META_LINKS_PENDING) is None:
            return
        links.finish_links(lambda: self.datastore.transaction(commit=True),
                           self.recorder.events_table_name, on_page)

    def _finish_chain(self, on_progress: Any = None) -> None:
        """Compute the chain of an upgraded file, a page per transaction: a kill loses at most
        the page under way, and the next open goes on from the last one committed."""
        if self.get_meta(seal.META_CHAIN_PENDING) is None:
            return
        writer = seal.ChainWriter(self.recorder.events_table_name)
        while True:
            with self.datastore.transaction(commit=True) as cursor:
                row = cursor.execute(_GET_META, (seal.META_CHAIN_PENDING,)).fetchone()
                if row is None:
                    return
                (pending_after,) = row
                after = int(pending_after)
                previous = writer.previous(cursor, after + 1)
                last, _, done = writer.rechain_page(cursor, after, previous or seal.GENESIS)
                if done < writer.PAGE:
                    cursor.execute(_DELETE_META, (seal.META_CHAIN_PENDING,))
                    return
                cursor.execute(_SET_META, (seal.META_CHAIN_PENDING, last))

    @property
    def sealed(self) -> bool:
        """Whether the store's payloads are encrypted."""
        return self.datastore.codec.cipher is not None

    def head(self) -> tuple[int, bytes]:
        """The last position of the log and its chain hash (0 and 32 zero bytes when empty)."""
        with self.datastore.transaction(commit=False) as cursor:
            position, chain = self.datastore.sealer.tail(cursor, self.recorder.events_table_name)
        if chain is None:
            raise StoreError("the log's chain is still being computed: open the store again")
        return position, chain

    def verify_chain(self, head: tuple[bytes, int] | None = None) -> seal.ChainReport:
        """Recompute the chain; the report names the first entry changed, removed, inserted or
        reordered. `head`: (hash, position) as `head()` gave it earlier, which must still hold.
        Needs no key: the chain covers the bytes as stored."""
        checker = seal.ChainChecker(self.recorder.events_table_name)
        return checker.check(lambda: self.datastore.transaction(commit=False), head)

    def rekey(self, new_key: bytes | None) -> None:
        """Re-encrypt every payload (log, quarantine, dictionaries) with `new_key`, or encrypt a
        plain store in place, in one transaction: killed, it leaves the store under its old key
        (run it again). None decrypts the store. The chain is computed again over the new
        bytes (after checking the old one: a broken chain is refused, not laundered), so the
        head changes: record it again."""
        try:
            self._keys.rekey(self.datastore, new_key)
        except seal.StoreKeyError as error:
            raise StoreError(str(error)) from None
        # The old bytes (plain text, after an encryption in place) are still on the file's free
        # pages and in the WAL: VACUUM writes the file afresh, the checkpoint empties the WAL.
        self.datastore.vacuum()
        self.datastore.checkpoint()

    # -- metadata ------------------------------------------------------------------------------

    def get_meta(self, key: str) -> Any:
        with self.datastore.transaction(commit=False) as cursor:
            row = cursor.execute(_GET_META, (key,)).fetchone()
        if row is None:
            return None
        (value,) = row
        return value

    def set_meta(self, key: str, value: Any) -> None:
        with self.datastore.transaction(commit=True) as cursor:
            cursor.execute(_SET_META, (key, value))

    # -- appending -----------------------------------------------------------------------------

    def append_events(
        self,
        events: Iterable[Payload | Any],
        *,
        source: schema.Source | str = "websocket",
        connection_id: str | None = None,
        received_at: int | None = None,
    ) -> AppendResult:
        """Append backend events, verbatim, in one transaction."""
        self._maybe_train()
        payloads = [ingest.payload_of(event) for event in events]
        entry_of = ingest.entry_of
        if len(payloads) >= _BACKGROUND_MIN_BATCH and self.compression and self.datastore.codec.active:
            # Compression (native code, no GIL) runs while this thread decodes the events.
            pending = self._encoder_pool().submit(
                self._encode, [p if type(p) is bytes else b"" for p in payloads]
            )
            items = cast(_Items, [entry_of(p) if type(p) is bytes else p for p in payloads])
            return self._write(items, pending.result(), source, connection_id, received_at)
        # One cast of the whole list (`payload_of` gives bytes or a Rejection, and mypy cannot
        # narrow `bytes` by `type() is`): none per event.
        items = cast(_Items, [entry_of(p) if type(p) is bytes else p for p in payloads])
        return self._write(items, None, source, connection_id, received_at)

    def append_event(self, event: Payload | Any, **envelope: Any) -> AppendResult:
        return self.append_events([event], **envelope)

    def append_query_channels(
        self,
        response: Payload | Any,
        *,
        filter: dict[str, Any] | None = None,
        sort: list[Any] | None = None,
        offset: int = 0,
        source: schema.Source | str = "query",
        received_at: int | None = None,
    ) -> AppendResult:
        """Append a query-channels response: each channel state, then the query's result
        (`offset`: where the answer's page begins in the query's list)."""
        entries = ingest.query_channels_entries(response, filter=filter, sort=sort,
                                                offset=offset)
        return self.append(entries, source=source, received_at=received_at)

    def append_channel_state(
        self, state: Payload | Any, *, source: schema.Source | str = "query",
        received_at: int | None = None,
    ) -> AppendResult:
        """Append the answer to a query of one channel."""
        return self.append(ingest.channel_query_entries(state), source=source, received_at=received_at)

    def append_sync(
        self, response: Payload | Any, *, last_sync_at: str | None = None,
        synced_at: str | None = None, source: schema.Source | str = "sync",
        received_at: int | None = None,
    ) -> AppendResult:
        """Append a `/sync` response: each missed event, then what the response said."""
        entries = ingest.sync_entries(response, last_sync_at=last_sync_at, synced_at=synced_at)
        return self.append(entries, source=source, received_at=received_at)

    def append(
        self,
        entries: Iterable[Entry | Rejection],
        *,
        source: schema.Source | str,
        connection_id: str | None = None,
        received_at: int | None = None,
    ) -> AppendResult:
        """Append prepared entries in one transaction; rejections go to the quarantine."""
        self._maybe_train()
        return self._write(list(entries), None, source, connection_id, received_at)

    def _write(
        self,
        items: list[Entry | Rejection],
        encoded: list[tuple[int, bytes]] | None,
        source: schema.Source | str,
        connection_id: str | None,
        received_at: int | None,
    ) -> AppendResult:
        """The append transaction. `encoded[i]` is (codec, stored bytes) of `items[i]`."""
        if encoded is None:
            # Compressed before taking the write lock: the costliest step needs no database.
            encoded = self._encode([i.payload if type(i) is Entry else b"" for i in items])
        src = _SOURCE_CODES.get(source) if type(source) is str else None
        if src is None:
            src = int(schema.Source.parse(source))
        when = now_us() if received_at is None else received_at
        heads = self._heads
        rows: list[EventRow] = []
        stored: list[int] = []  # indexes of the items that became rows
        quarantined: list[Quarantined] = []
        try:
            with self.datastore.transaction(commit=True) as cursor:
                if heads.sync(cursor):
                    self._on_foreign_commit(cursor)
                next_version = heads.next_version
                for index, item in enumerate(items):
                    if type(item) is Rejection:
                        quarantined.append(Quarantined(
                            index, item.reason,
                            self._quarantine(cursor, item, src, connection_id, when)))
                        continue
                    codec, state = encoded[index]
                    rows.append((
                        item.stream, next_version(cursor, item.stream), item.type, state, codec,
                        src, when, item.event_at, item.connection_id or connection_id,
                    ))
                    stored.append(index)
                positions = self.recorder.insert_rows(cursor, rows)
                if rows:
                    self._link(cursor, positions, [r[0] for r in rows], [r[2] for r in rows])
                heads.appended(cursor, len(rows), positions[-1] if positions else None)
                if self.listeners and rows:
                    appended = [AppendedEntry(p, items[i], when) for p, i in zip(positions, stored)]  # type: ignore[arg-type]  # `stored`: entries' indexes
                    for listener in self.listeners:
                        listener.appended(cursor, appended)
        except BaseException:
            # The transaction rolled back: the heads advanced in memory are not in the file.
            heads.invalidate()
            raise
        self._count_raw(rows)
        if len(stored) == len(items):
            return AppendResult(cast("list[int | None]", positions), quarantined)
        result: list[int | None] = [None] * len(items)
        for position, index in zip(positions, stored):
            result[index] = position
        return AppendResult(result, quarantined)

    def _link(self, cursor: apsw.Cursor, positions: Sequence[int], streams: Sequence[str],
              topics: Sequence[str]) -> None:
        """The back-pointers of backend entries just inserted (`links.py`): one small row each,
        appended at the end of their table, in the append's transaction."""
        if self.stream_links:
            cursor.executemany(links.INSERT_LINKS,
                               links.link(positions, streams, topics, self._heads.positions))
        else:
            links.mark_pending(cursor, positions[0] - 1)
            # The heads' positions stay right: the next open links the rows from the mark.
            last = self._heads.positions
            for position, stream in zip(positions, streams):
                last[stream] = position

    # -- the library's own aggregates (local commands) ------------------------------------------

    def write_transaction(self) -> _LocalTransaction:
        """A write transaction for recording commands: `with log.write_transaction() as cursor:`,
        then `record(cursor, ...)` as often as needed; everything commits (or not) together."""
        return _LocalTransaction(self)

    def record(
        self, cursor: apsw.Cursor, stored_events: Sequence[StoredEvent], *,
        received_at: int | None = None,
    ) -> list[int]:
        """Insert already-versioned events of this client's aggregates (source `local`) inside the
        caller's write transaction, and hand them to the listeners at once, so whatever reads
        them later in the same transaction (the read tables) already reflects them.

        The partial unique index on (originator_id, originator_version) of local rows is the
        optimistic concurrency check: a version written twice raises `IntegrityError` (and the
        transaction rolls back). Returns the positions, in order.
        """
        if not stored_events:
            return []
        when = now_us() if received_at is None else received_at
        # All in one native call: compressing each payload between the other work of a batch
        # found the dictionary out of the CPU's caches every time (16 µs a payload instead of 3).
        encoded = self._encode([s.state for s in stored_events])
        local = int(schema.Source.LOCAL)
        rows: list[EventRow] = [
            (originator_key(s.originator_id), s.originator_version, s.topic, state, codec, local,
             when, None, None)
            for s, (codec, state) in zip(stored_events, encoded)
        ]
        try:
            positions = self.recorder.insert_rows(cursor, rows)
        except apsw.ConstraintError as error:
            stream, *_ = rows[0]
            raise IntegrityError(
                f"a version of {stream} was recorded concurrently ({error})") from error
        self._count_raw(rows)
        if self.listeners:
            appended = [
                AppendedEntry(position, Entry(str(stream), topic, stored_event.state), when)
                for position, (stream, _, topic, *_), stored_event
                in zip(positions, rows, stored_events)
            ]
            for listener in self.listeners:
                listener.appended(cursor, appended)
        return positions

    def insert_local(self, stored_events: Sequence[StoredEvent]) -> list[int]:
        """`record` in a transaction of its own."""
        with self.write_transaction() as cursor:
            return self.record(cursor, stored_events)

    def select_local(self, cursor: apsw.Cursor, originator_id: str) -> list[tuple[int, StoredEvent]]:
        """The events of one of this client's aggregates, with their positions, read through
        the caller's cursor (so inside a write transaction it sees what was just recorded)."""
        decode = self.datastore.codec.decode
        return [
            (rowid, StoredEvent(originator_id=originator_id, originator_version=version,
                                topic=topic, state=decode(codec, state, rowid)))
            for rowid, version, topic, codec, state in cursor.execute(
                self._sql.select_local, (originator_id,))
        ]

    def _on_foreign_commit(self, cursor: apsw.Cursor) -> None:
        """Another connection wrote to the file: it may have trained a dictionary."""
        self.datastore.codec.refresh(cursor)
        self._raw_rows = None

    def _quarantine(
        self, cursor: apsw.Cursor, rejection: Rejection, source: int,
        connection_id: str | None, received_at: int,
    ) -> int:
        codec, raw = self.datastore.codec.encode_plain(rejection.payload)
        cipher = self.datastore.codec.cipher
        if cipher is None:
            cursor.execute(
                _INSERT_QUARANTINE,
                (received_at, source, connection_id, rejection.reason, len(rejection.payload), codec, raw),
            )
            return cursor.connection.last_insert_rowid()
        # Sealed: the id is chosen first, the bytes bound to it.
        (quarantine_id,) = cast("tuple[int]", cursor.execute(_NEXT_QUARANTINE_ID).fetchone())
        cursor.execute(_INSERT_QUARANTINE_WITH_ID, (
            quarantine_id, received_at, source, connection_id, rejection.reason,
            len(rejection.payload), codec, cipher.seal_numbered(b"qua1", quarantine_id, raw)))
        return quarantine_id

    # -- compression ---------------------------------------------------------------------------

    def _encode(self, payloads: list[bytes]) -> list[tuple[int, bytes]]:
        if not self.compression:
            return [(RAW, p) for p in payloads]
        return self.datastore.codec.encode_many(payloads)

    def _encoder_pool(self) -> ThreadPoolExecutor:
        if self._encoder is None:
            self._encoder = ThreadPoolExecutor(max_workers=1, thread_name_prefix="chatledger-zstd")
        return self._encoder

    def _count_raw(self, rows: Sequence[EventRow]) -> None:
        """Count the rows stored raw that a dictionary would compress (an over-count after a
        rollback only brings the training forward)."""
        if self._raw_rows is not None:
            self._raw_rows += sum(
                1 for r in rows if r[4] == RAW and len(r[3]) >= MIN_COMPRESS_SIZE
            )

    def _maybe_train(self) -> None:
        if not self.compression or self.datastore.codec.active:
            return
        if self._raw_rows is None:
            with self.datastore.transaction(commit=False) as cursor:
                (self._raw_rows,) = cast("tuple[int]", cursor.execute(
                    self._sql.count_raw,
                    (RAW, MIN_COMPRESS_SIZE),
                ).fetchone())
        if self._raw_rows >= TRAIN_AFTER_EVENTS:
            self.train_dictionary()

    def train_dictionary(self) -> int | None:
        """Train the compression dictionary on the newest payloads and re-encode raw rows with it.

        Returns the dictionary id, or None when there are too few payloads to learn from.
        Re-encoding changes only how bytes are kept: each decompresses to exactly what arrived.
        """
        table = self.recorder.events_table_name
        codec = self.datastore.codec
        dictionary_id: int | None = None
        try:
            with self.datastore.transaction(commit=True) as cursor:
                codec.refresh(cursor)  # another connection may have trained one already
                if codec.active:
                    return codec.dictionary_id
                samples = [
                    codec.decode(stored_codec, state, position)
                    for stored_codec, state, position in cursor.execute(
                        self._sql.training_samples,
                        (MIN_COMPRESS_SIZE, TRAIN_SAMPLE_EVENTS),
                    )
                ]
                if len(samples) < 64:
                    self._raw_rows = 0  # not again before as many new rows have come
                    return None
                try:
                    dictionary_id = codec.train(cursor, samples, trained_on=len(samples))
                except zstandard.ZstdError:
                    # Samples too uniform or too few to learn from: try again once as many new
                    # rows have come (not on every append: a training costs a few tenths of s).
                    self._raw_rows = 0
                    return None
                raw_rows = cast("list[tuple[int, bytes]]", cursor.execute(
                    self._sql.raw_rows, (RAW, MIN_COMPRESS_SIZE),
                ).fetchall())
                cursor.executemany(
                    self._sql.reencode_row,
                    (self._keys.reencoded(codec, rowid, state) for rowid, state in raw_rows),
                )
                if raw_rows:
                    # The stored bytes changed: their chain (and every one after) with them.
                    first_position, _ = raw_rows[0]
                    seal.ChainWriter(table).rechain_from(cursor, first_position)
        except BaseException:
            if dictionary_id is not None:
                codec.forget_since(dictionary_id)  # it never reached the file
            raise
        self._raw_rows = 0
        # The re-encoded rows left their pages mostly empty. The file is still small (training
        # happens early), so repacking it now is cheap and keeps it small for good.
        self.datastore.vacuum()
        return dictionary_id

    # -- reading -------------------------------------------------------------------------------

    def entries(
        self,
        *,
        stream: str | None = None,
        types: Sequence[str] = (),
        since: int | None = None,
        until: int | None = None,
        after: int | None = None,
        limit: int | None = None,
        newest_first: bool = False,
    ) -> list[LogEntry]:
        """Entries of the log, oldest first (or newest first), filtered.

        `since` and `until` are epoch microseconds compared with the event's own time, or with
        the time it arrived for entries that carry none; `after` is a log position (exclusive).
        """
        clauses, params = _filter_clauses(types, since, until)
        order = "DESC" if newest_first else "ASC"
        table = self.recorder.events_table_name
        with self.datastore.transaction(commit=False) as cursor:
            positions = None if stream is None else links.stream_positions(cursor, table, stream)
            if not positions:  # no stream asked for, a command's stream, or links not there
                if stream is not None:
                    clauses.append("originator_id=?")
                    params.append(stream)
                if after is not None:
                    clauses.append("rowid<?" if newest_first else "rowid>?")
                    params.append(after)
                where = f"WHERE {' AND '.join(clauses)} " if clauses else ""
                statement = f"{self._sql.select_entries} {where}ORDER BY rowid {order}"
                if limit is not None:
                    statement += " LIMIT ?"
                    params.append(limit)
                return self._entries(cursor.execute(statement, params))
            # A backend stream: only its own rows, found by its back-pointers.
            return self._entries_among(cursor, _ordered(positions, after, newest_first), clauses,
                                       params, limit, newest_first)

    def _entries_among(
        self, cursor: apsw.Cursor, positions: list[int], clauses: list[str], params: list[Any],
        limit: int | None, newest_first: bool,
    ) -> list[LogEntry]:
        """The entries at `positions` (in the order asked for) that pass the filters, at most
        `limit`: read a chunk of positions at a time, so a limit reads little more than it
        returns."""
        statement = (f"{self._sql.select_entries} WHERE "
                     f"{' AND '.join([*clauses, _AMONG])} "
                     f"ORDER BY rowid {'DESC' if newest_first else 'ASC'}")
        out: list[LogEntry] = []
        chunk = 64 if limit is None else max(limit, 16)
        start = 0
        while start < len(positions) and (limit is None or len(out) < limit):
            wanted = positions[start:start + chunk]
            out.extend(self._entries(cursor.execute(statement, [*params, json.dumps(wanted)])))
            start += chunk
            chunk = min(chunk * 4, 4_096)
        return out if limit is None else out[:limit]

    def _entries(self, rows: Iterable[tuple[Any, ...]]) -> list[LogEntry]:
        decode = self.datastore.codec.decode
        return [
            LogEntry(
                position=position,
                stream=stream,
                version=version,
                type=topic,
                source=_source_name(source),
                received_at=received_at,
                event_at=event_at,
                connection_id=connection_id,
                payload=decode(codec, state, position),
            )
            for (position, stream, version, topic, source, received_at, event_at,
                 connection_id, codec, state) in rows
        ]

    def iter_entries(self, *, batch: int = 1_000, **filters: Any) -> Iterator[LogEntry]:
        """All matching entries, read in short transactions of `batch` rows.

        Short read transactions let the WAL reset while a long scan runs.
        """
        after: int | None = filters.pop("after", None)
        stream = filters.get("stream")
        if stream is not None:
            # A backend stream's positions are found once, then read a batch at a time.
            with self.datastore.transaction(commit=False) as cursor:
                positions = links.stream_positions(cursor, self.recorder.events_table_name, stream)
            if positions:
                newest_first = bool(filters.get("newest_first", False))
                ordered = _ordered(positions, after, newest_first)
                clauses, params = _filter_clauses(filters.get("types", ()), filters.get("since"),
                                                  filters.get("until"))
                for start in range(0, len(ordered), batch):
                    with self.datastore.transaction(commit=False) as cursor:
                        page = self._entries_among(cursor, ordered[start:start + batch], clauses,
                                                   params, None, newest_first)
                    yield from page
                return
        while True:
            page = self.entries(after=after, limit=batch, **filters)
            yield from page
            if len(page) < batch:
                return
            after = page[-1].position

    # -- copies of the log (the archive) ------------------------------------------------------

    def stored_rows(
        self, *, after: int = 0, upto: int | None = None, limit: int = 1_000,
    ) -> list[StoredRow]:
        """Entries after position `after` (up to `upto`), exactly as kept: payloads still encoded.
        Read in one short transaction; page on with `after=rows[-1].position`."""
        statement = self._sql.select_stored_rows
        end = (1 << 62) if upto is None else upto
        with self.datastore.transaction(commit=False) as cursor:
            return [StoredRow(*row) for row in cursor.execute(statement, (after, end, limit))]

    def stored_dictionaries(self) -> list[StoredDictionary]:
        """The file's compression dictionaries, oldest first."""
        with self.datastore.transaction(commit=False) as cursor:
            return [StoredDictionary(*row) for row in cursor.execute(_SELECT_DICTIONARIES)]

    def decode_payload(self, codec: int, state: bytes, position: int | None = None) -> bytes:
        """The bytes that arrived, from a payload as kept (see `StoredRow`); a sealed store's
        payloads need their log `position` (the ciphertext is bound to it)."""
        return self.datastore.codec.decode(codec, state, position)

    def restore(self, dictionaries: Sequence[StoredDictionary], rows: Sequence[StoredRow]) -> int:
        """Write entries exactly as another copy of this log kept them, at their positions, in
        one transaction: the dictionaries they need first (an id already here must hold the
        same bytes), then the rows, which must come after everything already in the log, in
        order. Listeners are not called: the read tables catch up by a rebuild. Returns the
        last position written.
        """
        table = self.recorder.events_table_name
        try:
            with self.datastore.transaction(commit=True) as cursor:
                for dictionary in dictionaries:
                    (found,) = (cursor.execute(_SELECT_DICTIONARY_DATA,
                                               (dictionary.id,)).fetchone() or (None,))
                    if found is not None and bytes(found) != dictionary.data:
                        raise StoreError(
                            f"dictionary {dictionary.id} differs from the one in this file")
                    cursor.execute(_RESTORE_DICTIONARY, (dictionary.id, dictionary.created_at,
                                                         dictionary.trained_on, dictionary.level,
                                                         dictionary.data))
                last = self.recorder.max_notification_id_in(cursor) or 0
                for row in rows:
                    if row.position <= last:
                        raise StoreError(
                            f"entry {row.position} does not come after position {last} of the log")
                    last = row.position
                # The streams' last positions before these rows, for their back-pointers.
                self._heads.invalidate()
                self._heads.sync(cursor)
                cursor.executemany(self._sql.restore_row, [
                    (r.position, r.stream, r.version, r.type, r.codec, r.state, r.source,
                     r.received_at, r.event_at, r.connection_id) for r in rows])
                local = int(schema.Source.LOCAL)
                backend = [r for r in rows if r.source != local]
                if backend:
                    self._link(cursor, [r.position for r in backend], [r.stream for r in backend],
                               [r.type for r in backend])
                cursor.executemany(_RESTORE_STREAM, [
                    (name,) for name in dict.fromkeys(r.stream for r in rows if r.source != local)])
                # The heads are a cache of the log: reload them (the tail scan finds the rows
                # just written) and write them down at the new end.
                self._heads.invalidate()
                self._heads.sync(cursor)
                self._heads.persist(cursor, last)
                self.datastore.codec.refresh(cursor)
                if rows:
                    # The chain covers restored rows too, from the first of them on: later
                    # appends continue it, and `verify --chain` finds it whole.
                    seal.ChainWriter(table).rechain_from(cursor, rows[0].position)
        except BaseException:
            self._heads.invalidate()
            raise
        self._raw_rows = None
        return last

    def quarantine(self, *, limit: int | None = None) -> list[dict[str, Any]]:
        """Refused input, newest first: the reason and the bytes as they arrived."""
        statement, params = ((_SELECT_QUARANTINE, ()) if limit is None
                             else (_SELECT_QUARANTINE_NEWEST, (limit,)))
        decode = self._keys.quarantined
        with self.datastore.transaction(commit=False) as cursor:
            return [
                {
                    "id": qid,
                    "received_at": received_at,
                    "source": _source_name(source),
                    "connection_id": connection_id,
                    "reason": reason,
                    "size": size,
                    "raw": decode(self.datastore.codec, qid, codec, raw),
                }
                for qid, received_at, source, connection_id, reason, size, codec, raw in cursor.execute(
                    statement, params
                )
            ]

    def max_position(self) -> int:
        return self.recorder.max_notification_id() or 0

    def damage(self) -> Damage | None:
        """SQLite's integrity check of the whole file, and of the log's own tables when it finds
        anything; None when the file is intact. Reads every page: as long as a rebuild."""
        problems = self._integrity_problems(_CHECK_FILE)
        if not problems:
            return None
        log_hit = any(self._integrity_problems(check) for check in self._log_table_checks())
        return Damage(problems, log_hit)

    def _log_table_checks(self) -> list[str]:
        return list(self._sql.check_log_tables)

    def forget_read_tables(self) -> None:
        """Remove every table that is not the log's from the file (the read tables, which the
        next open rebuilds from the log), and repack the file without their pages.

        For a file whose damage is in read tables only: SQLite cannot drop a damaged table (it
        reads the pages it frees), but it can forget one, and VACUUM writes a new file from the
        tables it still knows, leaving the damaged pages behind. Close the log afterwards."""
        with self.datastore.transaction(commit=True) as cursor:
            (version,) = cast("tuple[int]", cursor.execute(_SCHEMA_VERSION).fetchone())
            cursor.execute(_WRITABLE_SCHEMA_ON)
            cursor.execute(self._sql.forget_read_tables, self._sql.log_tables)
            cursor.execute(_WRITABLE_SCHEMA_OFF)
            # Other connections learn of the change by the schema version, as after DROP TABLE.
            cursor.execute(_SET_SCHEMA_VERSION.format(int(version) + 1))
        self.datastore.vacuum()

    def _integrity_problems(self, check: str) -> list[str]:
        """What an integrity check statement reports ([] for "ok"); a check that SQLite stops
        with a corruption error reports that error."""
        try:
            with self.datastore.transaction(commit=False) as cursor:
                problems = [problem for (problem,) in cursor.execute(check)]
        except (DatabaseError, apsw.CorruptError) as error:
            return [str(error)]
        return [] if problems == ["ok"] else problems

    def stats(self) -> dict[str, Any]:
        """Counts and sizes: entries by source and type, streams, payload and file bytes."""
        with self.datastore.transaction(commit=False) as cursor:
            payload_size = cast("apsw.ScalarProtocol",
                                _sealed_payload_size if self.sealed else _payload_size)
            cursor.connection.create_scalar_function(_PAYLOAD_SIZE_FUNCTION, payload_size, 2,
                                                     deterministic=True)
            events, payload, stored, streams = cast(
                "tuple[int, int, int, int]", cursor.execute(self._sql.sizes).fetchone())
            by_type = dict(cast("list[tuple[str, int]]",
                                cursor.execute(self._sql.count_by_type).fetchall()))
            by_source = {
                _source_name(source): count
                for source, count in cursor.execute(self._sql.count_by_source)
            }
            (quarantined,) = cast("tuple[int]", cursor.execute(_COUNT_QUARANTINED).fetchone())
            (dictionaries,) = cast("tuple[int]", cursor.execute(_COUNT_DICTIONARIES).fetchone())
            (channels,) = cast("tuple[int]", cursor.execute(
                self._sql.count_channels, (schema.Source.LOCAL,)).fetchone())
            (page_size,) = cast("tuple[int]", cursor.execute(_PAGE_SIZE).fetchone())
            (pages,) = cast("tuple[int]", cursor.execute(_PAGE_COUNT).fetchone())
        file_bytes = page_size * pages
        if self.datastore.path is not None:
            file_bytes = sum(
                path.stat().st_size
                for path in (self.datastore.path, Path(f"{self.datastore.path}-wal"))
                if path.exists()
            )
        return {
            "events": events,
            "streams": streams,
            "channels": channels,
            "quarantined": quarantined,
            "payload_bytes": payload,
            "stored_payload_bytes": stored,
            "compression_ratio": round(payload / stored, 2) if stored else None,
            "dictionaries": dictionaries,
            "file_bytes": file_bytes,
            "by_source": by_source,
            "by_type": by_type,
        }

    # -- lifecycle -----------------------------------------------------------------------------

    def checkpoint(self) -> None:
        self.datastore.checkpoint()

    def close(self) -> None:
        if not self.datastore.closed and self._heads.pending:
            # Write the heads down so the next open need not scan for them. They are a cache of
            # the log: if another writer holds the file, the next open rebuilds them instead.
            try:
                with self.datastore.transaction(commit=True) as cursor:
                    self._heads.sync(cursor)
                    self._heads.persist(cursor, self.recorder.max_notification_id_in(cursor) or 0)
            except OperationalError:
                pass
        if self._encoder is not None:
            self._encoder.shutdown()
            self._encoder = None
        self.datastore.close()

    def __enter__(self) -> EventLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _LocalTransaction:
    """The write transaction of `EventLog.write_transaction`: on a rollback, the in-memory
    stream heads are forgotten (as after a failed append), and the listeners told.

    Nested in another one of the same thread (`ChatStore.batch`), it joins it as a savepoint:
    one commit for all; a nested one that fails is undone alone.
    """

    __slots__ = ("_log", "_inner", "_joined")

    def __init__(self, log: EventLog) -> None:
        self._log = log
        self._inner: Any = None
        self._joined = False

    def __enter__(self) -> apsw.Cursor:
        log = self._log
        if log._local_owner == threading.get_ident() and log._local_cursor is not None:
            # A savepoint: an action that fails inside a batch is undone alone.
            self._joined = True
            log._local_cursor.execute(_SAVEPOINT)
            return log._local_cursor
        # The user's own commands count towards the compression dictionary's training as the
        # backend's events do (a store used offline may hold little else); training needs a
        # transaction of its own, so it happens before this one begins.
        log._maybe_train()
        # No stream heads to sync: commands are indexed by the aggregate index, not `streams`,
        # and an append syncs the heads itself. (A dictionary another process trained meanwhile
        # is not needed either: each row records the dictionary that encoded it.)
        self._inner = log.datastore.transaction(commit=True)
        cursor = self._inner.__enter__()
        log._local_owner, log._local_cursor = threading.get_ident(), cursor
        return cursor

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        if self._joined:
            cursor = self._log._local_cursor
            assert cursor is not None
            if exc is not None:
                cursor.execute(_ROLLBACK_TO_SAVEPOINT)
                self._rolled_back()
            cursor.execute(_RELEASE_SAVEPOINT)
            return
        log = self._log
        log._local_owner, log._local_cursor = None, None
        try:
            self._inner.__exit__(exc_type, exc, tb)
        except BaseException:
            self._rolled_back()
            raise
        if exc is not None:
            self._rolled_back()

    def _rolled_back(self) -> None:
        self._log._heads.invalidate()
        for listener in self._log.listeners:
            forget = getattr(listener, "rolled_back", None)
            if forget is not None:
                forget()


def _filter_clauses(
    types: Sequence[str], since: int | None, until: int | None,
) -> tuple[list[str], list[Any]]:
    """The WHERE clauses (and their parameters) of `entries`' type and time filters."""
    clauses: list[str] = []
    params: list[Any] = []
    if types:
        clauses.append(f"topic IN ({','.join('?' * len(types))})")
        params.extend(types)
    if since is not None:
        clauses.append("COALESCE(event_at, received_at)>=?")
        params.append(since)
    if until is not None:
        clauses.append("COALESCE(event_at, received_at)<=?")
        params.append(until)
    return clauses, params


def _ordered(positions: list[int], after: int | None, newest_first: bool) -> list[int]:
    """A stream's positions (ascending) past the `after` cursor, in the order asked for."""
    if after is not None:
        positions = [p for p in positions if (p < after if newest_first else p > after)]
    return positions[::-1] if newest_first else positions


def _payload_size(codec: int, state: bytes) -> int:
    if codec == RAW:
        return len(state)
    size = zstandard.frame_content_size(state)
    return size if size >= 0 else len(state)


def _unlock(keys: seal.StoreKeys, cursor: apsw.Cursor, datastore: APSWDatastore, key: bytes | None,
            *, new: bool) -> None:
    try:
        keys.unlock(cursor, datastore, key, new=new)
    except seal.StoreKeyError as error:
        raise KeyRequired(str(error)) from None


def _sealed_payload_size(codec: int, state: bytes) -> int:
    # The frame header is encrypted: the compressed size (the nonce and tag taken off) stands in.
    return len(state) - seal.NONCE_SIZE - 16


def _source_name(value: int) -> str:
    try:
        return schema.Source(value).name.lower()
    except ValueError:
        return str(value)


__all__ = [
    "AppendListener",
    "AppendResult",
    "AppendedEntry",
    "EventLog",
    "KeyRequired",
    "LogEntry",
    "Quarantined",
    "StoreError",
    "StoredDictionary",
    "StoredRow",
]
