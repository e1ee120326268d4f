"""Thread reads: how far each user has read the replies under one message.

A `message.read` that carries `thread` (an object with `parent_message_id`) says the user read
that thread. It changes the thread's read state for that user and never the channel's own read
row: a thread read does not clear the channel's unread count or move its `last_read`.

One row per (parent message, user) in `thread_reads`. The newest state wins, by the server's
clock: an older read arriving late (a retried request's answer, a `/sync` page) leaves the row
as it is.
"""

from __future__ import annotations

from typing import cast

import apsw

from chatledger.projections.results import ThreadRead

__all__ = ["ThreadReads", "THREAD_READ_COLUMNS"]

THREAD_READ_COLUMNS = ("parent_id", "user_id", "cid", "last_read", "last_read_message_id",
                       "position")

# A row moves only for a read at least as new as the one it holds (`last_read` is the read
# event's server time, so it orders the row's states too).
_RECORD = (
    "INSERT INTO thread_reads (parent_id, user_id, cid, last_read, last_read_message_id, "
    "position) VALUES (?,?,?,?,?,?) ON CONFLICT (parent_id, user_id) DO UPDATE SET "
    "cid=coalesce(excluded.cid, cid), last_read=excluded.last_read, "
    "last_read_message_id=coalesce(excluded.last_read_message_id, last_read_message_id), "
    "position=excluded.position "
    "WHERE coalesce(excluded.last_read, 0) >= coalesce(thread_reads.last_read, 0)"
)
_OF_CHANNEL = "DELETE FROM thread_reads WHERE cid=?"
_OF_THREAD = (
    f"SELECT {', '.join(THREAD_READ_COLUMNS)} FROM thread_reads WHERE parent_id=? "
    "ORDER BY user_id"
)


class ThreadReads:
    """The one writer and reader of the `thread_reads` table."""

    @staticmethod
    def record(cursor: apsw.Cursor, *, parent_id: str, user_id: str, cid: str | None,
               last_read: int | None, last_read_message_id: str | None, position: int) -> None:
        """A user read the thread under `parent_id` at `last_read` (the event's server time)."""
        cursor.execute(_RECORD, (parent_id, user_id, cid, last_read, last_read_message_id, position))

    @staticmethod
    def forget_channel(cursor: apsw.Cursor, cid: str) -> None:
        cursor.execute(_OF_CHANNEL, (cid,))

    @staticmethod
    def of_thread(cursor: apsw.Cursor, parent_id: str) -> list[ThreadRead]:
        """Each user's read state of one thread, by user id."""
        rows = cast("list[tuple[str, str, str | None, int | None, str | None, int]]",
                    cursor.execute(_OF_THREAD, (parent_id,)).fetchall())
        return [ThreadRead(*row) for row in rows]
