"""What the read API returns, as typed structs: one row each of the read tables, and the few
composite answers (a channel's state, the unread figures, the store's statistics).

Times stay the integers the tables hold (epoch microseconds: cheap to compare, sort and store);
each has a `datetime` property beside it, computed when asked (`from_micros`, the one
conversion every result uses). A field `x_at` has the property `x` (`created_at` ->
`created`); a time field named otherwise has `<name>_time` (`last_read` -> `last_read_time`).

The structs encode to JSON (`msgspec.json.encode`) exactly as the dicts they replace did: the
same keys in the same order. During a deprecation period they can still be read like those
dicts (`row["user_id"]`, `row.get(...)`, `"x" in row`, `row.keys()`, `dict(row)`): each such
read warns (`DeprecationWarning`) and names the attribute to use instead.
"""

from __future__ import annotations

import warnings
from collections.abc import ItemsView, KeysView, ValuesView
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import msgspec

from chatledger.eventstore.wire import decode_stored
from chatledger.projections.ranges import MessagePage
from chatledger.projections.times import from_micros

__all__ = [
    "StoredMessage", "ChannelSummary", "ResultRow", "StoredReaction", "StoredMember", "StoredRead", "UnreadCounts", "StoredUser",
    "StoredDraft", "StoredPoll", "StoredThread", "ThreadRead", "StoredReminder", "UserMute",
    "ChannelMute", "ConnectionInfo", "UnprojectedEntry", "QuarantineEntry", "StoreStats",
    "ChannelState",
]


class _Text(msgspec.Struct):
    text: str | None = None


_text_decoder = msgspec.json.Decoder(_Text)


@dataclass(slots=True)
class StoredMessage:
    """A message as stored now: its row (with the local state) and its object's exact bytes."""

    id: str
    cid: str
    created_at: int
    user_id: str | None
    type: str | None
    parent_id: str | None
    reply_count: int
    pinned: bool
    deleted_at: int | None
    deleted_for_me: bool
    local_state: str | None
    local_command: str | None
    position: int
    raw: bytes = b""

    def json(self) -> dict[str, Any]:
        return decode_stored(self.raw) if self.raw else {}

    @property
    def text(self) -> str:
        """The message's text ("" when it has none); read without decoding the rest."""
        if not self.raw:
            return ""
        try:
            return _text_decoder.decode(self.raw).text or ""
        except (msgspec.DecodeError, msgspec.ValidationError, UnicodeError):
            # (Older msgspec releases raise UnicodeDecodeError for text that is not UTF-8.)
            text = self.json().get("text")  # what every other reader of the bytes sees
            return text if isinstance(text, str) else ""

    @property
    def created(self) -> datetime | None:
        """`created_at` (epoch microseconds) as an aware UTC datetime."""
        return from_micros(self.created_at)

    @property
    def deleted(self) -> datetime | None:
        """`deleted_at` as an aware UTC datetime; None while the message stands."""
        return from_micros(self.deleted_at)

    @property
    def reaction_counts(self) -> dict[str, int]:
        """Reactions by type, as the message object says (the backend's count of them all,
        not only those the store saw one by one): what every view of the message shows."""
        counts = self.json().get("reaction_counts")
        if not isinstance(counts, dict):
            return {}
        return {kind: count for kind, count in counts.items()
                if isinstance(count, int) and not isinstance(count, bool) and count > 0}


@dataclass(slots=True)
class ChannelSummary:
    """One line of a channel list: the channel, its newest message, unread count, membership."""

    cid: str
    name: str | None
    last_message_at: int | None
    member_count: int | None
    unread_count: int
    hidden: bool
    membership: StoredMember | None
    last_message: StoredMessage | None
    custom: dict[str, Any] = field(default_factory=dict)

    @property
    def last_message_time(self) -> datetime | None:
        """`last_message_at` (epoch microseconds) as an aware UTC datetime."""
        return from_micros(self.last_message_at)


# What a caller that wants a dict does instead.
_AS_DICT = "use the attributes, or msgspec.structs.asdict(result)"


