"""The own user's mutes: the users and the channels they muted, as the backend last listed them.

The backend sends the whole lists in the own user object `me` (`mutes`: users, `channel_mutes`:
channels, each entry with `created_at`, `updated_at` and an optional `expires`): in the first
frame of a connection (`health.check`) and in `notification.mutes_updated` and
`notification.channel_mutes_updated`. Each list that a `me` carries replaces the rows of its
table; a `me` without a list leaves that table alone (a missing field never erases what is
known). A list older (by the event's time) than the one the table holds changes nothing.

A channel muted when one of its messages was created does not count that message as unread,
as the backend counts (`MuteProjector.silences`). A mute past its `expires` no longer counts,
neither for unread counting nor for the `muted` filter of channel lists.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, cast

import apsw
import msgspec

from chatledger.projections import payloads
from chatledger.projections.item import Item
from chatledger.projections.results import ChannelMute, UserMute
from chatledger.projections.rows.connection import ConnectionRows
from chatledger.projections.rowtime import epoch_us

__all__ = ["EVENT_TYPES", "MuteProjector", "MuteReader", "now_us"]

# Events whose `me` carries the lists (health.check is the projector's own; it calls `apply`).
EVENT_TYPES = ("notification.mutes_updated", "notification.channel_mutes_updated")




class _Ref(msgspec.Struct, gc=False):
    id: str | None = None
    cid: str | None = None
    type: str | None = None


class _Mute(msgspec.Struct, gc=False):
    target: _Ref | None = None  # a user mute: the muted user
    channel: _Ref | None = None  # a channel mute: the muted channel
    created_at: str | None = None
    updated_at: str | None = None
    expires: str | None = None


class _Me(msgspec.Struct, gc=False):
    mutes: list[_Mute] | None = None
    channel_mutes: list[_Mute] | None = None


class _MeEvent(msgspec.Struct, gc=False):
    created_at: str | None = None
    me: _Me | None = None


class _RawMe(msgspec.Struct, gc=False):
    mutes: list[msgspec.Raw] = []
    channel_mutes: list[msgspec.Raw] = []


class _RawMeEvent(msgspec.Struct, gc=False):
    me: _RawMe | None = None


# A value of the wrong type (`"expires": 5`) costs only itself, not every mute of the frame;
# a mute that is not an object leaves an empty one in its place, so the slots of the others
# stay those of `_DECODE_RAW` (`payloads.Decoder`).
_DECODE = payloads.Decoder(_MeEvent).decode
_DECODE_RAW = msgspec.json.Decoder(_RawMeEvent).decode
_DECODE_ERRORS = (msgspec.MsgspecError, ValueError, RecursionError)

# How a reader gets the payload of the log entry at a position (in its read transaction).
PayloadOf = Callable[[apsw.Cursor, int], bytes]


def now_us() -> int:
    """The present in epoch microseconds: what a mute's `expires` is compared with when read."""
    return time.time_ns() // 1000


class _MuteList:
    """One of the two tables: the statements that replace its rows and read them."""

    def __init__(self, table: str, key: str, list_name: str) -> None:
        self.list_name = list_name
        self.time_key = f"{table}_at"  # `connection` key: the event time of the list on file
        self.clear = f"DELETE FROM {table}"
        self.insert = (f"INSERT OR REPLACE INTO {table} ({key}, created_at, updated_at, expires, "
                       "position, slot) VALUES (?,?,?,?,?,?)")
        self.select = (f"SELECT {key}, created_at, updated_at, expires, position, slot "
                       f"FROM {table} WHERE ?1 IS NULL OR expires IS NULL OR expires > ?1 "
                       f"ORDER BY {key}")
        self.key = key


_USERS = _MuteList("user_mutes", "user_id", "mutes")
_CHANNELS = _MuteList("channel_mutes", "cid", "channel_mutes")
_LIST_TIME = "SELECT value FROM connection WHERE key=?"
_CHANNEL_MUTE_EXPIRY = "SELECT cid, expires FROM channel_mutes"


def _channel_cid(ref: _Ref | None) -> str | None:
    if ref is None:
        return None
    return ref.cid or (f"{ref.type}:{ref.id}" if ref.type and ref.id else None)


