"""Reading the tables: channel lists, one channel's state, messages by cursor, threads, reactions.

Rows carry what filters and sorts need; the objects themselves come from the log entry that holds
them as they now stand (`position`, `slot`), read in the same snapshot as the rows.
"""

from __future__ import annotations

from typing import Any, cast

import apsw
import msgspec

from chatledger.eventstore.codec import PayloadCodec
from chatledger.eventstore.datastore import APSWDatastore
from chatledger.eventstore.wire import decode_stored
from chatledger.eventstore.wire.times import format_time_or_none
from chatledger.projections import payloads
from chatledger.projections.filters import canonical_query_key, compile_channel_query
from chatledger.projections.mutes import MuteReader, now_us
from chatledger.projections.ranges import RANGES_OVERLAPPING, MessagePage, find_gaps
from chatledger.projections.reminders import LIST_REMINDERS, reminder_object
from chatledger.projections.results import (
    ChannelMute, ChannelState, ChannelSummary, ConnectionInfo, StoredDraft, StoredMember,
    StoredMessage, StoredPoll, StoredRead, StoredReaction, StoredReminder, StoredThread,
    StoredUser, ThreadRead, UnprojectedEntry, UnreadCounts, UserMute,
)
from chatledger.projections.schema import SLOT_EVENT, SLOT_PINNED_BASE, SLOT_RESPONSE
from chatledger.projections.thread_reads import ThreadReads

# Defined with the other result types; imported from here by name too.
__all__ = ["ChannelSummary", "ReadAPI", "ReadModel", "StoredMessage", "channel_state_of",
           "state_message", "user_object"]

NO_RAW = msgspec.Raw()


class _WithMessage(msgspec.Struct):
    message: msgspec.Raw = NO_RAW


class _WithResponse(msgspec.Struct):
    response: _WithMessage = msgspec.field(default_factory=_WithMessage)


class _WithChannel(msgspec.Struct):
    channel: msgspec.Raw = NO_RAW


class _WithUser(msgspec.Struct):
    user: msgspec.Raw = NO_RAW
    me: msgspec.Raw = NO_RAW


class _Id(msgspec.Struct):
    id: str | None = None


class _UserOf(msgspec.Struct):
    user: msgspec.Raw = NO_RAW


class _WithMembers(msgspec.Struct):
    members: list[_UserOf] = []


class _State(msgspec.Struct):
    channel: msgspec.Raw = NO_RAW
    messages: list[msgspec.Raw] = []
    pinned_messages: list[msgspec.Raw] = []


_MESSAGE = msgspec.json.Decoder(_WithMessage)
_RESPONSE = msgspec.json.Decoder(_WithResponse)
_CHANNEL = msgspec.json.Decoder(_WithChannel)
_USER = msgspec.json.Decoder(_WithUser)
_STATE = msgspec.json.Decoder(_State)
# As the projection read them (`payloads.Decoder`): a member that is not an object keeps the
# others' places, a numeric id is its text.
_MEMBERS = payloads.Decoder(_WithMembers)
_ID = payloads.Decoder(_Id)


def user_object(payload: bytes, slot: int, user_id: str) -> bytes:
    """The bytes of user `user_id`'s object in an entry's payload, where the `users` row's
    `slot` says it is (its `user` or `me`, or a channel state's member); b"" when it is not
    there (a damaged or unexpected payload)."""
    try:
        if slot >= 0:
            members = _MEMBERS.decode(payload).members
            found = [members[slot].user] if slot < len(members) else []
        else:
            holder = _USER.decode(payload)
            found = [holder.user, holder.me]
        for raw in found:
            if raw and _ID.decode(raw).id == user_id:
                return bytes(raw)
    except (msgspec.MsgspecError, ValueError, RecursionError):  # what export caught before
        pass
    return b""


def channel_state_of(payload: bytes) -> _State | None:
    """A channel state entry's message lists (raw), or None when the payload is not one."""
    try:
        return _STATE.decode(payload)
    except (msgspec.MsgspecError, ValueError):
        return None


def state_message(state: _State, slot: int) -> bytes:
    """The bytes of the message at `slot` (see `schema.SLOT_*`) of a decoded channel state."""
    items = state.messages if slot < SLOT_PINNED_BASE else state.pinned_messages
    index = slot if slot < SLOT_PINNED_BASE else slot - SLOT_PINNED_BASE
    return bytes(items[index]) if 0 <= index < len(items) else b""


# _BOUND: in the statements run for every page and every first screen, parameters are written
# `+?`, not `?`. SQLite (3.54, as APSW bundles it) looks at the value bound to a plain `?` in
# these places (an equality on a key column of a query with ORDER BY, a LIMIT, a LEFT JOIN's `=`)
# when it plans the statement, so binding a new value makes it parse and plan the statement again
# at every execution: 70 µs of a page of 50's 200 µs of SQL, 130 µs of the first screen's.
# `+?` is the same value without that (the plans are unchanged: tests/test_queries.py).
_MESSAGE_COLUMNS = (
    "id, cid, created_at, user_id, type, parent_id, reply_count, pinned, deleted_at, "
    "deleted_for_me, local_state, local_command, position, slot"
)
# A message row with the bytes of the entry holding its object, in one lookup. (No column name
# is shared by the two tables, so conditions may name message columns unqualified.) An entry
# holding many messages (a channel state) is left out of the row: it is read once per query.
_MESSAGE_SELECT = (
    "SELECT " + ", ".join("m." + col for col in _MESSAGE_COLUMNS.split(", "))
    + ", e.codec, CASE WHEN m.slot < 0 THEN e.state END "
    "FROM messages m LEFT JOIN stored_events e ON e.rowid = m.position"
)

# _ROW_SHAPES: APSW types each value of a row as any SQLite value; the schema
# (projections/schema.py) fixes what each column holds. So each statement's rows have their
# shape declared once, here and beside the statements, and are read as that shape (a `cast`:
# no check per value on the paths that read every page; the tests read every kind of row back).
# A message's columns (`_MESSAGE_COLUMNS`).
MessageColumns = tuple[str, str, int, str | None, str | None, str | None, int, int, int | None,
                       int, str | None, str | None, int, int]
