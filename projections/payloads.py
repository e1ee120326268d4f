"""What the projections read of each payload: lean msgspec structs, one decoding pass.

Only the fields that decide a row are declared; everything else in the payload is skipped by the
decoder without building objects (the bytes stay in the log for whoever wants the whole thing).
Times stay RFC 3339 text here and are converted only where a row needs them.
"""

from __future__ import annotations

import re
from typing import Any, Generic, TypeVar

import msgspec

T = TypeVar("T")

NO_RAW = msgspec.Raw()


class UserRef(msgspec.Struct, gc=False):
    id: str | None = None


class User(msgspec.Struct, gc=False):
    id: str | None = None
    name: str | None = None
    role: str | None = None
    online: bool | None = None
    banned: bool | None = None
    last_active: str | None = None
    updated_at: str | None = None
    deleted_at: str | None = None


class Message(msgspec.Struct, gc=False):
    id: str | None = None
    cid: str | None = None
    type: str | None = None
    user: UserRef | None = None
    user_id: str | None = None
    parent_id: str | None = None
    show_in_channel: bool | None = None
    reply_count: int | None = None
    pinned: bool | None = None
    pinned_at: str | None = None
    silent: bool | None = None
    created_at: str | None = None
    updated_at: str | None = None
    deleted_at: str | None = None

    @property
    def author(self) -> str | None:
        return self.user.id if self.user is not None and self.user.id else self.user_id


class Reaction(msgspec.Struct, gc=False):
    message_id: str | None = None
    user_id: str | None = None
    user: UserRef | None = None
    type: str | None = None
    score: int | None = None
    created_at: str | None = None
    updated_at: str | None = None


class StateMessage(Message, gc=False):
    """A message of a channel state, with the reactions it carries: the newest few of anyone's
    and all of the own user's. (Events' messages skip these lists: their reactions come as
    reaction events.)"""

    latest_reactions: list[Reaction] | None = None
    own_reactions: list[Reaction] | None = None


class Member(msgspec.Struct, gc=False):
    user_id: str | None = None
    user: User | None = None  # whole: a channel state's members are where most users are seen
    role: str | None = None
    channel_role: str | None = None
    banned: bool | None = None
    # UNSET when absent: null says "not pinned" / "not archived", absence says nothing.
    pinned_at: str | None | msgspec.UnsetType = msgspec.UNSET
    archived_at: str | None | msgspec.UnsetType = msgspec.UNSET
    created_at: str | None = None
    updated_at: str | None = None

    @property
    def uid(self) -> str | None:
        return self.user_id or (self.user.id if self.user is not None else None)


class Channel(msgspec.Struct, gc=False):
    cid: str | None = None
    id: str | None = None
    type: str | None = None
    name: str | None = None
    created_by: UserRef | None = None
    created_at: str | None = None
    updated_at: str | None = None
    last_message_at: str | None = None
    member_count: int | None = None
    frozen: bool | None = None
    disabled: bool | None = None
    hidden: bool | None = None
    truncated_at: str | None = None
    team: str | None = None
    deleted_at: str | None = None
    members: list[Member] | None = None


class Read(msgspec.Struct, gc=False):
    user: UserRef | None = None
    user_id: str | None = None
    last_read: str | None = None
    unread_messages: int | None = None
    last_read_message_id: str | None = None
    first_unread_message_id: str | None = None
    last_delivered_at: str | None = None
    last_delivered_message_id: str | None = None


class Draft(msgspec.Struct, gc=False):
    channel_cid: str | None = None
    parent_id: str | None = None
    created_at: str | None = None


class Poll(msgspec.Struct, gc=False):
    id: str | None = None
    updated_at: str | None = None


class Thread(msgspec.Struct, gc=False):
    """A thread (the replies under one message), as `thread.updated` carries it."""

    parent_message_id: str | None = None
    channel_cid: str | None = None
    reply_count: int | None = None
    participant_count: int | None = None
    last_message_at: str | None = None
    updated_at: str | None = None


class Event(msgspec.Struct, gc=False):
    """Any backend event, as far as the read tables care."""

    type: str = ""
    cid: str | None = None
    channel_type: str | None = None
    channel_id: str | None = None
    created_at: str | None = None
    channel_member_count: int | None = None
    channel_message_count: int | None = None
    message: Message | None = None
    reaction: Reaction | None = None
    channel: msgspec.Raw = NO_RAW  # decoded as Channel when present; its custom keys are kept
    member: Member | None = None
    user: User | None = None
    user_id: str | None = None
    me: User | None = None
    connection_id: str | None = None
    hard_delete: bool | None = None
    deleted_for_me: bool | None = None
    clear_history: bool | None = None
    last_read_message_id: str | None = None
    last_read_at: str | None = None
    unread_messages: int | None = None
    first_unread_message_id: str | None = None
    last_delivered_at: str | None = None
    last_delivered_message_id: str | None = None
    draft: Draft | None = None
    poll: Poll | None = None
    thread: Thread | None = None