class MuteProjector:
    """Keeps `user_mutes` and `channel_mutes` as the newest `me` lists them."""

    def __init__(self) -> None:
        # The channel mutes on file (cid -> expires, None: never), read once and then kept in
        # step; None when not read yet. `forget` drops it when the table may have changed
        # behind this object's back (a rollback, another connection).
        self._channel_expiry: dict[str, int | None] | None = None

    def forget(self) -> None:
        self._channel_expiry = None

    def apply(self, cursor: apsw.Cursor, item: Item, *_: object) -> None:
        """A handler for `EVENT_TYPES` and for `health.check`: replaces each list `me` carries.
        (Extra arguments, such as the decoded event the projector passes, are ignored.)"""
        try:
            event = _DECODE(item.payload)
        except _DECODE_ERRORS:
            return
        if event.me is None:
            return
        at = epoch_us(event.created_at) or item.received_at
        users, channels = event.me.mutes, event.me.channel_mutes
        if users is not None and self._newer(cursor, _USERS, at):
            self._replace(cursor, _USERS, item.position,
                          [(m.target.id if m.target else None, m) for m in users])
        if channels is not None and self._newer(cursor, _CHANNELS, at):
            self._replace(cursor, _CHANNELS, item.position,
                          [(_channel_cid(m.channel), m) for m in channels])
            self._channel_expiry = None

    @staticmethod
    def _newer(cursor: apsw.Cursor, kind: _MuteList, at: int) -> bool:
        """Whether a list of time `at` is not older than the one on file; if so, records `at`."""
        row: tuple[Any, ...] | None = cursor.execute(_LIST_TIME, (kind.time_key,)).fetchone()
        if row is not None:
            (on_file_at,) = row
            if isinstance(on_file_at, int) and on_file_at > at:
                return False
        ConnectionRows.set_value(cursor, kind.time_key, at)
        return True

    @staticmethod
    def _replace(cursor: apsw.Cursor, kind: _MuteList, position: int,
                 entries: list[tuple[str | None, _Mute]]) -> None:
        cursor.execute(kind.clear)
        cursor.executemany(kind.insert, [
            (key, epoch_us(m.created_at), epoch_us(m.updated_at), epoch_us(m.expires), position,
             slot)
            for slot, (key, m) in enumerate(entries) if key])

    def silences(self, cursor: apsw.Cursor, cid: str, at: int) -> bool:
        """Whether channel `cid` was muted at `at` (epoch µs): its messages of that time do not
        count as unread."""
        if self._channel_expiry is None:
            mutes: list[Any] = cursor.execute(_CHANNEL_MUTE_EXPIRY).fetchall()
            self._channel_expiry = dict(mutes)
        if cid not in self._channel_expiry:
            return False
        expires = self._channel_expiry[cid]
        return expires is None or expires > at


class MuteReader:
    """Reading the mute tables (inside a read transaction the caller opens)."""

    @staticmethod
    def users(cursor: apsw.Cursor, payload_of: PayloadOf, *, now: int | None) -> list[UserMute]:
        """The muted users: `user_id`, times (epoch µs), and `mute` (the object as received).
        Mutes expired by `now` are left out (all are listed when `now` is None)."""
        return [UserMute(*row) for row in MuteReader.rows_of(cursor, _USERS, payload_of, now)]

    @staticmethod
    def channels(cursor: apsw.Cursor, payload_of: PayloadOf, *, now: int | None) -> list[ChannelMute]:
        """The muted channels: `cid`, times, and `mute`; like `users`."""
        return [ChannelMute(*row) for row in MuteReader.rows_of(cursor, _CHANNELS, payload_of, now)]

    @staticmethod
    def rows_of(cursor: apsw.Cursor, kind: _MuteList, payload_of: PayloadOf,
                now: int | None) -> list[_MuteRow]:
        """(key, created_at, updated_at, expires, the mute object) of each row."""
        rows = cast("list[tuple[str, int | None, int | None, int | None, int, int]]",
                    cursor.execute(kind.select, (now,)).fetchall())
        lists: dict[int, list[msgspec.Raw]] = {}  # each `me` entry read once
        out: list[_MuteRow] = []
        for key, created_at, updated_at, expires, position, slot in rows:
            if position not in lists:
                lists[position] = _raw_list(payload_of(cursor, position), kind.list_name)
            raw = lists[position]
            out.append((key, created_at, updated_at, expires,
                        msgspec.json.decode(raw[slot]) if slot < len(raw) else None))
        return out


# A mute as read: the user id or cid, created_at, updated_at, expires (epoch µs), the object.
_MuteRow = tuple[str, int | None, int | None, int | None, Any]


def _raw_list(payload: bytes, name: str) -> list[msgspec.Raw]:
    try:
        event = _DECODE_RAW(payload)
    except _DECODE_ERRORS:
        return []
    return getattr(event.me, name) if event.me is not None else []
