"""The one writer of `polls`, and of its tombstones, `deleted_polls`."""

from __future__ import annotations

import apsw

__all__ = ["PollRows"]

# A poll's newest state wins, by its `updated_at`: one delivered late (a `/sync` page, a retried
# request's answer) does not roll the row back; a deleted poll is never filed again.
UPSERT = ("INSERT INTO polls (id, cid, message_id, updated_at, position) SELECT ?1,?2,?3,?4,?5 "
          "WHERE NOT EXISTS (SELECT 1 FROM deleted_polls WHERE id=?1) "
          "ON CONFLICT (id) DO UPDATE SET cid=coalesce(excluded.cid, polls.cid), "
          "message_id=coalesce(excluded.message_id, polls.message_id), "
          "updated_at=excluded.updated_at, position=excluded.position "
          "WHERE excluded.updated_at IS NULL OR polls.updated_at IS NULL "
          "OR excluded.updated_at >= polls.updated_at")
DELETE = "DELETE FROM polls WHERE id=?"
TOMBSTONE = "INSERT INTO deleted_polls (id) VALUES (?) ON CONFLICT (id) DO NOTHING"
DELETE_OF_CHANNEL = "DELETE FROM polls WHERE cid=?"


class PollRows:
    """Writes `polls` and `deleted_polls`."""

    @staticmethod
    def upsert(cursor: apsw.Cursor, poll_id: str, cid: str | None, message_id: str | None,
               updated_at: int | None, position: int) -> None:
        cursor.execute(UPSERT, (poll_id, cid, message_id, updated_at, position))

    @staticmethod
    def delete(cursor: apsw.Cursor, poll_id: str) -> None:
        cursor.execute(DELETE, (poll_id,))
        cursor.execute(TOMBSTONE, (poll_id,))

    @staticmethod
    def forget_channel(cursor: apsw.Cursor, cid: str) -> None:
        cursor.execute(DELETE_OF_CHANNEL, (cid,))
