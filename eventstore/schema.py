"""The tables of the log, and the version of their layout.

`stored_events` follows the `eventsourcing` recorder contract (originator id, originator version,
topic, state; the rowid is the notification id) and adds the envelope the design asks for: how
the state is encoded, where the event came from, when it arrived, and the connection it came on.
"""

from __future__ import annotations

from enum import IntEnum

# Bumped when the layout changes; a file written by a newer version is refused, not touched.
SCHEMA_VERSION = 3
# Version 2 added `chain` to the log (see eventstore/seal.py); a version 1 file gets it on open.
CHAIN_SCHEMA_VERSION = 2
# Version 3 added `stream_links` and `streams.position` (see eventstore/links.py); an older file
# gets them on open, computed from its log a page per transaction.
LINKS_SCHEMA_VERSION = 3


class Source(IntEnum):
    """Where a log entry came from."""

    LOCAL = 0  # decided by this client: the library's own aggregates (commands)
    WEBSOCKET = 1
    SYNC = 2
    QUERY = 3
    COMMAND = 4  # the backend's answer to one of our commands
    IMPORT = 5

    @classmethod
    def parse(cls, value: Source | str | int) -> Source:
        if isinstance(value, Source):
            return value
        if isinstance(value, int):
            return cls(value)
        try:
            return cls[value.upper()]
        except KeyError:
            names = ", ".join(s.name.lower() for s in cls)
            raise ValueError(f"unknown source {value!r}: expected one of {names}") from None


def events_table(name: str) -> list[str]:
    # A rowid table: the rowid is the notification id, so appends land at the end of the
    # B-tree. Only the library's own aggregates (source 0) are indexed by stream: an index
    # ordered by stream would put every batch of backend events on as many index pages as it
    # has channels, which measured as half the cost of an append. Backend streams keep their
    # heads in `streams` instead, and are read by scanning (audit and replay read in order).
    return [
        f"""CREATE TABLE IF NOT EXISTS {name} (
            originator_id TEXT NOT NULL,
            originator_version INTEGER NOT NULL,
            topic TEXT NOT NULL,
            state BLOB NOT NULL,
            codec INTEGER NOT NULL DEFAULT 0,      -- 0 raw, else zstd_dictionaries.id
            source INTEGER NOT NULL DEFAULT 0,     -- schema.Source
            received_at INTEGER NOT NULL,          -- epoch microseconds
            event_at INTEGER,                      -- the event's own created_at, epoch microseconds
            connection_id TEXT,
            chain BLOB                             -- seal.entry_hash: this entry chained to the last
        )""",
        f"""CREATE UNIQUE INDEX IF NOT EXISTS {name}_aggregate
            ON {name} (originator_id, originator_version) WHERE source = 0""",
    ]


def add_chain_column(name: str) -> str:
    """Upgrades a version 1 log: the chain column, computed afterwards (seal.ChainWriter)."""
    return f"ALTER TABLE {name} ADD COLUMN chain BLOB"


# The head (last version) of each stream of backend events, advanced in the append's transaction.
STREAMS_TABLE = """CREATE TABLE IF NOT EXISTS streams (
    name TEXT PRIMARY KEY,
    head INTEGER NOT NULL,
    position INTEGER                -- its last log position, when written down (see streams.py)
) WITHOUT ROWID"""

# Upgrades a version 2 `streams` table (links.finish_links fills the column).
ADD_STREAM_POSITION = "ALTER TABLE streams ADD COLUMN position INTEGER"


TRACKING_TABLE = """CREATE TABLE IF NOT EXISTS tracking (
    application_name TEXT PRIMARY KEY,
    notification_id INTEGER NOT NULL
) WITHOUT ROWID"""

META_TABLE = """CREATE TABLE IF NOT EXISTS chatledger_meta (
    key TEXT PRIMARY KEY,
    value
) WITHOUT ROWID"""

DICTIONARIES_TABLE = """CREATE TABLE IF NOT EXISTS zstd_dictionaries (
    id INTEGER PRIMARY KEY,
    created_at INTEGER NOT NULL,
    trained_on INTEGER NOT NULL,   -- how many events the samples came from
    level INTEGER NOT NULL,
    data BLOB NOT NULL
)"""

QUARANTINE_TABLE = """CREATE TABLE IF NOT EXISTS quarantine (
    id INTEGER PRIMARY KEY,
    received_at INTEGER NOT NULL,
    source INTEGER NOT NULL,
    connection_id TEXT,
    reason TEXT NOT NULL,
    size INTEGER NOT NULL,         -- bytes as they arrived
    codec INTEGER NOT NULL,        -- 0 raw, -1 zstd without dictionary
    raw BLOB NOT NULL
)"""
