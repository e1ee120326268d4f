"""The head (last version) of every stream of backend events.

Backend streams have no index by stream (see `schema.events_table`), so their heads live in the
`streams` table. Writing every head on every append would add a page to each commit, so the table
is a cache of the log: a new stream is recorded at once (membership is always exact), while
advanced heads are written every `PERSIST_EVERY` rows, with the log position they are valid up to.
Whoever loads the table scans the few rows after that position to bring it up to date, which also
makes it right after a crash or after another connection appended.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import cast

import apsw

PERSIST_EVERY = 5_000
_POSITION_KEY = "streams_position"
_SELECT_STREAMS = "SELECT name, head, position FROM streams"
# `position` is NULL until a stream's first write-down; then the last log position of the stream.
_UPDATE_STREAM = "UPDATE streams SET head=?, position=coalesce(?, position) WHERE name=?"

# data_version changes only for commits made by other connections.
_DATA_VERSION = "PRAGMA data_version"
_SELECT_VALID_UP_TO = "SELECT value FROM chatledger_meta WHERE key=?"
_INSERT_STREAM = "INSERT INTO streams (name, head) VALUES (?, 0)"
_UPSERT_VALID_UP_TO = (
    "INSERT INTO chatledger_meta (key, value) VALUES (?, ?) "
    "ON CONFLICT (key) DO UPDATE SET value = excluded.value"
)


class StreamHeads:
    """In-memory heads of one file's backend streams, kept in step with its log.

    Use inside the write transaction of an append: `sync` first, then `next_version` for each
    row, then `appended` once the rows are in. After a rollback, call `invalidate`.
    """

    def __init__(self, events_table: str) -> None:
        # The streams' rows after a position: each one's head, number of rows and last position.
        self._select_tail = (
            f"SELECT originator_id, MAX(originator_version), COUNT(*), MAX(rowid) "
            f"FROM {events_table} "
            "WHERE rowid > ? AND source != 0 GROUP BY originator_id"
        )
        self._heads: dict[str, int] = {}
        self.positions: dict[str, int] = {}  # the last log position of each stream
        self._dirty: set[str] = set()
        self._unpersisted_rows = 0
        self._data_version: int | None = None

    def sync(self, cursor: apsw.Cursor) -> bool:
        """Reload the heads if another connection committed since we last wrote; True if so."""
        (version,) = cast("tuple[int]", cursor.execute(_DATA_VERSION).fetchone())
        if version == self._data_version:
            return False
        first_load = self._data_version is None
        self._data_version = version
        self._heads = {}
        self.positions = {}
        for name, head, position in cast("Iterable[tuple[str, int, int | None]]",
                                         cursor.execute(_SELECT_STREAMS)):
            self._heads[name] = head
            if position:
                self.positions[name] = position
        (stored_position,) = (cursor.execute(_SELECT_VALID_UP_TO, (_POSITION_KEY,)).fetchone()
                              or (0,))
        valid_up_to = int(stored_position)
        tail = cast("list[tuple[str, int, int, int]]",
                    cursor.execute(self._select_tail, (valid_up_to,)).fetchall())
        for stream, head, _, position in tail:
            self._heads[stream] = max(head, self._heads.get(stream, 0))
            self.positions[stream] = max(position, self.positions.get(stream, 0))
        self._dirty = {row[0] for row in tail}
        self._unpersisted_rows = sum(row[2] for row in tail)
        return not first_load

    def next_version(self, cursor: apsw.Cursor, stream: str) -> int:
        """The version the next row of `stream` takes (recording a stream seen for the first time)."""
        head = self._heads.get(stream)
        if head is None:
            head = 0
            cursor.execute(_INSERT_STREAM, (stream,))
        self._heads[stream] = head + 1
        self._dirty.add(stream)
        return head + 1

    def appended(self, cursor: apsw.Cursor, rows: int, last_position: int | None) -> None:
        """Account for rows just inserted; write the heads down when enough have accumulated."""
        self._unpersisted_rows += rows
        if last_position is not None and self._unpersisted_rows >= PERSIST_EVERY:
            self.persist(cursor, last_position)

    def persist(self, cursor: apsw.Cursor, position: int) -> None:
        """Write the advanced heads, valid up to log `position`."""
        if self._dirty:
            positions = self.positions
            cursor.executemany(_UPDATE_STREAM, [(self._heads[stream], positions.get(stream), stream)
                                                for stream in self._dirty])
        cursor.execute(_UPSERT_VALID_UP_TO, (_POSITION_KEY, position))
        self._dirty.clear()
        self._unpersisted_rows = 0

    @property
    def pending(self) -> bool:
        return bool(self._dirty)

    def invalidate(self) -> None:
        """Forget everything: the next `sync` reloads from the file (after a rollback)."""
        self._data_version = None
        self._heads.clear()
        self.positions.clear()
        self._dirty.clear()
