"""What each backend event, and each summary of a response, does to the read tables.

`EventHandlers` holds one handler per event type: it reads the decoded event and calls the row
writers of `projections.rows`, the only code that writes the tables. `projections.projector`
composes these handlers with those of local commands and runs them, inside the transaction of
the append that brought the entries, so the tables and the log never disagree.

A run of new messages changes its channels (newest message time, counters) and the own unread
counts once per run rather than once per message: the handlers buffer those changes, and
`barrier` writes them before anything that reads or changes channels or reads.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

import apsw
import msgspec

from chatledger.eventstore import ingest
from chatledger.eventstore.wire import CHANNEL_FIELDS, custom_fields
from chatledger.projections import payloads
from chatledger.projections.filters import canonical_query_key
from chatledger.projections.item import Item
from chatledger.projections.mutes import MuteProjector
from chatledger.projections.rows import Rows
from chatledger.projections.rows.messages import IN_CHANNEL_BEFORE, IN_CHANNEL_UNTIL
from chatledger.projections.rows.reads import NOT_UNREAD_TYPES
from chatledger.projections.rows.values import as_flag
from chatledger.projections.rowtime import epoch_us, newest
from chatledger.projections.schema import SLOT_EVENT, SLOT_PINNED_BASE

__all__ = ["DECODE_ERRORS", "EventHandler", "EventHandlers", "RUN_WITH_NEW_MESSAGES",
           "SummaryHandler", "UNAPPLIABLE", "query_key"]

logger = logging.getLogger("chatledger.projections")

EventHandler = Callable[[apsw.Cursor, Item, payloads.Event], None]
SummaryHandler = Callable[[apsw.Cursor, Item], None]

# A stored payload can be valid for the log yet not shaped as its type says, or hold bad UTF-8
# in parts the log never read: such a payload projects nothing.
DECODE_ERRORS = (msgspec.MsgspecError, ValueError, RecursionError)  # WireError is a ValueError

# What applying a stored entry may raise when its payload is valid JSON yet unusable (a wrong
# type, an integer too big for SQLite): the entry is skipped, live and in a rebuild alike.
UNAPPLIABLE = (apsw.ConstraintError, apsw.MismatchError, TypeError, ValueError, KeyError,
               OverflowError)

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

# Local states a backend state of the message confirms (the backend has what they show).
CONFIRMS_EDIT = ("sending", "send_failed", "updating", "update_failed")
CONFIRMS_DELETE = ("sending", "send_failed", "deleting", "delete_failed")

# What a run of new messages did to one channel so far: (newest message time, member count,
# message count, the counts' server time, the newest message that shows the channel again if
# hidden).
ChannelRun = tuple[int | None, int | None, int | None, int | None, int | None]


def query_key(filter_raw: bytes | None, sort_raw: bytes | None) -> str:
    """The key of a query's cached online result, from the filter and sort as stored."""
    decode = msgspec.json.decode
    return canonical_query_key(decode(filter_raw) if filter_raw else None,
                               decode(sort_raw) if sort_raw else None)


def channel_cid(raw: msgspec.Raw) -> str | None:
    """The cid of a channel object, None when it names none (or is unreadable)."""
    try:
        channel = payloads.CHANNEL.decode(raw)
    except DECODE_ERRORS:
        return None
    return channel.cid or (f"{channel.type}:{channel.id}" if channel.type and channel.id
                           else None)


def event_user(event: payloads.Event) -> str | None:
    return (event.user.id if event.user else None) or event.user_id