# A row of `_MESSAGE_SELECT`: the message's columns, then its entry's codec (None when the
# entry is missing) and its stored bytes (None for an entry of many messages, read apart).
MessageRow = tuple[str, str, int, str | None, str | None, str | None, int, int, int | None,
                   int, str | None, str | None, int, int, int | None, bytes | None]
# A row of `RANGES_OVERLAPPING`: a held stretch of history, (start_at, start_id, end_at, end_id).
RangeRow = tuple[int, str, int, str]


# Every custom field name the stored channels use (a scan: asked only to warn about typos).
_CUSTOM_FIELD_NAMES = ("SELECT DISTINCT j.key FROM channels, json_each(channels.custom) j "
                       "WHERE json_valid(channels.custom) ORDER BY j.key")

# Whether a message is on file at a channel's (created_at, id): see _BOUND for the `+?`.
_MESSAGE_AT = "SELECT 1 FROM messages WHERE cid=+? AND created_at=+? AND id=+?"

# The statements of the channel list, built from a compiled filter: its cids, a page of them
# (see _BOUND), and how many there are.
_LISTED = "SELECT c.cid FROM channels c WHERE {where} ORDER BY {order_by}"
_LISTED_PAGE = "{listed} LIMIT +? OFFSET +?"
_LISTED_COUNT = "SELECT count(*) FROM ({listed})"
# What `warm_up` reads: any row, so the connection has read the schema.
_ANY_CHANNEL = "SELECT 1 FROM channels LIMIT 1"
_ENTRY = "SELECT codec, state FROM stored_events WHERE rowid=?"
_OWN_UNREAD = "SELECT unread_messages FROM reads WHERE cid=? AND user_id=?"
_CACHED_QUERY = "SELECT cids FROM channel_queries WHERE query=?"
# One channel's state (`ReadModel.channel`): where its object is, its row (when the object is
# not on file), its first pinned messages, its draft.
_CHANNEL_ENTRY = "SELECT position, slot FROM channels WHERE cid=?"
_CHANNEL_ROW = "SELECT * FROM channels WHERE cid=?"
_FIRST_PINNED = f"{_MESSAGE_SELECT} WHERE cid=? AND pinned=1 ORDER BY pinned_at DESC LIMIT 25"
_PINNED = f"{_MESSAGE_SELECT} WHERE cid=? AND pinned=1 ORDER BY pinned_at DESC LIMIT ?"
_CHANNEL_DRAFT = "SELECT position FROM drafts WHERE cid=? AND parent_id=''"
_MESSAGE_BY_ID = f"{_MESSAGE_SELECT} WHERE id=?"
# A page of messages: `{where}` the conditions, `{order}` ASC or DESC (see _BOUND for `+?`).
_PAGE = "{select} WHERE {where} ORDER BY created_at {order}, id {order} LIMIT +?"
_OWN_UNREAD_PER_CHANNEL = (
    "SELECT r.cid, r.unread_messages FROM reads r JOIN channels ch ON ch.cid=r.cid "
    "WHERE r.user_id=? AND r.unread_messages>0 ORDER BY r.cid")
_USER_ROW = "SELECT * FROM users WHERE id=?"
_CHANNELS_TO_SYNC = ("SELECT cid FROM channels ORDER BY last_message_at IS NULL, "
                     "last_message_at DESC, cid LIMIT ?")
# Drafts, polls and threads: of every channel, or of one (`..._IN_CHANNEL`).
_DRAFTS = ("SELECT cid, parent_id, created_at, position FROM drafts "
           "ORDER BY created_at DESC, cid, parent_id")
_DRAFTS_IN_CHANNEL = ("SELECT cid, parent_id, created_at, position FROM drafts WHERE cid=? "
                      "ORDER BY created_at DESC, cid, parent_id")
_POLLS = ("SELECT id, cid, message_id, updated_at, position FROM polls "
          "ORDER BY updated_at DESC, id")
_POLLS_IN_CHANNEL = ("SELECT id, cid, message_id, updated_at, position FROM polls WHERE cid=? "
                     "ORDER BY updated_at DESC, id")
_THREADS = ("SELECT parent_id, cid, reply_count, participant_count, last_message_at, "
            "position FROM threads "
            "ORDER BY last_message_at IS NULL, last_message_at DESC, parent_id")
_THREADS_IN_CHANNEL = ("SELECT parent_id, cid, reply_count, participant_count, last_message_at, "
                       "position FROM threads WHERE cid=? "
                       "ORDER BY last_message_at IS NULL, last_message_at DESC, parent_id")
_CONNECTION = "SELECT key, value FROM connection"
_LAST_SYNC_AT = "SELECT value FROM connection WHERE key='last_sync_at'"


