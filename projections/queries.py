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
_MEMBERS = msgspec.json.Decoder(_WithMembers)
_ID = msgspec.json.Decoder(_Id)


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


class ReadModel:
    """Queries over one file's read tables."""

    def __init__(self, datastore: APSWDatastore, own_user_id: str | None) -> None:
        self.datastore = datastore
        self.own = own_user_id

    def warm_up(self) -> None:
        """Open a reader connection and read the schema now, so the first screen is fast; and
        make the decompressor the first message read needs (see `PayloadCodec.warm_up`)."""
        with self.datastore.transaction(commit=False) as c:
            c.execute("SELECT 1 FROM channels LIMIT 1").fetchall()
        self._codec.warm_up()

    @property
    def _codec(self) -> PayloadCodec:
        return self.datastore.codec

    # -- objects from the log ------------------------------------------------------------------

    # Public: other read-side modules (export, local actions) use these lookups too.

    def payload_at(self, c: apsw.Cursor, position: int) -> bytes:
        """The decompressed payload of the log entry at `position` (b"" when there is none)."""
        row = c.execute("SELECT codec, state FROM stored_events WHERE rowid=?", (position,)).fetchone()
        return b"" if row is None else self._codec.decode(row[0], row[1], position)

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

    def _messages(self, c: apsw.Cursor, rows: list[MessageRow]) -> list[StoredMessage]:
        """Rows of `_MESSAGE_SELECT`: the message row, then its entry's codec and state (for an
        entry of one message)."""
        raws = self._raw_messages(c, [(r[14], r[15], r[12], r[13]) for r in rows])
        # (Written out, not through `_stored_message`: this is every page's path.)
        return [StoredMessage(r[0], r[1], r[2], r[3], r[4], r[5], r[6], bool(r[7]), r[8],
                              bool(r[9]), r[10], r[11], r[12], raw)
                for r, raw in zip(rows, raws)]

    def _raw_messages(
        self, c: apsw.Cursor, entries: list[tuple[int | None, bytes | None, int, int]]
    ) -> list[bytes]:
        """The message bytes of each (codec, stored bytes, position, slot): codec None when the
        row's entry is missing, stored bytes None for a channel state (read here, once each).

        A page is decoded as a batch: its entries of one dictionary are decompressed together,
        with the decompressor looked up once (`PayloadCodec.decode_many`)."""
        raws = [b""] * len(entries)
        by_codec: dict[int, list[int]] = {}
        stored_bytes: dict[int, bytes] = {}  # by index: the entries of one message each
        states: dict[int, _State | None] = {}  # the channel states met, each decoded once
        for i, (codec, stored, position, slot) in enumerate(entries):
            if codec is None:
                continue
            if stored is None:
                raws[i] = self._from_state(c, states, position, slot)
            else:
                by_codec.setdefault(codec, []).append(i)
                stored_bytes[i] = stored
        extract = self.message_bytes
        for codec, indexes in by_codec.items():
            payloads = self._codec.decode_many(codec, [stored_bytes[i] for i in indexes],
                                               [entries[i][2] for i in indexes])
            for i, payload in zip(indexes, payloads):
                raws[i] = extract(payload, entries[i][3])
        return raws

    def _from_state(
        self, c: apsw.Cursor, states: dict[int, _State | None], position: int, slot: int
    ) -> bytes:
        """The message at `slot` of the channel state at `position`."""
        if position not in states:
            states[position] = channel_state_of(self.payload_at(c, position))
        state = states[position]
        return b"" if state is None else state_message(state, slot)

    def channel_bytes(self, c: apsw.Cursor, position: int | None, slot: int) -> bytes:
        """The bytes of the channel object in the entry at `position` (b"" for none)."""
        if position is None:
            return b""
        payload = self.payload_at(c, position)
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
        with self.datastore.transaction(commit=False) as c:
            cids = [
                cid for (cid,) in c.execute(
                    f"{listed} LIMIT +? OFFSET +?",  # see _BOUND
                    [*params, limit, offset],
                )
            ]
            return self._summaries(c, cids)

    def custom_channel_fields(self) -> list[str]:
        """The custom field names any stored channel has (what a filter may name besides
        the backend's own fields)."""
        with self.datastore.transaction(commit=False) as cursor:
            return [name for (name,) in cursor.execute(_CUSTOM_FIELD_NAMES)]

    def channel_count(self, filter: dict[str, Any] | None = None) -> int:
        """How many channels `channels(filter)` lists, all pages together: the one count of
        channels every view shows (`stats` among them)."""
        listed, params = self._listing(filter, None)
        with self.datastore.transaction(commit=False) as c:
            return _count(c, f"SELECT count(*) FROM ({listed})", params)

    def _listing(
        self, filter: dict[str, Any] | None, sort: list[dict[str, Any]] | None
    ) -> tuple[str, list[Any]]:
        """The statement (and its parameters) of the cids a channel list holds, in order."""
        query = compile_channel_query(filter, sort, own_user_id=self.own or "")
        where = query.where
        if not _mentions(filter, "hidden"):
            # As the backend does: hidden channels are listed only when the filter asks about them.
            where = f"({where}) AND c.hidden = 0"
        return f"SELECT c.cid FROM channels c WHERE {where} ORDER BY {query.order_by}", query.params

    def _summaries(self, c: apsw.Cursor, cids: list[str]) -> list[ChannelSummary]:
        """Channel, unread count, own membership and newest message of each cid, in one query."""
        if not cids:
            return []
        rows = cast("list[SummaryRow]", c.execute(
            f"""SELECT ch.cid, ch.name, ch.last_message_at, ch.member_count, ch.hidden, ch.custom,
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
                WHERE ch.cid IN (SELECT value FROM json_each(?))""",
            (self.own, self.own, msgspec.json.encode(cids)),
        ).fetchall())
        by_cid = {row[0]: row for row in rows}
        # The newest messages' entries, decoded as one batch.
        with_last = [row for row in rows if row[15] is not None]
        last_raw = dict(zip(
            (row[0] for row in with_last),
            self._raw_messages(c, [(row[29], row[30], cast(int, row[27]), cast(int, row[28]))
                                   for row in with_last])))
        out = []
        for cid in cids:
            row = by_cid.get(cid)
            if row is None:
                continue
            membership = None
            if row[7] is not None:  # the member columns (all NULL when not a member)
                membership = StoredMember(cid, *cast(_MemberColumns, row[7:15]))
            last = None
            if row[15] is not None:  # the newest message's columns (all NULL for none)
                last = _stored_message(cast(MessageColumns, row[15:29]), last_raw[cid])
            out.append(ChannelSummary(
                cid=cid, name=row[1], last_message_at=row[2], member_count=row[3],
                unread_count=row[6], hidden=bool(row[4]), membership=membership,
                last_message=last, custom=decode_stored(row[5]) if row[5] else {},
            ))
        return out

    def _unread(self, c: apsw.Cursor, cid: str) -> int:
        row = c.execute("SELECT unread_messages FROM reads WHERE cid=? AND user_id=?",
                        (cid, self.own)).fetchone()
        return cast(int, row[0]) if row else 0

    def _membership(self, c: apsw.Cursor, cid: str) -> StoredMember | None:
        if self.own is None:
            return None
        rows = _members(c, _OWN_MEMBER, (cid, self.own))
        return rows[0] if rows else None

    def cached_channels(
        self, filter: dict[str, Any] | None = None, sort: list[dict[str, Any]] | None = None
    ) -> list[str] | None:
        """The channel ids of the last online answer to the same query, or None."""
        key = canonical_query_key(filter, sort)
        with self.datastore.transaction(commit=False) as c:
            row = c.execute("SELECT cids FROM channel_queries WHERE query=?", (key,)).fetchone()
        return None if row is None else decode_stored(row[0])

    # -- one channel ---------------------------------------------------------------------------

    def channel(self, cid: str, *, messages: int = 25) -> ChannelState | None:
        """One channel's state: channel, members, reads, newest messages, pinned, draft,
        own membership."""
        with self.datastore.transaction(commit=False) as c:
            row = c.execute("SELECT position, slot FROM channels WHERE cid=?", (cid,)).fetchone()
            if row is None:
                return None
            raw = self.channel_bytes(c, row[0], row[1])
            channel = decode_stored(raw) if raw else _one_dict(
                c, "SELECT * FROM channels WHERE cid=?", (cid,)) or {}
            page = self._channel_page(c, cid, None, before=True, inclusive=False,
                                      limit=messages)
            pinned = self._messages(c, cast("list[MessageRow]", c.execute(
                f"{_MESSAGE_SELECT} WHERE cid=? AND pinned=1 "
                "ORDER BY pinned_at DESC LIMIT 25", (cid,)).fetchall()))
            draft = c.execute("SELECT position FROM drafts WHERE cid=? AND parent_id=''",
                              (cid,)).fetchone()
            return ChannelState(
                channel=channel,
                members=_members(c, _CHANNEL_MEMBERS, (cid,)),
                read=_reads(c, cid),
                messages=page,
                pinned_messages=pinned,
                membership=self._membership(c, cid),
                draft_position=cast("int | None", draft[0]) if draft else None,
                unread_count=self._unread(c, cid),
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
        with self.datastore.transaction(commit=False) as c:
            return self._channel_page(c, cid, after if after is not None else before,
                                      before=after is None, inclusive=inclusive, limit=limit)

    def _channel_page(
        self, c: apsw.Cursor, cid: str, cursor: tuple[int, str] | None, *, before: bool,
        inclusive: bool, limit: int,
    ) -> MessagePage:
        """A page of a channel's messages, with the gaps it crosses (see `projections.ranges`):
        between its neighbouring messages, and between the cursor and the page."""
        rows = self._page_rows(c, "cid=+? AND (parent_id IS NULL OR show_in_channel=1)", (cid,),
                               cursor, before=before, inclusive=inclusive, limit=limit)
        # Messages sent from here and not yet echoed by the backend are neither held history
        # nor missing from it: they take no part in finding gaps.
        keys = [(r[2], r[0]) for r in rows if r[10] is None and r[13] != SLOT_RESPONSE]
        # The cursor joins the page to the one it was taken from when it is a message on
        # file; a made-up cursor (such as (0, "")) joins nothing.
        if (cursor is not None and keys
                and c.execute(_MESSAGE_AT, (cid, cursor[0], cursor[1])).fetchone()):
            keys.insert(0 if not before else len(keys), (cursor[0], cursor[1]))
        gaps = []
        if len(keys) > 1:
            ranges = cast("list[RangeRow]", c.execute(
                RANGES_OVERLAPPING, (cid, *keys[0], *keys[-1])).fetchall())
            gaps = find_gaps(ranges, keys)
        return MessagePage(self._messages(c, rows), gaps)

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
        with self.datastore.transaction(commit=False) as c:
            return self._page(c, "parent_id=+?", (parent_id,),
                              after if after is not None else before, before=after is None,
                              inclusive=inclusive, limit=limit)

    def _page(
        self, c: apsw.Cursor, where: str, params: tuple[Any, ...], cursor: tuple[int, str] | None,
        *, before: bool, inclusive: bool, limit: int,
    ) -> list[StoredMessage]:
        """A page by `where` (its parameters written `+?`: see `_BOUND`) and cursor."""
        return self._messages(c, self._page_rows(c, where, params, cursor, before=before,
                                                 inclusive=inclusive, limit=limit))

    def _page_rows(
        self, c: apsw.Cursor, where: str, params: tuple[Any, ...], cursor: tuple[int, str] | None,
        *, before: bool, inclusive: bool, limit: int,
    ) -> list[MessageRow]:
        """The rows (of `_MESSAGE_SELECT`) of a page, oldest first."""
        clauses = [where, "deleted_for_me=0"]
        values = list(params)
        if cursor is not None:
            op = ("<" if before else ">") + ("=" if inclusive else "")
            clauses.append(f"(created_at, id) {op} (+?, +?)")
            values += [cursor[0], cursor[1]]
        order = "DESC" if before else "ASC"
        rows = cast("list[MessageRow]", c.execute(
            f"{_MESSAGE_SELECT} WHERE {' AND '.join(clauses)} "
            f"ORDER BY created_at {order}, id {order} LIMIT +?",
            [*values, limit],
        ).fetchall())
        if before:
            rows.reverse()
        return rows

    def message(self, message_id: str) -> StoredMessage | None:
        with self.datastore.transaction(commit=False) as c:
            rows = cast("list[MessageRow]", c.execute(f"{_MESSAGE_SELECT} WHERE id=?",
                                                      (message_id,)).fetchall())
            return self._messages(c, rows)[0] if rows else None

    def pinned(self, cid: str, *, limit: int = 25) -> list[StoredMessage]:
        with self.datastore.transaction(commit=False) as c:
            return self._messages(c, cast("list[MessageRow]", c.execute(
                f"{_MESSAGE_SELECT} WHERE cid=? AND pinned=1 "
                "ORDER BY pinned_at DESC LIMIT ?", (cid, limit)).fetchall()))

    # -- reactions, members, reads, users --------------------------------------------------------

    def reactions(self, message_id: str, *, own: bool = False,
                  limit: int = 25) -> list[StoredReaction]:
        """A message's reactions, newest first (only the own user's with `own=True`)."""
        with self.datastore.transaction(commit=False) as c:
            rows = cast("list[_ReactionRow]", c.execute(
                _OWN_REACTIONS if own else _REACTIONS,
                (message_id, self.own, limit) if own else (message_id, limit)).fetchall())
            return [StoredReaction(*row) for row in rows]

    def members(self, cid: str) -> list[StoredMember]:
        with self.datastore.transaction(commit=False) as c:
            return _members(c, _CHANNEL_MEMBERS, (cid,))

    def reads(self, cid: str) -> list[StoredRead]:
        with self.datastore.transaction(commit=False) as c:
            return _reads(c, cid)

    def unread_counts(self) -> UnreadCounts:
        """The own user's unread messages per channel and in total, and channels with any: the
        one set of unread figures every view shows (`user(own)` among them)."""
        with self.datastore.transaction(commit=False) as c:
            return self._unread_counts(c)

    def _unread_counts(self, c: apsw.Cursor) -> UnreadCounts:
        per_channel = dict(cast("list[tuple[str, int]]", c.execute(
            "SELECT r.cid, r.unread_messages FROM reads r JOIN channels ch ON ch.cid=r.cid "
            "WHERE r.user_id=? AND r.unread_messages>0 ORDER BY r.cid", (self.own,)).fetchall()))
        return UnreadCounts(total_unread_count=sum(per_channel.values()),
                            unread_channels=len(per_channel), channels=per_channel)

    def user(self, user_id: str) -> StoredUser | None:
        """A user as last seen: the object from the log, with the row's flags. For the own
        user, the figures the store keeps current replace those of the object as received
        (which the backend sent at connection time): `total_unread_count`, `unread_count` and
        `unread_channels` as `unread_counts()` gives them, `mutes` and `channel_mutes` (the
        mute objects) as `mutes()` and `channel_mutes()` do."""
        with self.datastore.transaction(commit=False) as c:
            row = _one_dict(c, "SELECT * FROM users WHERE id=?", (user_id,))
            if row is None:
                return None
            position: int = row["position"]
            raw = user_object(self.payload_at(c, position), row["slot"], user_id)
            current = self._own_figures(c) if user_id == self.own else {}
        data = decode_stored(raw) if raw else {"id": user_id, "name": row["name"],
                                                      "role": row["role"]}
        return StoredUser(
            id=user_id, name=row["name"], role=row["role"], online=bool(row["online"]),
            banned=bool(row["banned"]), last_active=row["last_active"],
            updated_at=row["updated_at"], deleted_at=row["deleted_at"], position=position,
            user={**data, **current}, row=row)

    def _own_figures(self, c: apsw.Cursor) -> dict[str, Any]:
        """What the own user object says that later events change: unread counts and mutes."""
        counts = self._unread_counts(c)
        now = now_us()
        return {"total_unread_count": counts.total_unread_count,
                "unread_count": counts.total_unread_count,
                "unread_channels": counts.unread_channels,
                "mutes": [m.mute for m in MuteReader.users(c, self.payload_at, now=now)],
                "channel_mutes": [m.mute
                                  for m in MuteReader.channels(c, self.payload_at, now=now)]}

    def channel_ids_to_sync(self, limit: int = 250) -> list[str]:
        """The most recently active channels: what a reconnect asks `/sync` about."""
        with self.datastore.transaction(commit=False) as c:
            return [cid for (cid,) in c.execute(
                "SELECT cid FROM channels ORDER BY last_message_at IS NULL, last_message_at DESC, "
                "cid LIMIT ?", (limit,))]

    def drafts(self, cid: str | None = None) -> list[StoredDraft]:
        """Unsent drafts, newest first (one per channel and thread): `cid`, `parent_id` (None
        for the channel's own draft), `created_at` and the `draft` object as stored."""
        with self.datastore.transaction(commit=False) as c:
            rows = cast("list[tuple[str, str, int | None, int]]", c.execute(
                "SELECT cid, parent_id, created_at, position FROM drafts "
                + ("WHERE cid=? " if cid is not None else "")
                + "ORDER BY created_at DESC, cid, parent_id",
                (cid,) if cid is not None else ()).fetchall())
            return [StoredDraft(cid=row_cid, parent_id=parent or None, created_at=created_at,
                                draft=_draft_object(self.payload_at(c, position), row_cid, parent))
                    for row_cid, parent, created_at, position in rows]

    def draft(self, cid: str, parent_id: str | None = None) -> StoredDraft | None:
        """The draft of a channel (or of one of its threads), or None."""
        return next((d for d in self.drafts(cid) if d.parent_id == (parent_id or None)), None)

    def polls(self, cid: str | None = None) -> list[StoredPoll]:
        """Polls as last heard of, most recently updated first: `id`, `cid`, `message_id`,
        `updated_at` and the `poll` object as stored."""
        with self.datastore.transaction(commit=False) as c:
            rows = cast("list[tuple[str, str | None, str | None, int | None, int]]", c.execute(
                "SELECT id, cid, message_id, updated_at, position FROM polls "
                + ("WHERE cid=? " if cid is not None else "")
                + "ORDER BY updated_at DESC, id",
                (cid,) if cid is not None else ()).fetchall())
            return [StoredPoll(id=poll_id, cid=poll_cid, message_id=message_id,
                               updated_at=updated_at,
                               poll=_member_object(self.payload_at(c, position), "poll"))
                    for poll_id, poll_cid, message_id, updated_at, position in rows]

    def poll(self, poll_id: str) -> StoredPoll | None:
        return next((p for p in self.polls() if p.id == poll_id), None)

    def threads(self, cid: str | None = None) -> list[StoredThread]:
        """Threads the backend described (`thread.updated`), most recently active first:
        `parent_id`, `cid`, `reply_count`, `participant_count`, `last_message_at`, and the
        `thread` object as last received."""
        with self.datastore.transaction(commit=False) as c:
            rows = cast("list[tuple[str, str | None, int | None, int | None, int | None, int]]",
                        c.execute(
                "SELECT parent_id, cid, reply_count, participant_count, last_message_at, "
                "position FROM threads " + ("WHERE cid=? " if cid is not None else "")
                + "ORDER BY last_message_at IS NULL, last_message_at DESC, parent_id",
                (cid,) if cid is not None else ()).fetchall())
            return [StoredThread(parent_id=parent, cid=row_cid, reply_count=replies,
                                 participant_count=participants, last_message_at=last,
                                 thread=_member_object(self.payload_at(c, position), "thread"))
                    for parent, row_cid, replies, participants, last, position in rows]

    def thread_reads(self, parent_id: str) -> list[ThreadRead]:
        """Each user's read state of the thread under `parent_id`: `user_id`, `cid`,
        `last_read` (epoch µs), `last_read_message_id`, `position`."""
        with self.datastore.transaction(commit=False) as c:
            return ThreadReads.of_thread(c, parent_id)

    def reminders(self, cid: str | None = None, *, due: bool = False) -> list[StoredReminder]:
        """The own user's reminders, soonest first (those without a time last): `message_id`,
        `user_id`, `cid`, `remind_at`, `created_at`, `updated_at` (epoch µs or None), `due`
        (the backend said it is due), and the `reminder` object as last received. Only one
        channel's with `cid`; only those due with `due=True`."""
        with self.datastore.transaction(commit=False) as c:
            rows = cast("list[_ReminderRow]",
                        c.execute(LIST_REMINDERS, (cid, int(due))).fetchall())
            return [StoredReminder(
                        message_id=message_id, user_id=user, cid=row_cid, remind_at=remind_at,
                        created_at=created_at, updated_at=updated_at, due=bool(is_due),
                        reminder=reminder_object(self.payload_at(c, position)))
                    for (message_id, user, row_cid, remind_at, created_at, updated_at, is_due,
                         position) in rows]

    def mutes(self, *, expired: bool = False) -> list[UserMute]:
        """The users the own user has muted, by user id: `user_id`, `created_at`, `updated_at`,
        `expires` (epoch µs; `expires` None: until unmuted) and the `mute` object as received.
        Mutes past their `expires` are listed only with `expired=True`."""
        with self.datastore.transaction(commit=False) as c:
            return MuteReader.users(c, self.payload_at, now=None if expired else now_us())

    def channel_mutes(self, *, expired: bool = False) -> list[ChannelMute]:
        """The channels the own user has muted, by cid: `cid`, the times, and `mute`; like
        `mutes`. A muted channel's new messages do not count as unread."""
        with self.datastore.transaction(commit=False) as c:
            return MuteReader.channels(c, self.payload_at, now=None if expired else now_us())

    def connection_info(self) -> ConnectionInfo:
        """What the store knows of the connection: its id, the last health check (µs), the log
        position of the last `me`, `last_sync_at` (RFC 3339), and the event times of the mute
        lists on file (µs); None where not known."""
        with self.datastore.transaction(commit=False) as c:
            info = dict(cast("list[tuple[str, Any]]",
                             c.execute("SELECT key, value FROM connection").fetchall()))
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
        with self.datastore.transaction(commit=False) as c:
            row = c.execute("SELECT value FROM connection WHERE key='last_sync_at'").fetchone()
        return format_time_or_none(row[0]) if row and isinstance(row[0], int) else None

    def unprojected(self, limit: int | None = None) -> list[UnprojectedEntry]:
        """Log entries stored but not wholly projected (a value the tables cannot hold was left
        out), newest first: `position`, `type`, `reason`."""
        with self.datastore.transaction(commit=False) as c:
            rows = cast("list[tuple[int, str, str]]", c.execute(
                _UNPROJECTED, (-1 if limit is None else limit,)).fetchall())
        return [UnprojectedEntry(position=position, type=kind, reason=reason)
                for position, kind, reason in rows]

    def unprojected_count(self) -> int:
        with self.datastore.transaction(commit=False) as c:
            return _count(c, _UNPROJECTED_COUNT, ())


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


def _stored_message(m: MessageColumns, raw: bytes) -> StoredMessage:
    """A message's columns (`_MESSAGE_COLUMNS`) and its object's bytes as a `StoredMessage`."""
    return StoredMessage(m[0], m[1], m[2], m[3], m[4], m[5], m[6], bool(m[7]), m[8],
                         bool(m[9]), m[10], m[11], m[12], raw)


def _members(c: apsw.Cursor, sql: str, params: tuple[Any, ...]) -> list[StoredMember]:
    """The member rows a statement of `_MEMBER_COLUMNS` selects."""
    return [StoredMember(*row)
            for row in cast("list[_MemberRow]", c.execute(sql, params).fetchall())]


def _reads(c: apsw.Cursor, cid: str) -> list[StoredRead]:
    """A channel's read rows, by user id."""
    return [StoredRead(*row)
            for row in cast("list[_ReadRow]", c.execute(_READS, (cid,)).fetchall())]


def _count(c: apsw.Cursor, sql: str, params: tuple[Any, ...] | list[Any]) -> int:
    """The one integer a statement of one aggregate returns."""
    row = c.execute(sql, params).fetchone()
    return cast(int, row[0]) if row is not None else 0


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


def _dicts(c: apsw.Cursor, sql: str, params: tuple[Any, ...]) -> list[dict[str, Any]]:
    cursor = c.execute(sql, params)
    try:
        names = [d[0] for d in cursor.getdescription()]
    except apsw.ExecutionCompleteError:  # no rows: the statement has already finished
        return []
    return [dict(zip(names, r)) for r in cursor]


def _one_dict(c: apsw.Cursor, sql: str, params: tuple[Any, ...]) -> dict[str, Any] | None:
    rows = _dicts(c, sql, params)
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
