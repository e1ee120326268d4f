"""How each log entry changes the read tables (the effect column of WIRE.md's events table).

`Projector.apply` runs inside the transaction of the append that brought the entries, so the
tables and the log never disagree. It decodes each payload once, into the lean structs of
`payloads`, and writes rows with prepared statements (APSW caches them).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import NamedTuple

import apsw
import msgspec

from chatledger.eventstore import ingest
from chatledger.eventstore.wire import CHANNEL_FIELDS, custom_fields
from chatledger.projections import payloads as p
from chatledger.projections.filters import canonical_query_key
from chatledger.projections.mutes import EVENT_TYPES as MUTE_EVENTS
from chatledger.projections.mutes import MuteProjector
from chatledger.projections.ranges import HeldRanges
from chatledger.projections.reminders import EVENT_TYPES as REMINDER_EVENTS
from chatledger.projections.reminders import ReminderProjector
from chatledger.projections.rowtime import epoch_us as t  # the handlers' time reader
from chatledger.projections.rowtime import newest
from chatledger.projections.schema import SLOT_EVENT, SLOT_PINNED_BASE
from chatledger.projections.screen import screened
from chatledger.projections.thread_reads import ThreadReads


logger = logging.getLogger("chatledger.projections")


class Item(NamedTuple):
    """A log entry as the projector sees it."""

    position: int
    type: str
    stream: str
    payload: bytes
    received_at: int


_MISSING = object()  # a user not remembered yet (None: remembered as not on file)
encode_json = msgspec.json.Encoder().encode


def keeps_local(c: apsw.Cursor, command_id: str | None) -> bool:
    """True when a row's local change belongs to a command never tried: nothing the backend
    sends about the message can be about that change yet, so the row keeps showing it."""
    if command_id is None:
        return False
    row = c.execute("SELECT status, attempts FROM outbox WHERE id=?", (command_id,)).fetchone()
    return row is not None and row[0] == "pending" and row[1] == 0


def _time_or_none(value: str | None | msgspec.UnsetType) -> int | None:
    return None if value is msgspec.UNSET else t(value)  # type: ignore[arg-type]


def b(value: bool | None) -> int:
    return 1 if value else 0


def query_key(filter_raw: bytes | None, sort_raw: bytes | None) -> str:
    """The key of a query's cached online result, from the filter and sort as stored."""
    decode = msgspec.json.decode
    return canonical_query_key(decode(filter_raw) if filter_raw else None,
                               decode(sort_raw) if sort_raw else None)


# A stored payload can be valid for the log yet not shaped as its type says, or hold bad UTF-8
# in parts the log never read: such a payload projects nothing.
DECODE_ERRORS = (msgspec.MsgspecError, ValueError, RecursionError)  # WireError is a ValueError

# What applying a stored entry may raise when its payload is valid JSON yet unusable (a wrong
# type, an integer too big for SQLite): the entry is skipped, live and in a rebuild alike.
UNAPPLIABLE = (apsw.ConstraintError, apsw.MismatchError, TypeError, ValueError, KeyError,
               OverflowError)

# Events that change nothing durable: typing and presence of watchers are ephemeral by nature.
EPHEMERAL_PREFIXES = ("typing.", "user.watching.", "ai_indicator.")

# Events that neither read nor change channels, reads or members: a run of new messages (whose
# channel and unread-count changes are written once per run) goes on across them.
RUN_WITH_NEW_MESSAGES = frozenset({
    "message.new", "notification.message_new", "notification.thread_message_new",
    "message.updated", "message.undeleted",
    "message.deleted", "reaction.new", "reaction.updated", "reaction.deleted", "user.updated",
    "user.presence.changed", "user.deleted", "user.messages.deleted", "health.check",
    "thread.updated", "draft.updated", "draft.deleted", "poll.created", "poll.updated",
    "poll.closed", "poll.deleted", "poll.vote_casted", "poll.vote_changed", "poll.vote_removed",
})

_USERS_REMEMBERED = 100_000
# Message ids seen on file, a hint only (see `Projector.upsert_message`): bounded, ~10 MB.
_MESSAGES_REMEMBERED = 100_000




# -- statements ------------------------------------------------------------------------------------
# Out-of-order events: each row keeps the state with the newest server time; see the `state_at`
# columns and the tombstone tables in `schema`.

_MESSAGE_COLUMNS = ("cid, created_at, id, user_id, type, parent_id, show_in_channel, reply_count, "
                    "pinned, pinned_at, updated_at, deleted_at, silent, position, slot, state_at")


def _reply_count(count: str, parent_id: str, as_is: str, later: str, gone: str) -> str:
    """SQL for a message's reply count, from the count `count` its payload of server time
    `stamp` gives: the replies the backend counted then, plus those on file created after
    (`later`), less those it counted that were hard-deleted after (`gone`); both from
    `REPLIES_SINCE`. Whatever order the replies, the deletions and the message's states arrive
    in, the count comes out the same. A reply has no replies: its count is the payload's,
    without looking; and so is the count of a channel state's message (`as_is` true), which is
    as of the query, a time the state does not give."""
    return (f"CASE WHEN {parent_id} IS NOT NULL OR {as_is} THEN {count} "
            f"ELSE max(0, {count} + {later} - {gone}) END")


# The two counts `_reply_count` needs for message ?1 whose state is of server time ?2.
REPLIES_SINCE = (
    "SELECT (SELECT count(*) FROM messages WHERE parent_id=?1 AND created_at > coalesce(?2, -1)), "
    "(SELECT count(*) FROM deleted_messages WHERE parent_id=?1 "
    "AND created_at <= ?2 AND deleted_at > ?2)")
NO_REPLIES = (0, 0)
# Whether message ?1, created at ?3 in channel ?2, may be filed (not when the backend
# hard-deleted it, nor when it is older than its channel's truncation or cleared history:
# delivered late), and,
# when ?5 (a message that is no reply, not from a channel state), `REPLIES_SINCE` at ?4.
# Asked by a statement of its own before a plain `INSERT ... VALUES`: the same checks inside
# `INSERT INTO messages ... SELECT ... WHERE NOT EXISTS` (with subqueries on `messages`, which
# made SQLite copy the row through a temporary table) measured 19.4 us a new message against
# 2.2 + 9.7 us for the two statements (40,000 messages, alternating, same minutes).
MESSAGE_FILING = (
    "SELECT EXISTS (SELECT 1 FROM deleted_messages WHERE id=?1) "
    "OR EXISTS (SELECT 1 FROM channels "
    "WHERE cid=?2 AND (truncated_at > ?3 OR cleared_at >= ?3)), "
    "CASE WHEN ?5 THEN (SELECT count(*) FROM messages WHERE parent_id=?1 "
    "AND created_at > coalesce(?4, -1)) ELSE 0 END, "
    "CASE WHEN ?5 THEN (SELECT count(*) FROM deleted_messages WHERE parent_id=?1 "
    "AND created_at <= ?4 AND deleted_at > ?4) ELSE 0 END")


# A message not on file costs this statement, after `MESSAGE_FILING` (?18, ?19: its counts).
INSERT_MESSAGE = (
    f"INSERT OR IGNORE INTO messages ({_MESSAGE_COLUMNS}) "
    f"VALUES (?1,?2,?3,?4,?5,?6,?7,{_reply_count('?8', '?6', '?17', '?18', '?19')},"
    "?9,?10,?11,?12,?13,?14,?15,?16)")
MESSAGE_ON_FILE = ("SELECT created_at, local_state, local_command, position, slot, state_at "
                   "FROM messages WHERE id=?")
# A payload without reply_count keeps the count the store has built up. ?18: a channel
# state's message; ?19, ?20: `REPLIES_SINCE` for ?17 at the server time the row will show (this
# state's, or the row's own when this one has none).
REPLACE_MESSAGE = (
    "UPDATE messages SET cid=?1, created_at=?2, user_id=?3, type=?4, parent_id=?5, "
    "show_in_channel=?6, reply_count=CASE WHEN ?7 IS NULL THEN reply_count ELSE "
    f"{_reply_count('?7', '?5', '?18', '?19', '?20')} END, "
    "pinned=?8, pinned_at=?9, updated_at=?10, deleted_at=?11, silent=?12, position=?13, "
    "slot=?14, state_at=coalesce(?15, state_at), local_state=?16 WHERE id=?17")
# A new reply counts for its parent unless the parent's state is newer (it counts it already).
COUNT_REPLY = ("UPDATE messages SET reply_count=reply_count+1 "
               "WHERE id=?2 AND (state_at IS NULL OR ?1 > state_at)")