class ReadModel:
    """Queries over one file's read tables."""

    def __init__(self, datastore: APSWDatastore, own_user_id: str | None) -> None:
        self.datastore = datastore
        self.own = own_user_id

    def warm_up(self) -> None:
        """Open a reader connection and read the schema now, so the first screen is fast; and
        make the decompressor the first message read needs (see `PayloadCodec.warm_up`)."""
        with self.datastore.transaction(commit=False) as cursor:
            cursor.execute(_ANY_CHANNEL).fetchall()
        self._codec.warm_up()

    @property
    def _codec(self) -> PayloadCodec:
        return self.datastore.codec

    # -- objects from the log ------------------------------------------------------------------

    # Public: other read-side modules (export, local actions) use these lookups too.

    def payload_at(self, cursor: apsw.Cursor, position: int) -> bytes:
        """The decompressed payload of the log entry at `position` (b"" when there is none)."""
        row = cast("tuple[int, bytes] | None", cursor.execute(_ENTRY, (position,)).fetchone())
        if row is None:
            return b""
        codec, state = row
        return self._codec.decode(codec, state, position)

    @staticmethod
    def message_bytes(payload: bytes | memoryview, slot: int) -> bytes:
        """The bytes of the message object at `slot` of an entry's payload (any bytes-like; b""
        for none)."""
        if not len(payload):
            return b""
        try:
            if slot == SLOT_EVENT:
                return bytes(_MESSAGE.decode(payload).message)
            if slot == SLOT_RESPONSE:  # a command's answer from the backend
                return bytes(_RESPONSE.decode(payload).response.message)
            return state_message(_STATE.decode(payload), slot)
        except (msgspec.MsgspecError, ValueError):
            return b""

    def _messages(self, cursor: apsw.Cursor, rows: list[MessageRow]) -> list[StoredMessage]:
        """Rows of `_MESSAGE_SELECT`: the message row, then its entry's codec and state (for an
        entry of one message)."""
        # (Every column named, not `*_`: a starred target builds a list for each row.)
        raws = self._raw_messages(cursor, [
            (codec, state, position, slot)
            for (_message_id, _cid, _created_at, _user_id, _kind, _parent_id, _reply_count,
                 _pinned, _deleted_at, _deleted_for_me, _local_state, _local_command, position,
                 slot, codec, state) in rows])
        # (Written out, not through `_stored_message`: this is every page's path.)
        return [StoredMessage(message_id, cid, created_at, user_id, kind, parent_id, reply_count,
                              bool(pinned), deleted_at, bool(deleted_for_me), local_state,
                              local_command, position, raw)
                for (message_id, cid, created_at, user_id, kind, parent_id, reply_count, pinned,
                     deleted_at, deleted_for_me, local_state, local_command, position, _slot,
                     _codec, _state), raw in zip(rows, raws)]

    def _raw_messages(
        self, cursor: apsw.Cursor, entries: list[tuple[int | None, bytes | None, int, int]]
    ) -> list[bytes]:
        """The message bytes of each (codec, stored bytes, position, slot): codec None when the
        row's entry is missing, stored bytes None for a channel state (read here, once each).

        A page is decoded as a batch: its entries of one dictionary are decompressed together,
        with the decompressor looked up once (`PayloadCodec.decode_many`)."""
        raws = [b""] * len(entries)
        by_codec: dict[int, list[int]] = {}
        stored_bytes: dict[int, bytes] = {}  # by index: the entries of one message each
        states: dict[int, _State | None] = {}  # the channel states met, each decoded once
        for index, (codec, stored, position, slot) in enumerate(entries):
            if codec is None:
                continue
            if stored is None:
                raws[index] = self._from_state(cursor, states, position, slot)
            else:
                by_codec.setdefault(codec, []).append(index)
                stored_bytes[index] = stored
        extract = self.message_bytes
        for codec, indexes in by_codec.items():
            payloads = self._codec.decode_many(codec, [stored_bytes[index] for index in indexes],
                                               [entries[index][2] for index in indexes])
            for index, payload in zip(indexes, payloads):
                _codec, _stored, _position, slot = entries[index]
                raws[index] = extract(payload, slot)
        return raws

    def _from_state(
        self, cursor: apsw.Cursor, states: dict[int, _State | None], position: int, slot: int
    ) -> bytes:
        """The message at `slot` of the channel state at `position`."""
        if position not in states:
            states[position] = channel_state_of(self.payload_at(cursor, position))
        state = states[position]
        return b"" if state is None else state_message(state, slot)

    def channel_bytes(self, cursor: apsw.Cursor, position: int | None, slot: int) -> bytes:
        """The bytes of the channel object in the entry at `position` (b"" for none)."""
        if position is None:
            return b""
        payload = self.payload_at(cursor, position)
        try:
            decoded = _CHANNEL.decode(payload) if slot == SLOT_EVENT else _STATE.decode(payload)
        except (msgspec.MsgspecError, ValueError):
            return b""
        return bytes(decoded.channel)

    # -- channel lists -------------------------------------------------------------------------

    def channels(
        self,
        filter: dict[str, Any] | None = None,
        sort: list[dict[str, Any]] | None = None,
        *,
        limit: int = 30,
        offset: int = 0,
    ) -> list[ChannelSummary]:
        """Channels matching `filter`, in `sort` order, evaluated against the stored data."""
        listed, params = self._listing(filter, sort)
        with self.datastore.transaction(commit=False) as cursor:
            cids = [
                cid for (cid,) in cursor.execute(
                    _LISTED_PAGE.format(listed=listed), [*params, limit, offset])
            ]
            return self._summaries(cursor, cids)

    def custom_channel_fields(self) -> list[str]:
        """The custom field names any stored channel has (what a filter may name besides
        the backend's own fields)."""
        with self.datastore.transaction(commit=False) as cursor:
            return [name for (name,) in cursor.execute(_CUSTOM_FIELD_NAMES)]

    def channel_count(self, filter: dict[str, Any] | None = None) -> int:
        """How many channels `channels(filter)` lists, all pages together: the one count of
        channels every view shows (`stats` among them)."""
        listed, params = self._listing(filter, None)
        with self.datastore.transaction(commit=False) as cursor:
            return _count(cursor, _LISTED_COUNT.format(listed=listed), params)

    def _listing(
        self, filter: dict[str, Any] | None, sort: list[dict[str, Any]] | None
    ) -> tuple[str, list[Any]]:
        """The statement (and its parameters) of the cids a channel list holds, in order."""
        query = compile_channel_query(filter, sort, own_user_id=self.own or "")
        where = query.where
        if not _mentions(filter, "hidden"):
            # As the backend does: hidden channels are listed only when the filter asks about them.
            where = f"({where}) AND c.hidden = 0"
        return _LISTED.format(where=where, order_by=query.order_by), query.params

    def _summaries(self, cursor: apsw.Cursor, cids: list[str]) -> list[ChannelSummary]:
        """Channel, unread count, own membership and newest message of each cid, in one query."""
        if not cids:
            return []
        rows = cast("list[SummaryRow]", cursor.execute(
            _SUMMARIES, (self.own, self.own, msgspec.json.encode(cids))).fetchall())
        # Each row is three rows side by side (see `SummaryRow`): the channel's, the own
        # member's, the newest message's (with its entry's codec and bytes).
        parts = {row[0]: (row[:7], row[7:15], row[15:29], row[29:]) for row in rows}
        # The newest messages' entries, decoded as one batch.
        newest_entries: dict[str, tuple[int | None, bytes | None, int, int]] = {}
        for cid, (_channel, _member, newest, entry) in parts.items():
            newest_id, *_, newest_position, newest_slot = newest
            if newest_id is not None:  # the newest message's columns (all NULL for none)
                codec, state = entry
                newest_entries[cid] = (codec, state, cast(int, newest_position),
                                       cast(int, newest_slot))
        newest_raw = dict(zip(newest_entries,
                              self._raw_messages(cursor, list(newest_entries.values()))))
        out = []
        for cid in cids:
            if cid not in parts:
                continue
            channel, member, newest, _entry = parts[cid]
            _cid, name, last_message_at, member_count, hidden, custom, unread_count = channel
            membership = None
            member_user_id, *_ = member
            if member_user_id is not None:  # the member columns (all NULL when not a member)
                membership = StoredMember(cid, *cast(_MemberColumns, member))
            last = None
            newest_id, *_ = newest
            if newest_id is not None:  # the newest message's columns (all NULL for none)
                last = _stored_message(cast(MessageColumns, newest), newest_raw[cid])
            out.append(ChannelSummary(
                cid=cid, name=name, last_message_at=last_message_at, member_count=member_count,
                unread_count=unread_count, hidden=bool(hidden), membership=membership,
                last_message=last, custom=decode_stored(custom) if custom else {},
            ))
        return out

    def _unread(self, cursor: apsw.Cursor, cid: str) -> int:
        row = cast("tuple[int] | None", cursor.execute(_OWN_UNREAD, (cid, self.own)).fetchone())
        if row is None:
            return 0
        (unread,) = row
        return unread

    def _membership(self, cursor: apsw.Cursor, cid: str) -> StoredMember | None:
        if self.own is None:
            return None
        rows = _members(cursor, _OWN_MEMBER, (cid, self.own))
        return rows[0] if rows else None

    def cached_channels(
        self, filter: dict[str, Any] | None = None, sort: list[dict[str, Any]] | None = None
    ) -> list[str] | None:
        """The channel ids of the last online answer to the same query, or None."""
        key = canonical_query_key(filter, sort)
        with self.datastore.transaction(commit=False) as cursor:
            row = cast("tuple[str] | None", cursor.execute(_CACHED_QUERY, (key,)).fetchone())
        if row is None:
            return None
        (cids,) = row
        return cast("list[str]", decode_stored(cids))

    # -- one channel ---------------------------------------------------------------------------

    def channel(self, cid: str, *, messages: int = 25) -> ChannelState | None:
        """One channel's state: channel, members, reads, newest messages, pinned, draft,
        own membership."""
        with self.datastore.transaction(commit=False) as cursor:
            row = cast("tuple[int | None, int] | None",
                       cursor.execute(_CHANNEL_ENTRY, (cid,)).fetchone())
            if row is None:
                return None
            position, slot = row
            raw = self.channel_bytes(cursor, position, slot)
            channel = decode_stored(raw) if raw else _one_dict(cursor, _CHANNEL_ROW, (cid,)) or {}
            page = self._channel_page(cursor, cid, None, before=True, inclusive=False,
                                      limit=messages)
            pinned = self._messages(cursor, cast("list[MessageRow]", cursor.execute(
                _FIRST_PINNED, (cid,)).fetchall()))
            draft = cast("tuple[int | None] | None",
                         cursor.execute(_CHANNEL_DRAFT, (cid,)).fetchone())
            draft_position = None
            if draft is not None:
                (draft_position,) = draft
            return ChannelState(
                channel=channel,
                members=_members(cursor, _CHANNEL_MEMBERS, (cid,)),
                read=_reads(cursor, cid),
                messages=page,
                pinned_messages=pinned,
                membership=self._membership(cursor, cid),
                draft_position=draft_position,
                unread_count=self._unread(cursor, cid),
            )

    # -- messages ------------------------------------------------------------------------------

    def messages(
        self,
        cid: str,
        *,
        before: tuple[int, str] | None = None,
        after: tuple[int, str] | None = None,
        inclusive: bool = False,
        limit: int = 50,
    ) -> MessagePage:
        """A page of a channel's messages (thread replies only when shown in the channel),
        oldest first, before or after a (created_at, id) cursor; without one, the newest.
        A list; its `gaps` (empty when `contiguous`) say where the page crosses history the
        store may not hold whole (see `projections.ranges`)."""
        if before is not None and after is not None:
            raise ValueError("give before or after, not both")
        with self.datastore.transaction(commit=False) as cursor:
            return self._channel_page(cursor, cid, after if after is not None else before,
                                      before=after is None, inclusive=inclusive, limit=limit)

    def _channel_page(
        self, cursor: apsw.Cursor, cid: str, page_key: tuple[int, str] | None, *, before: bool,
        inclusive: bool, limit: int,
    ) -> MessagePage:
        """A page of a channel's messages, with the gaps it crosses (see `projections.ranges`):
        between its neighbouring messages, and between the cursor and the page."""
        rows = self._page_rows(cursor, "cid=+? AND (parent_id IS NULL OR show_in_channel=1)",
                               (cid,), page_key, before=before, inclusive=inclusive, limit=limit)
        # Messages sent from here and not yet echoed by the backend are neither held history
        # nor missing from it: they take no part in finding gaps.
        keys = [(created_at, message_id)
                for (message_id, _cid, created_at, _user_id, _kind, _parent_id, _reply_count,
                     _pinned, _deleted_at, _deleted_for_me, local_state, _local_command,
                     _position, slot, _codec, _state) in rows
                if local_state is None and slot != SLOT_RESPONSE]
        # The cursor joins the page to the one it was taken from when it is a message on
        # file; a made-up cursor (such as (0, "")) joins nothing.
        if (page_key is not None and keys
                and cursor.execute(_MESSAGE_AT, (cid, *page_key)).fetchone()):
            key_created_at, key_id = page_key
            keys.insert(0 if not before else len(keys), (key_created_at, key_id))
        gaps = []
        if len(keys) > 1:
            ranges = cast("list[RangeRow]", cursor.execute(
                RANGES_OVERLAPPING, (cid, *keys[0], *keys[-1])).fetchall())
            gaps = find_gaps(ranges, keys)
        return MessagePage(self._messages(cursor, rows), gaps)

    def thread(
        self,
        parent_id: str,
        *,
        before: tuple[int, str] | None = None,
        after: tuple[int, str] | None = None,
        inclusive: bool = False,
        limit: int = 50,
    ) -> list[StoredMessage]:
        """Replies to a message, oldest first, paged like `messages`."""
        if before is not None and after is not None:
            raise ValueError("give before or after, not both")
        with self.datastore.transaction(commit=False) as cursor:
            return self._page(cursor, "parent_id=+?", (parent_id,),
                              after if after is not None else before, before=after is None,
                              inclusive=inclusive, limit=limit)

    def _page(
        self, cursor: apsw.Cursor, where: str, params: tuple[Any, ...],
        page_key: tuple[int, str] | None,
        *, before: bool, inclusive: bool, limit: int,
    ) -> list[StoredMessage]:
        """A page by `where` (its parameters written `+?`: see `_BOUND`) and cursor."""
        return self._messages(cursor, self._page_rows(cursor, where, params, page_key,
                                                      before=before, inclusive=inclusive,
                                                      limit=limit))

    def _page_rows(
        self, cursor: apsw.Cursor, where: str, params: tuple[Any, ...],
        page_key: tuple[int, str] | None,
        *, before: bool, inclusive: bool, limit: int,
    ) -> list[MessageRow]:
        """The rows (of `_MESSAGE_SELECT`) of a page, oldest first."""
        clauses = [where, "deleted_for_me=0"]
        values = list(params)
        if page_key is not None:
            op = ("<" if before else ">") + ("=" if inclusive else "")
            clauses.append(f"(created_at, id) {op} (+?, +?)")
            key_created_at, key_id = page_key
            values += [key_created_at, key_id]
        order = "DESC" if before else "ASC"
        rows = cast("list[MessageRow]", cursor.execute(
            _PAGE.format(select=_MESSAGE_SELECT, where=" AND ".join(clauses), order=order),
            [*values, limit],
        ).fetchall())
        if before:
            rows.reverse()
        return rows

    def message(self, message_id: str) -> StoredMessage | None:
        with self.datastore.transaction(commit=False) as cursor:
            rows = cast("list[MessageRow]",
                        cursor.execute(_MESSAGE_BY_ID, (message_id,)).fetchall())
            return self._messages(cursor, rows)[0] if rows else None

    def pinned(self, cid: str, *, limit: int = 25) -> list[StoredMessage]:
        with self.datastore.transaction(commit=False) as cursor:
            return self._messages(cursor, cast("list[MessageRow]", cursor.execute(
                _PINNED, (cid, limit)).fetchall()))

    # -- reactions, members, reads, users --------------------------------------------------------

    def reactions(self, message_id: str, *, own: bool = False,
                  limit: int = 25) -> list[StoredReaction]:
        """A message's reactions, newest first (only the own user's with `own=True`)."""
        with self.datastore.transaction(commit=False) as cursor:
            rows = cast("list[_ReactionRow]", cursor.execute(
                _OWN_REACTIONS if own else _REACTIONS,
                (message_id, self.own, limit) if own else (message_id, limit)).fetchall())
            return [StoredReaction(*row) for row in rows]

    def members(self, cid: str) -> list[StoredMember]:
        with self.datastore.transaction(commit=False) as cursor:
            return _members(cursor, _CHANNEL_MEMBERS, (cid,))

    def reads(self, cid: str) -> list[StoredRead]:
        with self.datastore.transaction(commit=False) as cursor:
            return _reads(cursor, cid)

    def unread_counts(self) -> UnreadCounts:
        """The own user's unread messages per channel and in total, and channels with any: the
        one set of unread figures every view shows (`user(own)` among them)."""
        with self.datastore.transaction(commit=False) as cursor:
            return self._unread_counts(cursor)

    def _unread_counts(self, cursor: apsw.Cursor) -> UnreadCounts:
        per_channel = dict(cast("list[tuple[str, int]]", cursor.execute(
            _OWN_UNREAD_PER_CHANNEL, (self.own,)).fetchall()))
        return UnreadCounts(total_unread_count=sum(per_channel.values()),
                            unread_channels=len(per_channel), channels=per_channel)

    def user(self, user_id: str) -> StoredUser | None:
        """A user as last seen: the object from the log, with the row's flags. For the own
        user, the figures the store keeps current replace those of the object as received
        (which the backend sent at connection time): `total_unread_count`, `unread_count` and
        `unread_channels` as `unread_counts()` gives them, `mutes` and `channel_mutes` (the
        mute objects) as `mutes()` and `channel_mutes()` do."""
        with self.datastore.transaction(commit=False) as cursor:
            row = _one_dict(cursor, _USER_ROW, (user_id,))
            if row is None:
                return None
            position: int = row["position"]
            raw = user_object(self.payload_at(cursor, position), row["slot"], user_id)
            current = self._own_figures(cursor) if user_id == self.own else {}
        data = decode_stored(raw) if raw else {"id": user_id, "name": row["name"],
                                                      "role": row["role"]}
        return StoredUser(
            id=user_id, name=row["name"], role=row["role"], online=bool(row["online"]),
            banned=bool(row["banned"]), last_active=row["last_active"],
            updated_at=row["updated_at"], deleted_at=row["deleted_at"], position=position,
            user={**data, **current}, row=row)

    def _own_figures(self, cursor: apsw.Cursor) -> dict[str, Any]:
        """What the own user object says that later events change: unread counts and mutes."""
        counts = self._unread_counts(cursor)
        now = now_us()
        return {"total_unread_count": counts.total_unread_count,
                "unread_count": counts.total_unread_count,
                "unread_channels": counts.unread_channels,
                "mutes": [muted.mute
                          for muted in MuteReader.users(cursor, self.payload_at, now=now)],
                "channel_mutes": [muted.mute
                                  for muted in MuteReader.channels(cursor, self.payload_at,
                                                                   now=now)]}

    def channel_ids_to_sync(self, limit: int = 250) -> list[str]:
        """The most recently active channels: what a reconnect asks `/sync` about."""
        with self.datastore.transaction(commit=False) as cursor:
            return [cid for (cid,) in cursor.execute(_CHANNELS_TO_SYNC, (limit,))]

    def drafts(self, cid: str | None = None) -> list[StoredDraft]:
        """Unsent drafts, newest first (one per channel and thread): `cid`, `parent_id` (None
        for the channel's own draft), `created_at` and the `draft` object as stored."""
        with self.datastore.transaction(commit=False) as cursor:
            rows = cast("list[tuple[str, str, int | None, int]]", (
                cursor.execute(_DRAFTS) if cid is None
                else cursor.execute(_DRAFTS_IN_CHANNEL, (cid,))).fetchall())
            return [StoredDraft(cid=row_cid, parent_id=parent or None, created_at=created_at,
                                draft=_draft_object(self.payload_at(cursor, position), row_cid,
                                                    parent))
                    for row_cid, parent, created_at, position in rows]

    def draft(self, cid: str, parent_id: str | None = None) -> StoredDraft | None:
        """The draft of a channel (or of one of its threads), or None."""
        return next((draft for draft in self.drafts(cid)
                     if draft.parent_id == (parent_id or None)), None)

    def polls(self, cid: str | None = None) -> list[StoredPoll]:
        """Polls as last heard of, most recently updated first: `id`, `cid`, `message_id`,
        `updated_at` and the `poll` object as stored."""
        with self.datastore.transaction(commit=False) as cursor:
            rows = cast("list[tuple[str, str | None, str | None, int | None, int]]", (
                cursor.execute(_POLLS) if cid is None
                else cursor.execute(_POLLS_IN_CHANNEL, (cid,))).fetchall())
            return [StoredPoll(id=poll_id, cid=poll_cid, message_id=message_id,
                               updated_at=updated_at,
                               poll=_member_object(self.payload_at(cursor, position), "poll"))
                    for poll_id, poll_cid, message_id, updated_at, position in rows]

    def poll(self, poll_id: str) -> StoredPoll | None:
        return next((poll for poll in self.polls() if poll.id == poll_id), None)

    def threads(self, cid: str | None = None) -> list[StoredThread]:
        """Threads the backend described (`thread.updated`), most recently active first:
        `parent_id`, `cid`, `reply_count`, `participant_count`, `last_message_at`, and the
        `thread` object as last received."""
        with self.datastore.transaction(commit=False) as cursor:
            rows = cast("list[tuple[str, str | None, int | None, int | None, int | None, int]]", (
                cursor.execute(_THREADS) if cid is None
                else cursor.execute(_THREADS_IN_CHANNEL, (cid,))).fetchall())
            return [StoredThread(parent_id=parent, cid=row_cid, reply_count=replies,
                                 participant_count=participants, last_message_at=last,
                                 thread=_member_object(self.payload_at(cursor, position), "thread"))
                    for parent, row_cid, replies, participants, last, position in rows]

    def thread_reads(self, parent_id: str) -> list[ThreadRead]:
        """Each user's read state of the thread under `parent_id`: `user_id`, `cid`,
        `last_read` (epoch µs), `last_read_message_id`, `position`."""
        with self.datastore.transaction(commit=False) as cursor:
            return ThreadReads.of_thread(cursor, parent_id)

    def reminders(self, cid: str | None = None, *, due: bool = False) -> list[StoredReminder]:
        """The own user's reminders, soonest first (those without a time last): `message_id`,
        `user_id`, `cid`, `remind_at`, `created_at`, `updated_at` (epoch µs or None), `due`
        (the backend said it is due), and the `reminder` object as last received. Only one
        channel's with `cid`; only those due with `due=True`."""
        with self.datastore.transaction(commit=False) as cursor:
            rows = cast("list[_ReminderRow]",
                        cursor.execute(LIST_REMINDERS, (cid, int(due))).fetchall())
            return [StoredReminder(
                        message_id=message_id, user_id=user, cid=row_cid, remind_at=remind_at,
                        created_at=created_at, updated_at=updated_at, due=bool(is_due),
                        reminder=reminder_object(self.payload_at(cursor, position)))
                    for (message_id, user, row_cid, remind_at, created_at, updated_at, is_due,
                         position) in rows]

    def mutes(self, *, expired: bool = False) -> list[UserMute]:
        """The users the own user has muted, by user id: `user_id`, `created_at`, `updated_at`,
        `expires` (epoch µs; `expires` None: until unmuted) and the `mute` object as received.
        Mutes past their `expires` are listed only with `expired=True`."""
        with self.datastore.transaction(commit=False) as cursor:
            return MuteReader.users(cursor, self.payload_at, now=None if expired else now_us())

    def channel_mutes(self, *, expired: bool = False) -> list[ChannelMute]:
        """The channels the own user has muted, by cid: `cid`, the times, and `mute`; like
        `mutes`. A muted channel's new messages do not count as unread."""
        with self.datastore.transaction(commit=False) as cursor:
            return MuteReader.channels(cursor, self.payload_at, now=None if expired else now_us())

    def connection_info(self) -> ConnectionInfo:
        """What the store knows of the connection: its id, the last health check (µs), the log
        position of the last `me`, `last_sync_at` (RFC 3339), and the event times of the mute
        lists on file (µs); None where not known."""
        with self.datastore.transaction(commit=False) as cursor:
            info = dict(cast("list[tuple[str, Any]]",
                             cursor.execute(_CONNECTION).fetchall()))
        synced = info.get("last_sync_at")
        return ConnectionInfo(
            connection_id=info.get("connection_id"),
            last_health_check_at=info.get("last_health_check_at"),
            me_position=info.get("me_position"),
            last_sync_at=format_time_or_none(synced) if isinstance(synced, int) else synced,
            user_mutes_at=info.get("user_mutes_at"),
            channel_mutes_at=info.get("channel_mutes_at"))

    def last_sync_at(self) -> str | None:
        """The time up to which the store holds every event (RFC 3339), or None before any sync."""
        with self.datastore.transaction(commit=False) as cursor:
            row = cursor.execute(_LAST_SYNC_AT).fetchone()
        if row is None:
            return None
        (synced,) = row
        return format_time_or_none(synced) if isinstance(synced, int) else None

    def unprojected(self, limit: int | None = None) -> list[UnprojectedEntry]:
        """Log entries stored but not wholly projected (a value the tables cannot hold was left
        out), newest first: `position`, `type`, `reason`."""
        with self.datastore.transaction(commit=False) as cursor:
            rows = cast("list[tuple[int, str, str]]", cursor.execute(
                _UNPROJECTED, (-1 if limit is None else limit,)).fetchall())
        return [UnprojectedEntry(position=position, type=kind, reason=reason)
                for position, kind, reason in rows]

    def unprojected_count(self) -> int:
        with self.datastore.transaction(commit=False) as cursor:
            return _count(cursor, _UNPROJECTED_COUNT, ())


