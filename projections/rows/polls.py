"""The one writer of `polls`."""

from __future__ import annotations

import apsw

__all__ = ["PollRows"]

UPSERT = ("INSERT INTO polls (id, cid, message_id, updated_at, position) VALUES (?,?,?,?,?) "
          "ON CONFLICT (id) DO UPDATE SET cid=coalesce(excluded.cid, polls.cid), "
          "message_id=coalesce(excluded.message_id, polls.message_id), "
          "updated_at=excluded.updated_at, position=excluded.position")
DELETE = "DELETE FROM polls WHERE id=?"


class PollRows:
    """Writes `polls`."""

    @staticmethod
    def upsert(cursor: apsw.Cursor, poll_id: str, cid: str | None, message_id: str | None,
               updated_at: int | None, position: int) -> None:
        cursor.execute(UPSERT, (poll_id, cid, message_id, updated_at, position))

    @staticmethod
    def delete(cursor: apsw.Cursor, poll_id: str) -> None:
        cursor.execute(DELETE, (poll_id,))