class ChannelState(msgspec.Struct, gc=False):
    """One channel as a query returns it."""

    channel: msgspec.Raw = NO_RAW
    messages: list[StateMessage] | None = None
    pinned_messages: list[StateMessage] | None = None
    members: list[Member] | None = None
    read: list[Read] | None = None
    membership: Member | None = None
    draft: Draft | None = None
    hidden: bool | None = None  # hidden for the own user (the channel object may not say)


class QueryResult(msgspec.Struct, gc=False):
    """The summary entry the log writes after a query-channels response."""

    filter: msgspec.Raw = NO_RAW
    sort: msgspec.Raw = NO_RAW
    cids: list[str] = []
    offset: int = 0  # a later page of the query: its channels add to the list


class SyncResult(msgspec.Struct, gc=False):
    """The summary entry of a `/sync` (or of another way the gap was closed)."""

    synced_at: str | None = None


# -- values of the wrong JSON type ----------------------------------------------------------------
# Clients and proxies send `"reply_count": "3"`, `2.0`, `"show_in_channel": 1`, `"pinned":
# "true"`, numeric ids. Such a value must cost only itself, not the event it stands in: the
# strict decoder is tried first (the payloads the backend sends decode there, at full speed);
# a payload it refuses is decoded again with each wrong value taken as a careful client would
# (below), or left out (as if absent), one at a time, the decoder's error naming where.

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
# At most this many values are mended in one payload: past it, the payload projects nothing.
MENDED_MAX = 64
_WHERE = re.compile(r"Expected `([^`]*)`, got `([^`]*)` - at `\$((?:\.[^.\[`]+|\[\d+\])+)`$")
_STEP = re.compile(r"\.([^.\[`]+)|\[(\d+)\]")
_INTEGER = re.compile(r"-?[0-9]{1,19}")
_TRUE, _FALSE = ("true", "1"), ("false", "0")
_NOT_MENDED = object()


def _mended(value: Any, expected: str) -> Any:
    """`value` as the type `expected` (msgspec's wording: `int | null`), else `_NOT_MENDED`."""
    wants = set(expected.replace(" ", "").split("|"))
    if "int" in wants:
        number: Any = _NOT_MENDED
        if isinstance(value, float) and value.is_integer():
            number = int(value)
        elif isinstance(value, str) and _INTEGER.fullmatch(value.strip()):
            number = int(value)
        if isinstance(number, int) and INT64_MIN <= number <= INT64_MAX:
            return number
    if "bool" in wants:
        if isinstance(value, int) and not isinstance(value, bool) and value in (0, 1):
            return bool(value)
        if isinstance(value, str) and value.strip().lower() in (*_TRUE, *_FALSE):
            return value.strip().lower() in _TRUE
    if "str" in wants and isinstance(value, int) and not isinstance(value, bool):
        return str(value)  # a numeric id
    return _NOT_MENDED


class Decoder(Generic[T]):
    """`msgspec.json.Decoder(kind)`, but a value of the wrong type costs only itself."""

    def __init__(self, kind: type[T]) -> None:
        self._strict = msgspec.json.Decoder(kind)
        # The strict decoder alone, for a loop that calls `mended` itself on its
        # ValidationError (no Python frame per payload).
        self.strict = self._strict.decode

    def decode(self, payload: bytes | bytearray | memoryview | str) -> T:
        try:
            return self._strict.decode(payload)
        except msgspec.ValidationError as error:
            return self.mended(payload, error)

    def mended(self, payload: bytes | bytearray | memoryview | str,
               refused: msgspec.ValidationError) -> T:
        """`payload`, which the strict decoder refused with `refused`, decoded with its wrong
        values mended or left out; raises `refused` (or the decoder's error) when it cannot."""
        document = msgspec.json.decode(payload)  # valid JSON: it decoded as far as a value
        for _ in range(MENDED_MAX):
            if not self._mend(document, str(refused)):
                raise refused
            try:
                return self._strict.decode(_ENCODE(document))
            except msgspec.ValidationError as error:
                refused = error
        raise refused

    @staticmethod
    def _mend(document: Any, reason: str) -> bool:
        """Mend or leave out the value `reason` names in `document`: False when it cannot."""
        where = _WHERE.match(reason)
        if where is None:
            return False  # the document itself is not an object
        expected, path = where.group(1), where.group(3)
        steps: list[Any] = [name or int(index) for name, index in _STEP.findall(path)]
        holder: Any = document
        try:
            for step in steps[:-1]:
                holder = holder[step]
            key = steps[-1]
            value = holder[key]
        except (KeyError, IndexError, TypeError):
            return False  # (a path this document does not have: not mended)
        mended = _mended(value, expected)
        if mended is not _NOT_MENDED:
            holder[key] = mended
        elif isinstance(key, int) and "object" in expected:
            # An item of a list of objects: an empty one, so the others keep their places
            # (rows point at a channel state's messages by their index in the payload).
            holder[key] = {}
        else:
            del holder[key]  # as if absent
        return True


_ENCODE = msgspec.json.Encoder().encode

EVENT = Decoder(Event)
CHANNEL = Decoder(Channel)
CHANNEL_STATE = Decoder(ChannelState)
SYNC_RESULT = msgspec.json.Decoder(SyncResult)
QUERY_RESULT = msgspec.json.Decoder(QueryResult)