# The channel list's rows (`SummaryRow`): each channel with the own unread count, the own
# membership and the newest message shown in the channel, and that message's entry.
_SUMMARIES = f"""SELECT ch.cid, ch.name, ch.last_message_at, ch.member_count, ch.hidden, ch.custom,
                       coalesce(r.unread_messages, 0), mb.user_id, mb.role, mb.channel_role,
                       mb.banned, mb.pinned_at, mb.archived_at, mb.created_at, mb.updated_at,
                       {', '.join('lm.' + col for col in _MESSAGE_COLUMNS.split(', '))},
                       e.codec, e.state
                FROM channels ch
                LEFT JOIN reads r ON r.cid = ch.cid AND r.user_id = +?
                LEFT JOIN members mb ON mb.cid = ch.cid AND mb.user_id = +?
                LEFT JOIN messages lm ON (lm.cid, lm.created_at, lm.id) = (
                    SELECT cid, created_at, id FROM messages
                    WHERE cid = ch.cid AND (parent_id IS NULL OR show_in_channel = 1)
                      AND deleted_for_me = 0
                    ORDER BY created_at DESC, id DESC LIMIT 1)
                LEFT JOIN stored_events e ON e.rowid = lm.position
                WHERE ch.cid IN (SELECT value FROM json_each(?))"""
