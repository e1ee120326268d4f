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
from chatledger.eventstore.wire import CHANNEL_FIELDS, WireError, custom_fields, parse_time
from chatledger.projections import payloads as p
from chatledger.projections.filters import canonical_query_key
from chatledger.projections.schema import SLOT_EVENT, SLOT_PINNED_BASE
from chatledger.projections.screen import screened


logger = logging.getLogger("chatledger.projections")


class Item(NamedTuple):
    """A log entry as the projector sees it."""

    position: int
    type: str
    stream: str
    payload: bytes
    received_at: int


_TIMES: dict[str, int | None] = {}
_TIMES_MAX = 65_536


def t(value: str | None) -> int | None:
    """RFC 3339 text to epoch microseconds; None for absent, unset or unreadable times."""
    if not value:
        return None
    # One event repeats the same instant several times (created_at, updated_at, the message's).
    cached = _TIMES.get(value, _MISSING)
    if cached is not _MISSING:
        return cached  # type: ignore[return-value]
    try:
        result = parse_time(value)
    except WireError:
        result = None
    if len(_TIMES) >= _TIMES_MAX:
        _TIMES.clear()
    _TIMES[value] = result
    return result


_MISSING = object()


def keeps_local(c: apsw.Cursor, command_id: str | None) -> bool:
    """True when a row's local change belongs to a command never tried: nothing the backend
    sends about the message can be about that change yet, so the row keeps showing it."""
    if command_id is None:
        return False
    row = c.execute("SELECT status, attempts FROM outbox WHERE id=?", (command_id,)).fetchone()
    return row is not None and row[0] == "pending" and row[1] == 0


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
    "message.new", "notification.message_new", "message.updated", "message.undeleted",
    "message.deleted", "reaction.new", "reaction.updated", "reaction.deleted", "user.updated",
    "user.presence.changed", "user.deleted", "user.messages.deleted", "health.check",
    "thread.updated", "draft.updated", "draft.deleted", "poll.created", "poll.updated",
    "poll.closed", "poll.deleted", "poll.vote_casted", "poll.vote_changed", "poll.vote_removed",
})

_USERS_REMEMBERED = 100_000


