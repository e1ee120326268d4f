"""The one writer of `messages` and of its tombstones, `deleted_messages` and
`deleted_user_messages`.

Out-of-order events: each row keeps the state with the newest server time (`state_at`); a
message the backend hard-deleted is remembered in `deleted_messages` and never filed again.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import apsw

from chatledger.projections import payloads
from chatledger.projections.rows.reactions import ReactionRows
from chatledger.projections.rows.threads import ThreadRows
from chatledger.projections.rows.values import as_flag
from chatledger.projections.rowtime import epoch_us, newest

__all__ = ["MessageRows", "Removal", "BY_ID", "SENT_FROM_HERE", "IN_CHANNEL_BEFORE",
           "IN_CHANNEL_UNTIL"]

# Message ids seen on file, a hint only (see `MessageRows.upsert`): bounded, ~10 MB.
MESSAGES_REMEMBERED = 100_000


_COLUMNS = ("cid, created_at, id, user_id, type, parent_id, show_in_channel, reply_count, "
            "pinned, pinned_at, updated_at, deleted_at, silent, position, slot, state_at")


def _reply_count(count: str, parent_id: str, as_is: str, message_id: str, stamp: str) -> str:
    """SQL for a message's reply count, from the count `count` its payload of server time
    `stamp` gives: the replies the backend counted then, plus those on file created after,
    less those it counted that were hard-deleted after (the two subqueries of `_REPLIES_SINCE`
    for message `message_id`). Whatever order the replies, the deletions and the message's
    states arrive in, the count comes out the same. A reply has no replies: its count is the
    payload's, without looking; and so is the count of a channel state's message (`as_is`
    true), which is as of the query, a time the state does not give. (SQLite evaluates a CASE
    lazily: the subqueries run only for a count they change.)"""
    later, gone = (part.format(id=message_id, at=stamp) for part in _REPLIES_SINCE)
    return (f"CASE WHEN {parent_id} IS NOT NULL OR {as_is} THEN {count} "
            f"ELSE max(0, {count} + {later} - {gone}) END")


# For message {id}, whose state is of server time {at}: the replies on file created after,
# and those hard-deleted after that were created by then. (`reply`: {at} may name the row
# being replaced, `messages.state_at`.)
_REPLIES_SINCE = (
    "(SELECT count(*) FROM messages AS reply WHERE reply.parent_id={id} "
    "AND reply.created_at > coalesce({at}, -1))",
    "(SELECT count(*) FROM deleted_messages WHERE parent_id={id} "
    "AND created_at <= {at} AND deleted_at > {at})")
# Whether message ?3, created at ?2 in channel ?1, is refused: the backend hard-deleted it, or
# it is older than its channel's truncation or cleared history (delivered late).
_REFUSED = ("EXISTS (SELECT 1 FROM deleted_messages WHERE id=?3) "
            "OR EXISTS (SELECT 1 FROM channels WHERE cid=?1 AND (truncated_at > ?2 "
            "OR cleared_at >= ?2))")
# A message not on file: filed unless refused, in one statement. A refused message gets a
# NULL id, which `messages.id NOT NULL` makes the row's conflict, and OR IGNORE skips the row,
# as it does a message on file: either way nothing changes. The checks and the counts are
# scalar subqueries of a single-row VALUES, which SQLite evaluates before it writes (no
# temporary table, unlike `INSERT ... SELECT` reading `messages`). This replaced a SELECT of
# the checks and counts before a plain INSERT: one statement a new message instead of two.
INSERT = (
    f"INSERT OR IGNORE INTO messages ({_COLUMNS}) "
    f"VALUES (?1,?2,CASE WHEN {_REFUSED} THEN NULL ELSE ?3 END,?4,?5,?6,?7,"
    f"{_reply_count('?8', '?6', '?17', '?3', '?16')},?9,?10,?11,?12,?13,?14,?15,?16)")
# The same for the system message a truncation comes with: it belongs to the history after the
# cut even when its creation time is a little before `truncated_at` (refused only when the
# backend hard-deleted it).
INSERT_AFTER_CUT = INSERT.replace(_REFUSED, "EXISTS (SELECT 1 FROM deleted_messages WHERE id=?3)")
# A row showing a local change whose command was never tried: whatever the backend sends
# about the message predates that change, so the row keeps showing it (its state, and the entry
# it points at) until the command's own outcome.
_UNTRIED = ("(local_state IS NOT NULL AND local_command IS NOT NULL AND EXISTS (SELECT 1 FROM "
            "outbox WHERE outbox.id=messages.local_command AND outbox.status='pending' "
            "AND outbox.attempts=0))")
# The row on file takes this state of message ?17 unless the row shows a newer one (by the
# server's clock: one delivered late changes nothing), or (?19) it shows a local change left as
# it is. Its creation time stays when the state has none. A payload without reply_count keeps
# the count the store has built up; ?18: a channel state's message; its count is of the
# server time the row will show (this state's, or the row's own when this one has none). ?16:
# the local states this state confirms (the backend has what they show), as ",a,b,".
# (These conditions were read by a SELECT of the row first: one statement of two for each
# message on file, ~25,000 per 100,000 events.)
REPLACE = (
    "UPDATE messages SET cid=?1, created_at=coalesce(?2, created_at), user_id=?3, type=?4, "
    "parent_id=?5, show_in_channel=?6, reply_count=CASE WHEN ?7 IS NULL THEN reply_count ELSE "
    f"{_reply_count('?7', '?5', '?18', '?17', 'coalesce(?15, messages.state_at)')} END, "
    "pinned=?8, pinned_at=?9, updated_at=?10, deleted_at=?11, silent=?12, "
    f"position=CASE WHEN {_UNTRIED} THEN position ELSE ?13 END, "
    f"slot=CASE WHEN {_UNTRIED} THEN slot ELSE ?14 END, state_at=coalesce(?15, state_at), "
    f"local_state=CASE WHEN {_UNTRIED} THEN local_state "
    "WHEN instr(?16, ',' || local_state || ',') THEN NULL ELSE local_state END "
    "WHERE id=?17 AND (?15 IS NULL OR state_at IS NULL OR ?15 >= state_at) "
    "AND NOT (?19 AND local_state IS NOT NULL AND local_command IS NOT NULL)")
# A new reply counts for its parent unless the parent's state is newer (it counts it already).
COUNT_REPLY = ("UPDATE messages SET reply_count=reply_count+1 "
               "WHERE id=?2 AND (state_at IS NULL OR ?1 > state_at)")
# The server time the parent's count is of when `threads` has rows: its state's, or its
# thread's when newer (SET_REPLY_COUNT).
_COUNTED_AT = ("max(coalesce(messages.state_at, -1), coalesce((SELECT threads.updated_at "
               "FROM threads WHERE threads.parent_id=messages.id "
               "AND threads.reply_count IS NOT NULL), -1))")
# The same when `threads` has rows: nor when the thread's state is as new.
COUNT_REPLY_OF_THREAD = ("UPDATE messages SET reply_count=reply_count+1 "
                         f"WHERE id=?2 AND ?1 > {_COUNTED_AT}")
# A reply removed at ?1 (its deletion, or its creation when it just goes) counted for its parent
# unless the parent's count is newer (the backend no longer counted it then).
UNCOUNT_REPLY = ("UPDATE messages SET reply_count=max(reply_count-1, 0) "
                 f"WHERE id=?2 AND ?1 > {_COUNTED_AT}")
# A reply never on file, created at ?1 and hard-deleted at ?2: the parent's count counted it
# when it is from between the two.
UNCOUNT_UNSEEN_REPLY = ("UPDATE messages SET reply_count=max(reply_count-1, 0) "
                        f"WHERE id=?3 AND ?1 <= {_COUNTED_AT} AND ?2 > {_COUNTED_AT}")
REPLY_ON_FILE = "SELECT parent_id, created_at FROM messages WHERE id=?"
TOMBSTONE = (
    "INSERT INTO deleted_messages (id, cid, parent_id, created_at, deleted_at) "
    "VALUES (?,?,?,?,?) ON CONFLICT (id) DO NOTHING")
# Deleted for the own user only: sticky; the event's message is the source only if newer.
DELETE_FOR_ME = (
    "UPDATE messages SET deleted_for_me=1, "
    "position=iif(?3 IS NULL OR state_at IS NULL OR state_at <= ?3, ?1, position), "
    "slot=iif(?3 IS NULL OR state_at IS NULL OR state_at <= ?3, ?2, slot), "
    "state_at=max(coalesce(state_at, ?3), coalesce(?3, state_at)) WHERE id=?4")
# A reaction event's message is the message's source when it is the newest state on file,
# unless the row shows a local change of its own (which keeps pointing at that change).
POINT_AT_REACTION_EVENT = (
    "UPDATE messages SET position=?1, slot=?2, state_at=coalesce(?3, state_at) "
    "WHERE id=?4 AND (local_command IS NULL OR local_state IS NULL) "
    "AND (?3 IS NULL OR state_at IS NULL OR state_at <= ?3)")
# The backend's count of a thread (?1, of server time ?3) is the truth for its parent message
# too, unless the message was updated after it (a newer object, with its own count, delivered
# first): the same rule as COUNT_OF_THREAD, so either order of the two ends alike. (Against
# the message's `updated_at`, not `state_at`: a reaction event moves `state_at` and leaves the
# count as it was.)
# It counts the replies created by then; those on file created after count on top of it, as they
# would had they come after (COUNT_REPLY_OF_THREAD), unless the row's state is newer still.
# Less those it counted that were hard-deleted after (as UNCOUNT_REPLY would, had they come
# after).
SET_REPLY_COUNT = (
    "UPDATE messages SET reply_count=max(0, ?1 + (SELECT count(*) FROM messages AS reply "
    "WHERE reply.parent_id=?2 AND reply.created_at > max(coalesce(?3, -1), "
    "coalesce(messages.state_at, -1))) - (SELECT count(*) FROM deleted_messages AS gone "
    "WHERE gone.parent_id=?2 AND gone.created_at <= max(coalesce(?3, -1), "
    "coalesce(messages.state_at, -1)) AND gone.deleted_at > max(coalesce(?3, -1), "
    "coalesce(messages.state_at, -1)))) WHERE id=?2 "
    "AND (?3 IS NULL OR updated_at IS NULL OR ?3 >= updated_at)")
IS_ON_FILE = "SELECT 1 FROM messages WHERE id=?"
ANY_THREAD = "SELECT 1 FROM threads LIMIT 1"
# A message filed after its thread's state (`thread.updated` delivered first): the backend's
# count of the thread is its count, as it would be had the thread come after, unless the
# message was updated after the thread's state (an unknown time on either side orders nothing).
COUNT_OF_THREAD = (
    "UPDATE messages SET reply_count=threads.reply_count FROM threads "
    "WHERE messages.id=?1 AND threads.parent_id=?1 AND threads.reply_count IS NOT NULL "
    "AND (threads.updated_at IS NULL OR messages.updated_at IS NULL "
    "OR threads.updated_at >= messages.updated_at)")
DELETE_OF_CHANNEL = "DELETE FROM messages WHERE cid=?"


class Removal(NamedTuple):
    """Which messages a hard deletion removes: the statements that list and delete them."""

    select: str
    delete: str


def _removal(where: str) -> Removal:
    return Removal(f"SELECT id, parent_id, created_at FROM messages WHERE {where}",
                   f"DELETE FROM messages WHERE {where}")


BY_ID = _removal("id=?")
SENT_FROM_HERE = _removal("id=? AND local_state IS NOT NULL")  # (a row the backend never had)
IN_CHANNEL_BEFORE = _removal("cid=? AND created_at<?")  # a truncation
IN_CHANNEL_UNTIL = _removal("cid=? AND created_at<=?")  # a hidden channel's cleared history


def _by_user(with_channel: bool, with_time: bool) -> str:
    """`user.messages.deleted`: the messages the user had sent by then (in one channel)."""
    return ("user_id=?" + (" AND cid=?" if with_channel else "")
            + (" AND created_at<=?" if with_time else ""))


# By (in one channel, up to a time): the removals of `user.messages.deleted` with hard_delete,
# their tombstones, and the soft deletions without it.
BY_USER = {(channel, time): _removal(_by_user(channel, time))
           for channel in (False, True) for time in (False, True)}
TOMBSTONE_BY_USER = {
    key: ("INSERT INTO deleted_messages (id, cid, parent_id, created_at, deleted_at) "
          f"SELECT id, cid, parent_id, created_at, ? FROM messages WHERE {_by_user(*key)} "
          "ON CONFLICT (id) DO NOTHING") for key in BY_USER}
# Sticky: an older state of one of them, delivered late, does not undo it.
SOFT_DELETE_BY_USER = {
    key: ("UPDATE messages SET type='deleted', deleted_at=coalesce(deleted_at, ?1), "
          f"state_at=max(coalesce(state_at, ?2), coalesce(?2, state_at)) WHERE {_by_user(*key)}")
    for key in BY_USER}

# Remembered: the user's messages up to ?4 were deleted (in channel ?2, '' everywhere; ?3 hard).
REMEMBER_USER_DELETION = (
    "INSERT INTO deleted_user_messages (user_id, cid, hard, deleted_at) VALUES (?,?,?,?) "
    "ON CONFLICT (user_id, cid, hard) DO UPDATE "
    "SET deleted_at=max(deleted_at, excluded.deleted_at)")
ANY_USER_DELETION = "SELECT 1 FROM deleted_user_messages LIMIT 1"
# The deletion of the user's messages that covers a state of one of theirs of time ?3 in channel
# ?2, if any: a hard one first.
USER_DELETION_OF = (
    "SELECT hard, deleted_at FROM deleted_user_messages WHERE user_id=?1 AND cid IN ('', ?2) "
    "AND deleted_at >= ?3 ORDER BY hard DESC, deleted_at DESC LIMIT 1")
SOFT_DELETE_ONE = ("UPDATE messages SET type='deleted', deleted_at=coalesce(deleted_at, ?1), "
                   "state_at=max(coalesce(state_at, ?1), ?1) WHERE id=?2")

# -- local commands: the optimistic rows -------------------------------------------------------
# A message sent from here has no server time until the backend answers: any state the
# backend sends of it is newer than this one.
SHOW_SENDING = "UPDATE messages SET local_state=?, local_command=?, state_at=NULL WHERE id=?"
# What a command's change replaces, kept in its outbox row for an undo.
UNDO_STATE = ("SELECT type, deleted_at, deleted_for_me, updated_at, local_state, local_command, "
              "position, slot FROM messages WHERE id=?")
SHOW_EDIT = ("UPDATE messages SET updated_at=?, local_state=?, local_command=?, position=?, "
             "slot=? WHERE id=?")
SHOW_DELETE_FOR_ME = ("UPDATE messages SET deleted_for_me=1, local_state=?, local_command=? "
                      "WHERE id=?")
SHOW_LOCAL_STATE = "UPDATE messages SET local_state=?, local_command=? WHERE id=?"
SHOW_SOFT_DELETE = ("UPDATE messages SET type='deleted', deleted_at=coalesce(deleted_at, ?), "
                    "local_state=?, local_command=? WHERE id=?")
RESTORE = (
    "UPDATE messages SET type=?, deleted_at=?, deleted_for_me=?, updated_at=?, "
    "local_state=?, local_command=?, position=?, slot=? WHERE id=? AND local_command=?")
SET_STATE_OF_COMMAND = "UPDATE messages SET local_state=? WHERE id=? AND local_command=?"
POINT_AT_AMENDMENT = "UPDATE messages SET position=?, slot=? WHERE id=? AND local_command=?"
OWNER = "SELECT created_at, local_command FROM messages WHERE id=?"
CONFIRM = (
    "UPDATE messages SET cid=?1, created_at=coalesce(?2, created_at), user_id=?3, type=?4, "
    "parent_id=?5, show_in_channel=?6, reply_count=coalesce(?7, reply_count), pinned=?8, "
    "pinned_at=?9, updated_at=?10, deleted_at=?11, silent=?12, position=?13, slot=?14, "
    "state_at=coalesce(?15, state_at), local_state=NULL, local_command=NULL "
    "WHERE id=?16 AND (local_command IS NULL OR local_command=?17) "
    "AND (?15 IS NULL OR state_at IS NULL OR state_at <= ?15)")
CLEAR_LOCAL_OF = ("UPDATE messages SET local_state=NULL, local_command=NULL "
                  "WHERE id=? AND (local_command IS NULL OR local_command=?)")
CLEAR_LOCAL = "UPDATE messages SET local_state=NULL, local_command=NULL WHERE id=?"
# The answer to a reaction's command carries the message's new counters: its source, unless
# the row shows a local change of its own.
POINT_AT_RESPONSE = ("UPDATE messages SET position=?, slot=? "
                     "WHERE id=? AND local_command IS NULL")
NEWEST_IN_CHANNEL = (
    "SELECT id FROM messages WHERE cid=? AND (parent_id IS NULL OR show_in_channel=1)"
    " ORDER BY created_at DESC, id DESC LIMIT 1")
CREATED_AT = "SELECT created_at FROM messages WHERE id=?"
# The messages of others from ?2, ?3 on, as the backend counts them unread.
UNREAD_FROM = (
    "SELECT count(*) FROM messages WHERE cid=? AND (created_at, id) >= (?, ?) "
    "AND (parent_id IS NULL OR show_in_channel=1) AND coalesce(user_id, '') != ? "
    "AND type NOT IN ('system', 'ephemeral', 'error', 'deleted') AND silent=0")
SHOWN_BEFORE = (
    "SELECT id FROM messages WHERE cid=? AND (created_at, id) < (?, ?) "
    "AND (parent_id IS NULL OR show_in_channel=1) ORDER BY created_at DESC, id DESC "
    "LIMIT 1")

SENT_STATES = ("sending", "send_failed")


class MessageRows:
    """Writes `messages` and `deleted_messages` (a hard deletion takes the message's reactions
    with it, through `reactions`)."""

    def __init__(self, reactions: ReactionRows, threads: ThreadRows) -> None:
        self.reactions = reactions
        self.threads = threads  # a removed reply counts for its thread no more
        # Ids of messages seen on file: an update or a reaction to one of them looks the row up
        # first instead of trying to file it anew (a check and an INSERT that SQLite ignores,
        # ~25,000 of them per 100,000 events). A hint only: a message removed since is filed as
        # the usual path would file it, so the tables never depend on it.
        self._seen: set[str] = set()
        # Whether `deleted_user_messages` has rows, as on file (None: to be read): nearly
        # always empty, and then a new message needs no look at it.
        self._user_deletions: bool | None = None
        # Likewise whether `threads` has rows: a new message looks for its thread only then.
        self._threads: bool | None = None

    def forget(self) -> None:
        """Drop the ids remembered (after a rollback or a rebuild)."""
        self._seen.clear()
        self.forget_others_rows()

    def forget_others_rows(self) -> None:
        """Another connection may have written: read again what is remembered of the table."""
        self._user_deletions = None
        self._threads = None

    def thread_filed(self) -> None:
        """`threads` has a row now (see `_file`)."""
        self._threads = True

    def _any_threads(self, cursor: apsw.Cursor) -> bool:
        """Whether `threads` has rows (read once, then kept up: see `thread_filed`)."""
        if self._threads is None:
            self._threads = cursor.execute(ANY_THREAD).fetchone() is not None
        return self._threads

    # -- the backend's states ------------------------------------------------------------------

    def upsert(
        self, cursor: apsw.Cursor, cid: str, message: payloads.Message, position: int,
        slot: int, *, event_at: int | None = None, confirm: tuple[str, ...] = SENT_STATES,
        deleted_at: int | None = None, leave_local: bool = False, snapshot: bool = False,
        after_cut: bool = False,
    ) -> bool:
        """Insert a message's row, or replace it when this state is not older than the row's;
        True when it was not on file before (a new reply then counts for its parent).

        `event_at`: the server time of what carries the message (an event's `created_at`; for
        a channel state, the newest time in it; None for a command's answer);
        `confirm`: the local states this state confirms (the backend has what they show);
        `deleted_at`: the message is soft-deleted (at the message's own time, else this one);
        `leave_local`: a row showing a local change of its own is left as it is; `snapshot`:
        the message comes from a channel state (its reply count is taken as it is, and a reply
        it files is counted in its parent's already); `after_cut`: the message came with its
        channel's truncation, and is kept whatever its time. A message the backend hard-deleted
        is never filed again.
        """
        message_id = message.id
        assert message_id is not None
        created = epoch_us(message.created_at)
        kind, gone_at = message.type, epoch_us(message.deleted_at)
        if deleted_at is not None:
            kind, gone_at = "deleted", gone_at or deleted_at
        updated = epoch_us(message.updated_at)
        stamp = newest(updated, gone_at, event_at)
        author, parent_id = message.author, message.parent_id
        shown, pinned = as_flag(message.show_in_channel), as_flag(message.pinned)
        pinned_at, silent = epoch_us(message.pinned_at), as_flag(message.silent)
        # All of the row but its creation time, which the filing may have to take as the epoch.
        columns = (message_id, author, kind, parent_id, shown, message.reply_count or 0, pinned,
                   pinned_at, updated, gone_at, silent, position, slot, stamp, snapshot)
        seen = message_id in self._seen
        if created is not None and not seen and self._file(cursor, cid, created, columns,
                                                           after_cut):
            return True
        # On file (the usual case for a message seen before): replaced unless the row is newer.
        cursor.execute(REPLACE, (
            cid, created, author, kind, parent_id, shown, message.reply_count, pinned, pinned_at,
            updated, gone_at, silent, position, slot, stamp, f",{','.join(confirm)},",
            message_id, snapshot, leave_local))
        if cursor.connection.changes():
            self._remember(message_id)
            return False
        on_file = cursor.execute(IS_ON_FILE, (message_id,)).fetchone() is not None
        if not on_file and seen and created is not None:
            # Gone since it was seen: filed as if never seen (the usual path above).
            if self._file(cursor, cid, created, columns, after_cut):
                return True
        if not on_file:  # no time given, or hard-deleted: file it at the epoch, or not
            self._seen.discard(message_id)
            return self._file(cursor, cid, 0, columns, after_cut)
        self._remember(message_id)
        return False  # an older state than the row shows (delivered late), or a local change

    def _file(self, cursor: apsw.Cursor, cid: str, created_at: int,
              columns: tuple[Any, ...], after_cut: bool = False) -> bool:
        """File a message's row (`columns`: `upsert`'s, in `INSERT`'s order from the id on),
        created at `created_at`, unless the backend hard-deleted it, it is older than its
        channel's truncation, or it is on file: True when filed."""
        # (Against the state's own time: an undeletion after it, say, stands.)
        deletion = self._user_deletion(cursor, cid, columns[1],
                                       newest(created_at, columns[-2]) or created_at)
        if deletion is not None and deletion[0]:
            # The backend hard-deleted the author's messages after this one was created.
            cursor.execute(TOMBSTONE, (columns[0], cid, columns[3], created_at, deletion[1]))
        cursor.execute(INSERT_AFTER_CUT if after_cut else INSERT, (cid, created_at, *columns))
        if not cursor.connection.changes():
            return False
        if deletion is not None:  # soft-deleted with the author's other messages
            cursor.execute(SOFT_DELETE_ONE, (deletion[1], columns[0]))
        self._remember(columns[0])
        parent_id = columns[3]
        if parent_id and not columns[-1]:  # (a channel state's reply is counted already)
            self.count_reply(cursor, parent_id, created_at)
        elif not parent_id:
            # A thread's state may have come first (a reply is no thread's parent). `threads`
            # is nearly always empty: then this costs no statement.
            if self._any_threads(cursor):
                cursor.execute(COUNT_OF_THREAD, (columns[0],))
        return True

    def _user_deletion(self, cursor: apsw.Cursor, cid: str, author: str | None,
                       at: int) -> tuple[int, int] | None:
        """(hard, when) of the `user.messages.deleted` that covers a state of a message of
        `author` in `cid` of server time `at` (delivered after it), None when none does."""
        if author is None:
            return None
        if self._user_deletions is None:
            self._user_deletions = cursor.execute(ANY_USER_DELETION).fetchone() is not None
        if not self._user_deletions:
            return None
        found = cursor.execute(USER_DELETION_OF, (author, cid, at)).fetchone()
        return (found[0], found[1]) if found is not None else None

    def _remember(self, message_id: str) -> None:
        if len(self._seen) >= MESSAGES_REMEMBERED:
            self._seen.clear()  # a bound on memory; a forgotten id costs a try
        self._seen.add(message_id)

    def count_reply(self, cursor: apsw.Cursor, parent_id: str, created: int | None) -> None:
        """A reply created at `created` was filed: its parent counts it (see COUNT_REPLY)."""
        cursor.execute(COUNT_REPLY_OF_THREAD if self._any_threads(cursor) else COUNT_REPLY,
                       (created if created is not None else 0, parent_id))

    def hard_delete(self, cursor: apsw.Cursor, removal: Removal, params: tuple[object, ...], *,
                    deleted_at: int | None = None) -> None:
        """Remove messages (and their reactions), keeping parents' reply counts right:
        `deleted_at`, the backend's time of a deletion; None when they just go from here
        (a cancelled send, a truncation)."""
        removed: list[tuple[Any, ...]] = cursor.execute(removal.select, params).fetchall()
        for message_id, parent_id, created in removed:
            self.reactions.forget_message(cursor, message_id)
            if parent_id:
                # (A deletion stamped before the creation is taken as at the creation.)
                removed_at = newest(deleted_at, created)
                cursor.execute(UNCOUNT_REPLY, (removed_at, parent_id))
                self.threads.uncount_reply(cursor, parent_id, removed_at)
        cursor.execute(removal.delete, params)

    def hard_deleted(self, cursor: apsw.Cursor, message_id: str, cid: str | None,
                     deleted_at: int | None, message: payloads.Message | None) -> None:
        """The backend hard-deleted a message (at `deleted_at`; `message`, its object as the
        backend last sent it, if at hand). Remembered even when the row is not on file: a
        `/sync` replaying older events may bring the message or a reaction to it after this."""
        row = cursor.execute(REPLY_ON_FILE, (message_id,)).fetchone()
        if row is not None:
            parent_id, created = row
        elif message is not None:
            parent_id, created = message.parent_id, epoch_us(message.created_at)
        else:
            parent_id, created = None, None
        if deleted_at is not None:
            deleted_at = newest(deleted_at, created)  # never before its creation
        cursor.execute(TOMBSTONE, (message_id, cid, parent_id, created, deleted_at))
        if not cursor.connection.changes():
            return  # heard of before: its count and reactions went then
        if row is not None:
            self.hard_delete(cursor, BY_ID, (message_id,), deleted_at=deleted_at)
        elif parent_id and created is not None and deleted_at is not None:
            cursor.execute(UNCOUNT_UNSEEN_REPLY, (created, deleted_at, parent_id))
            self.threads.uncount_unseen_reply(cursor, parent_id, created, deleted_at)
        self.reactions.forget_message(cursor, message_id)

    def deleted_by_user(self, cursor: apsw.Cursor, user_id: str, cid: str | None,
                        until: int | None, *, hard: bool, received_at: int) -> None:
        """`user.messages.deleted`: the messages the user had sent by `until` (one sent later
        is not deleted by this), in channel `cid` or everywhere."""
        key = (cid is not None, until is not None)
        params: tuple[object, ...] = (user_id,)
        if cid is not None:
            params = (*params, cid)
        if until is not None:
            params = (*params, until)
        if until is not None:
            # Sticky: a message of theirs from before, delivered late, is deleted as well.
            cursor.execute(REMEMBER_USER_DELETION, (user_id, cid or "", int(hard), until))
            self._user_deletions = True
        if hard:
            cursor.execute(TOMBSTONE_BY_USER[key], (until, *params))
            self.hard_delete(cursor, BY_USER[key], params, deleted_at=until)
        else:
            cursor.execute(SOFT_DELETE_BY_USER[key], (until or received_at, until, *params))

    @staticmethod
    def delete_for_me(cursor: apsw.Cursor, message_id: str, position: int, slot: int,
                      stamp: int | None) -> None:
        cursor.execute(DELETE_FOR_ME, (position, slot, stamp, message_id))

    @staticmethod
    def point_at_reaction_event(cursor: apsw.Cursor, message_id: str, position: int, slot: int,
                                stamp: int | None) -> None:
        cursor.execute(POINT_AT_REACTION_EVENT, (position, slot, stamp, message_id))

    @staticmethod
    def set_reply_count(cursor: apsw.Cursor, parent_id: str, count: int,
                        updated_at: int | None) -> None:
        """The thread's count, of server time `updated_at`, for its parent message."""
        cursor.execute(SET_REPLY_COUNT, (count, parent_id, updated_at))

    @staticmethod
    def is_on_file(cursor: apsw.Cursor, message_id: str) -> bool:
        return cursor.execute(IS_ON_FILE, (message_id,)).fetchone() is not None

    @staticmethod
    def forget_channel(cursor: apsw.Cursor, cid: str) -> None:
        cursor.execute(DELETE_OF_CHANNEL, (cid,))

    # -- local commands ------------------------------------------------------------------------

    @staticmethod
    def show_sending(cursor: apsw.Cursor, message_id: str, command_id: str) -> None:
        cursor.execute(SHOW_SENDING, ("sending", command_id, message_id))

    @staticmethod
    def undo_state(cursor: apsw.Cursor, message_id: str | None) -> list[Any] | None:
        """What a command's change replaces (see `restore`), None without a row."""
        if not message_id:
            return None
        row = cursor.execute(UNDO_STATE, (message_id,)).fetchone()
        return list(row) if row is not None else None

    @staticmethod
    def show_edit(cursor: apsw.Cursor, message_id: str | None, command_id: str,
                  updated_at: int, position: int, slot: int) -> None:
        cursor.execute(SHOW_EDIT, (updated_at, "updating", command_id, position, slot,
                                   message_id))

    @staticmethod
    def show_delete(cursor: apsw.Cursor, message_id: str | None, command_id: str, mode: str,
                    at: int) -> None:
        """A delete requested here (`mode`: for_me, hard or soft), at `at`."""
        if mode == "for_me":
            cursor.execute(SHOW_DELETE_FOR_ME, ("deleting", command_id, message_id))
        elif mode == "hard":
            # The row stays (flagged) until the backend confirms: a refused hard delete would
            # otherwise lose the message from the screen for nothing.
            cursor.execute(SHOW_LOCAL_STATE, ("deleting", command_id, message_id))
        else:
            cursor.execute(SHOW_SOFT_DELETE, (at, "deleting", command_id, message_id))

    @staticmethod
    def restore(cursor: apsw.Cursor, message_id: str | None, command_id: str,
                before: list[Any]) -> None:
        """Put back the state `undo_state` read, if the row is still the command's."""
        cursor.execute(RESTORE, (*before, message_id, command_id))

    @staticmethod
    def set_state_of_command(cursor: apsw.Cursor, message_id: str | None, command_id: str,
                             state: str) -> None:
        cursor.execute(SET_STATE_OF_COMMAND, (state, message_id, command_id))

    @staticmethod
    def point_at_amendment(cursor: apsw.Cursor, message_id: str | None, command_id: str,
                           position: int, slot: int) -> None:
        cursor.execute(POINT_AT_AMENDMENT, (position, slot, message_id, command_id))

    @staticmethod
    def owner(cursor: apsw.Cursor, message_id: str | None) -> tuple[int, str | None] | None:
        """(created_at, local_command) of the message's row, None when there is none."""
        row = cursor.execute(OWNER, (message_id,)).fetchone()
        if row is None:
            return None
        created_at, command = row
        return created_at, command

    @staticmethod
    def confirm(cursor: apsw.Cursor, cid: str, message: payloads.Message, position: int,
                slot: int, command_id: str) -> bool:
        """The row becomes the backend's message, if it is this command's or nobody's, and the
        row shows no newer state of it (an event that came before the answer); False when no
        such row was found. The same columns as `upsert`; the row's own `created_at` when the
        answer has none."""
        stamp = newest(epoch_us(message.updated_at), epoch_us(message.deleted_at))
        cursor.execute(CONFIRM, (
            cid, epoch_us(message.created_at) or None, message.author, message.type,
            message.parent_id, as_flag(message.show_in_channel), message.reply_count,
            as_flag(message.pinned), epoch_us(message.pinned_at), epoch_us(message.updated_at),
            epoch_us(message.deleted_at), as_flag(message.silent), position, slot, stamp,
            message.id, command_id))
        if cursor.connection.changes():
            return True
        # Older than the row: the command is done all the same, the row keeps the newer state.
        cursor.execute(CLEAR_LOCAL_OF, (message.id, command_id))
        return cursor.connection.changes() > 0

    @staticmethod
    def clear_local_of(cursor: apsw.Cursor, message_id: str | None, command_id: str) -> None:
        """The command is done: the row no longer shows its change (unless a later command has
        taken the row over)."""
        cursor.execute(CLEAR_LOCAL_OF, (message_id, command_id))

    @staticmethod
    def clear_local(cursor: apsw.Cursor, message_id: str | None) -> None:
        cursor.execute(CLEAR_LOCAL, (message_id,))

    @staticmethod
    def point_at_response(cursor: apsw.Cursor, message_id: str, position: int,
                          slot: int) -> None:
        cursor.execute(POINT_AT_RESPONSE, (position, slot, message_id))

    # -- reads a local command needs -----------------------------------------------------------

    @staticmethod
    def newest_in_channel(cursor: apsw.Cursor, cid: str) -> str | None:
        """The id of the newest message the channel shows."""
        row = cursor.execute(NEWEST_IN_CHANNEL, (cid,)).fetchone()
        return row[0] if row else None

    @staticmethod
    def created_at(cursor: apsw.Cursor, message_id: str) -> int | None:
        """The row's creation time; None when the message is not on file."""
        row = cursor.execute(CREATED_AT, (message_id,)).fetchone()
        return row[0] if row is not None else None

    @staticmethod
    def unread_from(cursor: apsw.Cursor, cid: str, created_at: int, message_id: str,
                    own_user_id: str) -> int:
        """How many messages of others from this one on the backend counts unread."""
        counted: Any = cursor.execute(UNREAD_FROM, (cid, created_at, message_id,
                                                           own_user_id)).fetchone()
        return counted[0]

    @staticmethod
    def shown_before(cursor: apsw.Cursor, cid: str, created_at: int,
                     message_id: str) -> str | None:
        """The id of the message the channel shows just before this one."""
        row = cursor.execute(SHOWN_BEFORE, (cid, created_at, message_id)).fetchone()
        return row[0] if row else None
