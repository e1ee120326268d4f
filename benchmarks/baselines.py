"""What chatledger's log is measured against: raw APSW appends and the stock `eventsourcing` module.

Each function appends the same prepared records (`(stream, type, payload)`, see
`common.event_records`) into a fresh file, one transaction per batch, and returns the seconds spent
in the appends only: opening the file, creating the table and building the rows come before the
clock starts; closing comes after it stops. The garbage collector is paused while timing.
"""

from __future__ import annotations

from collections.abc import Sequence
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