class EventHandlers:
    """The handlers of backend events (`by_type`, and `poll` for any `poll.*`) and of the log's
    summary entries (`summaries`), writing through `rows`; `own_user_id` is the store's user,
    `mutes` the writer of the mute tables (which the first frame of a connection refreshes)."""

    def __init__(self, rows: Rows, own_user_id: str | None, mutes: MuteProjector) -> None:
        self.rows = rows
        self.own = own_user_id
        self.mutes = mutes
        # What a run of new messages does to channels and unread counts, written once per run
        # (`barrier`): by cid, the channel's `ChannelRun`, and the creation times of the
        # messages unread.
        self._pending_channels: dict[str, ChannelRun] = {}
        self._pending_unread: dict[str, list[int | None]] = {}
        self.by_type: dict[str, EventHandler] = {
            "message.new": self.message_new,
            "notification.message_new": self.message_new,
            "notification.thread_message_new": self.message_new,
            "message.updated": self.message_updated,
            "message.undeleted": self.message_updated,
            "message.deleted": self.message_deleted,
            "reaction.new": self.reaction_upsert,
            "reaction.updated": self.reaction_upsert,
            "reaction.deleted": self.reaction_deleted,
            "message.read": self.mark_read,
            "notification.mark_read": self.mark_read,
            "notification.mark_unread": self.mark_unread,
            "message.delivered": self.delivered,
            "channel.updated": self.channel_updated,
            "channel.created": self.channel_updated,
            "notification.channel_created": self.channel_updated,
            "channel.truncated": self.channel_truncated,
            "notification.channel_truncated": self.channel_truncated,
            "channel.deleted": self.channel_deleted,
            "notification.channel_deleted": self.channel_deleted,
            "channel.hidden": self.channel_hidden,
            "channel.visible": self.channel_visible,
            "member.added": self.member_upsert,
            "member.updated": self.member_upsert,
            "notification.added_to_channel": self.member_upsert,
            "notification.invited": self.member_upsert,
            "notification.invite_accepted": self.member_upsert,
            "notification.invite_rejected": self.member_upsert,
            "member.removed": self.member_removed,
            "notification.removed_from_channel": self.member_removed,
            "user.updated": self.user_event,
            "user.presence.changed": self.user_event,
            "user.banned": self.user_banned,
            "user.unbanned": self.user_banned,
            "user.deleted": self.user_event,
            "user.messages.deleted": self.user_messages_deleted,
            "draft.updated": self.draft_updated,
            "draft.deleted": self.draft_deleted,
            "health.check": self.health_check,
            "thread.updated": self.thread_updated,
        }
        # The log's own summary entries (what a response held as a whole): their payloads are
        # not events, so their handlers decode them themselves.
        self.summaries: dict[str, SummaryHandler] = {
            ingest.CHANNEL_STATE: self.channel_state,
            ingest.QUERY_RESULT: self.query_result,
            ingest.SYNC_RESULT: self.sync_result,
        }

    def forget(self) -> None:
        """Drop the run not written yet (the transaction is rolled back, or a rebuild starts)."""
        self._pending_channels.clear()
        self._pending_unread.clear()

    # -- the run of new messages -----------------------------------------------------------------

    def barrier_for(self, cursor: apsw.Cursor, item: Item, event: payloads.Event) -> None:
        """The barrier before an event: for the channels it names (each handler outside the run
        changes only those), or for all when it names none."""
        named = self.cid_of(item, event)
        in_object = channel_cid(event.channel) if event.channel else None
        if named is None and in_object is None:
            self.barrier(cursor)
            return
        for cid in {named, in_object} - {None}:
            self.barrier(cursor, cid)

    def barrier(self, cursor: apsw.Cursor, cid: str | None = None) -> None:
        """Before an event that reads or changes channels or reads (of channel `cid` only, or of
        any): write what the run of new messages did to them."""
        if cid is None:
            if self._pending_channels or self._pending_unread:
                self._flush(cursor, self._pending_channels.items(), self._pending_unread.items())
                self._pending_channels.clear()
                self._pending_unread.clear()
            return
        channel = self._pending_channels.pop(cid, None)
        unread = self._pending_unread.pop(cid, None)
        if channel is not None or unread is not None:
            self._flush(cursor, [(cid, channel)] if channel is not None else (),
                        [(cid, unread)] if unread is not None else ())

    def _flush(self, cursor: apsw.Cursor, channels: Iterable[tuple[str, ChannelRun]],
               unread: Iterable[tuple[str, list[int | None]]]) -> None:
        """Write what a run of new messages did to their channels and the own unread counts."""
        runs = []
        for cid, (latest, members, count, counts_at, unhide_at) in channels:
            kind, _, ident = cid.partition(":")
            runs.append((cid, kind, ident, latest, members, count, counts_at, unhide_at))
        self.rows.channels.flush_run(cursor, runs)
        self.rows.reads.add_unread(cursor, unread)

    # -- messages --------------------------------------------------------------------------------

    @staticmethod
    def cid_of(item: Item, event: payloads.Event,
               message: payloads.Message | None = None) -> str | None:
        """The channel an event is about: its message's, its own, else its log stream's."""
        if message is not None and message.cid:
            return message.cid
        if event.cid and event.cid != "*":
            return event.cid
        return item.stream if ":" in item.stream else None

    def message_new(self, cursor: apsw.Cursor, item: Item, event: payloads.Event) -> None:
        rows = self.rows
        message = event.message
        if event.channel:
            self.barrier(cursor)  # the channel object lands after what earlier messages did to it
            self._channel_upsert(cursor, item, event.channel, SLOT_EVENT)
        if message is None or not message.id:
            return
        # (This handler runs for most events: `cid_of` only when the message names no channel.)
        cid = message.cid or self.cid_of(item, event)
        if cid is None:
            return
        created = epoch_us(message.created_at)
        event_at = epoch_us(event.created_at)
        parent_id = message.parent_id
        in_channel = not parent_id or bool(message.show_in_channel)
        latest = created if in_channel else None
        # A new message shows a hidden channel again, unless the channel is muted then.
        unhide = (created if in_channel and created is not None
                  and not self.mutes.silences(cursor, cid, created) else None)
        members, count = event.channel_member_count, event.channel_message_count
        # The counters are as of the event's server time; an event without them says nothing.
        counts_at = event_at if members is not None or count is not None else None
        pending = self._pending_channels.get(cid)
        if pending is not None:
            run_latest, run_members, run_count, run_counts_at, run_unhide = pending
            if run_latest is not None and (latest is None or run_latest > latest):
                latest = run_latest
            if run_unhide is not None and (unhide is None or run_unhide > unhide):
                unhide = run_unhide
            if members is None and count is None or (
                    run_counts_at is not None and (counts_at is None or counts_at < run_counts_at)):
                members, count, counts_at = run_members, run_count, run_counts_at  # newer, or only
            else:
                members = members if members is not None else run_members
                count = count if count is not None else run_count
        self._pending_channels[cid] = (latest, members, count, counts_at, unhide)
        is_new = rows.messages.upsert(cursor, cid, message, item.position, SLOT_EVENT,
                                      event_at=event_at)
        if item.type == "message.new" and in_channel and created is not None:
            rows.ranges.extend_head(cursor, cid, (created, message.id))  # the channel is followed
        rows.users.remember(cursor, event.user, item.position)
        if is_new and parent_id:
            rows.threads.count_reply(cursor, parent_id, created)
        if not is_new or self.own is None:
            return
        if message.author == self.own:
            # (A local send, an event without a server time, sets no server time either.)
            if self._set_read(cursor, cid, self.own, last_read=created, unread=0,
                              last_read_message_id=message.id,
                              state_at=created if event.created_at else None):
                # Reading up to here clears what came before (and what came after, on file,
                # is counted again): the run's unread messages are written. Not when the read
                # state on file is newer (an own message delivered late): they still count.
                self._pending_unread.pop(cid, None)
        elif (in_channel and not message.silent and message.type not in NOT_UNREAD_TYPES
              and rows.members.counts_unread(cursor, cid)
              and not self.mutes.silences(cursor, cid,
                                          item.received_at if created is None else created)):
            self._pending_unread.setdefault(cid, []).append(created)

    def message_updated(self, cursor: apsw.Cursor, item: Item, event: payloads.Event) -> None:
        message = event.message
        if message is None or not message.id:
            return
        cid = self.cid_of(item, event, message)
        if cid is None:
            return
        self.rows.channels.ensure(cursor, cid)
        self.rows.messages.upsert(cursor, cid, message, item.position, SLOT_EVENT,
                                  event_at=epoch_us(event.created_at), confirm=CONFIRMS_EDIT)

    def message_deleted(self, cursor: apsw.Cursor, item: Item, event: payloads.Event) -> None:
        message = event.message
        if message is None or not message.id:
            return
        when = epoch_us(event.created_at)
        if event.hard_delete:
            self.rows.messages.hard_deleted(cursor, message.id, self.cid_of(item, event, message),
                                            newest(when, epoch_us(message.deleted_at)), message)
            return
        if event.deleted_for_me:
            self.rows.messages.delete_for_me(
                cursor, message.id, item.position, SLOT_EVENT,
                newest(when, epoch_us(message.updated_at), epoch_us(message.deleted_at)))
            return
        cid = self.cid_of(item, event, message)
        if cid is None:
            return
        self.rows.channels.ensure(cursor, cid)
        self.rows.messages.upsert(cursor, cid, message, item.position, SLOT_EVENT, event_at=when,
                                  deleted_at=when or item.received_at, confirm=CONFIRMS_DELETE)

    # -- reactions -------------------------------------------------------------------------------

    @staticmethod
    def _reaction_key(event: payloads.Event) -> tuple[str, str, str] | None:
        """(message id, user id, type) of a reaction event's reaction, None when incomplete."""
        reaction = event.reaction
        if reaction is None or not reaction.type:
            return None
        message_id = reaction.message_id or (event.message.id if event.message else None)
        user_id = (reaction.user_id or (reaction.user.id if reaction.user else None)
                   or (event.user.id if event.user else None))
        if not message_id or not user_id:
            return None
        return message_id, user_id, reaction.type

    def reaction_upsert(self, cursor: apsw.Cursor, item: Item, event: payloads.Event) -> None:
        key = self._reaction_key(event)
        if key is None or event.reaction is None:
            return
        reaction = event.reaction
        created = epoch_us(reaction.created_at)
        stamp = epoch_us(reaction.updated_at) or created or epoch_us(event.created_at)
        self.rows.reactions.upsert(cursor, key, reaction.score if reaction.score is not None
                                   else 1, created, stamp, item.position)
        self._reaction_message(cursor, item, event)

    def reaction_deleted(self, cursor: apsw.Cursor, item: Item, event: payloads.Event) -> None:
        key = self._reaction_key(event)
        if key is None or event.reaction is None:
            return
        when = epoch_us(event.created_at) or epoch_us(event.reaction.updated_at)
        self.rows.reactions.delete(cursor, key, when)
        self._reaction_message(cursor, item, event)

    def _reaction_message(self, cursor: apsw.Cursor, item: Item, event: payloads.Event) -> None:
        """The event carries the message's whole state after the change, with its counters: it
        becomes the message's source when newer, and files a message not on file yet."""
        message = event.message
        if message is None or not message.id:
            return
        stamp = newest(epoch_us(message.updated_at), epoch_us(message.deleted_at),
                       epoch_us(event.created_at))
        cid = self.cid_of(item, event, message)
        if message.created_at and cid is not None:
            # A whole message (one with its time): as any other state of it.
            if self.rows.messages.upsert(cursor, cid, message, item.position, SLOT_EVENT,
                                         event_at=stamp, confirm=(), leave_local=True):
                self.rows.channels.ensure(cursor, cid)
            return
        self.rows.messages.point_at_reaction_event(cursor, message.id, item.position, SLOT_EVENT,
                                                   stamp)

    # -- reads -----------------------------------------------------------------------------------

    def mark_read(self, cursor: apsw.Cursor, item: Item, event: payloads.Event) -> None:
        user_id = event_user(event) or self.own
        if event.thread is not None:
            # A thread was read: that thread's read state moves, the channel's stays as it was.
            if user_id is not None and event.thread.parent_message_id:
                self.rows.thread_reads.record(
                    cursor, parent_id=event.thread.parent_message_id, user_id=user_id,
                    cid=self.cid_of(item, event), last_read=epoch_us(event.created_at),
                    last_read_message_id=event.last_read_message_id, position=item.position)
            return
        if user_id is None:
            return
        when = epoch_us(event.created_at)
        cid = self.cid_of(item, event)
        if cid is None:  # notification.mark_read without a channel: everything is read
            self.rows.reads.read_all(cursor, user_id, when)
            return
        self._set_read(cursor, cid, user_id, last_read=when, unread=0,
                       last_read_message_id=event.last_read_message_id, state_at=when)

    def mark_unread(self, cursor: apsw.Cursor, item: Item, event: payloads.Event) -> None:
        user_id = event_user(event) or self.own
        cid = self.cid_of(item, event)
        if user_id is None or cid is None:
            return
        self.rows.channels.ensure(cursor, cid)  # a channel known only by this event has unread
        self._set_read(
            cursor, cid, user_id, last_read=epoch_us(event.last_read_at),
            unread=event.unread_messages or 0, last_read_message_id=event.last_read_message_id,
            first_unread_message_id=event.first_unread_message_id,
            state_at=epoch_us(event.created_at),
        )

    def _set_read(self, cursor: apsw.Cursor, cid: str, user_id: str, *, last_read: int | None,
                  unread: int, last_read_message_id: str | None,
                  first_unread_message_id: str | None = None,
                  state_at: int | None = None) -> bool:
        """File a read state of the backend (True when it replaced the row). The own one may
        be older than messages already on file (a late `/sync` page, a retried answer): those
        count unread on top of it, so the count is the same whatever order the read and the
        messages arrived in."""
        replaced = self.rows.reads.set(
            cursor, cid, user_id, last_read=last_read, unread=unread,
            last_read_message_id=last_read_message_id,
            first_unread_message_id=first_unread_message_id, state_at=state_at)
        if (replaced and user_id == self.own and state_at is not None
                and self.rows.members.counts_unread(cursor, cid)):
            self.rows.reads.add_unread_after(cursor, cid, user_id, state_at)
        return replaced

    def delivered(self, cursor: apsw.Cursor, item: Item, event: payloads.Event) -> None:
        user_id = event_user(event)
        cid = self.cid_of(item, event)
        if user_id is None or cid is None:
            return
        self.rows.reads.delivered(cursor, cid, user_id, epoch_us(event.last_delivered_at),
                                  event.last_delivered_message_id)

    # -- channels --------------------------------------------------------------------------------

    def _channel_upsert(self, cursor: apsw.Cursor, item: Item, raw: msgspec.Raw,
                        slot: int) -> str | None:
        """File a channel object and the members it lists; its cid (None: it names none)."""
        try:
            channel = payloads.CHANNEL.decode(raw)
        except DECODE_ERRORS:
            return None
        cid = channel.cid or (f"{channel.type}:{channel.id}" if channel.type and channel.id
                              else None)
        if cid is None:
            return None
        try:
            custom = custom_fields(raw, CHANNEL_FIELDS)
        except DECODE_ERRORS:
            custom = {}
        self.rows.channels.upsert(
            cursor, cid, channel,
            msgspec.json.encode(custom, order="sorted").decode() if custom else None,
            item.position, slot)
        for member in channel.members or ():
            self.rows.members.upsert(cursor, cid, member)
        return cid

    def channel_updated(self, cursor: apsw.Cursor, item: Item, event: payloads.Event) -> None:
        cid = (self._channel_upsert(cursor, item, event.channel, SLOT_EVENT) if event.channel
               else None)
        message = event.message
        if message is not None and message.id:
            # A change made by a user (a rename, say) comes with a system message that belongs
            # in the channel's history.
            cid = self.cid_of(item, event, message) or cid
            if cid is not None:
                self.rows.channels.ensure(cursor, cid)
                self.rows.messages.upsert(cursor, cid, message, item.position, SLOT_EVENT,
                                          event_at=epoch_us(event.created_at))

    def channel_truncated(self, cursor: apsw.Cursor, item: Item, event: payloads.Event) -> None:
        cid = self.cid_of(item, event)
        cut_at = None
        if event.channel:
            cid = self._channel_upsert(cursor, item, event.channel, SLOT_EVENT) or cid
            try:
                cut_at = epoch_us(payloads.CHANNEL.decode(event.channel).truncated_at)
            except DECODE_ERRORS:
                pass
        if cid is None:
            return
        self.rows.channels.ensure(cursor, cid)
        # The cut: the object's (filed above only if not older than the row), else the event's
        # time; a newer one on file stands.
        own_cut = cut_at or epoch_us(event.created_at)
        until = newest(self.rows.channels.truncated_at(cursor, cid), own_cut)
        if until is not None:
            self.rows.channels.cut(cursor, cid, until)
            self.rows.messages.hard_delete(cursor, IN_CHANNEL_BEFORE, (cid, until))
            # The unread messages before the cut went with it.
            self.rows.reads.cap_unread_after_cut(cursor, cid)
        if event.message is not None and event.message.id:
            # The truncation's own system message stays, even a little older than the cut,
            # unless a newer cut (delivered first) took it away.
            self.rows.messages.upsert(cursor, cid, event.message, item.position, SLOT_EVENT,
                                      event_at=epoch_us(event.created_at),
                                      after_cut=until is None or own_cut == until)

    def channel_deleted(self, cursor: apsw.Cursor, item: Item, event: payloads.Event) -> None:
        cid = self.cid_of(item, event)
        if cid is None and event.channel:
            cid = channel_cid(event.channel)
        if cid is not None:
            self.rows.drop_channel(cursor, cid, epoch_us(event.created_at))

    def channel_hidden(self, cursor: apsw.Cursor, item: Item, event: payloads.Event) -> None:
        cid = self.cid_of(item, event)
        if cid is None:
            return
        self.rows.channels.ensure(cursor, cid)
        self.rows.channels.set_hidden(cursor, cid, 1, epoch_us(event.created_at))
        if event.clear_history:
            until = epoch_us(event.created_at) or item.received_at
            self.rows.messages.hard_delete(cursor, IN_CHANNEL_UNTIL, (cid, until))
            self.rows.channels.clear_history(cursor, cid, until)

    def channel_visible(self, cursor: apsw.Cursor, item: Item, event: payloads.Event) -> None:
        cid = self.cid_of(item, event)
        if cid is not None:
            self.rows.channels.set_hidden(cursor, cid, 0, epoch_us(event.created_at))

    # -- members ---------------------------------------------------------------------------------

    def member_upsert(self, cursor: apsw.Cursor, item: Item, event: payloads.Event) -> None:
        cid = self.cid_of(item, event)
        if event.channel:
            cid = self._channel_upsert(cursor, item, event.channel, SLOT_EVENT) or cid
        if cid is None or event.member is None:
            return
        self.rows.channels.ensure(cursor, cid)
        self.rows.members.upsert(cursor, cid, event.member, epoch_us(event.created_at))

    def member_removed(self, cursor: apsw.Cursor, item: Item, event: payloads.Event) -> None:
        cid = self.cid_of(item, event)
        if cid is None and event.channel:
            cid = channel_cid(event.channel)
        user_id = (event.member.uid if event.member else None) or event_user(event)
        if cid is None or user_id is None:
            return
        if user_id == self.own:
            # No longer ours: it leaves the channel list.
            self.rows.drop_channel(cursor, cid, epoch_us(event.created_at))
        else:
            self.rows.members.remove(cursor, cid, user_id, epoch_us(event.created_at))

    # -- users -----------------------------------------------------------------------------------

    def user_event(self, cursor: apsw.Cursor, item: Item, event: payloads.Event) -> None:
        if event.user is not None and event.user.id:
            self.rows.users.upsert(cursor, event.user, item.position)

    def user_banned(self, cursor: apsw.Cursor, item: Item, event: payloads.Event) -> None:
        user_id = event_user(event)
        if user_id is None:
            return
        banned = 1 if event.type == "user.banned" else 0
        when = epoch_us(event.created_at)
        cid = self.cid_of(item, event)
        if cid is not None:  # banned from one channel
            self.rows.members.set_banned(cursor, cid, user_id, banned, when)
            return
        if event.user is not None:
            self.rows.users.upsert(cursor, event.user, item.position)
        # Ordered by the event's time: the user object it carries may keep the user's old times.
        self.rows.users.set_banned(cursor, user_id, banned, when)

    def user_messages_deleted(self, cursor: apsw.Cursor, item: Item,
                              event: payloads.Event) -> None:
        user_id = event_user(event)
        if user_id is None:
            return
        self.rows.messages.deleted_by_user(
            cursor, user_id, self.cid_of(item, event) or None, epoch_us(event.created_at),
            hard=bool(event.hard_delete), received_at=item.received_at)

    # -- drafts, polls, threads, connection ------------------------------------------------------

    def draft_updated(self, cursor: apsw.Cursor, item: Item, event: payloads.Event) -> None:
        draft = event.draft
        cid = (draft.channel_cid if draft else None) or self.cid_of(item, event)
        if cid is None:
            return
        self.rows.channels.ensure(cursor, cid)
        self.rows.drafts.save_from_backend(
            cursor, cid, (draft.parent_id if draft else None) or "",
            (epoch_us(draft.created_at) if draft else None) or epoch_us(event.created_at),
            item.position)

    def draft_deleted(self, cursor: apsw.Cursor, item: Item, event: payloads.Event) -> None:
        draft = event.draft
        cid = (draft.channel_cid if draft else None) or self.cid_of(item, event)
        if cid is not None:
            self.rows.drafts.deleted_by_backend(cursor, cid,
                                                (draft.parent_id if draft else None) or "",
                                                epoch_us(event.created_at))

    def poll(self, cursor: apsw.Cursor, item: Item, event: payloads.Event) -> None:
        """Any `poll.*` event: the poll's row follows its newest state; `poll.deleted` drops it."""
        poll = event.poll
        if poll is None or not poll.id:
            return
        if event.type == "poll.deleted":
            self.rows.polls.delete(cursor, poll.id)
            return
        self.rows.polls.upsert(cursor, poll.id, self.cid_of(item, event),
                               event.message.id if event.message else None,
                               epoch_us(poll.updated_at), item.position)

    def thread_updated(self, cursor: apsw.Cursor, item: Item, event: payloads.Event) -> None:
        thread = event.thread
        if thread is None or not thread.parent_message_id:
            return
        filed = self.rows.threads.upsert(cursor, thread,
                                         thread.channel_cid or self.cid_of(item, event),
                                         item.position)
        if filed:
            self.rows.messages.thread_filed()  # a parent filed after this one takes its count
        if filed and thread.reply_count is not None:
            # The backend's count is the truth for the parent message too.
            self.rows.messages.set_reply_count(cursor, thread.parent_message_id,
                                               thread.reply_count, epoch_us(thread.updated_at))

    def health_check(self, cursor: apsw.Cursor, item: Item, event: payloads.Event) -> None:
        values: list[tuple[str, object]] = [("last_health_check_at", item.received_at)]
        if event.connection_id:
            values.append(("connection_id", event.connection_id))
        if event.me is not None and event.me.id:
            values.append(("me_position", item.position))
            self.rows.users.remember(cursor, event.me, item.position)
            self.mutes.apply(cursor, item)
        self.rows.connection.set(cursor, values)

    # -- summaries of responses ------------------------------------------------------------------

    def channel_state(self, cursor: apsw.Cursor, item: Item) -> None:
        """A channel state replaces what it covers and keeps what it does not (local sends)."""
        try:
            state = payloads.CHANNEL_STATE.decode(item.payload)
        except DECODE_ERRORS:
            return
        rows = self.rows
        if rows.channels.removed.known(cursor) and self._older_than_removal(cursor, item, state):
            return
        cid = self._channel_upsert(cursor, item, state.channel, 0) if state.channel else None
        cid = cid or (item.stream if ":" in item.stream else None)
        if cid is None:
            return
        rows.channels.ensure(cursor, cid)
        # A channel state has no time of its own, and its objects are as of the query (a
        # message's reply count and reactions move without its `updated_at`): the newest time
        # anywhere in its messages is a time they are all at least as new as.
        state_at = newest(*(
            newest(epoch_us(message.created_at), epoch_us(message.updated_at),
                   epoch_us(message.deleted_at))
            for message in (*(state.messages or ()), *(state.pinned_messages or ()))))
        if state.hidden is not None:
            rows.channels.set_hidden(cursor, cid, as_flag(state.hidden), state_at)
        for index, message in enumerate(state.messages or ()):
            if message.id:
                rows.messages.upsert(cursor, message.cid or cid, message, item.position, index,
                                     event_at=state_at, snapshot=True)
                self._state_reactions(cursor, item, message.id, message)
        rows.ranges.cover_page(cursor, cid, [
            (epoch_us(message.created_at) or 0, message.id) for message in state.messages or ()
            if message.id and message.created_at and (message.cid or cid) == cid])
        # Pinned messages may be older than the page: each is filed as any state of it (newer
        # than the row: it replaces it, so a pin the events missed shows), unless the page
        # itself carries it.
        in_page = {message.id for message in state.messages or ()}
        for index, message in enumerate(state.pinned_messages or ()):
            if message.id and message.id not in in_page:
                rows.messages.upsert(cursor, message.cid or cid, message, item.position,
                                     SLOT_PINNED_BASE + index, event_at=state_at, snapshot=True)
                self._state_reactions(cursor, item, message.id, message)
        for index, member in enumerate(state.members or ()):
            rows.members.upsert(cursor, cid, member, state_at)
            # A client that has only queried its channels knows their members' users this way.
            rows.users.remember(cursor, member.user, item.position, index)
        if state.membership is not None:
            if not state.membership.uid and self.own:
                state.membership.user_id = self.own
            rows.members.upsert(cursor, cid, state.membership, state_at)
        # Likewise its reads: they counted the unread messages up to that time at least.
        for read in state.read or ():
            user_id = read.user_id or (read.user.id if read.user else None)
            if user_id:
                last_read = epoch_us(read.last_read)
                self._set_read(cursor, cid, user_id, last_read=last_read,
                               unread=read.unread_messages or 0,
                               last_read_message_id=read.last_read_message_id,
                               first_unread_message_id=read.first_unread_message_id,
                               state_at=newest(last_read, state_at))
        if state.draft is not None:
            rows.drafts.save_from_backend(cursor, cid, state.draft.parent_id or "",
                                          epoch_us(state.draft.created_at), item.position)

    def _older_than_removal(self, cursor: apsw.Cursor, item: Item,
                            state: payloads.ChannelState) -> bool:
        """A channel state of a channel deleted or left since (a query answered before that):
        nothing in it is newer than the removal. A channel made again, or joined again, has
        a newer creation or membership."""
        try:
            channel = (payloads.CHANNEL.decode(state.channel) if state.channel
                       else payloads.Channel())
        except DECODE_ERRORS:
            channel = payloads.Channel()
        cid = (channel.cid or (f"{channel.type}:{channel.id}" if channel.type and channel.id
                               else None) or (item.stream if ":" in item.stream else None))
        membership = state.membership
        times = [epoch_us(channel.created_at), epoch_us(channel.updated_at),
                 epoch_us(channel.last_message_at),
                 *(epoch_us(message.created_at) for message in state.messages or ())]
        if membership is not None:
            times += [epoch_us(membership.created_at), epoch_us(membership.updated_at)]
        latest = newest(*times)
        return latest is not None and self.rows.channels.removed.before_removal(cursor, cid,
                                                                                latest)

    def _state_reactions(self, cursor: apsw.Cursor, item: Item, message_id: str,
                         message: payloads.StateMessage) -> None:
        """The reactions a channel state's message carries (the newest few, and the own
        user's), each as a reaction event would file it (older than the row: no change)."""
        for reaction in (*(message.latest_reactions or ()), *(message.own_reactions or ())):
            user_id = reaction.user_id or (reaction.user.id if reaction.user else None)
            if not reaction.type or not user_id:
                continue
            key = (reaction.message_id or message_id, user_id, reaction.type)
            created = epoch_us(reaction.created_at)
            stamp = epoch_us(reaction.updated_at) or created
            try:
                self.rows.reactions.upsert(
                    cursor, key, reaction.score if reaction.score is not None else 1, created,
                    stamp, item.position)
            except OverflowError:
                # A score the table cannot hold costs only this reaction, not the state.
                logger.warning("reaction %r at position %d not projected: score out of range",
                               key, item.position)

    def sync_result(self, cursor: apsw.Cursor, item: Item) -> None:
        """`last_sync_at` moves forward only: the store holds every event up to it."""
        try:
            result = payloads.SYNC_RESULT.decode(item.payload)
        except DECODE_ERRORS:
            return
        synced_at = epoch_us(result.synced_at)
        if synced_at is not None:
            self.rows.connection.move_last_sync(cursor, synced_at)

    def query_result(self, cursor: apsw.Cursor, item: Item) -> None:
        try:
            result = payloads.QUERY_RESULT.decode(item.payload)
        except DECODE_ERRORS:
            return
        key = query_key(bytes(result.filter) or None, bytes(result.sort) or None)
        cids = result.cids
        if result.offset > 0:
            # A later page: the list its first page began, then this page's new channels.
            before = self.rows.connection.query_cids(cursor, key)
            known = set(before)
            cids = [*before, *(cid for cid in cids if cid not in known)]
        self.rows.connection.set_query_result(
            cursor, key, msgspec.json.encode(cids).decode(), item.position, item.received_at)
