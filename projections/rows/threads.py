"""The one writer of `threads` (the threads the backend described). Thread reads have a writer
of their own, `projections.thread_reads`."""

from __future__ import annotations

import apsw

from chatledger.projections import payloads
from chatledger.projections.rowtime import epoch_us

__all__ = ["ThreadRows"]

# A thread's state of server time ?6 counts the replies created by then; those on file created
# after count on top of it, and its last message is at least the newest of them. (So either order
# of a reply and the thread's state ends alike; the subqueries run once a `thread.updated`, on
# `messages_by_parent`.)
_LATER = ("(SELECT {what} FROM messages WHERE parent_id=?1 "
          "AND created_at > coalesce(?6, -1))")
# Less the replies it counted that were hard-deleted after (as UNCOUNT_REPLY would, had they
# come after).
_GONE = ("(SELECT count(*) FROM deleted_messages WHERE parent_id=?1 "
         "AND created_at <= coalesce(?6, -1) AND deleted_at > coalesce(?6, -1))")
UPSERT = (
    "INSERT INTO threads (parent_id, cid, reply_count, participant_count, "
    "last_message_at, updated_at, position) VALUES (?1,?2,"
    f"max(0, ?3 + {_LATER.format(what='count(*)')} - {_GONE}),"
    f"?4,coalesce(max(?5, {_LATER.format(what='max(created_at)')}), ?5),?6,?7) "
    "ON CONFLICT (parent_id) DO UPDATE SET cid=coalesce(excluded.cid, cid), "
    "reply_count=coalesce(excluded.reply_count, reply_count), "
    "participant_count=coalesce(excluded.participant_count, participant_count), "
    "last_message_at=coalesce(excluded.last_message_at, last_message_at), "
    "updated_at=excluded.updated_at, position=excluded.position "
    # An older state of the thread, delivered late, does not replace a newer one.
    "WHERE excluded.updated_at IS NULL OR threads.updated_at IS NULL "
    "OR excluded.updated_at >= threads.updated_at")
# A new reply of a thread the backend described: its counters as the backend would move them,
# unless the thread's state is as new (it counts the reply already; see UPSERT).
COUNT_REPLY = (
    "UPDATE threads SET reply_count=coalesce(reply_count, 0)+1, "
    "last_message_at=max(coalesce(last_message_at, 0), coalesce(?1, 0)) WHERE parent_id=?2 "
    "AND (updated_at IS NULL OR coalesce(?1, 0) > updated_at)")
# A reply removed at ?1 (see `MessageRows.hard_delete`) counted unless the thread's state is as
# new; one never on file, created at ?1 and deleted at ?2, when the state is from between.
UNCOUNT_REPLY = ("UPDATE threads SET reply_count=max(reply_count-1, 0) WHERE parent_id=?2 "
                 "AND reply_count IS NOT NULL AND (updated_at IS NULL OR ?1 > updated_at)")
UNCOUNT_UNSEEN_REPLY = ("UPDATE threads SET reply_count=max(reply_count-1, 0) "
                        "WHERE parent_id=?3 AND ?1 <= updated_at AND ?2 > updated_at")

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

    @staticmethod
    def uncount_reply(cursor: apsw.Cursor, parent_id: str, removed: int | None) -> None:
        """A reply on file was removed at `removed` (see UNCOUNT_REPLY)."""
        cursor.execute(UNCOUNT_REPLY, (removed, parent_id))

    @staticmethod
    def uncount_unseen_reply(cursor: apsw.Cursor, parent_id: str, created: int,
                             deleted: int) -> None:
        """A reply never on file, created at `created`, was hard-deleted at `deleted`."""
        cursor.execute(UNCOUNT_UNSEEN_REPLY, (created, deleted, parent_id))