_UNPROJECTED = "SELECT position, type, reason FROM unprojected ORDER BY position DESC LIMIT ?"
_UNPROJECTED_COUNT = "SELECT COUNT(*) FROM unprojected"

# The rows behind the result structs (see _ROW_SHAPES), their columns in the structs' order.
_REACTION_COLUMNS = "message_id, user_id, type, score, created_at, updated_at, position"
_ReactionRow = tuple[str, str, str, int, int | None, int | None, int]
_REACTION_ORDER = " ORDER BY coalesce(updated_at, created_at) DESC LIMIT ?"
_REACTIONS = f"SELECT {_REACTION_COLUMNS} FROM reactions WHERE message_id=?{_REACTION_ORDER}"
_OWN_REACTIONS = (f"SELECT {_REACTION_COLUMNS} FROM reactions WHERE message_id=? AND user_id=?"
                  + _REACTION_ORDER)
_MEMBER_COLUMNS = ("cid, user_id, role, channel_role, banned, pinned_at, archived_at, "
                   "created_at, updated_at")
# A member row without its cid (as the channel list reads the own membership).
_MemberColumns = tuple[str, str | None, str | None, int, int | None, int | None, int | None,
                       int | None]
_MemberRow = tuple[str, str, str | None, str | None, int, int | None, int | None, int | None,
                   int | None]