# A reply removed at ?1 (its deletion, or its creation when it just goes) counted for its parent
# unless the parent's state is newer (the backend no longer counted it then).
UNCOUNT_REPLY = ("UPDATE messages SET reply_count=max(reply_count-1, 0) "
                 "WHERE id=?2 AND (state_at IS NULL OR ?1 > state_at)")
# A reply never on file, created at ?1 and hard-deleted at ?2: the parent's state counted it
# when it is from between the two.
UNCOUNT_UNSEEN_REPLY = ("UPDATE messages SET reply_count=max(reply_count-1, 0) "
                        "WHERE id=?3 AND ?1 <= state_at AND ?2 > state_at")
REPLY_ON_FILE = "SELECT parent_id, created_at FROM messages WHERE id=?"
TOMBSTONE_MESSAGE = (
    "INSERT INTO deleted_messages (id, cid, parent_id, created_at, deleted_at) "
    "VALUES (?,?,?,?,?) ON CONFLICT (id) DO NOTHING")
# Deleted for the own user only: sticky; the event's message is the source only if newer.
DELETE_FOR_ME = (
    "UPDATE messages SET deleted_for_me=1, "
    "position=iif(?3 IS NULL OR state_at IS NULL OR state_at <= ?3, ?1, position), "
    "slot=iif(?3 IS NULL OR state_at IS NULL OR state_at <= ?3, ?2, slot), "
    "state_at=max(coalesce(state_at, ?3), coalesce(?3, state_at)) WHERE id=?4")
# A reaction is newer than the row of its key, and than any deletion of it, or changes nothing.
UPSERT_REACTION = (
    "INSERT INTO reactions (message_id, user_id, type, score, created_at, updated_at, position) "
    "SELECT ?1,?2,?3,?4,?5,?6,?7 "
    "WHERE NOT EXISTS (SELECT 1 FROM deleted_messages WHERE id=?1) "
    "AND NOT EXISTS (SELECT 1 FROM deleted_reactions "
    "WHERE message_id=?1 AND user_id=?2 AND type=?3 AND deleted_at >= ?6) "
    "ON CONFLICT (message_id, user_id, type) DO UPDATE SET score=excluded.score, "
    "updated_at=excluded.updated_at, position=excluded.position "
    "WHERE excluded.updated_at IS NULL OR reactions.updated_at IS NULL "
    "OR excluded.updated_at >= reactions.updated_at")
FORGET_REACTION_DELETION = ("DELETE FROM deleted_reactions WHERE message_id=? AND user_id=? "
                            "AND type=? AND deleted_at < ?")
DELETE_REACTION = (
    "DELETE FROM reactions WHERE message_id=?1 AND user_id=?2 AND type=?3 "
    "AND (?4 IS NULL OR updated_at IS NULL OR updated_at <= ?4)")
# Remembered only while no newer reaction of the key is on file (that one wins anyway).
TOMBSTONE_REACTION = (
    "INSERT INTO deleted_reactions (message_id, user_id, type, deleted_at) SELECT ?1,?2,?3,?4 "
    "WHERE ?4 IS NOT NULL AND NOT EXISTS (SELECT 1 FROM reactions "
    "WHERE message_id=?1 AND user_id=?2 AND type=?3) "
    "ON CONFLICT (message_id, user_id, type) DO UPDATE "
    "SET deleted_at=max(deleted_at, excluded.deleted_at)")
# A reaction event's message is the message's source when it is the newest state on file,
# unless the row shows a local change of its own (which keeps pointing at that change).
REACTION_MESSAGE = (
    "UPDATE messages SET position=?1, slot=?2, state_at=coalesce(?3, state_at) "
    "WHERE id=?4 AND (local_command IS NULL OR local_state IS NULL) "
    "AND (?3 IS NULL OR state_at IS NULL OR state_at <= ?3)")
SET_READ = (
    "INSERT INTO reads (cid, user_id, last_read, unread_messages, last_read_message_id, "
    "first_unread_message_id, state_at) VALUES (?,?,?,?,?,?,?) "
    "ON CONFLICT (cid, user_id) DO UPDATE SET last_read=excluded.last_read, "
    "unread_messages=excluded.unread_messages, "
    "last_read_message_id=excluded.last_read_message_id, "
    "first_unread_message_id=excluded.first_unread_message_id, "
    "state_at=coalesce(excluded.state_at, reads.state_at) "
    "WHERE excluded.state_at IS NULL OR reads.state_at IS NULL "
    "OR excluded.state_at >= reads.state_at")
READ_ALL = ("UPDATE reads SET unread_messages=0, last_read=?1, state_at=coalesce(?1, state_at) "
            "WHERE user_id=?2 AND (?1 IS NULL OR state_at IS NULL OR state_at <= ?1)")
# New messages of a run, by creation time (a JSON list): those the read state already covers
# (created before its time) are not unread again.
ADD_UNREAD = (
    "INSERT INTO reads (cid, user_id, unread_messages) SELECT ?1, ?2, json_array_length(?3) "
    "WHERE true ON CONFLICT (cid, user_id) DO UPDATE SET "
    "unread_messages=unread_messages+(SELECT count(*) FROM json_each(?3) "
    "WHERE value IS NULL OR reads.state_at IS NULL OR value > reads.state_at)")
# What a run of new messages did to a channel: filed (even one not heard of before) with its
# newest message time, and the counters the events carried unless the row holds newer ones by
# the server's clock (`counts_at`): a late event does not roll them back. (SET expressions see
# the row as it was.)
FLUSH_CHANNEL_RUN = (
    "INSERT INTO channels (cid, type, id, last_message_at, member_count, message_count, "
    "counts_at) VALUES (?,?,?,?,?,?,?) ON CONFLICT (cid) DO UPDATE SET "
    "last_message_at=CASE WHEN excluded.last_message_at > coalesce(last_message_at, 0) "
    "THEN excluded.last_message_at ELSE last_message_at END, "
    "member_count=CASE WHEN excluded.member_count IS NOT NULL AND "
    "coalesce(excluded.counts_at, 0) >= coalesce(counts_at, 0) "
    "THEN excluded.member_count ELSE member_count END, "
    "message_count=CASE WHEN excluded.message_count IS NOT NULL AND "
    "coalesce(excluded.counts_at, 0) >= coalesce(counts_at, 0) "
    "THEN excluded.message_count ELSE message_count END, "
    "counts_at=CASE WHEN coalesce(excluded.counts_at, 0) >= coalesce(counts_at, 0) "
    "AND (excluded.member_count IS NOT NULL OR excluded.message_count IS NOT NULL) "
    "THEN excluded.counts_at ELSE counts_at END"
)

# A new reply of a thread the backend described: its counters as the backend would move them.
THREAD_REPLY = (
    "UPDATE threads SET reply_count=coalesce(reply_count, 0)+1, "
    "last_message_at=max(coalesce(last_message_at, 0), coalesce(?1, 0)) WHERE parent_id=?2")
# A member object merges into the row: a field it lacks (or holds null for) keeps what is known,
# since one channel state describes the own user twice (`membership` often without `role`,
# `members[]` with it). `pinned_at` and `archived_at` are the exceptions: null there says
# "not pinned", so only their absence (?10, ?11 false) keeps the row's.
# ?12: the server time of the member object (its own, or its event's): none older than the
# member's removal adds them back.
UPSERT_MEMBER = (
    "INSERT INTO members (cid, user_id, role, channel_role, banned, pinned_at, archived_at, "
    "created_at, updated_at) SELECT ?1, ?2, ?3, ?4, coalesce(?5, 0), ?6, ?7, ?8, ?9 "
    "WHERE NOT EXISTS (SELECT 1 FROM removed_members "
    "WHERE cid=?1 AND user_id=?2 AND removed_at >= ?12) "
    "ON CONFLICT (cid, user_id) DO UPDATE SET role=coalesce(?3, role), "
    "channel_role=coalesce(?4, channel_role), banned=coalesce(?5, banned), "
    "pinned_at=iif(?10, ?6, pinned_at), archived_at=iif(?11, ?7, archived_at), "
    "created_at=coalesce(?8, created_at), updated_at=coalesce(?9, updated_at) "
    # An older object of the member, delivered late, does not replace a newer one.
    "WHERE ?9 IS NULL OR members.updated_at IS NULL OR ?9 >= members.updated_at")
