"""Exporting channels as one query-channels response, built from what the store holds now.

The document is `{"channels": [channel state, ...]}`, the shape `chatledger import --kind query`
(and the backend) speaks, so an export can be imported into another store. Channel and message
objects are the bytes stored in the log, as they arrived; they are re-encoded only where the row
knows better than the object, which is what a round trip needs:

- a message's `reply_count` (counted from the stored replies), `type` and `deleted_at` (a
  deletion that left the object as it was), `created_at` when the object has none;
- a channel's `last_message_at`, `member_count` and `hidden` (moved by later events).

Members and reads have no stored object of their own: they are written from their rows, with the
user object as last received.

Thread replies are in `messages` too (they carry `parent_id`), so that an import restores the
threads. Messages deleted "for me" are left out, as the backend leaves them out for this user,
and so are messages with a local change the backend has not confirmed yet (`local_state` set):
they are not the backend's. A channel with more messages than fit in 256 KiB is written as
several states of the same channel, each with the next run of messages (an import takes a state
of up to 4 MiB, and the messages filed from it are read back from it); importing them one after
the other gives the whole channel.

The export reads one snapshot of the store and is written channel by channel, in chunks: a store
of any size is exported in memory bounded by one chunk and one channel's members and reads.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from typing import Any, BinaryIO, cast

import apsw
import msgspec

from chatledger.errors import ExportError
from chatledger.eventstore.wire import WireError, decode_stored, parse_time, repair_utf8
from chatledger.eventstore.wire.times import format_time_or_none
from chatledger.projections import payloads
from chatledger.projections.queries import (
    ReadModel,
    channel_state_of,
    state_message,
    user_object,
)
from chatledger.projections.schema import SLOT_EVENT, SLOT_RESPONSE

# A channel state is imported as one log entry (of at most 4 MiB), and every message filed from
# it is read back from that entry, whole, each time it is shown. So a big channel is written as
# parts the size of a generous page of messages (a few hundred), far below the limit.


PART_BYTES = 256 * 1024
CHUNK_BYTES = 256 * 1024
# Channel states whose messages are kept split while a channel's messages are read (its
# messages mostly come from a few states, one after the other).
_STATES_KEPT = 4


@dataclass(slots=True)
class ExportReport:
    """What an export wrote."""

    channels: int = 0
    messages: int = 0
    bytes: int = 0
    local_left_out: int = 0  # messages with unconfirmed local changes, not exported
    parts: int = 0  # channel states written (more than `channels` when a channel was split)

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


# -- what the export reads of the stored objects -----------------------------------------------


class _MessageFields(msgspec.Struct):
    type: str | None = None
    reply_count: int | None = None
    created_at: str | None = None
    deleted_at: str | None = None


class _ChannelFields(msgspec.Struct):
    last_message_at: str | None = None
    member_count: int | None = None
    hidden: bool | None = None


class _DraftHolder(msgspec.Struct):
    draft: msgspec.Raw = msgspec.Raw()


# As the projection reads them (`payloads.Decoder`): a value of the wrong type, such as
# `"reply_count": "3"`, costs only itself, not the object's stored bytes.
_MESSAGE_FIELDS = payloads.Decoder(_MessageFields)
_CHANNEL_FIELDS = payloads.Decoder(_ChannelFields)
_DRAFT_HOLDER = msgspec.json.Decoder(_DraftHolder)
_DECODE_ERRORS = (msgspec.MsgspecError, ValueError, RecursionError)

_MESSAGE_COLUMNS = ("id, cid, created_at, user_id, type, parent_id, show_in_channel, reply_count, "
                    "pinned, pinned_at, updated_at, deleted_at, silent, position, slot")
_OF_MESSAGE = ", ".join("m." + name for name in _MESSAGE_COLUMNS.split(", "))

# The statements of an export, each built once.
_CHANNELS_BY_ACTIVITY = ("SELECT cid FROM channels "
                         "ORDER BY last_message_at IS NULL, last_message_at DESC, cid")
_CHANNELS_STORED = "SELECT cid FROM channels WHERE cid IN (SELECT value FROM json_each(?))"
_CHANNEL_ROW = ("SELECT position, slot, type, id, name, created_by, created_at, updated_at, "
                "last_message_at, member_count, frozen, disabled, hidden, team, truncated_at, "
                "deleted_at, custom FROM channels WHERE cid=?")
_COUNT_LOCAL = ("SELECT count(*) FROM messages WHERE cid=? AND deleted_for_me=0 "
                "AND local_state IS NOT NULL")
_SHOWN = "cid=? AND deleted_for_me=0"
_SHOWN_SENT = f"{_SHOWN} AND local_state IS NULL"
# A channel's messages, oldest first: (local messages included, only the newest `limit`).
_MESSAGES = {
    (include_local, limited): (
        f"SELECT {_OF_MESSAGE} FROM (SELECT * FROM messages WHERE {where}"
        + (" ORDER BY created_at DESC, id DESC LIMIT ?)" if limited else ")")
        + " m ORDER BY m.created_at, m.id")
    for include_local, where in ((True, _SHOWN), (False, _SHOWN_SENT))
    for limited in (False, True)
}
_PINNED = {
    include_local: (f"SELECT {_OF_MESSAGE} FROM messages m WHERE {where} AND pinned=1 "
                    "ORDER BY m.pinned_at DESC, m.id")
    for include_local, where in ((True, _SHOWN), (False, _SHOWN_SENT))
}
_MEMBERS = ("SELECT user_id, role, channel_role, banned, pinned_at, archived_at, created_at, "
            "updated_at FROM members WHERE cid=? ORDER BY created_at, user_id")
_READS = ("SELECT user_id, last_read, unread_messages, last_read_message_id, "
          "first_unread_message_id, last_delivered_at, last_delivered_message_id "
          "FROM reads WHERE cid=? ORDER BY user_id")
_USER_ENTRY = "SELECT position, slot FROM users WHERE id=?"
_CHANNEL_DRAFT_ENTRY = "SELECT position FROM drafts WHERE cid=? AND parent_id=''"


def _time(us: int | None) -> str | None:
    # A time out of RFC 3339's range (stored by an older version) is written as unknown.
    return format_time_or_none(us)


def _parsed(text: str | None) -> int | None:
    try:
        return parse_time(text) if text else None
    except WireError:  # a malformed time in a stored object: the row decides
        return None


def _patched(raw: bytes, changes: dict[str, Any]) -> bytes:
    """`raw` with some top-level keys set: decoded and encoded again, keys kept in order."""
    if not changes:
        return repair_utf8(raw)  # an older version may have stored text that is not UTF-8
    document = decode_stored(raw)
    document.update(changes)
    return msgspec.json.encode(document)


# -- messages ----------------------------------------------------------------------------------


def message_object(raw: bytes, row: tuple[Any, ...]) -> bytes:
    """A message's stored object, with what its row knows better (see the module doc).

    `row` holds `_MESSAGE_COLUMNS` in order.
    """
    (mid, cid, created_at, user_id, kind, parent_id, show_in_channel, reply_count,
     pinned, pinned_at, updated_at, deleted_at) = row[:12]
    try:
        fields = _MESSAGE_FIELDS.decode(raw) if raw else None
    except _DECODE_ERRORS:
        fields = None
    if fields is None:  # no object stored (or none readable): the row is all there is
        built: dict[str, Any] = {"id": mid, "cid": cid, "type": kind, "user": {"id": user_id},
                                 "created_at": _time(created_at), "updated_at": _time(updated_at),
                                 "deleted_at": _time(deleted_at), "parent_id": parent_id,
                                 "show_in_channel": bool(show_in_channel),
                                 "reply_count": reply_count, "pinned": bool(pinned),
                                 "pinned_at": _time(pinned_at)}
        return msgspec.json.encode({k: v for k, v in built.items() if v is not None})
    changes: dict[str, Any] = {}
    if (fields.reply_count or 0) != reply_count:
        changes["reply_count"] = reply_count
    if kind is not None and fields.type != kind:
        changes["type"] = kind
    if _parsed(fields.deleted_at) != deleted_at:
        changes["deleted_at"] = _time(deleted_at)
    if _parsed(fields.created_at) != created_at:
        changes["created_at"] = _time(created_at)
    return _patched(raw, changes)


# -- the export --------------------------------------------------------------------------------


def iter_export(
    read: ReadModel,
    *,
    cids: Iterable[str] | None = None,
    messages: int | None = None,
    include_local: bool = False,
    report: ExportReport | None = None,
) -> Iterator[bytes]:
    """The export as chunks of bytes, read from one snapshot of the store.

    `cids`: only these channels, in this order (default: every channel, the most recently
    active first); `messages`: only the newest N messages of each channel (default: all);
    `include_local`: also messages whose local change the backend has not confirmed.
    Raises `ExportError` for a cid that is not stored, before the first chunk.
    """
    if messages is not None and messages < 0:
        raise ExportError(f"messages must be 0 or more, not {messages}")
    report = report if report is not None else ExportReport()
    with read.datastore.transaction(commit=False) as cursor:
        order = _channel_order(cursor, cids)
        writer = _Writer(read, cursor.connection, messages=messages, include_local=include_local,
                         report=report)
        yield from writer.document(order)


def export_channels(
    read: ReadModel,
    out: BinaryIO,
    *,
    cids: Iterable[str] | None = None,
    messages: int | None = None,
    include_local: bool = False,
) -> ExportReport:
    """Write the export to a binary file object; returns what was written."""
    report = ExportReport()
    for chunk in iter_export(read, cids=cids, messages=messages, include_local=include_local,
                             report=report):
        out.write(chunk)
    return report


def _channel_order(cursor: apsw.Cursor, cids: Iterable[str] | None) -> list[str]:
    if cids is None:
        return [cast(str, cid) for (cid,) in cursor.execute(_CHANNELS_BY_ACTIVITY)]
    order = list(dict.fromkeys(cids))  # each channel once, in the order asked
    stored = {cid for (cid,) in cursor.execute(_CHANNELS_STORED,
                                          (msgspec.json.encode(order).decode(),))}
    missing = [cid for cid in order if cid not in stored]
    if missing:
        raise ExportError(f"no channel {missing[0]!r} is stored"
                          + (f" (nor {len(missing) - 1} more)" if len(missing) > 1 else ""))
    return order


class _Writer:
    """Writes the document, one channel state (or part of one) at a time."""

    def __init__(
        self, read: ReadModel, connection: apsw.Connection, *, messages: int | None,
        include_local: bool, report: ExportReport,
    ) -> None:
        self.read = read
        self.connection = connection
        self.limit = messages
        self.include_local = include_local
        self.report = report
        self.users: dict[str, bytes] = {}  # user objects, each read from the log once
        self.states: dict[int, Any] = {}  # channel states recently split into messages
        self.buffer = bytearray()

    def _cursor(self) -> apsw.Cursor:
        # A cursor of its own per query: one iterates messages while others look things up.
        return self.connection.cursor()

    def _emit(self, data: bytes) -> Iterator[bytes]:
        self.buffer += data
        if len(self.buffer) >= CHUNK_BYTES:
            yield from self._drain()

    def _drain(self) -> Iterator[bytes]:
        if self.buffer:
            chunk = bytes(self.buffer)
            self.buffer.clear()
            self.report.bytes += len(chunk)
            yield chunk

    def document(self, cids: list[str]) -> Iterator[bytes]:
        yield from self._emit(b'{"channels":[')
        for index, cid in enumerate(cids):
            if index:
                yield from self._emit(b",")
            for piece in self._channel(cid):
                yield from self._emit(piece)
            self.report.channels += 1
            yield from self._drain()  # a channel at a time reaches the file
        yield from self._emit(b"]}\n")
        yield from self._drain()

    # -- one channel ---------------------------------------------------------------------------

    def _channel(self, cid: str) -> Iterator[bytes]:
        """The channel's state in pieces: one state, or (when too big for one) several."""
        channel = self._channel_object(cid)
        head = b'{"channel":' + channel + b',"messages":['
        tail = self._state_tail(cid)
        yield head
        self.report.parts += 1
        size = len(head) + 1 + len(tail)
        count = 0
        for message in self._messages(cid):
            if count and size + len(message) + 1 > PART_BYTES:
                # The next part carries the channel and the next messages only: members,
                # reads and pinned messages came with the first.
                yield b"]" + tail + b"," + head
                self.report.parts += 1
                tail = b"}"
                size = len(head) + 1 + len(tail)
                count = 0
            if count:
                yield b","
            yield message
            size += len(message) + 1
            count += 1
            self.report.messages += 1
        yield b"]" + tail

    def _channel_object(self, cid: str) -> bytes:
        cursor = self._cursor()
        (position, slot, kind, channel_id, name, created_by, created_at, updated_at,
         last_message_at, member_count, frozen, disabled, hidden_flag, team, truncated_at,
         deleted_at, stored_custom) = cast("tuple[Any, ...]",
                                           cursor.execute(_CHANNEL_ROW, (cid,)).fetchone())
        hidden = bool(hidden_flag)
        raw = self.read.channel_bytes(cursor, position, slot) if position is not None else b""
        try:
            fields = _CHANNEL_FIELDS.decode(raw) if raw else None
        except _DECODE_ERRORS:
            fields = None
        if fields is None:  # heard of only through its events: the row is all there is
            custom = decode_stored(stored_custom) if stored_custom else {}
            built = {"id": channel_id, "type": kind, "cid": cid, "name": name,
                     "created_by": {"id": created_by} if created_by else None,
                     "created_at": _time(created_at), "updated_at": _time(updated_at),
                     "last_message_at": _time(last_message_at), "member_count": member_count,
                     "frozen": bool(frozen), "disabled": bool(disabled), "hidden": hidden,
                     "team": team, "truncated_at": _time(truncated_at),
                     "deleted_at": _time(deleted_at)}
            built = {k: v for k, v in built.items() if v is not None}
            return msgspec.json.encode({**custom, **built})
        changes: dict[str, Any] = {}
        if last_message_at is not None and _parsed(fields.last_message_at) != last_message_at:
            changes["last_message_at"] = _time(last_message_at)
        if member_count is not None and fields.member_count != member_count:
            changes["member_count"] = member_count
        if bool(fields.hidden) != hidden:
            changes["hidden"] = hidden
        return _patched(raw, changes)

    def _messages(self, cid: str) -> Iterator[bytes]:
        """The channel's messages, oldest first, each as its object's bytes."""
        if not self.include_local:
            (left_out,) = cast("tuple[int]",
                               self._cursor().execute(_COUNT_LOCAL, (cid,)).fetchone())
            self.report.local_left_out += left_out
        params: tuple[Any, ...] = (cid,) if self.limit is None else (cid, self.limit)
        statement = _MESSAGES[self.include_local, self.limit is not None]
        yield from self._message_objects(self._cursor().execute(statement, params))

    def _message_objects(self, rows: Iterable[tuple[Any, ...]]) -> Iterator[bytes]:
        """Rows of `_MESSAGE_COLUMNS` -> message objects. Messages filed from one channel
        state share its entry, which may be large: each entry is read and split once."""
        lookup = self._cursor()
        for row in rows:
            *_, position, slot = row
            yield message_object(self._stored_message(lookup, position, slot), row)

    def _stored_message(self, cursor: apsw.Cursor, position: int, slot: int) -> bytes:
        if slot == SLOT_EVENT or slot == SLOT_RESPONSE:
            return self.read.message_bytes(self.read.payload_at(cursor, position), slot)
        if position not in self.states:
            if len(self.states) >= _STATES_KEPT:
                self.states.pop(next(iter(self.states)))
            self.states[position] = channel_state_of(self.read.payload_at(cursor, position))
        parsed = self.states[position]
        return b"" if parsed is None else state_message(parsed, slot)

    def _state_tail(self, cid: str) -> bytes:
        """Everything of a channel state after its messages: pinned, members, reads, ..."""
        pinned = list(self._message_objects(self._cursor().execute(
            _PINNED[self.include_local], (cid,))))
        members: list[bytes] = []
        membership = b"null"  # the own user's member object, when a member
        for row in self._cursor().execute(_MEMBERS, (cid,)):
            member_id, *_ = row
            members.append(self._member(row))
            if member_id == self.read.own:
                membership = members[-1]
        reads = [self._read_state(row) for row in self._cursor().execute(_READS, (cid,))]
        tail = (b',"pinned_messages":[' + b",".join(pinned) + b'],"members":['
                + b",".join(members) + b'],"read":[' + b",".join(reads)
                + b'],"membership":' + membership)
        draft = self._draft(cid)
        if draft:
            tail += b',"draft":' + draft
        return tail + b"}"

    def _member(self, row: tuple[Any, ...]) -> bytes:
        uid, role, channel_role, banned, pinned_at, archived_at, created_at, updated_at = row
        fields = {"user_id": uid, "role": role, "channel_role": channel_role,
                  "banned": bool(banned), "pinned_at": _time(pinned_at),
                  "archived_at": _time(archived_at), "created_at": _time(created_at),
                  "updated_at": _time(updated_at)}
        return self._with_user(uid, {k: v for k, v in fields.items() if v is not None})

    def _read_state(self, row: tuple[Any, ...]) -> bytes:
        uid, last_read, unread, last_read_id, first_unread_id, delivered_at, delivered_id = row
        fields = {"last_read": _time(last_read), "unread_messages": unread,
                  "last_read_message_id": last_read_id, "first_unread_message_id": first_unread_id,
                  "last_delivered_at": _time(delivered_at),
                  "last_delivered_message_id": delivered_id}
        return self._with_user(uid, {k: v for k, v in fields.items() if v is not None})

    def _with_user(self, uid: str, fields: dict[str, Any]) -> bytes:
        """`{"user": <the user object as last received>, ...fields}`."""
        return (b'{"user":' + self._user(uid) + b","
                + msgspec.json.encode(fields)[1:])

    def _user(self, uid: str) -> bytes:
        cached = self.users.get(uid)
        if cached is None:
            cached = self.users[uid] = self._stored_user(uid) or msgspec.json.encode({"id": uid})
        return cached

    def _stored_user(self, uid: str) -> bytes | None:
        cursor = self._cursor()
        row = cast("tuple[int, int] | None", cursor.execute(_USER_ENTRY, (uid,)).fetchone())
        if row is None:
            return None
        position, slot = row
        return user_object(self.read.payload_at(cursor, position), slot, uid) or None

    def _draft(self, cid: str) -> bytes | None:
        """The channel's own draft, when the backend sent it (a draft saved here and not yet
        echoed is local, like an unsent message)."""
        cursor = self._cursor()
        row = cast("tuple[int] | None", cursor.execute(_CHANNEL_DRAFT_ENTRY, (cid,)).fetchone())
        if row is None:
            return None
        (position,) = row
        try:
            draft = _DRAFT_HOLDER.decode(self.read.payload_at(cursor, position)).draft
        except _DECODE_ERRORS:
            return None
        return bytes(draft) or None


__all__ = ["ExportError", "ExportReport", "export_channels", "iter_export", "message_object"]
