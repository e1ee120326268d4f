"""The one writer of `connection` (the state of the link to the backend, key by key) and of
`channel_queries` (the channels each query last answered)."""

from __future__ import annotations

from collections.abc import Sequence

import apsw
import msgspec

__all__ = ["ConnectionRows"]

SET = ("INSERT INTO connection (key, value) VALUES (?, ?) "
       "ON CONFLICT (key) DO UPDATE SET value=excluded.value")
# In epoch microseconds, so that a later time compares greater whatever the server's format.
MOVE_LAST_SYNC = ("INSERT INTO connection (key, value) VALUES ('last_sync_at', ?) "
                  "ON CONFLICT (key) DO UPDATE SET value=excluded.value "
                  "WHERE excluded.value > value")
SET_QUERY_RESULT = (
    "INSERT INTO channel_queries (query, cids, position, received_at) VALUES (?,?,?,?) "
    "ON CONFLICT (query) DO UPDATE SET cids=excluded.cids, position=excluded.position, "
    "received_at=excluded.received_at")
QUERY_CIDS = "SELECT cids FROM channel_queries WHERE query=?"


class ConnectionRows:
    """Writes `connection` and `channel_queries`."""

    @staticmethod
    def set(cursor: apsw.Cursor, values: Sequence[tuple[str, object]]) -> None:
        """Set each (key, value)."""
        cursor.executemany(SET, values)

    @staticmethod
    def set_value(cursor: apsw.Cursor, key: str, value: object) -> None:
        cursor.execute(SET, (key, value))

    @staticmethod
    def move_last_sync(cursor: apsw.Cursor, synced_at: int) -> None:
        """`last_sync_at` moves forward only: the store holds every event up to it."""
        cursor.execute(MOVE_LAST_SYNC, (synced_at,))

    @staticmethod
    def query_cids(cursor: apsw.Cursor, query_key: str) -> list[str]:
        """The channels on file for a query (its pages so far), in their order."""
        row = cursor.execute(QUERY_CIDS, (query_key,)).fetchone()
        cids = msgspec.json.decode(row[0]) if row and row[0] else []
        return [cid for cid in cids if isinstance(cid, str)] if isinstance(cids, list) else []

    @staticmethod
    def set_query_result(cursor: apsw.Cursor, query_key: str, cids_json: str, position: int,
                         received_at: int) -> None:
        cursor.execute(SET_QUERY_RESULT, (query_key, cids_json, position, received_at))