REMOVE_MEMBER = ("DELETE FROM members WHERE cid=?1 AND user_id=?2 "
                 "AND (?3 IS NULL OR updated_at IS NULL OR updated_at <= ?3)")
REMEMBER_REMOVED_MEMBER = (
    "INSERT INTO removed_members (cid, user_id, removed_at) VALUES (?, ?, ?) "
    "ON CONFLICT (cid, user_id) DO UPDATE SET removed_at=max(removed_at, excluded.removed_at)")
# `hidden` (per user) changes by events of its own; the newest time it was set wins.
# A hidden channel is shown again by a message newer than the hide (not by one from before it,
# delivered late): the message's time becomes the flag's.
UNHIDE_ON_MESSAGE = ("UPDATE channels SET hidden=0, hidden_at=?1 WHERE cid=?2 AND hidden=1 "
                     "AND ?1 > coalesce(hidden_at, 0)")
# `channel.hidden` with `clear_history`: the channel's history up to then is gone for this user,
# and stays gone for messages of that time delivered late.
CLEAR_HISTORY = ("UPDATE channels SET cleared_at=max(coalesce(cleared_at, ?1), ?1) WHERE cid=?2")
SET_HIDDEN = ("UPDATE channels SET hidden=?1, hidden_at=coalesce(?2, hidden_at) "
              "WHERE cid=?3 AND (?2 IS NULL OR hidden_at IS NULL OR ?2 >= hidden_at)")
DELIVERED = (
    "INSERT INTO reads (cid, user_id, last_delivered_at, last_delivered_message_id) "
    "VALUES (?,?,?,?) ON CONFLICT (cid, user_id) DO UPDATE SET "
    "last_delivered_at=excluded.last_delivered_at, "
    "last_delivered_message_id=excluded.last_delivered_message_id "
    "WHERE excluded.last_delivered_at IS NULL OR reads.last_delivered_at IS NULL "
    "OR excluded.last_delivered_at >= reads.last_delivered_at")
# The newest time a user object carries (0 for none): it orders the objects of one user.
_USER_TIME = ("max(coalesce({0}.updated_at, 0), coalesce({0}.last_active, 0), "
              "coalesce({0}.deleted_at, 0))")


REMOVED_CHANNELS = "SELECT cid, deleted_at FROM deleted_channels"
REMOVE_CHANNEL = ("INSERT INTO deleted_channels (cid, deleted_at) VALUES (?, ?) "
                  "ON CONFLICT (cid) DO UPDATE SET deleted_at=max(deleted_at, excluded.deleted_at)")


class RemovedChannels:
    """The channels deleted, or left by the own user, and when (`deleted_channels`), remembered
    as on file: whatever happened in such a channel before that, delivered late, is not applied.

    The table is small (channels rarely go), so it is read whole, once, and then followed.
    """

    def __init__(self) -> None:
        self._on_file: dict[str, int] | None = None  # None: to be read

    def forget(self) -> None:
        """Read the table again when next asked (after a rollback, or another connection's
        commit)."""
        self._on_file = None

    def known(self, c: apsw.Cursor) -> dict[str, int]:
        if self._on_file is None:
            self._on_file = dict(c.execute(REMOVED_CHANNELS))
        return self._on_file

    def record(self, c: apsw.Cursor, cid: str, when: int | None) -> None:
        """Channel `cid` was deleted or left at `when` (nothing is recorded without a time)."""
        if when is None:
            return
        c.execute(REMOVE_CHANNEL, (cid, when))
        known = self.known(c)
        known[cid] = max(when, known.get(cid, when))

    def before_removal(self, c: apsw.Cursor, cid: str | None, when: int | None) -> bool:
        """True when `when` is earlier than the removal of channel `cid`."""
        if cid is None or when is None:
            return False
        removed = self.known(c).get(cid)
        return removed is not None and when < removed