_CHANNEL_MEMBERS = (f"SELECT {_MEMBER_COLUMNS} FROM members WHERE cid=? "
                    "ORDER BY created_at, user_id")
_OWN_MEMBER = f"SELECT {_MEMBER_COLUMNS} FROM members WHERE cid=? AND user_id=?"
_READS = ("SELECT cid, user_id, last_read, unread_messages, last_read_message_id, "
          "first_unread_message_id, last_delivered_at, last_delivered_message_id, state_at "
          "FROM reads WHERE cid=? ORDER BY user_id")
_ReadRow = tuple[str, str, int | None, int, str | None, str | None, int | None, str | None,
                 int | None]
# A row of `reminders.LIST_REMINDERS`.
_ReminderRow = tuple[str, str | None, str | None, int | None, int | None, int | None, int, int]
# A row of the channel list (`_summaries`): the channel's columns, the own unread count, the
# own member columns (`_MemberColumns`, all NULL when not a member), the newest message's
# columns (`MessageColumns`, all NULL for none) and its entry's codec and bytes.
SummaryRow = tuple[
    str, str | None, int | None, int | None, int, str | None, int,
    str | None, str | None, str | None, int | None, int | None, int | None, int | None,
    int | None,
    str | None, str | None, int | None, str | None, str | None, str | None, int | None,
    int | None, int | None, int | None, str | None, str | None, int | None, int | None,
    int | None, bytes | None,
]