class ResultRow(msgspec.Struct, frozen=True):
    """The base of the result types: their dict-style reading, kept for callers written when
    the results were dicts, and deprecated (it warns)."""

    def legacy_dict(self) -> dict[str, Any]:
        """The dict this result used to be (what dict-style reads see)."""
        return msgspec.structs.asdict(self)

    def _deprecated(self, how: str, instead: str) -> dict[str, Any]:
        warnings.warn(
            f"reading a {type(self).__name__} like a dict ({how}) is deprecated: {instead}",
            DeprecationWarning, stacklevel=3)
        return self.legacy_dict()

    def _instead(self, key: object) -> str:
        if isinstance(key, str) and key in self.__struct_fields__:
            return f"use .{key}"
        return f"its fields are {', '.join(self.__struct_fields__)}"

    def __eq__(self, other: object) -> bool:
        # Code that compared a result with a dict (`store.unread_counts() == {...}`) would
        # otherwise get False without a word: it gets the dict comparison, and the warning.
        if isinstance(other, dict):
            return self._deprecated("== a dict", _AS_DICT) == other
        if type(other) is not type(self):
            return NotImplemented
        return msgspec.structs.astuple(self) == msgspec.structs.astuple(other)

    def __ne__(self, other: object) -> bool:
        equal = self.__eq__(other)
        return equal if equal is NotImplemented else not equal

    def __hash__(self) -> int:
        return hash(msgspec.structs.astuple(self))

    def __getitem__(self, key: str) -> Any:
        return self._deprecated(f"[{key!r}]", self._instead(key))[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self._deprecated(f".get({key!r})", self._instead(key)).get(key, default)

    def __contains__(self, key: object) -> bool:
        return key in self._deprecated(f"{key!r} in", self._instead(key))

    def keys(self) -> KeysView[str]:
        return self._deprecated(".keys()", _AS_DICT).keys()

    def values(self) -> ValuesView[Any]:
        return self._deprecated(".values()", _AS_DICT).values()

    def items(self) -> ItemsView[str, Any]:
        return self._deprecated(".items()", _AS_DICT).items()


class StoredReaction(ResultRow, frozen=True):
    """A reaction row (`reactions()`)."""

    message_id: str
    user_id: str
    type: str
    score: int
    created_at: int | None
    updated_at: int | None
    position: int

    @property
    def created(self) -> datetime | None:
        return from_micros(self.created_at)

    @property
    def updated(self) -> datetime | None:
        return from_micros(self.updated_at)


class StoredMember(ResultRow, frozen=True):
    """A member row (`members()`, a channel's `membership`). `banned` is the table's 0 or 1."""

    cid: str
    user_id: str
    role: str | None
    channel_role: str | None
    banned: int
    pinned_at: int | None
    archived_at: int | None
    created_at: int | None
    updated_at: int | None

    @property
    def pinned(self) -> datetime | None:
        """When the member pinned the channel; None when not pinned."""
        return from_micros(self.pinned_at)

    @property
    def archived(self) -> datetime | None:
        """When the member archived the channel; None when not archived."""
        return from_micros(self.archived_at)

    @property
    def created(self) -> datetime | None:
        return from_micros(self.created_at)

    @property
    def updated(self) -> datetime | None:
        return from_micros(self.updated_at)


class StoredRead(ResultRow, frozen=True):
    """A user's read state of a channel (`reads()`); `state_at` is the server time of the state,
    None for one set only locally."""

    cid: str
    user_id: str
    last_read: int | None
    unread_messages: int
    last_read_message_id: str | None
    first_unread_message_id: str | None
    last_delivered_at: int | None
    last_delivered_message_id: str | None
    state_at: int | None

    @property
    def last_read_time(self) -> datetime | None:
        return from_micros(self.last_read)

    @property
    def last_delivered(self) -> datetime | None:
        return from_micros(self.last_delivered_at)

    @property
    def state_time(self) -> datetime | None:
        return from_micros(self.state_at)


class UnreadCounts(ResultRow, frozen=True):
    """The own user's unread messages: in all, how many channels have any, and per channel."""

    total_unread_count: int
    unread_channels: int
    channels: dict[str, int]


class StoredUser(ResultRow, frozen=True):
    """A user as last seen (`user()`): the row's fields, `user` (the object as last received;
    for the own user with the figures the store keeps current) and `row` (the table row as
    it is, `custom` as stored text). Read like a dict (deprecated), it is the old shape: the
    object's keys, and `"_row"`."""

    id: str
    name: str | None
    role: str | None
    online: bool
    banned: bool
    last_active: int | None
    updated_at: int | None
    deleted_at: int | None
    position: int
    user: dict[str, Any]
    row: dict[str, Any]

    @property
    def last_active_time(self) -> datetime | None:
        return from_micros(self.last_active)

    @property
    def updated(self) -> datetime | None:
        return from_micros(self.updated_at)

    @property
    def deleted(self) -> datetime | None:
        return from_micros(self.deleted_at)

    def legacy_dict(self) -> dict[str, Any]:
        return {**self.user, "_row": self.row}


class StoredDraft(ResultRow, frozen=True):
    """An unsent draft (`drafts()`); `parent_id` None for the channel's own."""

    cid: str
    parent_id: str | None
    created_at: int | None
    draft: dict[str, Any] | None

    @property
    def created(self) -> datetime | None:
        return from_micros(self.created_at)


class StoredPoll(ResultRow, frozen=True):
    """A poll as last heard of (`polls()`)."""

    id: str
    cid: str | None
    message_id: str | None
    updated_at: int | None
    poll: dict[str, Any] | None

    @property
    def updated(self) -> datetime | None:
        return from_micros(self.updated_at)


class StoredThread(ResultRow, frozen=True):
    """A thread the backend described (`threads()`)."""

    parent_id: str
    cid: str | None
    reply_count: int | None
    participant_count: int | None
    last_message_at: int | None
    thread: dict[str, Any] | None

    @property
    def last_message_time(self) -> datetime | None:
        return from_micros(self.last_message_at)


class ThreadRead(ResultRow, frozen=True):
    """A user's read state of a thread (`thread_reads()`)."""

    parent_id: str
    user_id: str
    cid: str | None
    last_read: int | None
    last_read_message_id: str | None
    position: int

    @property
    def last_read_time(self) -> datetime | None:
        return from_micros(self.last_read)


class StoredReminder(ResultRow, frozen=True):
    """A message reminder of the own user (`reminders()`); `remind_at` None: no time set."""

    message_id: str
    user_id: str | None
    cid: str | None
    remind_at: int | None
    created_at: int | None
    updated_at: int | None
    due: bool
    reminder: dict[str, Any] | None

    @property
    def remind_time(self) -> datetime | None:
        return from_micros(self.remind_at)

    @property
    def created(self) -> datetime | None:
        return from_micros(self.created_at)

    @property
    def updated(self) -> datetime | None:
        return from_micros(self.updated_at)


class _MuteTimes:
    """The time properties the two kinds of mute share."""

    __slots__ = ()
    created_at: int | None
    updated_at: int | None
    expires: int | None

    @property
    def created(self) -> datetime | None:
        return from_micros(self.created_at)

    @property
    def updated(self) -> datetime | None:
        return from_micros(self.updated_at)

    @property
    def expires_time(self) -> datetime | None:
        """When the mute ends; None: when it is lifted."""
        return from_micros(self.expires)


class UserMute(ResultRow, _MuteTimes, frozen=True):
    """A user the own user has muted (`mutes()`), with the `mute` object as received."""

    user_id: str
    created_at: int | None
    updated_at: int | None
    expires: int | None
    mute: Any


class ChannelMute(ResultRow, _MuteTimes, frozen=True):
    """A channel the own user has muted (`channel_mutes()`)."""

    cid: str
    created_at: int | None
    updated_at: int | None
    expires: int | None
    mute: Any


class ConnectionInfo(ResultRow, frozen=True):
    """What the store knows of the connection (`connection_info()`); None where unknown.
    Read like a dict (deprecated), only the known keys are there, as before."""

    connection_id: str | None = None
    last_health_check_at: int | None = None
    me_position: int | None = None
    last_sync_at: str | None = None  # RFC 3339, as `last_sync_at()` gives it
    user_mutes_at: int | None = None
    channel_mutes_at: int | None = None

    @property
    def last_health_check(self) -> datetime | None:
        return from_micros(self.last_health_check_at)

    def legacy_dict(self) -> dict[str, Any]:
        return {key: value for key, value in msgspec.structs.asdict(self).items()
                if value is not None}


class UnprojectedEntry(ResultRow, frozen=True):
    """A log entry stored but not wholly projected (`unprojected()`), and why."""

    position: int
    type: str
    reason: str


class QuarantineEntry(ResultRow, frozen=True):
    """Input the store refused (`quarantine()`): the reason, and `raw`, the bytes as they
    arrived."""

    id: int
    received_at: int
    source: str | None
    connection_id: str | None
    reason: str
    size: int
    raw: bytes

    @property
    def received(self) -> datetime | None:
        return from_micros(self.received_at)


class StoreStats(ResultRow, frozen=True):
    """Counts and sizes of a store (`stats()`); its JSON is what `chatledger stats --json`
    prints. `channels` is what `channels()` lists, `channel_streams` the channels the log has
    entries for; `bundle` is `bundle_info()`."""

    events: int
    streams: int
    channels: int
    quarantined: int
    payload_bytes: int
    stored_payload_bytes: int
    compression_ratio: float | None
    dictionaries: int
    file_bytes: int
    by_source: dict[str, int]
    by_type: dict[str, int]
    channel_streams: int
    hidden_channels: int
    unprojected: int
    unprojected_latest: list[UnprojectedEntry]
    user_id: str | None
    path: str
    bundle: dict[str, Any] | None


class ChannelState(ResultRow, frozen=True):
    """One channel's state (`channel()`): the channel object as last received, its members and
    reads, the newest messages (a `MessagePage`, oldest first), the pinned messages, the own
    membership (None when not a member), the log position of its draft, and the own unread
    count."""

    channel: dict[str, Any]
    members: list[StoredMember]
    read: list[StoredRead]
    messages: MessagePage
    pinned_messages: list[StoredMessage]
    membership: StoredMember | None
    draft_position: int | None
    unread_count: int