class Projector:
    """Applies log entries to the read tables of one user's file."""

    def __init__(self, own_user_id: str | None) -> None:
        self.own = own_user_id
        # What a run of new messages does to channels and unread counts, written once per run.
        # cid -> (newest message time, member count, message count, the counts' server time,
        # the newest message that shows the channel again if hidden)
        self._pending_channels: dict[
            str, tuple[int | None, int | None, int | None, int | None, int | None]] = {}
        # (the creation times of the unread messages, by channel)
        self._pending_unread: dict[str, list[int | None]] = {}
        # Whether the own user's unread counts are kept in a channel (its memberships), as on
        # file: forgotten for a channel whenever its members change.
        self._counts_unread_in: dict[str, bool] = {}
        # The users rows as on file, remembered across appends while no other connection writes:
        # a message carries its author, and most authors are unchanged since the last message.
        self._users_on_file: dict[str, tuple[object, ...] | None] = {}
        # Ids of messages seen on file: an update or a reaction to one of them looks the row up
        # first instead of trying to file it anew (a check and an INSERT that SQLite ignores,
        # ~25,000 of them per 100,000 events). A hint only: a message removed since is filed as
        # the usual path would file it, so the tables never depend on it.
        self._messages_seen: set[str] = set()
        self._seen_version: tuple[apsw.Connection, int] | None = None
        self._removed = RemovedChannels()
        self._handlers: dict[str, Callable[[apsw.Cursor, Item, p.Event], None]] = {
            "message.new": self.message_new,
            "notification.message_new": self.message_new,
            "notification.thread_message_new": self.message_new,
            "message.updated": self._message_updated,
            "message.undeleted": self._message_updated,
            "message.deleted": self._message_deleted,
            "reaction.new": self._reaction_upsert,
            "reaction.updated": self._reaction_upsert,
            "reaction.deleted": self._reaction_deleted,
            "message.read": self._mark_read,
            "notification.mark_read": self._mark_read,
            "notification.mark_unread": self._mark_unread,
            "message.delivered": self._delivered,
            "channel.updated": self._channel_updated,
            "channel.created": self._channel_updated,
            "notification.channel_created": self._channel_updated,
            "channel.truncated": self._channel_truncated,
            "notification.channel_truncated": self._channel_truncated,
            "channel.deleted": self._channel_deleted,
            "notification.channel_deleted": self._channel_deleted,
            "channel.hidden": self._channel_hidden,
            "channel.visible": self._channel_visible,
            "member.added": self._member_upsert,
            "member.updated": self._member_upsert,
            "notification.added_to_channel": self._member_upsert,
            "notification.invited": self._member_upsert,
            "notification.invite_accepted": self._member_upsert,
            "notification.invite_rejected": self._member_upsert,
            "member.removed": self._member_removed,
            "notification.removed_from_channel": self._member_removed,
            "user.updated": self._user_event,
            "user.presence.changed": self._user_event,
            "user.banned": self._user_banned,
            "user.unbanned": self._user_banned,
            "user.deleted": self._user_event,
            "user.messages.deleted": self._user_messages_deleted,
            "draft.updated": self._draft_updated,
            "draft.deleted": self._draft_deleted,
            "health.check": self._health_check,
            "thread.updated": self._thread_updated,
        }
        # Tables projected by modules of their own, registered here.
        self.reminders = ReminderProjector(own_user_id)
        for kind in REMINDER_EVENTS:
            self._handlers[kind] = self.reminders.apply
        self.mutes = MuteProjector()
        for kind in MUTE_EVENTS:
            self._handlers[kind] = self.mutes.apply
        self.ranges = HeldRanges()
        # The events of local commands, by topic: their payloads are the library's own, not a
        # backend event, so their handlers decode them themselves (projections.local).
        from chatledger.projections.local import LocalProjector

        self._raw_handlers: dict[str, Callable[[apsw.Cursor, Item], None]] = (
            LocalProjector(self).handlers)
        # The log's own summary entries (what a response held as a whole), likewise.
        self._summary_handlers: dict[str, Callable[[apsw.Cursor, Item], None]] = {
            ingest.CHANNEL_STATE: self._channel_state,
            ingest.QUERY_RESULT: self._query_result,
            ingest.SYNC_RESULT: self._sync_result,
        }

    def forget_cache(self) -> None:
        """Drop what is remembered of rows (after a rollback or a rebuild)."""
        self._pending_channels.clear()
        self._pending_unread.clear()
        self._counts_unread_in.clear()
        self._users_on_file.clear()
        self._messages_seen.clear()
        self._removed.forget()
        self._seen_version = None
        self.mutes.forget()
        self.ranges.discard()

    # -- entry point ---------------------------------------------------------------------------

    def apply(self, c: apsw.Cursor, items: Iterable[Item]) -> None:
        try:
            self._apply(c, items)
        except BaseException:
            self.ranges.discard()
            raise
        self.ranges.flush(c)

    def _apply(self, c: apsw.Cursor, items: Iterable[Item]) -> None:
        self._check_remembered(c)
        items = screened(c, items)  # values the tables cannot hold: left out, recorded
        handlers = self._handlers
        raw_handlers = self._raw_handlers
        summary_handlers = self._summary_handlers
        removed = self._removed
        decode = p.EVENT.decode
        for item in items:
            kind = item.type
            handler = handlers.get(kind)
            raw = None
            if handler is None:
                raw = raw_handlers.get(kind) or summary_handlers.get(kind)
                if raw is None:
                    if not kind.startswith("poll."):
                        continue  # unknown, ephemeral, or the library's own events: the log keeps them
                    handler = self._poll
            if raw is not None:
                self._barrier(c)
                try:
                    raw(c, item)
                except (*DECODE_ERRORS, *UNAPPLIABLE):
                    logger.warning("could not project %s at position %d", kind, item.position,
                                   exc_info=True)
                self._barrier(c)
                continue
            try:
                event = decode(item.payload)
            except DECODE_ERRORS:
                # Stored verbatim but not shaped as this type says: nothing to project.
                continue
            if removed.known(c) and removed.before_removal(
                    c, self._cid_of(item, event, event.message), t(event.created_at)):
                continue  # from before its channel was deleted or left: it stays in the log
            if kind not in RUN_WITH_NEW_MESSAGES:
                self._barrier_for(c, item, event)
            try:
                handler(c, item, event)
            except UNAPPLIABLE:
                # An event this version cannot apply must not cost the user the event itself:
                # it is in the log, and a rebuild (which skips it the same way) agrees.
                logger.warning("could not project %s at position %d", kind, item.position,
                               exc_info=True)
        self._barrier(c)

    def _check_remembered(self, c: apsw.Cursor) -> None:
        """Forget remembered rows if another connection may have changed them since."""
        # data_version changes only for commits made by other connections.
        seen = (c.connection, c.execute("PRAGMA data_version").fetchone()[0])
        if seen != self._seen_version:
            self._users_on_file.clear()
            self._counts_unread_in.clear()
            self.mutes.forget()
            self._removed.forget()
        self._seen_version = seen

    def _barrier_for(self, c: apsw.Cursor, item: Item, event: p.Event) -> None:
        """The barrier before an event: for the channels it names (each handler outside the run
        changes only those), or for all when it names none."""
        named = self._cid_of(item, event)
        in_object = self._channel_cid(event.channel) if event.channel else None
        if named is None and in_object is None:
            self._barrier(c)
            return
        for cid in {named, in_object} - {None}:
            self._barrier(c, cid)

    def _barrier(self, c: apsw.Cursor, cid: str | None = None) -> None:
        """Before an event that reads or changes channels or reads (of channel `cid` only, or of
        any): write what the run of new messages did to them."""
        if cid is None:
            if self._pending_channels or self._pending_unread:
                self._flush(c, self._pending_channels.items(), self._pending_unread.items())
                self._pending_channels.clear()
                self._pending_unread.clear()
            return
        channel = self._pending_channels.pop(cid, None)
        unread = self._pending_unread.pop(cid, None)
        if channel is not None or unread is not None:
            self._flush(c, [(cid, channel)] if channel is not None else (),
                        [(cid, unread)] if unread is not None else ())

    def _flush(
        self, c: apsw.Cursor,
        channels: Iterable[
            tuple[str, tuple[int | None, int | None, int | None, int | None, int | None]]],
        unread: Iterable[tuple[str, list[int | None]]],
    ) -> None:
        """Write what a run of new messages did to their channels and the own unread counts."""
        # One statement per channel files it (even one not heard of before) with its newest
        # message time and the newest counters the events carried, by the server's clock.
        channels = list(channels)
        if rows := [(cid, *cid.partition(":")[::2], *values[:4]) for cid, values in channels]:
            c.executemany(FLUSH_CHANNEL_RUN, rows)
        if rows := [(values[4], cid) for cid, values in channels if values[4] is not None]:
            c.executemany(UNHIDE_ON_MESSAGE, rows)
        if rows := [(cid, self.own, encode_json(times).decode()) for cid, times in unread]:
            c.executemany(ADD_UNREAD, rows)

    # -- messages ------------------------------------------------------------------------------

    def _cid_of(self, item: Item, event: p.Event, message: p.Message | None = None) -> str | None:
        if message is not None and message.cid:
            return message.cid
        if event.cid and event.cid != "*":
            return event.cid
        return item.stream if ":" in item.stream else None

    def upsert_message(
        self, c: apsw.Cursor, cid: str, m: p.Message, position: int, slot: int, *,
        event_at: int | None = None, confirm: tuple[str, ...] = ("sending", "send_failed"),
        deleted_at: int | None = None, leave_local: bool = False, snapshot: bool = False,
    ) -> bool:
        """Insert a message's row, or replace it when this state is not older than the row's;
        True when it was not on file before (a new reply then counts for its parent).

        `event_at`: the server time of what carries the message (an event's `created_at`; for
        a channel state, the newest time in it; None for a command's answer);
        `deleted_at`: the message is soft-deleted (at the message's own time, else this one);
        `leave_local`: a row showing a local change of its own is left as it is; `snapshot`:
        the message comes from a channel state (its reply count is taken as it is, and a reply
        it files is counted in its parent's already). A message the backend hard-deleted is
        never filed again.
        """
        created = t(m.created_at)
        kind, gone_at = m.type, t(m.deleted_at)
        if deleted_at is not None:
            kind, gone_at = "deleted", gone_at or deleted_at
        updated = t(m.updated_at)
        stamp = newest(updated, gone_at, event_at)
        row = [
            cid, created, m.id, m.author, kind, m.parent_id, b(m.show_in_channel),
            m.reply_count or 0, b(m.pinned), t(m.pinned_at), updated, gone_at, b(m.silent),
            position, slot, stamp,
        ]
        counts = m.parent_id is None and not snapshot  # (else the payload's count stands)
        replies: list[int] | tuple[int, int] | None = None
        seen = m.id in self._messages_seen
        if created is not None and not seen:
            filed, replies = self._file_message(c, m, row, snapshot, counts)
            if filed:
                return True
        existing = c.execute(MESSAGE_ON_FILE, (m.id,)).fetchone()
        if existing is None and seen and created is not None:
            # Gone since it was seen: filed as if never seen (the usual path above).
            filed, replies = self._file_message(c, m, row, snapshot, counts)
            if filed:
                return True
        if existing is None:  # no time given, or hard-deleted: file it at the epoch, or not
            self._messages_seen.discard(m.id)
            row[1] = 0
            filed, replies = self._file_message(c, m, row, snapshot, counts)
            return filed
        self._message_seen(m.id)
        on_file_at, state, command = existing[5], existing[1], existing[2]
        if stamp is not None and on_file_at is not None and stamp < on_file_at:
            return False  # an older state than the row shows, delivered late
        if leave_local and state is not None and command is not None:
            return False
        if created is None:
            row[1] = existing[0]
        new_state = None if state in confirm else state  # confirmed: the backend has it
        if state is not None and keeps_local(c, command):
            # A local change not yet tried: whatever the backend says predates it, so the row
            # keeps showing it (and its state) until the command's own outcome.
            new_state, row[13], row[14] = state, existing[3], existing[4]
        shown_at = stamp if stamp is not None else on_file_at  # the row's time after this
        if m.reply_count is None or not counts:
            replies = NO_REPLIES
        elif replies is None or shown_at != stamp:  # (else read above, nothing written since)
            replies = c.execute(REPLIES_SINCE, (m.id, shown_at)).fetchone()
        c.execute(REPLACE_MESSAGE, (*row[:2], *row[3:7], m.reply_count, *row[8:], new_state, m.id,
                                    snapshot, *replies))
        return False

    def _file_message(self, c: apsw.Cursor, m: p.Message, row: list[object], snapshot: bool,
                      counts: bool) -> tuple[bool, list[int]]:
        """File message `m`'s `row` (created at `row[1]`) unless the backend hard-deleted it, it
        is older than its channel's truncation, or it is on file: (filed, its reply counts)."""
        created = row[1]
        refused, *replies = c.execute(MESSAGE_FILING, (m.id, row[0], created, row[15],
                                                       counts)).fetchone()
        if refused:
            return False, replies
        c.execute(INSERT_MESSAGE, (*row, snapshot, *replies))
        if not c.connection.changes():
            return False, replies
        self._message_seen(m.id)
        if m.parent_id and not snapshot:
            self.count_reply(c, m.parent_id, created)  # type: ignore[arg-type]
        return True, replies

    def _message_seen(self, message_id: str) -> None:
        if len(self._messages_seen) >= _MESSAGES_REMEMBERED:
            self._messages_seen.clear()  # a bound on memory; a forgotten id costs a try
        self._messages_seen.add(message_id)

    def message_new(self, c: apsw.Cursor, item: Item, event: p.Event) -> None:
        m = event.message
        if event.channel:
            self._barrier(c)  # the channel object lands after what earlier messages did to it
            self._channel_upsert(c, item, event.channel, SLOT_EVENT)
        if m is None or not m.id:
            return
        cid = self._cid_of(item, event, m)
        if cid is None:
            return
        created = t(m.created_at)
        in_channel = not m.parent_id or bool(m.show_in_channel)
        latest = created if in_channel else None
        # A new message shows a hidden channel again, unless the channel is muted then.
        unhide = (created if in_channel and created is not None
                  and not self.mutes.silences(c, cid, created) else None)
        members, count = event.channel_member_count, event.channel_message_count
        # The counters are as of the event's server time; an event without them says nothing.
        counts_at = t(event.created_at) if members is not None or count is not None else None
        pending = self._pending_channels.get(cid)
        if pending is not None:
            if pending[0] is not None and (latest is None or pending[0] > latest):
                latest = pending[0]
            if pending[4] is not None and (unhide is None or pending[4] > unhide):
                unhide = pending[4]
            if members is None and count is None or (
                    pending[3] is not None and (counts_at is None or counts_at < pending[3])):
                members, count, counts_at = pending[1], pending[2], pending[3]  # newer, or only
            else:
                members = members if members is not None else pending[1]
                count = count if count is not None else pending[2]
        self._pending_channels[cid] = (latest, members, count, counts_at, unhide)
        is_new = self.upsert_message(c, cid, m, item.position, SLOT_EVENT,
                                     event_at=t(event.created_at))
        if item.type == "message.new" and in_channel and created is not None:
            self.ranges.extend_head(c, cid, (created, m.id))  # the channel is followed
        self._remember_user(c, item, event.user)
        if is_new and m.parent_id:
            c.execute(THREAD_REPLY, (created, m.parent_id))
        if not is_new or self.own is None:
            return
        author = m.author
        if author == self.own:
            self._pending_unread.pop(cid, None)  # reading up to here clears what came before
            # (A local send, an event without a server time, sets no server time either.)
            self.set_read(c, cid, self.own, last_read=created, unread=0, last_read_message_id=m.id,
                          state_at=created if event.created_at else None)
        elif (in_channel and not m.silent and m.type not in ("system", "ephemeral", "error")
              and self._counts_unread(c, cid)
              and not self.mutes.silences(c, cid, item.received_at if created is None else created)):
            self._pending_unread.setdefault(cid, []).append(created)

    def _counts_unread(self, c: apsw.Cursor, cid: str) -> bool:
        """Unread counts are kept for channels the own user is in (or whose members are unknown)."""
        known = self._counts_unread_in.get(cid)
        if known is not None:
            return known
        row = c.execute(
            "SELECT max(user_id = ?), count(*) FROM members WHERE cid=?", (self.own, cid)
        ).fetchone()
        counts = self._counts_unread_in[cid] = not row[1] or bool(row[0])
        return counts

    def _message_updated(self, c: apsw.Cursor, item: Item, event: p.Event) -> None:
        m = event.message
        if m is None or not m.id:
            return
        cid = self._cid_of(item, event, m)
        if cid is None:
            return
        self.ensure_channel(c, cid)
        self.upsert_message(c, cid, m, item.position, SLOT_EVENT, event_at=t(event.created_at),
                            confirm=("sending", "send_failed", "updating", "update_failed"))

    def _message_deleted(self, c: apsw.Cursor, item: Item, event: p.Event) -> None:
        m = event.message
        if m is None or not m.id:
            return
        when = t(event.created_at)
        if event.hard_delete:
            self.hard_deleted(c, m.id, self._cid_of(item, event, m),
                              newest(when, t(m.deleted_at)), m)
            return
        if event.deleted_for_me:
            c.execute(DELETE_FOR_ME, (item.position, SLOT_EVENT,
                                      newest(when, t(m.updated_at), t(m.deleted_at)), m.id))
            return
        cid = self._cid_of(item, event, m)
        if cid is None:
            return
        self.ensure_channel(c, cid)
        self.upsert_message(c, cid, m, item.position, SLOT_EVENT, event_at=when,
                            deleted_at=when or item.received_at,
                            confirm=("sending", "send_failed", "deleting", "delete_failed"))

    def count_reply(self, c: apsw.Cursor, parent_id: str, created: int | None) -> None:
        """A reply created at `created` was filed: its parent counts it (see COUNT_REPLY)."""
        c.execute(COUNT_REPLY, (created if created is not None else 0, parent_id))

    def hard_delete(self, c: apsw.Cursor, where: str, params: tuple[object, ...], *,
                    deleted_at: int | None = None) -> None:
        """Remove messages (and their reactions), keeping parents' reply counts right:
        `deleted_at`, the backend's time of a deletion; None when they just go from here
        (a cancelled send, a truncation)."""
        rows = c.execute(f"SELECT id, parent_id, created_at FROM messages WHERE {where}",
                         params).fetchall()
        for message_id, parent_id, created in rows:
            c.execute("DELETE FROM reactions WHERE message_id=?", (message_id,))
            if parent_id:
                # (A deletion stamped before the creation is taken as at the creation.)
                c.execute(UNCOUNT_REPLY, (newest(deleted_at, created), parent_id))
        c.execute(f"DELETE FROM messages WHERE {where}", params)

    def hard_deleted(self, c: apsw.Cursor, message_id: str, cid: str | None,
                     deleted_at: int | None, m: p.Message | None) -> None:
        """The backend hard-deleted a message (at `deleted_at`; `m`, its object as the backend
        last sent it, if at hand). Remembered even when the row is not on file: a `/sync`
        replaying older events may bring the message or a reaction to it after this."""
        row = c.execute(REPLY_ON_FILE, (message_id,)).fetchone()
        parent_id = row[0] if row is not None else (m.parent_id if m is not None else None)
        created = row[1] if row is not None else (t(m.created_at) if m is not None else None)
        if deleted_at is not None:
            deleted_at = newest(deleted_at, created)  # never before its creation
        c.execute(TOMBSTONE_MESSAGE, (message_id, cid, parent_id, created, deleted_at))
        if not c.connection.changes():
            return  # heard of before: its count and reactions went then
        if row is not None:
            self.hard_delete(c, "id=?", (message_id,), deleted_at=deleted_at)
        elif parent_id and created is not None and deleted_at is not None:
            c.execute(UNCOUNT_UNSEEN_REPLY, (created, deleted_at, parent_id))
        c.execute("DELETE FROM reactions WHERE message_id=?", (message_id,))

    # -- reactions -----------------------------------------------------------------------------

    def _reaction_key(self, event: p.Event) -> tuple[str, str, str] | None:
        """(message id, user id, type) of a reaction event's reaction, None when incomplete."""
        r = event.reaction
        if r is None or not r.type:
            return None
        message_id = r.message_id or (event.message.id if event.message else None)
        user_id = r.user_id or (r.user.id if r.user else None) or (event.user.id if event.user else None)
        if not message_id or not user_id:
            return None
        return message_id, user_id, r.type

    def _reaction_upsert(self, c: apsw.Cursor, item: Item, event: p.Event) -> None:
        key = self._reaction_key(event)
        if key is None:
            return
        r = event.reaction
        assert r is not None
        stamp = t(r.updated_at) or t(r.created_at) or t(event.created_at)
        c.execute(UPSERT_REACTION, (*key, r.score if r.score is not None else 1,
                                    t(r.created_at), stamp, item.position))
        if c.connection.changes() and stamp is not None:
            c.execute(FORGET_REACTION_DELETION, (*key, stamp))
        self._reaction_message(c, item, event)

    def _reaction_deleted(self, c: apsw.Cursor, item: Item, event: p.Event) -> None:
        key = self._reaction_key(event)
        if key is None:
            return
        r = event.reaction
        assert r is not None
        when = t(event.created_at) or t(r.updated_at)
        c.execute(DELETE_REACTION, (*key, when))
        c.execute(TOMBSTONE_REACTION, (*key, when))
        self._reaction_message(c, item, event)

    def _reaction_message(self, c: apsw.Cursor, item: Item, event: p.Event) -> None:
        """The event carries the message's whole state after the change, with its counters: it
        becomes the message's source when newer, and files a message not on file yet."""
        m = event.message
        if m is None or not m.id:
            return
        stamp = newest(t(m.updated_at), t(m.deleted_at), t(event.created_at))
        cid = self._cid_of(item, event, m)
        if m.created_at and cid is not None:
            # A whole message (one with its time): as any other state of it.
            if self.upsert_message(c, cid, m, item.position, SLOT_EVENT, event_at=stamp,
                                   confirm=(), leave_local=True):
                self.ensure_channel(c, cid)
            return
        c.execute(REACTION_MESSAGE, (item.position, SLOT_EVENT, stamp, m.id))

    # -- reads ---------------------------------------------------------------------------------

    def set_read(
        self, c: apsw.Cursor, cid: str, user_id: str, *, last_read: int | None, unread: int,
        last_read_message_id: str | None, first_unread_message_id: str | None = None,
        state_at: int | None = None,
    ) -> None:
        """Replace a read row, unless it holds a newer state (`state_at`: the server time of
        this one; None for a local change, which replaces whatever is on file)."""
        c.execute(SET_READ, (cid, user_id, last_read, unread, last_read_message_id,
                             first_unread_message_id, state_at))

    def _event_user(self, event: p.Event) -> str | None:
        return (event.user.id if event.user else None) or event.user_id

    def _mark_read(self, c: apsw.Cursor, item: Item, event: p.Event) -> None:
        user_id = self._event_user(event) or self.own
        if event.thread is not None:
            # A thread was read: that thread's read state moves, the channel's stays as it was.
            if user_id is not None and event.thread.parent_message_id:
                ThreadReads.record(c, parent_id=event.thread.parent_message_id, user_id=user_id,
                                   cid=self._cid_of(item, event), last_read=t(event.created_at),
                                   last_read_message_id=event.last_read_message_id,
                                   position=item.position)
            return
        if user_id is None:
            return
        when = t(event.created_at)
        cid = self._cid_of(item, event)
        if cid is None:  # notification.mark_read without a channel: everything is read
            c.execute(READ_ALL, (when, user_id))
            return
        self.set_read(c, cid, user_id, last_read=when, unread=0,
                      last_read_message_id=event.last_read_message_id, state_at=when)

    def _mark_unread(self, c: apsw.Cursor, item: Item, event: p.Event) -> None:
        user_id = self._event_user(event) or self.own
        cid = self._cid_of(item, event)
        if user_id is None or cid is None:
            return
        self.ensure_channel(c, cid)  # a channel known only by this event is one with unread
        self.set_read(
            c, cid, user_id, last_read=t(event.last_read_at), unread=event.unread_messages or 0,
            last_read_message_id=event.last_read_message_id,
            first_unread_message_id=event.first_unread_message_id, state_at=t(event.created_at),
        )

    def _delivered(self, c: apsw.Cursor, item: Item, event: p.Event) -> None:
        user_id = self._event_user(event)
        cid = self._cid_of(item, event)
        if user_id is None or cid is None:
            return
        c.execute(DELIVERED, (cid, user_id, t(event.last_delivered_at),
                              event.last_delivered_message_id))

    # -- channels ------------------------------------------------------------------------------

    def ensure_channel(self, c: apsw.Cursor, cid: str) -> None:
        """A channel first heard of through one of its events gets a row from its cid alone."""
        kind, _, ident = cid.partition(":")
        c.execute("INSERT OR IGNORE INTO channels (cid, type, id) VALUES (?,?,?)", (cid, kind, ident))

    def _channel_upsert(
        self, c: apsw.Cursor, item: Item, raw: msgspec.Raw, slot: int
    ) -> str | None:
        try:
            ch = p.CHANNEL.decode(raw)
        except DECODE_ERRORS:
            return None
        cid = ch.cid or (f"{ch.type}:{ch.id}" if ch.type and ch.id else None)
        if cid is None:
            return None
        kind, _, ident = cid.partition(":")
        try:
            custom = custom_fields(raw, CHANNEL_FIELDS)
        except DECODE_ERRORS:
            custom = {}
        c.execute(
            "INSERT INTO channels (cid, type, id, name, created_by, created_at, updated_at, "
            "last_message_at, member_count, frozen, disabled, hidden, team, truncated_at, "
            "deleted_at, custom, position, slot) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?) "
            "ON CONFLICT (cid) DO UPDATE SET type=excluded.type, id=excluded.id, "
            "name=excluded.name, created_by=excluded.created_by, created_at=excluded.created_at, "
            "updated_at=excluded.updated_at, "
            "last_message_at=max(coalesce(excluded.last_message_at, 0), "
            "coalesce(channels.last_message_at, 0)), "
            "member_count=coalesce(excluded.member_count, channels.member_count), "
            "frozen=excluded.frozen, disabled=excluded.disabled, "
            "hidden=CASE WHEN ? THEN excluded.hidden ELSE channels.hidden END, team=excluded.team, "
            "truncated_at=excluded.truncated_at, deleted_at=excluded.deleted_at, "
            "custom=excluded.custom, position=excluded.position, slot=excluded.slot "
            # An older object of the channel, delivered late, does not replace a newer one.
            "WHERE excluded.updated_at IS NULL OR channels.updated_at IS NULL "
            "OR excluded.updated_at >= channels.updated_at",
            (cid, ch.type or kind, ch.id or ident, ch.name, ch.created_by.id if ch.created_by else None,
             t(ch.created_at), t(ch.updated_at), t(ch.last_message_at), ch.member_count,
             b(ch.frozen), b(ch.disabled), b(ch.hidden), ch.team, t(ch.truncated_at),
             t(ch.deleted_at), msgspec.json.encode(custom, order="sorted").decode() if custom else None,
             item.position, slot, ch.hidden is not None),
        )
        c.execute("UPDATE channels SET last_message_at=NULLIF(last_message_at, 0) WHERE cid=?", (cid,))
        for member in ch.members or ():
            self._upsert_member(c, cid, member)
        return cid

    def _channel_updated(self, c: apsw.Cursor, item: Item, event: p.Event) -> None:
        cid = self._channel_upsert(c, item, event.channel, SLOT_EVENT) if event.channel else None
        m = event.message
        if m is not None and m.id:
            # A change made by a user (a rename, say) comes with a system message that belongs
            # in the channel's history.
            cid = self._cid_of(item, event, m) or cid
            if cid is not None:
                self.ensure_channel(c, cid)
                self.upsert_message(c, cid, m, item.position, SLOT_EVENT,
                                    event_at=t(event.created_at))

    def _channel_truncated(self, c: apsw.Cursor, item: Item, event: p.Event) -> None:
        cid = self._cid_of(item, event)
        if event.channel:
            cid = self._channel_upsert(c, item, event.channel, SLOT_EVENT) or cid
        if cid is None:
            return
        row = c.execute("SELECT truncated_at FROM channels WHERE cid=?", (cid,)).fetchone()
        until = (row[0] if row and row[0] else None) or t(event.created_at)
        if until is not None:
            self.hard_delete(c, "cid=? AND created_at<?", (cid, until))
        if event.message is not None and event.message.id:
            self.upsert_message(c, cid, event.message, item.position, SLOT_EVENT,
                                event_at=t(event.created_at))

    def _channel_deleted(self, c: apsw.Cursor, item: Item, event: p.Event) -> None:
        cid = self._cid_of(item, event)
        if cid is None and event.channel:
            cid = self._channel_cid(event.channel)
        if cid is not None:
            self._drop_channel(c, cid, t(event.created_at))

    @staticmethod
    def _channel_cid(raw: msgspec.Raw) -> str | None:
        try:
            ch = p.CHANNEL.decode(raw)
        except DECODE_ERRORS:
            return None
        return ch.cid or (f"{ch.type}:{ch.id}" if ch.type and ch.id else None)

    def _drop_channel(self, c: apsw.Cursor, cid: str, when: int | None) -> None:
        """The channel is gone (deleted, or the own user left it at `when`)."""
        self._removed.record(c, cid, when)
        c.execute("DELETE FROM reactions WHERE message_id IN (SELECT id FROM messages WHERE cid=?)",
                  (cid,))
        for table in ("messages", "members", "reads", "drafts", "channels"):
            c.execute(f"DELETE FROM {table} WHERE cid=?", (cid,))
        self.ranges.forget(c, cid)
        self._counts_unread_in.pop(cid, None)

    def _channel_hidden(self, c: apsw.Cursor, item: Item, event: p.Event) -> None:
        cid = self._cid_of(item, event)
        if cid is None:
            return
        self.ensure_channel(c, cid)
        c.execute(SET_HIDDEN, (1, t(event.created_at), cid))
        if event.clear_history:
            until = t(event.created_at) or item.received_at
            self.hard_delete(c, "cid=? AND created_at<=?", (cid, until))
            c.execute(CLEAR_HISTORY, (until, cid))

    def _channel_visible(self, c: apsw.Cursor, item: Item, event: p.Event) -> None:
        cid = self._cid_of(item, event)
        if cid is not None:
            c.execute(SET_HIDDEN, (0, t(event.created_at), cid))

    # -- members -------------------------------------------------------------------------------

    def _upsert_member(self, c: apsw.Cursor, cid: str, m: p.Member,
                       at: int | None = None) -> None:
        """Merge a member object into its row (`at`: the server time of what carried it)."""
        uid = m.uid
        if not uid:
            return
        self._counts_unread_in.pop(cid, None)
        updated = t(m.updated_at)
        c.execute(UPSERT_MEMBER, (
            cid, uid, m.role, m.channel_role, None if m.banned is None else b(m.banned),
            _time_or_none(m.pinned_at), _time_or_none(m.archived_at), t(m.created_at),
            updated, m.pinned_at is not msgspec.UNSET, m.archived_at is not msgspec.UNSET,
            newest(updated, at),
        ))

    def _member_upsert(self, c: apsw.Cursor, item: Item, event: p.Event) -> None:
        cid = self._cid_of(item, event)
        if event.channel:
            cid = self._channel_upsert(c, item, event.channel, SLOT_EVENT) or cid
        if cid is None or event.member is None:
            return
        self.ensure_channel(c, cid)
        self._upsert_member(c, cid, event.member, t(event.created_at))

    def _member_removed(self, c: apsw.Cursor, item: Item, event: p.Event) -> None:
        cid = self._cid_of(item, event)
        if cid is None and event.channel:
            cid = self._channel_cid(event.channel)
        uid = (event.member.uid if event.member else None) or self._event_user(event)
        if cid is None or uid is None:
            return
        if uid == self.own:
            # No longer ours: it leaves the channel list.
            self._drop_channel(c, cid, t(event.created_at))
        else:
            when = t(event.created_at)
            c.execute(REMOVE_MEMBER, (cid, uid, when))
            if when is not None:
                c.execute(REMEMBER_REMOVED_MEMBER, (cid, uid, when))
            self._counts_unread_in.pop(cid, None)

    # -- users ---------------------------------------------------------------------------------

    def _remember_user(self, c: apsw.Cursor, item: Item, user: p.User | None,
                       slot: int = SLOT_EVENT) -> None:
        """Upsert a user seen in passing, unless the row on file already says the same (`slot`:
        where the object is in the entry; see the `users` table)."""
        if user is None or not user.id:
            return
        # Decided by the row on file (remembered only as it is on file): a rebuild must make the
        # same choice, or `verify` would find the positions differ.
        on_file = self._users_on_file.get(user.id, _MISSING)
        if on_file is _MISSING:
            on_file = c.execute(
                "SELECT name, role, online, banned, last_active, updated_at, deleted_at FROM users "
                "WHERE id=?", (user.id,),
            ).fetchone()
            self._remember_user_row(user.id, on_file)
        if on_file == (user.name, user.role, b(user.online), b(user.banned),
                       t(user.last_active), t(user.updated_at), t(user.deleted_at)):
            return
        self._upsert_user(c, item, user, slot=slot)

    def _upsert_user(self, c: apsw.Cursor, item: Item, user: p.User, *, banned: int | None = None,
                     slot: int = SLOT_EVENT) -> None:
        row = (user.name, user.role, b(user.online),
               banned if banned is not None else b(user.banned), t(user.last_active),
               t(user.updated_at), t(user.deleted_at))
        c.execute(
            "INSERT INTO users (id, name, role, online, banned, last_active, updated_at, deleted_at, "
            "position, slot) VALUES (?,?,?,?,?,?,?,?,?,?) ON CONFLICT (id) DO UPDATE SET "
            "name=excluded.name, role=excluded.role, online=excluded.online, "
            "banned=excluded.banned, last_active=excluded.last_active, "
            "updated_at=excluded.updated_at, deleted_at=excluded.deleted_at, "
            "position=excluded.position, slot=excluded.slot "
            # An older object of the user, delivered late, does not replace a newer one.
            f"WHERE {_USER_TIME.format('excluded')} = 0 "
            f"OR {_USER_TIME.format('excluded')} >= {_USER_TIME.format('users')}",
            (user.id, *row, item.position, slot),
        )
        if c.connection.changes():
            self._remember_user_row(user.id, row)
        else:
            self._users_on_file.pop(user.id, None)  # the row on file stands

    def _remember_user_row(self, user_id: str, row: tuple[object, ...] | None) -> None:
        if len(self._users_on_file) >= _USERS_REMEMBERED:
            self._users_on_file.clear()  # a bound on memory; forgotten rows are read again
        self._users_on_file[user_id] = row

    def _user_event(self, c: apsw.Cursor, item: Item, event: p.Event) -> None:
        if event.user is not None and event.user.id:
            self._upsert_user(c, item, event.user)

    def _user_banned(self, c: apsw.Cursor, item: Item, event: p.Event) -> None:
        uid = self._event_user(event)
        if uid is None:
            return
        banned = 1 if event.type == "user.banned" else 0
        cid = self._cid_of(item, event)
        if cid is not None:  # banned from one channel
            c.execute("UPDATE members SET banned=? WHERE cid=? AND user_id=?", (banned, cid, uid))
            return
        if event.user is not None:
            self._upsert_user(c, item, event.user, banned=banned)
        else:
            c.execute("UPDATE users SET banned=? WHERE id=?", (banned, uid))
            self._users_on_file.pop(uid, None)

    def _user_messages_deleted(self, c: apsw.Cursor, item: Item, event: p.Event) -> None:
        uid = self._event_user(event)
        if uid is None:
            return
        cid = self._cid_of(item, event)
        when = t(event.created_at)
        # The messages the user had sent by then (one sent later is not deleted by this).
        where, params = ("user_id=? AND cid=?", (uid, cid)) if cid else ("user_id=?", (uid,))
        if when is not None:
            where, params = f"{where} AND created_at<=?", (*params, when)
        if event.hard_delete:
            c.execute("INSERT INTO deleted_messages (id, cid, parent_id, created_at, deleted_at) "
                      f"SELECT id, cid, parent_id, created_at, ? FROM messages WHERE {where} "
                      "ON CONFLICT (id) DO NOTHING", (when, *params))
            self.hard_delete(c, where, params, deleted_at=when)
        else:
            # Sticky: an older state of one of them, delivered late, does not undo it.
            c.execute(
                "UPDATE messages SET type='deleted', deleted_at=coalesce(deleted_at, ?1), "
                f"state_at=max(coalesce(state_at, ?2), coalesce(?2, state_at)) WHERE {where}",
                (when or item.received_at, when, *params),
            )

    # -- drafts, polls, connection -------------------------------------------------------------

    def _draft_updated(self, c: apsw.Cursor, item: Item, event: p.Event) -> None:
        d = event.draft
        cid = (d.channel_cid if d else None) or self._cid_of(item, event)
        if cid is None:
            return
        self.ensure_channel(c, cid)
        c.execute(
            "INSERT INTO drafts (cid, parent_id, created_at, position) VALUES (?,?,?,?) "
            "ON CONFLICT (cid, parent_id) DO UPDATE SET created_at=excluded.created_at, "
            "position=excluded.position",
            (cid, (d.parent_id if d else None) or "", t(d.created_at) if d else None, item.position),
        )

    def _draft_deleted(self, c: apsw.Cursor, item: Item, event: p.Event) -> None:
        d = event.draft
        cid = (d.channel_cid if d else None) or self._cid_of(item, event)
        if cid is not None:
            c.execute("DELETE FROM drafts WHERE cid=? AND parent_id=?",
                      (cid, (d.parent_id if d else None) or ""))

    def _poll(self, c: apsw.Cursor, item: Item, event: p.Event) -> None:
        poll = event.poll
        if poll is None or not poll.id:
            return
        if event.type == "poll.deleted":
            c.execute("DELETE FROM polls WHERE id=?", (poll.id,))
            return
        c.execute(
            "INSERT INTO polls (id, cid, message_id, updated_at, position) VALUES (?,?,?,?,?) "
            "ON CONFLICT (id) DO UPDATE SET cid=coalesce(excluded.cid, polls.cid), "
            "message_id=coalesce(excluded.message_id, polls.message_id), "
            "updated_at=excluded.updated_at, position=excluded.position",
            (poll.id, self._cid_of(item, event), event.message.id if event.message else None,
             t(poll.updated_at), item.position),
        )

    def _thread_updated(self, c: apsw.Cursor, item: Item, event: p.Event) -> None:
        thread = event.thread
        if thread is None or not thread.parent_message_id:
            return
        c.execute(
            "INSERT INTO threads (parent_id, cid, reply_count, participant_count, "
            "last_message_at, updated_at, position) VALUES (?,?,?,?,?,?,?) "
            "ON CONFLICT (parent_id) DO UPDATE SET cid=coalesce(excluded.cid, cid), "
            "reply_count=coalesce(excluded.reply_count, reply_count), "
            "participant_count=coalesce(excluded.participant_count, participant_count), "
            "last_message_at=coalesce(excluded.last_message_at, last_message_at), "
            "updated_at=excluded.updated_at, position=excluded.position",
            (thread.parent_message_id, thread.channel_cid or self._cid_of(item, event),
             thread.reply_count, thread.participant_count, t(thread.last_message_at),
             t(thread.updated_at), item.position),
        )
        if thread.reply_count is not None:
            # The backend's count is the truth for the parent message too.
            c.execute("UPDATE messages SET reply_count=? WHERE id=?",
                      (thread.reply_count, thread.parent_message_id))

    def _health_check(self, c: apsw.Cursor, item: Item, event: p.Event) -> None:
        values: list[tuple[str, object]] = [("last_health_check_at", item.received_at)]
        if event.connection_id:
            values.append(("connection_id", event.connection_id))
        if event.me is not None and event.me.id:
            values.append(("me_position", item.position))
            self._remember_user(c, item, event.me)
            self.mutes.apply(c, item)
        c.executemany(
            "INSERT INTO connection (key, value) VALUES (?, ?) "
            "ON CONFLICT (key) DO UPDATE SET value=excluded.value",
            values,
        )

    # -- snapshots -----------------------------------------------------------------------------

    def _channel_state(self, c: apsw.Cursor, item: Item) -> None:
        """A channel state replaces what it covers and keeps what it does not (local sends)."""
        try:
            state = p.CHANNEL_STATE.decode(item.payload)
        except DECODE_ERRORS:
            return
        if self._removed.known(c) and self._older_than_removal(c, item, state):
            return
        cid = self._channel_upsert(c, item, state.channel, 0) if state.channel else None
        cid = cid or (item.stream if ":" in item.stream else None)
        if cid is None:
            return
        self.ensure_channel(c, cid)
        # A channel state has no time of its own, and its objects are as of the query (a
        # message's reply count and reactions move without its `updated_at`): the newest time
        # anywhere in its messages is a time they are all at least as new as.
        state_at = newest(*(newest(t(m.created_at), t(m.updated_at), t(m.deleted_at))
                            for m in (*(state.messages or ()), *(state.pinned_messages or ()))))
        if state.hidden is not None:
            c.execute(SET_HIDDEN, (b(state.hidden), state_at, cid))
        for index, m in enumerate(state.messages or ()):
            if m.id:
                self.upsert_message(c, m.cid or cid, m, item.position, index, event_at=state_at,
                                    snapshot=True)
                self._state_reactions(c, item, m)
        self.ranges.cover_page(c, cid, [(t(m.created_at) or 0, m.id) for m in state.messages or ()
                                        if m.id and m.created_at and (m.cid or cid) == cid])
        for index, m in enumerate(state.pinned_messages or ()):
            if m.id and not c.execute("SELECT 1 FROM messages WHERE id=?", (m.id,)).fetchone():
                self.upsert_message(c, m.cid or cid, m, item.position, SLOT_PINNED_BASE + index,
                                    event_at=state_at, snapshot=True)
                self._state_reactions(c, item, m)
        for index, member in enumerate(state.members or ()):
            self._upsert_member(c, cid, member, state_at)
            # A client that has only queried its channels knows their members' users this way.
            self._remember_user(c, item, member.user, index)
        if state.membership is not None:
            if not state.membership.uid and self.own:
                state.membership.user_id = self.own
            self._upsert_member(c, cid, state.membership, state_at)
        # Likewise its reads: they counted the unread messages up to that time at least.
        for read in state.read or ():
            uid = read.user_id or (read.user.id if read.user else None)
            if uid:
                last_read = t(read.last_read)
                self.set_read(c, cid, uid, last_read=last_read,
                              unread=read.unread_messages or 0,
                              last_read_message_id=read.last_read_message_id,
                              first_unread_message_id=read.first_unread_message_id,
                              state_at=newest(last_read, state_at))
        if state.draft is not None:
            c.execute(
                "INSERT INTO drafts (cid, parent_id, created_at, position) VALUES (?,?,?,?) "
                "ON CONFLICT (cid, parent_id) DO UPDATE SET created_at=excluded.created_at, "
                "position=excluded.position",
                (cid, state.draft.parent_id or "", t(state.draft.created_at), item.position),
            )

    def _older_than_removal(self, c: apsw.Cursor, item: Item, state: p.ChannelState) -> bool:
        """A channel state of a channel deleted or left since (a query answered before that):
        nothing in it is newer than the removal. A channel made again, or joined again, has
        a newer creation or membership."""
        try:
            channel = p.CHANNEL.decode(state.channel) if state.channel else p.Channel()
        except DECODE_ERRORS:
            channel = p.Channel()
        cid = (channel.cid or (f"{channel.type}:{channel.id}" if channel.type and channel.id
                               else None) or (item.stream if ":" in item.stream else None))
        membership = state.membership
        times = [t(channel.created_at), t(channel.updated_at), t(channel.last_message_at),
                 *(t(m.created_at) for m in state.messages or ())]
        if membership is not None:
            times += [t(membership.created_at), t(membership.updated_at)]
        latest = newest(*times)
        return latest is not None and self._removed.before_removal(c, cid, latest)

    def _state_reactions(self, c: apsw.Cursor, item: Item, m: p.StateMessage) -> None:
        """The reactions a channel state's message carries (the newest few, and the own
        user's), each as a reaction event would file it (older than the row: no change)."""
        for r in (*(m.latest_reactions or ()), *(m.own_reactions or ())):
            user_id = r.user_id or (r.user.id if r.user else None)
            if not r.type or not user_id:
                continue
            key = (r.message_id or m.id, user_id, r.type)
            stamp = t(r.updated_at) or t(r.created_at)
            try:
                c.execute(UPSERT_REACTION, (*key, r.score if r.score is not None else 1,
                                            t(r.created_at), stamp, item.position))
            except OverflowError:
                # A score the table cannot hold costs only this reaction, not the state.
                logger.warning("reaction %r at position %d not projected: score out of range",
                               key, item.position)
                continue
            if c.connection.changes() and stamp is not None:
                c.execute(FORGET_REACTION_DELETION, (*key, stamp))

    def _sync_result(self, c: apsw.Cursor, item: Item) -> None:
        """`last_sync_at` moves forward only: the store holds every event up to it."""
        try:
            result = p.SYNC_RESULT.decode(item.payload)
        except DECODE_ERRORS:
            return
        synced_at = t(result.synced_at)
        if synced_at is None:
            return
        c.execute(  # epoch microseconds, so that later compares greater whatever the format
            "INSERT INTO connection (key, value) VALUES ('last_sync_at', ?) "
            "ON CONFLICT (key) DO UPDATE SET value=excluded.value "
            "WHERE excluded.value > value",
            (synced_at,),
        )

    def _query_result(self, c: apsw.Cursor, item: Item) -> None:
        try:
            result = p.QUERY_RESULT.decode(item.payload)
        except DECODE_ERRORS:
            return
        key = query_key(bytes(result.filter) or None, bytes(result.sort) or None)
        c.execute(
            "INSERT INTO channel_queries (query, cids, position, received_at) VALUES (?,?,?,?) "
            "ON CONFLICT (query) DO UPDATE SET cids=excluded.cids, position=excluded.position, "
            "received_at=excluded.received_at",
            (key, msgspec.json.encode(result.cids).decode(), item.position, item.received_at),
        )