def _stored_message(columns: MessageColumns, raw: bytes) -> StoredMessage:
    """A message's columns (`_MESSAGE_COLUMNS`) and its object's bytes as a `StoredMessage`."""
    (message_id, cid, created_at, user_id, kind, parent_id, reply_count, pinned, deleted_at,
     deleted_for_me, local_state, local_command, position, _slot) = columns
    return StoredMessage(message_id, cid, created_at, user_id, kind, parent_id, reply_count,
                         bool(pinned), deleted_at, bool(deleted_for_me), local_state,
                         local_command, position, raw)


def _members(cursor: apsw.Cursor, sql: str, params: tuple[Any, ...]) -> list[StoredMember]:
    """The member rows a statement of `_MEMBER_COLUMNS` selects."""
    return [StoredMember(*row)
            for row in cast("list[_MemberRow]", cursor.execute(sql, params).fetchall())]


def _reads(cursor: apsw.Cursor, cid: str) -> list[StoredRead]:
    """A channel's read rows, by user id."""
    return [StoredRead(*row)
            for row in cast("list[_ReadRow]", cursor.execute(_READS, (cid,)).fetchall())]


def _count(cursor: apsw.Cursor, sql: str, params: tuple[Any, ...] | list[Any]) -> int:
    """The one integer a statement of one aggregate returns."""
    row = cast("tuple[int] | None", cursor.execute(sql, params).fetchone())
    if row is None:
        return 0
    (count,) = row
    return count