class Projector:
    """Applies log entries to the read tables of one user's file."""

    def __init__(self, own_user_id: str | None) -> None:
        self.own = own_user_id
        # What a run of new messages does to channels and unread counts, written once per run.
        self._pending_channels: dict[str, tuple[int | None, int | None, int | None]] = {}
        self._pending_unread: dict[str, int] = {}
        # Whether the own user's unread counts are kept in a channel (its memberships), as on
        # file: forgotten for a channel whenever its members change.
        self._counts_unread_in: dict[str, bool] = {}
        # The users rows as on file, remembered across appends while no other connection writes:
        # a message carries its author, and most authors are unchanged since the last message.
        self._users_on_file: dict[str, tuple[object, ...] | None] = {}
        self._seen_version: tuple[apsw.Connection, int] | None = None
        self._handlers: dict[str, Callable[[apsw.Cursor, Item, p.Event], None]] = {
            "message.new": self._message_new,
            "notification.message_new": self._message_new,
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
        self._seen_version = None

    # -- entry point ---------------------------------------------------------------------------

    def apply(self, c: apsw.Cursor, items: Iterable[Item]) -> None:
        self._check_remembered(c)
        items = screened(c, items)  # values the tables cannot hold: left out, recorded
        handlers = self._handlers
        raw_handlers = self._raw_handlers
        summary_handlers = self._summary_handlers
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
        channels: Iterable[tuple[str, tuple[int | None, int | None, int | None]]],
        unread: Iterable[tuple[str, int]],
    ) -> None:
        """Write what a run of new messages did to their channels and the own unread counts."""
        # One statement per channel files it (even one not heard of before) with its newest
        # message time and the latest counters the events carried.
        if rows := [(cid, *cid.partition(":")[::2], *values) for cid, values in channels]:
            c.executemany(
                "INSERT INTO channels (cid, type, id, last_message_at, member_count, message_count) "
                "VALUES (?,?,?,?,?,?) ON CONFLICT (cid) DO UPDATE SET "
                "last_message_at=CASE WHEN excluded.last_message_at > coalesce(last_message_at, 0) "
                "THEN excluded.last_message_at ELSE last_message_at END, "
                "member_count=coalesce(excluded.member_count, member_count), "
                "message_count=coalesce(excluded.message_count, message_count)",
                rows,
            )
        if rows := [(cid, self.own, n) for cid, n in unread]:
            c.executemany(
                "INSERT INTO reads (cid, user_id, unread_messages) VALUES (?, ?, ?) "
                "ON CONFLICT (cid, user_id) DO UPDATE SET "
                "unread_messages=unread_messages+excluded.unread_messages",
                rows,
            )

    # -- messages ------------------------------------------------------------------------------

    def _cid_of(self, item: Item, event: p.Event, message: p.Message | None = None) -> str | None:
        if message is not None and message.cid:
            return message.cid
        if event.cid and event.cid != "*":
            return event.cid
        return item.stream if ":" in item.stream else None

    def _upsert_message(
        self, c: apsw.Cursor, cid: str, m: p.Message, position: int, slot: int,
        confirm: tuple[str, ...] = ("sending", "send_failed"),
    ) -> bool:
        """Insert or replace a message's row; True when it was not on file before."""
        created = t(m.created_at)
        row = [
            cid, created, m.id, m.author, m.type, m.parent_id, b(m.show_in_channel),
            m.reply_count or 0, b(m.pinned), t(m.pinned_at), t(m.updated_at), t(m.deleted_at),
            b(m.silent), position, slot,
        ]
        if created is not None:
            # The usual case, a message not seen before, costs one statement.
            c.execute(
                "INSERT OR IGNORE INTO messages (cid, created_at, id, user_id, type, parent_id, "
                "show_in_channel, reply_count, pinned, pinned_at, updated_at, deleted_at, silent, "
                "position, slot) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                row,
            )
            if c.connection.changes():
                return True
        existing = c.execute(
            "SELECT created_at, local_state, local_command, position, slot FROM messages "
            "WHERE id=?", (m.id,)
        ).fetchone()
        if existing is None:  # no time given and not on file: file it at the epoch
            row[1] = 0
            c.execute(
                "INSERT INTO messages (cid, created_at, id, user_id, type, parent_id, "
                "show_in_channel, reply_count, pinned, pinned_at, updated_at, deleted_at, silent, "
                "position, slot) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                row,
            )
            return True
        if created is None:
            row[1] = existing[0]
        state = None if existing[1] in confirm else existing[1]  # confirmed: the backend has it
        if existing[1] is not None and keeps_local(c, existing[2]):
            # A local change not yet tried: whatever the backend says predates it, so the row
            # keeps showing it (and its state) until the command's own outcome.
            state, row[-2], row[-1] = existing[1], existing[3], existing[4]
        c.execute(
            "UPDATE messages SET cid=?, created_at=?, user_id=?, type=?, parent_id=?, "
            "show_in_channel=?, reply_count=coalesce(?, reply_count), pinned=?, pinned_at=?, "
            "updated_at=?, deleted_at=?, silent=?, position=?, slot=?, local_state=? WHERE id=?",
            # A payload without reply_count keeps the count the store has built up.
            (*row[:2], *row[3:7], m.reply_count, *row[8:], state, m.id),
        )
        return False

    def _message_new(self, c: apsw.Cursor, item: Item, event: p.Event) -> None:
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
        pending = self._pending_channels.get(cid)
        if pending is not None:
            if pending[0] is not None and (latest is None or pending[0] > latest):
                latest = pending[0]
            members = event.channel_member_count if event.channel_member_count is not None else pending[1]
            count = event.channel_message_count if event.channel_message_count is not None else pending[2]
        else:
            members, count = event.channel_member_count, event.channel_message_count
        self._pending_channels[cid] = (latest, members, count)
        is_new = self._upsert_message(c, cid, m, item.position, SLOT_EVENT)
        self._remember_user(c, item, event.user)
        if is_new and m.parent_id:
            c.execute("UPDATE messages SET reply_count=reply_count+1 WHERE id=?", (m.parent_id,))
        if not is_new or self.own is None:
            return
        author = m.author
        if author == self.own:
            self._pending_unread.pop(cid, None)  # reading up to here clears what came before
            self._set_read(c, cid, self.own, last_read=created, unread=0, last_read_message_id=m.id)
        elif (in_channel and not m.silent and m.type not in ("system", "ephemeral", "error")
              and self._counts_unread(c, cid)):
            self._pending_unread[cid] = self._pending_unread.get(cid, 0) + 1

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
        self._ensure_channel(c, cid)
        self._upsert_message(c, cid, m, item.position, SLOT_EVENT,
                             confirm=("sending", "send_failed", "updating", "update_failed"))

    def _message_deleted(self, c: apsw.Cursor, item: Item, event: p.Event) -> None:
        m = event.message
        if m is None or not m.id:
            return
        if event.hard_delete:
            self._hard_delete(c, "id=?", (m.id,))
            # Its reactions go even when the row is gone already: a `/sync` that replays older
            # events may have filed a reaction for it since.
            c.execute("DELETE FROM reactions WHERE message_id=?", (m.id,))
            return
        if event.deleted_for_me:
            c.execute("UPDATE messages SET deleted_for_me=1, position=?, slot=? WHERE id=?",
                      (item.position, SLOT_EVENT, m.id))
            return
        cid = self._cid_of(item, event, m)
        if cid is None:
            return
        self._ensure_channel(c, cid)
        self._upsert_message(c, cid, m, item.position, SLOT_EVENT,
                             confirm=("sending", "send_failed", "deleting", "delete_failed"))
        c.execute("UPDATE messages SET type='deleted', deleted_at=coalesce(deleted_at, ?) "
                  "WHERE id=?", (t(event.created_at) or item.received_at, m.id))

    def _hard_delete(self, c: apsw.Cursor, where: str, params: tuple[object, ...]) -> None:
        """Remove messages (and their reactions), keeping parents' reply counts right."""
        rows = c.execute(f"SELECT id, parent_id FROM messages WHERE {where}", params).fetchall()
        for message_id, parent_id in rows:
            c.execute("DELETE FROM reactions WHERE message_id=?", (message_id,))
            if parent_id:
                c.execute("UPDATE messages SET reply_count=max(reply_count-1, 0) WHERE id=?",
                          (parent_id,))
        c.execute(f"DELETE FROM messages WHERE {where}", params)

    # -- reactions -----------------------------------------------------------------------------

    def _reaction_upsert(self, c: apsw.Cursor, item: Item, event: p.Event) -> None:
        r = event.reaction
        if r is None or not r.type:
            return
        message_id = r.message_id or (event.message.id if event.message else None)
        user_id = r.user_id or (r.user.id if r.user else None) or (event.user.id if event.user else None)
        if not message_id or not user_id:
            return
        c.execute(
            "INSERT INTO reactions (message_id, user_id, type, score, created_at, updated_at, "
            "position) VALUES (?,?,?,?,?,?,?) ON CONFLICT (message_id, user_id, type) DO UPDATE SET "
            "score=excluded.score, updated_at=excluded.updated_at, position=excluded.position",
            (message_id, user_id, r.type, r.score if r.score is not None else 1,
             t(r.created_at), t(r.updated_at), item.position),
        )
        self._message_counters(c, item, event)

    def _reaction_deleted(self, c: apsw.Cursor, item: Item, event: p.Event) -> None:
        r = event.reaction
        if r is None:
            return
        message_id = r.message_id or (event.message.id if event.message else None)
        user_id = r.user_id or (r.user.id if r.user else None) or (event.user.id if event.user else None)
        c.execute("DELETE FROM reactions WHERE message_id=? AND user_id=? AND type=?",
                  (message_id, user_id, r.type))
        self._message_counters(c, item, event)

    def _message_counters(self, c: apsw.Cursor, item: Item, event: p.Event) -> None:
        # The event carries the message with its new counters: it becomes the message's source.
        if event.message is not None and event.message.id:
            # A row showing a local change of its own keeps pointing at that change.
            c.execute("UPDATE messages SET position=?, slot=? WHERE id=? AND "
                      "(local_command IS NULL OR local_state IS NULL)",
                      (item.position, SLOT_EVENT, event.message.id))

    # -- reads ---------------------------------------------------------------------------------

    def _set_read(
        self, c: apsw.Cursor, cid: str, user_id: str, *, last_read: int | None, unread: int,
        last_read_message_id: str | None, first_unread_message_id: str | None = None,
    ) -> None:
        c.execute(
            "INSERT INTO reads (cid, user_id, last_read, unread_messages, last_read_message_id, "
            "first_unread_message_id) VALUES (?,?,?,?,?,?) ON CONFLICT (cid, user_id) DO UPDATE SET "
            "last_read=excluded.last_read, unread_messages=excluded.unread_messages, "
            "last_read_message_id=excluded.last_read_message_id, "
            "first_unread_message_id=excluded.first_unread_message_id",
            (cid, user_id, last_read, unread, last_read_message_id, first_unread_message_id),
        )

    def _event_user(self, event: p.Event) -> str | None:
        return (event.user.id if event.user else None) or event.user_id

    def _mark_read(self, c: apsw.Cursor, item: Item, event: p.Event) -> None:
        user_id = self._event_user(event) or self.own
        if user_id is None:
            return
        when = t(event.created_at)
        cid = self._cid_of(item, event)
        if cid is None:  # notification.mark_read without a channel: everything is read
            c.execute("UPDATE reads SET unread_messages=0, last_read=? WHERE user_id=?",
                      (when, user_id))
            return
        self._set_read(c, cid, user_id, last_read=when, unread=0,
                       last_read_message_id=event.last_read_message_id)

    def _mark_unread(self, c: apsw.Cursor, item: Item, event: p.Event) -> None:
        user_id = self._event_user(event) or self.own
        cid = self._cid_of(item, event)
        if user_id is None or cid is None:
            return
        self._set_read(
            c, cid, user_id, last_read=t(event.last_read_at), unread=event.unread_messages or 0,
            last_read_message_id=event.last_read_message_id,
            first_unread_message_id=event.first_unread_message_id,
        )

    def _delivered(self, c: apsw.Cursor, item: Item, event: p.Event) -> None:
        user_id = self._event_user(event)
        cid = self._cid_of(item, event)
        if user_id is None or cid is None:
            return
        c.execute(
            "INSERT INTO reads (cid, user_id, last_delivered_at, last_delivered_message_id) "
            "VALUES (?,?,?,?) ON CONFLICT (cid, user_id) DO UPDATE SET "
            "last_delivered_at=excluded.last_delivered_at, "
            "last_delivered_message_id=excluded.last_delivered_message_id",
            (cid, user_id, t(event.last_delivered_at), event.last_delivered_message_id),
        )

    # -- channels ------------------------------------------------------------------------------

    def _ensure_channel(self, c: apsw.Cursor, cid: str) -> None:
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
            "custom=excluded.custom, position=excluded.position, slot=excluded.slot",
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
        if event.channel:
            self._channel_upsert(c, item, event.channel, SLOT_EVENT)

    def _channel_truncated(self, c: apsw.Cursor, item: Item, event: p.Event) -> None:
        cid = self._cid_of(item, event)
        if event.channel:
            cid = self._channel_upsert(c, item, event.channel, SLOT_EVENT) or cid
        if cid is None:
            return
        row = c.execute("SELECT truncated_at FROM channels WHERE cid=?", (cid,)).fetchone()
        until = (row[0] if row and row[0] else None) or t(event.created_at)
        if until is not None:
            self._hard_delete(c, "cid=? AND created_at<?", (cid, until))
        if event.message is not None and event.message.id:
            self._upsert_message(c, cid, event.message, item.position, SLOT_EVENT)

    def _channel_deleted(self, c: apsw.Cursor, item: Item, event: p.Event) -> None:
        cid = self._cid_of(item, event)
        if cid is None and event.channel:
            cid = self._channel_cid(event.channel)
        if cid is not None:
            self._drop_channel(c, cid)

    @staticmethod
    def _channel_cid(raw: msgspec.Raw) -> str | None:
        try:
            ch = p.CHANNEL.decode(raw)
        except DECODE_ERRORS:
            return None
        return ch.cid or (f"{ch.type}:{ch.id}" if ch.type and ch.id else None)

    def _drop_channel(self, c: apsw.Cursor, cid: str) -> None:
        c.execute("DELETE FROM reactions WHERE message_id IN (SELECT id FROM messages WHERE cid=?)",
                  (cid,))
        for table in ("messages", "members", "reads", "drafts", "channels"):
            c.execute(f"DELETE FROM {table} WHERE cid=?", (cid,))
        self._counts_unread_in.pop(cid, None)

    def _channel_hidden(self, c: apsw.Cursor, item: Item, event: p.Event) -> None:
        cid = self._cid_of(item, event)
        if cid is None:
            return
        self._ensure_channel(c, cid)
        c.execute("UPDATE channels SET hidden=1 WHERE cid=?", (cid,))
        if event.clear_history:
            until = t(event.created_at) or item.received_at
            self._hard_delete(c, "cid=? AND created_at<=?", (cid, until))

    def _channel_visible(self, c: apsw.Cursor, item: Item, event: p.Event) -> None:
        cid = self._cid_of(item, event)
        if cid is not None:
            c.execute("UPDATE channels SET hidden=0 WHERE cid=?", (cid,))

    # -- members -------------------------------------------------------------------------------

    def _upsert_member(self, c: apsw.Cursor, cid: str, m: p.Member) -> None:
        uid = m.uid
        if not uid:
            return
        self._counts_unread_in.pop(cid, None)
        c.execute(
            "INSERT INTO members (cid, user_id, role, channel_role, banned, pinned_at, archived_at, "
            "created_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?) ON CONFLICT (cid, user_id) DO UPDATE "
            "SET role=excluded.role, channel_role=excluded.channel_role, banned=excluded.banned, "
            "pinned_at=excluded.pinned_at, archived_at=excluded.archived_at, "
            "created_at=excluded.created_at, updated_at=excluded.updated_at",
            (cid, uid, m.role, m.channel_role, b(m.banned), t(m.pinned_at), t(m.archived_at),
             t(m.created_at), t(m.updated_at)),
        )

    def _member_upsert(self, c: apsw.Cursor, item: Item, event: p.Event) -> None:
        cid = self._cid_of(item, event)
        if event.channel:
            cid = self._channel_upsert(c, item, event.channel, SLOT_EVENT) or cid
        if cid is None or event.member is None:
            return
        self._ensure_channel(c, cid)
        self._upsert_member(c, cid, event.member)

    def _member_removed(self, c: apsw.Cursor, item: Item, event: p.Event) -> None:
        cid = self._cid_of(item, event)
        if cid is None and event.channel:
            cid = self._channel_cid(event.channel)
        uid = (event.member.uid if event.member else None) or self._event_user(event)
        if cid is None or uid is None:
            return
        if uid == self.own:
            self._drop_channel(c, cid)  # no longer ours: it leaves the channel list
        else:
            c.execute("DELETE FROM members WHERE cid=? AND user_id=?", (cid, uid))
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
            "position=excluded.position, slot=excluded.slot",
            (user.id, *row, item.position, slot),
        )
        self._remember_user_row(user.id, row)

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
        where, params = ("user_id=? AND cid=?", (uid, cid)) if cid else ("user_id=?", (uid,))
        if event.hard_delete:
            self._hard_delete(c, where, params)
        else:
            c.execute(
                f"UPDATE messages SET type='deleted', deleted_at=coalesce(deleted_at, ?) WHERE {where}",
                (t(event.created_at) or item.received_at, *params),
            )

    # -- drafts, polls, connection -------------------------------------------------------------

    def _draft_updated(self, c: apsw.Cursor, item: Item, event: p.Event) -> None:
        d = event.draft
        cid = (d.channel_cid if d else None) or self._cid_of(item, event)
        if cid is None:
            return
        self._ensure_channel(c, cid)
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
        cid = self._channel_upsert(c, item, state.channel, 0) if state.channel else None
        cid = cid or (item.stream if ":" in item.stream else None)
        if cid is None:
            return
        self._ensure_channel(c, cid)
        for index, m in enumerate(state.messages or ()):
            if m.id:
                self._upsert_message(c, m.cid or cid, m, item.position, index)
        for index, m in enumerate(state.pinned_messages or ()):
            if m.id and not c.execute("SELECT 1 FROM messages WHERE id=?", (m.id,)).fetchone():
                self._upsert_message(c, m.cid or cid, m, item.position, SLOT_PINNED_BASE + index)
        for index, member in enumerate(state.members or ()):
            self._upsert_member(c, cid, member)
            # A client that has only queried its channels knows their members' users this way.
            self._remember_user(c, item, member.user, index)
        if state.membership is not None:
            if not state.membership.uid and self.own:
                state.membership.user_id = self.own
            self._upsert_member(c, cid, state.membership)
        for read in state.read or ():
            uid = read.user_id or (read.user.id if read.user else None)
            if uid:
                self._set_read(c, cid, uid, last_read=t(read.last_read),
                               unread=read.unread_messages or 0,
                               last_read_message_id=read.last_read_message_id,
                               first_unread_message_id=read.first_unread_message_id)
        if state.draft is not None:
            c.execute(
                "INSERT INTO drafts (cid, parent_id, created_at, position) VALUES (?,?,?,?) "
                "ON CONFLICT (cid, parent_id) DO UPDATE SET created_at=excluded.created_at, "
                "position=excluded.position",
                (cid, state.draft.parent_id or "", t(state.draft.created_at), item.position),
            )

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
