"""The one writer of `threads` (the threads the backend described). Thread reads have a writer
of their own, `projections.thread_reads`."""

from __future__ import annotations

import apsw

from chatledger.projections import payloads
from chatledger.projections.rowtime import epoch_us

__all__ = ["ThreadRows"]

UPSERT = (
    "INSERT INTO threads (parent_id, cid, reply_count, participant_count, "
    "last_message_at, updated_at, position) VALUES (?,?,?,?,?,?,?) "
    "ON CONFLICT (parent_id) DO UPDATE SET cid=coalesce(excluded.cid, cid), "
    "reply_count=coalesce(excluded.reply_count, reply_count), "
    "participant_count=coalesce(excluded.participant_count, participant_count), "
    "last_message_at=coalesce(excluded.last_message_at, last_message_at), "
    "updated_at=excluded.updated_at, position=excluded.position "
    # An older state of the thread, delivered late, does not replace a newer one.
    "WHERE excluded.updated_at IS NULL OR threads.updated_at IS NULL "
    "OR excluded.updated_at >= threads.updated_at")
# A new reply of a thread the backend described: its counters as the backend would move them.
COUNT_REPLY = (
    "UPDATE threads SET reply_count=coalesce(reply_count, 0)+1, "
    "last_message_at=max(coalesce(last_message_at, 0), coalesce(?1, 0)) WHERE parent_id=?2")

DELETE_OF_CHANNEL = "DELETE FROM threads WHERE cid=?"


class ThreadRows:
    """Writes `threads`."""

    @staticmethod
    def upsert(cursor: apsw.Cursor, thread: payloads.Thread, cid: str | None,
               position: int) -> bool:
        """File a thread's state unless the row holds a newer one; True when filed."""
        cursor.execute(UPSERT, (
            thread.parent_message_id, cid, thread.reply_count, thread.participant_count,
            epoch_us(thread.last_message_at), epoch_us(thread.updated_at), position))
        return cursor.connection.changes() > 0

    @staticmethod
    def forget_channel(cursor: apsw.Cursor, cid: str) -> None:
        cursor.execute(DELETE_OF_CHANNEL, (cid,))

    @staticmethod
    def count_reply(cursor: apsw.Cursor, parent_id: str, created: int | None) -> None:
        cursor.execute(COUNT_REPLY, (created, parent_id))