def _member_object(payload: bytes, key: str) -> dict[str, Any] | None:
    """`payload[key]` when the payload is an object holding an object there."""
    doc = decode_stored(payload)
    value = doc.get(key) if isinstance(doc, dict) else None
    return value if isinstance(value, dict) else None


def _draft_object(payload: bytes, cid: str, parent_id: str) -> dict[str, Any] | None:
    """The draft as the entry at its position holds it: a backend event's or a channel state's
    `draft`, or (for a draft saved here and not yet echoed) the message of the save command."""
    draft = _member_object(payload, "draft")
    if draft is not None:
        return draft
    request = _member_object(payload, "request")
    message = request.get("message") if request else None
    if not isinstance(message, dict):
        return None
    return {"channel_cid": cid, "parent_id": parent_id or None, "message": message}


def _mentions(filter: Any, field_name: str) -> bool:
    """Whether a filter names a field anywhere (inside $and, $or, $nor too)."""
    if isinstance(filter, dict):
        return any(k == field_name or _mentions(v, field_name) for k, v in filter.items())
    if isinstance(filter, list):
        return any(_mentions(v, field_name) for v in filter)
    return False


def _dicts(cursor: apsw.Cursor, sql: str, params: tuple[Any, ...]) -> list[dict[str, Any]]:
    result = cursor.execute(sql, params)
    try:
        names = [name for name, _declared_type in result.getdescription()]
    except apsw.ExecutionCompleteError:  # no rows: the statement has already finished
        return []
    return [dict(zip(names, row)) for row in result]


def _one_dict(cursor: apsw.Cursor, sql: str, params: tuple[Any, ...]) -> dict[str, Any] | None:
    rows = _dicts(cursor, sql, params)
    return rows[0] if rows else None


class ReadAPI:
    """The read methods a store offers, by delegation to its `ReadModel` (`self.read`): shared by
    the live store and by a store as it stood in the past."""

    read: ReadModel

    def channels(
        self, filter: dict[str, Any] | None = None, sort: list[dict[str, Any]] | None = None,
        *, limit: int = 30, offset: int = 0,
    ) -> list[ChannelSummary]:
        """Channels matching a backend-style filter, sorted, evaluated against stored data."""
        return self.read.channels(filter, sort, limit=limit, offset=offset)

    def channel_count(self, filter: dict[str, Any] | None = None) -> int:
        """How many channels `channels(filter)` lists, all pages together."""
        return self.read.channel_count(filter)

    def cached_channels(
        self, filter: dict[str, Any] | None = None, sort: list[dict[str, Any]] | None = None
    ) -> list[str] | None:
        """The cids of the last online answer to the same query (None if never asked online)."""
        return self.read.cached_channels(filter, sort)

    def channel(self, cid: str, *, messages: int = 25) -> ChannelState | None:
        """One channel's state: channel, members, reads, messages, pinned, own membership."""
        return self.read.channel(cid, messages=messages)

    def messages(
        self, cid: str, *, before: tuple[int, str] | None = None,
        after: tuple[int, str] | None = None, inclusive: bool = False, limit: int = 50,
    ) -> MessagePage:
        """A page of messages by (created_at, id) cursor, oldest first; `page.gaps` lists where
        it crosses history the store may not hold (`page.contiguous` when none)."""
        return self.read.messages(cid, before=before, after=after, inclusive=inclusive, limit=limit)

    def thread(
        self, parent_id: str, *, before: tuple[int, str] | None = None,
        after: tuple[int, str] | None = None, inclusive: bool = False, limit: int = 50,
    ) -> list[StoredMessage]:
        """Replies to a message, paged like `messages`."""
        return self.read.thread(parent_id, before=before, after=after, inclusive=inclusive,
                                limit=limit)

    def message(self, message_id: str) -> StoredMessage | None:
        return self.read.message(message_id)

    def pinned(self, cid: str, *, limit: int = 25) -> list[StoredMessage]:
        return self.read.pinned(cid, limit=limit)

    def reactions(self, message_id: str, *, own: bool = False,
                  limit: int = 25) -> list[StoredReaction]:
        return self.read.reactions(message_id, own=own, limit=limit)

    def members(self, cid: str) -> list[StoredMember]:
        return self.read.members(cid)

    def reads(self, cid: str) -> list[StoredRead]:
        return self.read.reads(cid)

    def unread_counts(self) -> UnreadCounts:
        return self.read.unread_counts()

    def user(self, user_id: str) -> StoredUser | None:
        return self.read.user(user_id)

    def channel_ids_to_sync(self, limit: int = 250) -> list[str]:
        return self.read.channel_ids_to_sync(limit)

    def connection_info(self) -> ConnectionInfo:
        return self.read.connection_info()

    def last_sync_at(self) -> str | None:
        return self.read.last_sync_at()

    def unprojected(self, limit: int | None = None) -> list[UnprojectedEntry]:
        return self.read.unprojected(limit)

    def drafts(self, cid: str | None = None) -> list[StoredDraft]:
        return self.read.drafts(cid)

    def draft(self, cid: str, parent_id: str | None = None) -> StoredDraft | None:
        return self.read.draft(cid, parent_id)

    def polls(self, cid: str | None = None) -> list[StoredPoll]:
        return self.read.polls(cid)

    def poll(self, poll_id: str) -> StoredPoll | None:
        return self.read.poll(poll_id)

    def threads(self, cid: str | None = None) -> list[StoredThread]:
        return self.read.threads(cid)

    def thread_reads(self, parent_id: str) -> list[ThreadRead]:
        """Each user's read state of one thread; see `ReadModel.thread_reads`."""
        return self.read.thread_reads(parent_id)

    def reminders(self, cid: str | None = None, *, due: bool = False) -> list[StoredReminder]:
        """The own user's reminders, soonest first; see `ReadModel.reminders`."""
        return self.read.reminders(cid, due=due)

    def mutes(self, *, expired: bool = False) -> list[UserMute]:
        """The users the own user has muted; see `ReadModel.mutes`."""
        return self.read.mutes(expired=expired)

    def channel_mutes(self, *, expired: bool = False) -> list[ChannelMute]:
        """The channels the own user has muted; see `ReadModel.channel_mutes`."""
        return self.read.channel_mutes(expired=expired)
