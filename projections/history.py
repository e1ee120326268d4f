"""The past of the read tables: any state as of a log position or a time, and why a message is
what it is.

- `as_of(store, position=...)` / `as_of(store, time=...)` replays the log up to that point into a
  private in-memory database and answers the same queries as the live store (`PastStore`).
- `explain(store, message_id)` lists every log entry that changed a message, with what it changed.

Both only read the store's file: a file store is attached read-only (`file:...?mode=ro`) to a
private in-memory connection, and everything is read in one read transaction, so appends made
meanwhile (by this process or another) neither disturb nor fail them.

Time. A point in time means "the log as it stood when the last entry received at or before that
time had been appended": the position is the highest one whose `received_at` (when the entry
arrived, in this store's clock) is at or before the time. Arrival order is position order, so this
is the state the live store showed at that moment, and a batch (one transaction, one
`received_at`) is never split. The event's own time (`created_at` in the payload) is not used:
events arrive late and out of order (a `/sync` after a reconnect brings hours-old events), so
"entries whose event time is before T" is not a state the store was ever in.

A position inside a batch (`ingest_many`, a query or sync response) gives the state after that
entry, which no reader of the live store saw (the batch committed at once) but which is what the
log says.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, cast

import apsw
import msgspec

from chatledger.eventstore import commands, ingest, links
from chatledger.eventstore.codec import PayloadCodec
from chatledger.eventstore.datastore import STATEMENT_CACHE_SIZE
from chatledger.eventstore.wire import decode_stored
from chatledger.eventstore.log import EventLog, StoreError
from chatledger.eventstore.schema import Source, events_table
from chatledger.projections.item import Item
from chatledger.projections.projector import Projector
from chatledger.projections.engine import (
    ProgressCallback, collector_paused, create_tables, drop_tables, replay)
from chatledger.projections.queries import ReadAPI, ReadModel
from chatledger.projections.schema import INDEXES, SLOT_EVENT, SLOT_PINNED_BASE, SLOT_RESPONSE



class HasLog(Protocol):
    """What the past is read from: a store's log and its user (`projections.store.ChatStore`
    is one). A protocol, so that this module and the store it serves need not import each other."""

    @property
    def log(self) -> EventLog: ...

    @property
    def user_id(self) -> str | None: ...

_ROWS_AT = ("SELECT rowid, topic, originator_id, source, codec, state, received_at, event_at "
            "FROM {table} WHERE rowid IN (SELECT value FROM json_each(?)) ORDER BY rowid")
# A partial index holds exactly the local commands' rows: reading through it never touches the
# backend's entries.
_LOCAL_POSITIONS = "SELECT rowid FROM {table} INDEXED BY {index} WHERE source=0 AND rowid<=?"
_LOCAL_ROWS = ("SELECT rowid, originator_id, topic, codec, state, received_at, event_at "
               "FROM {table} INDEXED BY {index} WHERE source=0 AND rowid<=?")
_MESSAGE_CIDS = ("SELECT cid FROM {schema}messages WHERE id=?1 "
                 "UNION SELECT cid FROM {schema}deleted_messages WHERE id=?1")
# SQLite reads this backwards from the end of the table (rowid order) and stops at the first
# match (its min/max optimisation: `EXPLAIN QUERY PLAN` says SEARCH, not SCAN).
_LAST_RECEIVED_BY = "SELECT MAX(rowid) FROM {table} WHERE received_at<=?"
_MAX_POSITION = "SELECT MAX(rowid) FROM {table}"
# A scan of the log for some streams (`_StreamReader`), and for the entries naming a message
# (`_named_by`): a chunk of positions at a time.
_STREAM_ROWS = ("SELECT rowid, topic, originator_id, source, codec, state, received_at, event_at "
                "FROM {table} WHERE rowid>? AND rowid<=? "
                "AND originator_id IN (SELECT value FROM json_each(?)) ORDER BY rowid LIMIT ?")
_NAMING_ROWS = ("SELECT rowid, originator_id, topic, source, codec, state FROM {table} "
                "WHERE rowid>? AND rowid<=? ORDER BY rowid LIMIT ?")
_PAYLOAD_AT = "SELECT codec, state FROM {table} WHERE rowid=?"
_REACTIONS_OF = ("SELECT type, user_id, score FROM reactions WHERE message_id=? "
                 "ORDER BY type, user_id")
# The scratch database: the live file attached read-only, each read in one transaction.
_ATTACH_LIVE = "ATTACH DATABASE ? AS live"
_BEGIN = "BEGIN"
_ROLLBACK = "ROLLBACK"
_COMMIT = "COMMIT"
_QUERY_ONLY = "PRAGMA query_only=1"
# `_copy_payloads`: the live table's columns, and its rows at some positions, copied as they are.
_TABLE_COLUMNS = "PRAGMA main.table_info({table})"
_ROWS_WITH_COLUMNS = ("SELECT rowid, {columns} FROM {table} "
                      "WHERE rowid IN (SELECT value FROM json_each(?))")
_COPY_ROWS = "INSERT INTO main.{table} (rowid, {columns}) VALUES ({placeholders})"
_MEMORY_FLAGS = apsw.SQLITE_OPEN_READWRITE | apsw.SQLITE_OPEN_CREATE | apsw.SQLITE_OPEN_URI
_CHUNK = 2_000
# A log row as `_ROWS_AT` and `_STREAM_ROWS` read it: (position, topic, stream, source, codec,
# state as stored, received_at, event_at).
_StoredRow = tuple[int, str, str, int, int, bytes, int, "int | None"]
# `_NAMING_ROWS`: (position, stream, topic, source, codec, state as stored).
_NamingRow = tuple[int, str, str, int, int, bytes]
_COPY_CHUNK = 500


# -- reading the log in one snapshot ----------------------------------------------------------------


def readonly_uri(path: Path) -> str:
    """An SQLite URI that opens `path` read-only, whatever characters the path holds.

    A bare `file:{path}` breaks on `?`, `#` and `%` in a directory name (SQLite reads them as the
    query, the fragment and escapes); a percent-encoded absolute URI does not.
    """
    return f"{Path(path).resolve().as_uri()}?mode=ro"


@contextmanager
def _reading(store: HasLog, scratch: apsw.Connection) -> Iterator[tuple[apsw.Cursor, str]]:
    """A cursor that reads the store's log in one read transaction, and the log table's name as
    that cursor sees it. The scratch connection is inside a transaction meanwhile too.

    A file store is attached read-only to the scratch connection as `live`: the cursor is the
    scratch connection's, and stays usable for payloads after the block (the attachment stays).
    An in-memory store can be reached only through its own connection: the cursor is a reader
    transaction of its datastore (the scratch connection is then a separate database).
    """
    log = store.log
    table = log.recorder.events_table_name
    target = scratch.cursor()
    path = log.datastore.path
    if path is not None:
        target.execute(_ATTACH_LIVE, (readonly_uri(path),))
        target.execute(_BEGIN)
        try:
            yield target, f"live.{table}"
        except BaseException:
            target.execute(_ROLLBACK)
            raise
        target.execute(_COMMIT)
        return
    with log.datastore.transaction(commit=False) as source:
        target.execute(_BEGIN)
        try:
            yield source, table
        except BaseException:
            target.execute(_ROLLBACK)
            raise
        target.execute(_COMMIT)


def _max_position(source: apsw.Cursor, table: str) -> int:
    ((last,),) = cast("list[tuple[int | None]]",
                      source.execute(_MAX_POSITION.format(table=table)).fetchall())
    return last or 0


def _position_at(source: apsw.Cursor, table: str, time: int) -> int:
    """The last position received at or before `time` (epoch microseconds); 0 if none was.

    Read from the end of the log backwards, stopping at the first entry received by then: it
    costs the entries that arrived after `time`, not the whole log (a time an hour ago reads an
    hour of entries; the middle of a 1,000,000-entry log, 0.24-0.46 s). Not a binary search:
    arrival times are not monotonic in position. `received_at` is the wall clock at the append,
    which the system or the user can set back, or a time the appender gave
    (`append(received_at=...)`, an import); the answer must be the definition's (the highest
    such position), not an approximation of it.
    """
    ((last,),) = source.execute(_LAST_RECEIVED_BY.format(table=table), (time,)).fetchall()
    return int(last or 0)


def position_at(store: HasLog, time: int) -> int:
    """The log position that stood at `time` (see the module doc); 0 before the first entry."""
    log = store.log
    table = log.recorder.events_table_name
    with log.datastore.transaction(commit=False) as cursor:
        return _position_at(cursor, table, time)


# -- point in time -----------------------------------------------------------------------------------


class _ScratchDatastore:
    """What `ReadModel` needs of a datastore (read transactions and the codec), over the private
    in-memory database of a `PastStore`."""

    def __init__(self, connection: apsw.Connection, codec: PayloadCodec) -> None:
        self.connection = connection
        self.codec = codec
        self.closed = False
        self._lock = threading.RLock()

    @contextmanager
    def transaction(self, *, commit: bool) -> Iterator[apsw.Cursor]:
        if commit:
            raise StoreError("a store as of a past position is read-only")
        with self._lock:
            if self.closed:
                raise StoreError("this view of the past is closed")
            cursor = self.connection.cursor()
            outer = not self.connection.in_transaction
            if outer:
                cursor.execute(_BEGIN)
            try:
                yield cursor
            finally:
                if outer and self.connection.in_transaction:
                    cursor.execute(_ROLLBACK)

    def close(self) -> None:
        with self._lock:
            if not self.closed:
                self.closed = True
                self.connection.close()


class PastStore(ReadAPI):
    """The read tables as they stood at a log position: the read methods of `ChatStore`, with the
    same names and results, over a private in-memory copy. Read-only; close it when done (it
    holds a read-only handle on the store's file). A context manager."""

    def __init__(
        self, connection: apsw.Connection, codec: PayloadCodec, own_user_id: str | None,
        position: int, time: int | None = None, cids: Sequence[str] | None = None,
    ) -> None:
        self.position = position  # the last log entry the tables reflect (0: none)
        self.time = time  # the time asked for, when the position came from one
        # The channels it answers for (None: all); see `as_of`.
        self.cids = None if cids is None else tuple(cids)
        self.user_id = own_user_id
        self._datastore = _ScratchDatastore(connection, codec)
        self.read = ReadModel(self._datastore, own_user_id)  # type: ignore[arg-type]

    @property
    def closed(self) -> bool:
        return self._datastore.closed

    def close(self) -> None:
        self._datastore.close()

    def __enter__(self) -> PastStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<PastStore of {self.user_id!r} as of position {self.position}>"


def as_of(
    store: HasLog, *, position: int | None = None, time: int | None = None,
    on_progress: ProgressCallback | None = None, cids: Sequence[str] | None = None,
    message_id: str | None = None,
) -> PastStore:
    """The read tables as of a log position, or as of a time (epoch microseconds; see the module
    doc for what a time means). Give exactly one.

    Replays entries 1..position with a fresh projector into a private in-memory database; the
    replay reads the log in chunks, so memory holds the tables, never the payloads. Raises
    `ValueError` for a negative position or one past the end of the log.

    `cids`: only these channels are asked about. The replay then reads only the entries of
    their streams, of the user's stream (`@user`) and of the local commands, found by the
    streams' back-pointers (`eventstore/links.py`): it costs what the channels hold, not the
    length of the log. Entries that change nothing a channel shows (presence, profiles, typing:
    `links.PROFILE_TOPICS`) are not read. What the result says of those channels (`channel`,
    `messages`, a message of theirs, its reactions) is what the whole replay says; of other
    channels, and of users, it knows only what these entries said. A store whose links are not
    computed yet replays everything.

    `message_id` (instead of `cids`): only this message is asked about; the channels are those
    the read tables file it under (as `explain` finds them), and if the replay files it under
    another one, it is replayed again with that one too. A message the read tables do not know
    replays everything.
    """
    if (position is None) == (time is None):
        raise ValueError("give either a log position or a time, not both and not neither")
    if position is not None and (isinstance(position, bool) or position < 0):
        raise ValueError(f"a log position is a whole number from 0 up, not {position!r}")
    if cids is not None and message_id is not None:
        raise ValueError("give the channels or the message asked about, not both")
    log = store.log
    codec = log.datastore.codec
    scratch = apsw.Connection(":memory:", flags=_MEMORY_FLAGS,
                              statementcachesize=STATEMENT_CACHE_SIZE)
    try:
        with _reading(store, scratch) as (source, table):
            end = _max_position(source, table)
            if time is not None:
                position = _position_at(source, table, time)
            assert position is not None
            if position > end:
                raise ValueError(f"log position {position:,} is past the end of the log "
                                 f"(its last position is {end:,})")
            target = scratch.cursor()
            asked = (None if cids is None else [*cids]) if message_id is None else (
                _message_cids(source, table, message_id))
            while True:
                create_tables(target, with_indexes=False)
                scope = None if asked is None else _scope(source, table, asked, position)
                with collector_paused():
                    if scope is None:
                        replay(source, target, table, codec, Projector(store.user_id),
                               upto=position, on_progress=on_progress)
                    else:
                        _replay_positions(source, table, target, codec,
                                          Projector(store.user_id), scope, on_progress)
                if message_id is None or scope is None or asked is None:
                    break
                # Filed under a channel whose stream was not replayed: again, with it.
                missing = [cid for cid in _message_cids(target, "", message_id) or ()
                           if cid not in asked]
                if not missing:
                    break
                asked.extend(missing)
                drop_tables(target)
            for ddl in INDEXES:
                target.execute(ddl)
            if log.datastore.path is None:
                _copy_payloads(source, table, target)
        # Whatever reads the copy must not write to it (nor, through it, to the live file).
        scratch.execute(_QUERY_ONLY)
    except BaseException:
        scratch.close()
        raise
    return PastStore(scratch, codec, store.user_id, position, time,
                     cids if message_id is None else asked)


# -- reading only some streams ----------------------------------------------------------------------


def _split(table: str) -> tuple[str, str]:
    """("live.", "stored_events") for "live.stored_events"; ("", name) for a bare name."""
    schema, _, bare = table.rpartition(".")
    return (f"{schema}." if schema else ""), bare


def _stream_positions(
    source: apsw.Cursor, table: str, stream: str, upto: int, *, leave_out: int = 0,
) -> list[int] | None:
    schema, bare = _split(table)
    return links.stream_positions(source, bare, stream, upto=upto, schema=schema,
                                  leave_out=leave_out)


def _local_positions(source: apsw.Cursor, table: str, upto: int) -> list[int]:
    """Positions of every entry of the local commands (through their index: as many as there
    are commands' events, whatever the length of the log)."""
    _, bare = _split(table)
    return [p for (p,) in source.execute(
        _LOCAL_POSITIONS.format(table=table, index=f"{bare}_aggregate"), (upto,))]


def _message_cids(source: apsw.Cursor, table: str, message_id: str) -> list[str] | None:
    """The channels the read tables (of `table`'s file) file a message under, a hard-deleted
    one too; None when they do not know it (or there are no read tables)."""
    schema, _ = _split(table)
    try:
        found = [str(cid) for (cid,) in source.execute(_MESSAGE_CIDS.format(schema=schema),
                                                       (message_id,)).fetchall() if cid]
    except apsw.SQLError:
        return None  # no read tables in this file (yet)
    return found or None


def _scope(source: apsw.Cursor, table: str, cids: list[str], upto: int) -> list[int] | None:
    """The positions, in order, of what a replay for these channels reads: their streams, the
    user's stream and the local commands, less the entries that change nothing a channel shows
    (`links.PROFILE`); None when the links cannot tell."""
    wanted: set[int] = set()
    for stream in dict.fromkeys([*cids, ingest.USER_STREAM]):
        positions = _stream_positions(source, table, stream, upto, leave_out=links.PROFILE)
        if positions is None:
            return None
        wanted.update(positions)
    wanted.update(_local_positions(source, table, upto))
    return sorted(wanted)


def _rows_at(
    source: apsw.Cursor, table: str, positions: Sequence[int],
) -> Iterator[list[_StoredRow]]:
    """The rows at these positions (ascending), a chunk at a time: (position, topic, stream,
    source, codec, state, received_at, event_at)."""
    reader = source.connection.cursor()
    statement = _ROWS_AT.format(table=table)
    for start in range(0, len(positions), _CHUNK):
        yield cast("list[_StoredRow]", reader.execute(
            statement, (json.dumps(positions[start:start + _CHUNK]),)).fetchall())


def _replay_positions(
    source: apsw.Cursor, table: str, target: apsw.Cursor, codec: PayloadCodec,
    projector: Projector, positions: Sequence[int], on_progress: ProgressCallback | None,
) -> None:
    decode = codec.decode
    done = 0
    for rows in _rows_at(source, table, positions):
        projector.apply(target, [
            Item(position, topic, stream, decode(codec, state, position), received_at)
            for position, topic, stream, _, codec, state, received_at, _ in rows])
        done += len(rows)
        if on_progress is not None:
            on_progress(done, len(positions))


# Every column of the read tables that names the log entry holding an object.
_REFERENCED_POSITIONS = """
    SELECT position FROM messages UNION SELECT position FROM channels WHERE position IS NOT NULL
    UNION SELECT position FROM users UNION SELECT position FROM drafts
    UNION SELECT position FROM polls UNION SELECT position FROM channel_queries
    UNION SELECT position FROM reactions UNION SELECT position FROM reminders
    UNION SELECT position FROM user_mutes UNION SELECT position FROM channel_mutes
    UNION SELECT value FROM connection WHERE key='me_position'"""


def _copy_payloads(source: apsw.Cursor, table: str, target: apsw.Cursor) -> None:
    """For an in-memory store, whose log no other connection can attach: copy the payload rows
    the tables point at (as stored, still compressed) into the scratch database's own
    `stored_events`, which is all `ReadModel` reads of the log. Bounded by the number of objects
    in the tables, not by the length of the log."""
    # The live table's own layout, so that whatever a query reads of it is there.
    target.execute(events_table(f"main.{table}")[0])
    names = [name for _, name, *_ in target.execute(_TABLE_COLUMNS.format(table=table))]
    columns = ", ".join(str(name) for name in names)
    select = _ROWS_WITH_COLUMNS.format(columns=columns, table=table)
    # A row is the rowid and the columns.
    insert = _COPY_ROWS.format(table=table, columns=columns,
                               placeholders=", ".join("?" * (len(names) + 1)))
    positions = [p for (p,) in target.execute(_REFERENCED_POSITIONS).fetchall() if p is not None]
    for start in range(0, len(positions), _COPY_CHUNK):
        rows = source.execute(
            select, (json.dumps(positions[start:start + _COPY_CHUNK]),)).fetchall()
        if rows:
            target.executemany(insert, rows)


# -- explain ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Explanation:
    """One log entry that changed a message, and what it changed.

    `changes` maps a field to (before, after). The fields are the message's row (times in epoch
    microseconds, flags as booleans, `type`, `deleted_at`, `reply_count`, `local_state`, ...),
    the other top-level fields of the message object the row points at (`text`, `attachments`,
    `reaction_counts`, ...), and `reactions`: {"type(user)": score} before and after. When the
    entry stored the message, every field is (None, value); when it removed it, (value, None).
    """

    position: int
    type: str
    source: str
    received_at: int
    event_at: int | None
    changes: dict[str, tuple[Any, Any]]
    note: str
    stream: str = ""
    command: str = ""  # for a local command's event: what it says (e.g. "attempt 2 failed: 500")


# Row columns reported (position and slot say where the object is kept, not what it is).
_ROW_COLUMNS = ("cid", "created_at", "user_id", "type", "parent_id", "show_in_channel",
                "reply_count", "pinned", "pinned_at", "updated_at", "deleted_at", "deleted_for_me",
                "silent", "local_state", "local_command")
_MESSAGE_ROW = f"SELECT {', '.join(_ROW_COLUMNS)}, position, slot FROM messages WHERE id=?"
_BOOL_COLUMNS = frozenset({"show_in_channel", "pinned", "deleted_for_me", "silent"})
_TIME_COLUMNS = frozenset({"created_at", "pinned_at", "updated_at", "deleted_at"})
# Fields of the message object left out of the comparison: the author's user object (it changes
# with presence, not with the message), and reaction lists that `reactions` reports from the table.
_NOISE = frozenset({"id", "user", "latest_reactions", "own_reactions", "reaction_groups",
                    "reaction_scores"})

_REMOVED_BY = {
    "message.deleted": "hard-deleted",
    "channel.truncated": "removed: the channel was truncated",
    "notification.channel_truncated": "removed: the channel was truncated",
    "channel.deleted": "removed: the channel was deleted",
    "notification.channel_deleted": "removed: the channel was deleted",
    "channel.hidden": "removed: the channel was hidden with its history cleared",
    "user.messages.deleted": "removed: all messages of its author were hard-deleted",
    "member.removed": "removed: the channel left the own user's list",
    "notification.removed_from_channel": "removed: the channel left the own user's list",
}

Snapshot = tuple["dict[str, Any] | None", "dict[str, int]"]


def _needles(message_id: str) -> list[bytes]:
    """The forms the id can take in JSON bytes: as is, escaped, and escaped to ASCII."""
    forms = [message_id.encode("utf-8", "surrogatepass"), msgspec.json.encode(message_id)[1:-1],
             json.dumps(message_id)[1:-1].encode()]
    return list(dict.fromkeys(f for f in forms if f))


def _get(value: Any, key: str) -> Any:
    return value.get(key) if isinstance(value, dict) else None


def _object(payload: bytes) -> dict[str, Any] | None:
    """The payload as a JSON object, or None when it is not one."""
    doc = decode_stored(payload)
    return doc if isinstance(doc, dict) else None


def mentions(topic: str, payload: bytes, message_id: str) -> bool:
    """True when a backend entry names the message as itself, as the message of a reaction, as
    the parent of a reply, or among a channel state's messages. Entries of the kinds that never
    change a message (`links.QUIET_TOPICS`: presence, profiles, reads, typing) name none."""
    if topic in links.QUIET_TOPICS:
        return False
    doc = _object(payload)
    if doc is None:
        return False
    if topic == ingest.CHANNEL_STATE:
        listed: list[list[Any]] = [
            value for key in ("messages", "pinned_messages")
            if isinstance(value := doc.get(key), list)]
        return any(_get(m, "id") == message_id for messages in listed for m in messages)
    message = doc.get("message")
    return (doc.get("message_id") == message_id
            or _get(message, "id") == message_id
            or _get(message, "parent_id") == message_id
            or _get(doc.get("reaction"), "message_id") == message_id)


def command_mentions(topic: str, payload: bytes, message_id: str) -> bool:
    """True when a local command's event acts on the message: a command requested (or amended)
    for it, or a send of a reply to it. The command's other events (attempts, outcome) are in
    its stream, which `explain` then replays whole."""
    if topic not in (commands.REQUESTED, commands.AMENDED):
        return False
    doc = _object(payload)
    if doc is None:
        return False
    message = doc.get("message")
    return (doc.get("message_id") == message_id
            or _get(message, "id") == message_id
            or _get(message, "parent_id") == message_id)


def command_note(topic: str, payload: bytes) -> str:
    """What a command's event says, in words: which action, which attempt, which outcome."""
    doc = decode_stored(payload)
    doc = doc if isinstance(doc, dict) else {}
    reported = doc.get("error")
    error: dict[str, Any] = reported if isinstance(reported, dict) else {}
    said = " ".join(str(v) for v in (error.get("status"), error.get("message")) if v)
    if topic == commands.REQUESTED:
        return f"{doc.get('kind', 'command')} requested"
    if topic == commands.AMENDED:
        return "request amended"
    if topic == commands.ATTEMPT_STARTED:
        return f"attempt {doc.get('attempt')} started"
    if topic == commands.ATTEMPT_FAILED:
        return f"attempt {doc.get('attempt')} failed" + (f": {said}" if said else "")
    # An outcome recorded with its attempt's start carries the attempt number itself.
    attempt = f"attempt {doc['attempt']} " if doc.get("attempt") is not None else ""
    if topic == commands.SUCCEEDED:
        return f"{attempt}succeeded"
    if topic == commands.REJECTED:
        return f"{attempt}rejected: {doc.get('reason')}"
    if topic == commands.CANCELLED:
        return f"cancelled: {doc.get('reason')}"
    if topic == commands.RETRIED:
        return "retried"
    return topic


def message_object(payload: bytes, slot: int) -> dict[str, Any]:
    """The message object at `slot` of a payload (see `schema.SLOT_*`), decoded; {} if none."""
    doc = decode_stored(payload)
    if slot == SLOT_EVENT:
        found = _get(doc, "message")
    elif slot == SLOT_RESPONSE:
        found = _get(_get(doc, "response"), "message")
    else:
        items = _get(doc, "messages" if slot < SLOT_PINNED_BASE else "pinned_messages")
        index = slot if slot < SLOT_PINNED_BASE else slot - SLOT_PINNED_BASE
        found = items[index] if isinstance(items, list) and 0 <= index < len(items) else None
    return found if isinstance(found, dict) else {}


class _Objects:
    """The message object a row points at, decoded once per (position, slot)."""

    def __init__(self, source: apsw.Cursor, table: str, codec: PayloadCodec) -> None:
        self._reader = source.connection.cursor()
        self._payload_at = _PAYLOAD_AT.format(table=table)
        self._codec = codec
        self._key: tuple[int, int] | None = None
        self._value: dict[str, Any] = {}
        self.current: tuple[int, bytes] | None = None  # the entry being applied

    def get(self, position: int, slot: int) -> dict[str, Any]:
        if self._key != (position, slot):
            if self.current is not None and self.current[0] == position:
                payload = self.current[1]
            else:
                rows = cast("list[tuple[int, bytes]]", self._reader.execute(
                    self._payload_at, (position,)).fetchall())  # fetchall: no statement left open
                if rows:
                    ((codec, state),) = rows
                    payload = self._codec.decode(codec, state, position)
                else:
                    payload = b""
            self._key, self._value = (position, slot), message_object(payload, slot)
        return self._value


def _snapshot(cursor: apsw.Cursor, message_id: str, objects: _Objects) -> Snapshot:
    reactions = {
        f"{kind}({user})": score for kind, user, score in cursor.execute(
            _REACTIONS_OF, (message_id,))
    }
    rows = cursor.execute(_MESSAGE_ROW, (message_id,)).fetchall()
    if not rows:
        return None, reactions
    row, *_ = rows
    *columns, position, slot = row
    obj = objects.get(cast(int, position), cast(int, slot))
    fields: dict[str, Any] = {}
    if "text" in obj:
        fields["text"] = obj["text"]
    for name, value in zip(_ROW_COLUMNS, columns):
        fields[name] = bool(value) if name in _BOOL_COLUMNS else value
    for key in sorted(obj):
        if key not in fields and key not in _NOISE:
            fields[key] = obj[key]
    return fields, reactions


def _diff(before: Snapshot, after: Snapshot) -> dict[str, tuple[Any, Any]]:
    (old, old_reactions), (new, new_reactions) = before, after
    changes: dict[str, tuple[Any, Any]] = {}
    if old is None and new is not None:
        changes = {k: (None, v) for k, v in new.items() if v is not None}
    elif old is not None and new is None:
        changes = {k: (v, None) for k, v in old.items() if v is not None}
    elif old is not None and new is not None:
        for key in [*new, *(k for k in old if k not in new)]:
            if old.get(key) != new.get(key):
                changes[key] = (old.get(key), new.get(key))
    if old_reactions != new_reactions:
        changes["reactions"] = (old_reactions, new_reactions)
    return changes


def _note(kind: str, before: Snapshot, after: Snapshot, changes: dict[str, tuple[Any, Any]]) -> str:
    (old, _), (new, _) = before, after
    if old is None and new is not None:
        return "stored"
    if old is not None and new is None:
        return _REMOVED_BY.get(kind, "removed")
    if not changes:
        return "no change"
    notes: list[str] = []
    if "type" in changes and changes["type"][1] == "deleted":
        notes.append("soft-deleted: all messages of its author were deleted"
                     if kind == "user.messages.deleted" else "soft-deleted")
    elif "type" in changes and changes["type"][0] == "deleted":
        notes.append("undeleted")
    if "deleted_for_me" in changes:
        notes.append("deleted for me" if changes["deleted_for_me"][1] else "restored for me")
    if "text" in changes and "type" not in changes:
        notes.append("edited")
    if "reply_count" in changes:
        old_count, new_count = changes["reply_count"]
        notes.append("reply added" if (new_count or 0) > (old_count or 0) else "reply removed")
    if "pinned" in changes:
        notes.append("pinned" if changes["pinned"][1] else "unpinned")
    if "reactions" in changes:
        old_r, new_r = changes["reactions"]
        if set(new_r) - set(old_r):
            notes.append("reaction added")
        if set(old_r) - set(new_r):
            notes.append("reaction removed")
        if any(old_r[k] != new_r[k] for k in set(old_r) & set(new_r)):
            notes.append("reaction updated")
    if "local_state" in changes:
        notes.append(f"local state {changes['local_state'][1] or 'confirmed'}")
    return ", ".join(notes) or "updated"


def explain(store: HasLog, message_id: str, *, unchanged: bool = False) -> list[Explanation]:
    """Every log entry that changed the message, oldest first, with what it changed.

    Finds the entries that name the message (a byte search of each decompressed payload for the
    id, confirmed by decoding: `message.id`, `message_id`, `reaction.message_id`,
    `message.parent_id`, a channel state's messages), then replays the streams they are in, the
    streams of every channel the message was filed under and the user's stream (`@user`) entry by
    entry into a scratch database, comparing the message's row, object and reactions after each.
    So channel-wide entries that changed it (a truncation, a deleted channel, history cleared, all
    of a user's messages deleted) show up without naming it. With `unchanged=True`, entries that
    name the message but changed nothing (a duplicate, an unchanged snapshot) are listed too.

    What is read: when the read tables know the message's channel and the log has its streams'
    back-pointers (`eventstore/links.py`), only the entries of that channel's stream, of the
    user's stream and of the local commands; of those, the entries of the kinds that change only
    what they name (`_CHANGES_ONLY_WHAT_IT_NAMES`) are replayed only when they name the message.
    Otherwise (a message the tables never had, a store still computing its links) the whole log
    is searched, as the answer is the same.

    An id that no entry names, or that never had a row, gives an empty list.
    """
    log = store.log
    codec = log.datastore.codec
    scratch = apsw.Connection(":memory:", flags=_MEMORY_FLAGS,
                              statementcachesize=STATEMENT_CACHE_SIZE)
    try:
        with _reading(store, scratch) as (source, table):
            end = _max_position(source, table)
            target = scratch.cursor()
            reader: _Reader
            scoped = _ScopedReader(source, table, codec, end)
            found = _named_in_scope(scoped, source, table, message_id)
            if found is not None:
                (named, streams), reader = found, scoped
            else:
                named, streams = _named_by(source, table, codec, message_id, end)
                reader = _StreamReader(source, table, codec, end)
            if not named:
                return []
            streams.add(ingest.USER_STREAM)
            while True:
                create_tables(target, with_indexes=False)
                with collector_paused():
                    explained, filed_under = _replay_message(
                        target, _Objects(source, table, codec), reader.rows(streams),
                        store.user_id, message_id, named, unchanged, reader.relevant)
                if filed_under <= streams:
                    return explained
                # Filed under a channel whose stream was not replayed: replay again with it.
                streams |= filed_under
                drop_tables(target)
    finally:
        scratch.close()


# Kinds of entries that change only the objects they name (the message, its reactions, the
# reads and users they carry) and, for a reply, its parent's reply count: one that names
# neither the message nor one of its replies cannot change it. (A hard delete of a reply need
# not carry its `parent_id`: the replies' own ids are searched for too.)
_CHANGES_ONLY_WHAT_IT_NAMES = frozenset({
    "message.new", "notification.message_new", "notification.thread_message_new",
    "message.updated", "message.undeleted", "message.deleted", "reaction.new", "reaction.updated",
    "reaction.deleted", "message.read", "notification.mark_read", "notification.mark_unread",
    "message.delivered", "user.updated", "user.presence.changed", "draft.updated",
    "draft.deleted", "health.check", "typing.start", "typing.stop",
})

# (position, topic, stream, source, payload as it arrived, received_at, event_at)
Row = tuple[int, str, str, int, bytes, int, "int | None"]


class _Reader(Protocol):
    def rows(self, streams: set[str]) -> Iterator[list[Row]]: ...

    def relevant(self, row: Row) -> bool: ...


class _StreamReader:
    """The whole log's entries of some streams, in order (a scan of the log)."""

    def __init__(self, source: apsw.Cursor, table: str, codec: PayloadCodec, end: int) -> None:
        self._reader = source.connection.cursor()
        self._stream_rows = _STREAM_ROWS.format(table=table)
        self._decode = codec.decode
        self._end = end

    def rows(self, streams: set[str]) -> Iterator[list[Row]]:
        wanted = json.dumps(sorted(streams))
        after = 0
        decode = self._decode
        while after < self._end:
            rows = cast("list[_StoredRow]", self._reader.execute(
                self._stream_rows, (after, self._end, wanted, _CHUNK)).fetchall())
            if not rows:
                return
            yield [(position, topic, stream, origin, decode(codec, state, position), received_at,
                    event_at)
                   for position, topic, stream, origin, codec, state, received_at, event_at in rows]
            after, *_ = rows[-1]

    def relevant(self, row: Row) -> bool:
        return True


class _ScopedReader:
    """The entries of some streams found by their back-pointers, read once and kept (decoded),
    less those that cannot change the message: the quiet ones (`links.QUIET_TOPICS`) are not
    even read, and `_CHANGES_ONLY_WHAT_IT_NAMES` without a mention of its id or of a reply's
    are not replayed."""

    def __init__(self, source: apsw.Cursor, table: str, codec: PayloadCodec, end: int) -> None:
        self._source = source
        self._table = table
        self._decode = codec.decode
        self._end = end
        self.positions: dict[str, list[int]] = {}  # by stream, read so far
        self.kept: dict[int, Row] = {}  # by position: the rows read so far
        self._needles: list[bytes] = []

    def read(self, streams: Iterable[str]) -> bool:
        """Read (and keep) the entries of these streams; False when the links cannot tell."""
        wanted: list[int] = []
        for stream in streams:
            if stream in self.positions:
                continue
            found = _stream_positions(self._source, self._table, stream, self._end,
                                      leave_out=links.QUIET)
            if found is None:
                return False
            self.positions[stream] = found
            wanted.extend(p for p in found if p not in self.kept)
        decode = self._decode
        for rows in _rows_at(self._source, self._table, sorted(set(wanted))):
            for position, topic, stream, origin, codec, state, received_at, event_at in rows:
                self.kept[position] = (position, topic, stream, origin,
                                       decode(codec, state, position), received_at, event_at)
        return True

    def read_local(self) -> None:
        """Read (and keep) every entry of the local commands."""
        _, bare = _split(self._table)
        decode = self._decode
        local = self._source.connection.cursor()
        for position, stream, topic, kind, state, received_at, event_at in local.execute(
                _LOCAL_ROWS.format(table=self._table, index=f"{bare}_aggregate"), (self._end,)):
            self.positions.setdefault(stream, []).append(position)
            self.kept[position] = (position, topic, stream, int(Source.LOCAL),
                                   decode(kind, state, position), received_at, event_at)

    def mention(self, ids: Iterable[str]) -> None:
        self._needles = [n for one in ids for n in _needles(one)]

    def rows(self, streams: set[str]) -> Iterator[list[Row]]:
        if not self.read(streams):
            raise StoreError("the log's stream links went missing during a read")
        wanted = sorted({p for stream in streams for p in self.positions.get(stream, ())})
        kept = self.kept
        yield [kept[p] for p in wanted]

    def relevant(self, row: Row) -> bool:
        _, topic, _, _, payload, _, _ = row
        return topic not in _CHANGES_ONLY_WHAT_IT_NAMES or any(n in payload for n in self._needles)


def _named_in_scope(
    reader: _ScopedReader, source: apsw.Cursor, table: str, message_id: str,
) -> tuple[set[int], set[str]] | None:
    """`_named_by` for a message the read tables know, reading only its channels' streams, the
    user's stream and the local commands (kept by `reader` for the replay): the positions
    naming it and their streams. None when the tables or the links cannot tell."""
    cids = _message_cids(source, table, message_id)
    if not cids or not reader.read(dict.fromkeys([*cids, ingest.USER_STREAM])):
        return None
    reader.read_local()
    needles = _needles(message_id)
    named: set[int] = set()
    streams: set[str] = set()
    replies: set[str] = set()
    local = int(Source.LOCAL)
    for position, topic, stream, origin, payload, _, _ in reader.kept.values():
        if not any(n in payload for n in needles):
            continue
        check = command_mentions if origin == local else mentions
        if check(topic, payload, message_id):
            named.add(position)
            streams.add(stream)
        if origin != local:
            replies.update(_replies(payload, message_id))
    reader.mention([message_id, *replies])
    return named, streams


def _replies(payload: bytes, message_id: str) -> list[str]:
    """Ids of the replies to the message that a payload holds (as its message, or among a
    channel state's messages)."""
    doc = _object(payload)
    if doc is None:
        return []
    # What the payload holds there: message objects, or None or anything else (`_get` reads
    # dicts only).
    found: list[Any] = [doc.get("message")]
    for key in ("messages", "pinned_messages"):
        items = doc.get(key)
        if isinstance(items, list):
            found.extend(items)
    return [m["id"] for m in found
            if _get(m, "parent_id") == message_id and isinstance(m.get("id"), str)]


def _named_by(
    source: apsw.Cursor, table: str, codec: PayloadCodec, message_id: str, end: int,
) -> tuple[set[int], set[str]]:
    """Positions of the entries that name the message, and their streams (a scan of the log)."""
    needles = _needles(message_id)
    named: set[int] = set()
    streams: set[str] = set()
    reader = source.connection.cursor()
    after = 0
    decode = codec.decode
    local = int(Source.LOCAL)
    statement = _NAMING_ROWS.format(table=table)
    while after < end:
        rows = cast("list[_NamingRow]", reader.execute(
            statement, (after, end, _CHUNK)).fetchall())
        if not rows:
            break
        for position, stream, topic, origin, kind, state in rows:
            payload = decode(kind, state, position)
            if not any(n in payload for n in needles):
                continue
            check: Callable[[str, bytes, str], bool] = (
                command_mentions if origin == local else mentions)
            if check(topic, payload, message_id):
                named.add(position)
                streams.add(stream)
        after, *_ = rows[-1]
    return named, streams


def _replay_message(
    target: apsw.Cursor, objects: _Objects, chunks: Iterable[list[Row]],
    own_user_id: str | None, message_id: str, named: set[int], unchanged: bool,
    relevant: Callable[[Row], bool],
) -> tuple[list[Explanation], set[str]]:
    projector = Projector(own_user_id)
    local = int(Source.LOCAL)
    previous: Snapshot = (None, {})
    ever_stored = False
    filed_under: set[str] = set()
    out: list[Explanation] = []
    for rows in chunks:
        for row in rows:
            position, topic, stream, origin, payload, received_at, event_at = row
            if not relevant(row):
                continue
            objects.current = (position, payload)
            projector.apply(target, [Item(position, topic, stream, payload, received_at)])
            current = _snapshot(target, message_id, objects)
            changes = _diff(previous, current)
            if current[0] is not None:
                ever_stored = True
                filed_under.add(current[0]["cid"])
            command = origin == local and topic in commands.TOPICS
            if changes or (unchanged and position in named) or command:
                # Every step of a command on the message is listed, changed or not.
                out.append(Explanation(
                    position=position, type=topic, source=_source_name(origin),
                    received_at=received_at, event_at=event_at, changes=changes,
                    note=_note(topic, previous, current, changes), stream=stream,
                    command=command_note(topic, payload) if command else ""))
            previous = current
    return (out if ever_stored else []), filed_under


def _source_name(value: int) -> str:
    try:
        return Source(value).name.lower()
    except ValueError:
        return str(value)


__all__ = [
    "Explanation", "PastStore", "as_of", "explain", "message_object", "position_at", "readonly_uri",
]
