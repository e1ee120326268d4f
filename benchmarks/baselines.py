"""What chatledger's log is measured against: raw APSW appends and the stock `eventsourcing` module.

Each function appends the same prepared records (`(stream, type, payload)`, see
`common.event_records`) into a fresh file, one transaction per batch, and returns the seconds spent
in the appends only: opening the file, creating the table and building the rows come before the
clock starts; closing comes after it stops. The garbage collector is paused while timing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from pathlib import Path

from benchmarks.common import batches, timed

# The store's pragmas (PERF-NOTES: 16,000 pages of WAL before an automatic checkpoint raised batch
# ingest by a third over the default 1,000).
RAW_PRAGMAS = (
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=NORMAL",
    "PRAGMA wal_autocheckpoint=16000",
)
RAW_SCHEMA = "CREATE TABLE log(id INTEGER PRIMARY KEY, stream TEXT, type TEXT, payload BLOB)"
RAW_INSERT = "INSERT INTO log(stream, type, payload) VALUES (?, ?, ?)"

Record = tuple[str, str, bytes]


def raw_apsw_append(path: Path, records: Sequence[Record], batch: int) -> float:
    """Plain APSW: `executemany` of each batch inside `BEGIN IMMEDIATE` ... `COMMIT`."""
    import apsw

    conn = apsw.Connection(str(path))
    try:
        for pragma in RAW_PRAGMAS:
            conn.execute(pragma).fetchall()
        conn.execute(RAW_SCHEMA)
        chunks = batches(records, batch)
        cursor = conn.cursor()
        execute = cursor.execute
        executemany = cursor.executemany

        def run() -> None:
            for chunk in chunks:
                execute("BEGIN IMMEDIATE")
                executemany(RAW_INSERT, chunk)
                execute("COMMIT")

        elapsed, _ = timed(run)
    finally:
        conn.close()
    return elapsed


def stock_eventsourcing_append(path: Path, records: Sequence[Record], batch: int) -> tuple[float, str]:
    """The `eventsourcing` library's own SQLite module, as shipped (stdlib sqlite3, WAL, its default
    `synchronous`): `insert_events` per batch, originator id = the stream (channel cid), version
    counting per stream from 1, topic = the event type, state = the exact bytes.

    Returns (seconds, the `synchronous` setting the module ran with).
    """
    from eventsourcing.persistence import StoredEvent
    from eventsourcing.sqlite import SQLiteApplicationRecorder, SQLiteDatastore

    versions: dict[str, int] = {}
    stored = []
    for stream, kind, payload in records:
        version = versions.get(stream, 0) + 1
        versions[stream] = version
        stored.append(StoredEvent(originator_id=stream, originator_version=version, topic=kind, state=payload))
    chunks = batches(stored, batch)

    datastore = SQLiteDatastore(str(path), originator_id_type="text")
    try:
        recorder = SQLiteApplicationRecorder(datastore)
        recorder.create_table()
        with datastore.transaction(commit=False) as cursor:
            cursor.execute("PRAGMA synchronous")
            level = cursor.fetchone()[0]
        synchronous = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}.get(level, str(level))
        insert = recorder.insert_events

        def run() -> None:
            for chunk in chunks:
                insert(chunk)

        elapsed, _ = timed(run)
    finally:
        datastore.close()
    return elapsed, synchronous


# --- the designs a user would pick instead: a snapshot store, a plain event-sourced store ----------
#
# Written plainly, as a competent user of SQLite would: each event decoded whole (msgspec, untyped),
# each entity it touches upserted with its full JSON through one prepared statement, in the same
# transactions of `batch` events as chatledger's ingest. Random UUID message ids are the messages'
# key, as the backend gives them; a secondary index serves a channel's page of messages.

SNAPSHOT_TABLES = (
    "CREATE TABLE channels (cid TEXT PRIMARY KEY, last_message_at TEXT, member_count INTEGER, "
    "message_count INTEGER, data TEXT)",
    "CREATE TABLE messages (id TEXT PRIMARY KEY, cid TEXT, created_at TEXT, data TEXT)",
    "CREATE TABLE users (id TEXT PRIMARY KEY, data TEXT)",
    "CREATE TABLE members (cid TEXT, user_id TEXT, data TEXT, PRIMARY KEY (cid, user_id))",
    "CREATE TABLE reactions (message_id TEXT, user_id TEXT, type TEXT, data TEXT, "
    "PRIMARY KEY (message_id, user_id, type))",
    "CREATE TABLE reads (cid TEXT, user_id TEXT, last_read TEXT, data TEXT, "
    "PRIMARY KEY (cid, user_id))",
)
SNAPSHOT_INDEXES = ("CREATE INDEX messages_by_channel ON messages (cid, created_at)",)
PLAIN_LOG_SCHEMA = ("CREATE TABLE log (id INTEGER PRIMARY KEY, stream TEXT, type TEXT, "
                    "payload BLOB)")
PLAIN_LOG_INSERT = "INSERT INTO log (stream, type, payload) VALUES (?, ?, ?)"
PLAIN_LOG_READ = "SELECT payload FROM log ORDER BY id"
UPSERT_CHANNEL_COUNTS = (
    "INSERT INTO channels (cid, last_message_at, member_count, message_count) VALUES (?,?,?,?) "
    "ON CONFLICT (cid) DO UPDATE SET last_message_at=max(coalesce(last_message_at, ''), "
    "coalesce(excluded.last_message_at, '')), "
    "member_count=coalesce(excluded.member_count, member_count), "
    "message_count=coalesce(excluded.message_count, message_count)")
UPSERT_CHANNEL = ("INSERT INTO channels (cid, data) VALUES (?, ?) "
                  "ON CONFLICT (cid) DO UPDATE SET data=excluded.data")
UPSERT_MESSAGE = ("INSERT INTO messages (id, cid, created_at, data) VALUES (?,?,?,?) "
                  "ON CONFLICT (id) DO UPDATE SET data=excluded.data")
DELETE_MESSAGE = "DELETE FROM messages WHERE id=?"
UPSERT_USER = "INSERT INTO users (id, data) VALUES (?, ?) ON CONFLICT (id) DO UPDATE SET data=excluded.data"
UPSERT_MEMBER = ("INSERT INTO members (cid, user_id, data) VALUES (?,?,?) "
                 "ON CONFLICT (cid, user_id) DO UPDATE SET data=excluded.data")
DELETE_MEMBER = "DELETE FROM members WHERE cid=? AND user_id=?"
UPSERT_REACTION = ("INSERT INTO reactions (message_id, user_id, type, data) VALUES (?,?,?,?) "
                   "ON CONFLICT (message_id, user_id, type) DO UPDATE SET data=excluded.data")
DELETE_REACTION = "DELETE FROM reactions WHERE message_id=? AND user_id=? AND type=?"
UPSERT_READ = ("INSERT INTO reads (cid, user_id, last_read, data) VALUES (?,?,?,?) "
               "ON CONFLICT (cid, user_id) DO UPDATE SET last_read=excluded.last_read, "
               "data=excluded.data")


class SnapshotTables:
    """The latest state of each entity an event touches, as full JSON, one upsert per row.

    Contract: `create(cursor)` makes the tables (with `indexes`, or without for a rebuild that
    builds them after, `create_indexes`); `apply(cursor, payload)` applies one event inside the
    caller's transaction. No ordering rule beyond arrival: the latest event wins.
    """

    def __init__(self) -> None:
        import msgspec

        self._decode = msgspec.json.decode
        self._encode = msgspec.json.encode

    @staticmethod
    def create(cursor: Any, *, indexes: bool = True) -> None:
        for ddl in SNAPSHOT_TABLES:
            cursor.execute(ddl)
        if indexes:
            SnapshotTables.create_indexes(cursor)

    @staticmethod
    def create_indexes(cursor: Any) -> None:
        for ddl in SNAPSHOT_INDEXES:
            cursor.execute(ddl)

    def apply(self, cursor: Any, payload: bytes) -> None:
        event = self._decode(payload)
        encode = self._encode
        execute = cursor.execute
        kind = event.get("type", "")
        cid = event.get("cid")
        user = event.get("user")
        if isinstance(user, dict) and user.get("id"):
            execute(UPSERT_USER, (user["id"], encode(user)))
        message = event.get("message")
        if isinstance(message, dict) and message.get("id"):
            author = message.get("user")
            if isinstance(author, dict) and author.get("id") and author is not user:
                execute(UPSERT_USER, (author["id"], encode(author)))
            if kind == "message.deleted" and event.get("hard_delete"):
                execute(DELETE_MESSAGE, (message["id"],))
            else:
                execute(UPSERT_MESSAGE, (message["id"], message.get("cid") or cid,
                                         message.get("created_at"), encode(message)))
        if cid:
            latest = message.get("created_at") if kind == "message.new" and message else None
            execute(UPSERT_CHANNEL_COUNTS, (cid, latest, event.get("channel_member_count"),
                                            event.get("channel_message_count")))
        channel = event.get("channel")
        if isinstance(channel, dict) and channel.get("cid"):
            execute(UPSERT_CHANNEL, (channel["cid"], encode(channel)))
        reaction = event.get("reaction")
        if isinstance(reaction, dict) and reaction.get("message_id"):
            key = (reaction["message_id"], reaction.get("user_id"), reaction.get("type"))
            if kind == "reaction.deleted":
                execute(DELETE_REACTION, key)
            else:
                execute(UPSERT_REACTION, (*key, encode(reaction)))
        member = event.get("member")
        if isinstance(member, dict) and member.get("user_id") and cid:
            if kind == "member.removed":
                execute(DELETE_MEMBER, (cid, member["user_id"]))
            else:
                execute(UPSERT_MEMBER, (cid, member["user_id"], encode(member)))
        if kind in ("message.read", "notification.mark_read") and cid and isinstance(user, dict):
            execute(UPSERT_READ, (cid, user.get("id"), event.get("created_at"),
                                  encode({"last_read": event.get("created_at"),
                                          "last_read_message_id": event.get("last_read_message_id")})))


def _plain_connection(path: Path) -> Any:
    import apsw

    conn = apsw.Connection(str(path))
    for pragma in RAW_PRAGMAS:
        conn.execute(pragma).fetchall()
    return conn


def snapshot_store_ingest(path: Path, payloads: Sequence[bytes], batch: int) -> float:
    """The seed's design: no log; per event, each touched entity's full JSON upserted."""
    conn = _plain_connection(path)
    try:
        tables = SnapshotTables()
        cursor = conn.cursor()
        tables.create(cursor)
        chunks = batches(payloads, batch)
        execute = cursor.execute
        apply = tables.apply

        def run() -> None:
            for chunk in chunks:
                execute("BEGIN IMMEDIATE")
                for payload in chunk:
                    apply(cursor, payload)
                execute("COMMIT")

        elapsed, _ = timed(run)
    finally:
        conn.close()
    return elapsed


def plain_event_store_ingest(path: Path, records: Sequence[Record], batch: int) -> float:
    """A plain event-sourced store: the raw log (`executemany` of the batch) plus the snapshot
    store's upserts, in the same transaction."""
    conn = _plain_connection(path)
    try:
        tables = SnapshotTables()
        cursor = conn.cursor()
        cursor.execute(PLAIN_LOG_SCHEMA)
        tables.create(cursor)
        chunks = batches(records, batch)
        execute = cursor.execute
        executemany = cursor.executemany
        apply = tables.apply

        def run() -> None:
            for chunk in chunks:
                execute("BEGIN IMMEDIATE")
                executemany(PLAIN_LOG_INSERT, chunk)
                for record in chunk:
                    apply(cursor, record[2])
                execute("COMMIT")

        elapsed, _ = timed(run)
    finally:
        conn.close()
    return elapsed


def plain_event_store_rebuild(path: Path) -> float:
    """Rebuild the plain event-sourced store's tables from its log (`path`, as left by
    `plain_event_store_ingest`): drop them, replay the log in one transaction, index after."""
    conn = _plain_connection(path)
    try:
        tables = SnapshotTables()
        cursor = conn.cursor()
        reader = conn.cursor()
        execute = cursor.execute
        apply = tables.apply

        def run() -> None:
            execute("BEGIN IMMEDIATE")
            for name in ("channels", "messages", "users", "members", "reactions", "reads"):
                execute(f"DROP TABLE {name}")
            tables.create(cursor, indexes=False)
            for (payload,) in reader.execute(PLAIN_LOG_READ):
                apply(cursor, payload)
            tables.create_indexes(cursor)
            execute("COMMIT")

        elapsed, _ = timed(run)
    finally:
        conn.close()
    return elapsed
