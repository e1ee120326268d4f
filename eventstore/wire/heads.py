"""Fast heads for the log: what it indexes (type, time, channel), and exact splits of responses.

The hot path (`decode_event`) decodes only what the log indexes and lets msgspec skip everything
else without building objects. Responses that carry many payloads (query channels, sync) are split
into `msgspec.Raw` slices of the original buffer: no payload is ever re-encoded, so what is stored
is exactly what arrived. (They are views: pass bytes, not a bytearray that may change while the
slices are alive.)
"""

from __future__ import annotations

from typing import Any

import msgspec

from chatledger.eventstore.wire.errors import (
    Buffer,
    WireError,
    decode_or_raise,
    not_json_reason,
    require_objects,
    validation_reason,
)
from chatledger.eventstore.wire.times import parse_time

__all__ = [
    "NO_RAW",
    "EventHead",
    "decode_event",
    "QueryChannelsResponse",
    "decode_query_channels",
    "ChannelStateHead",
    "decode_channel_state",
    "SyncResponse",
    "decode_sync",
    "ErrorBody",
    "decode_error",
]


# --------------------------------------------------------------------------------------------
# The log's view of an event: one pass, nested objects skipped or kept as Raw for later.

NO_RAW = msgspec.Raw()
"""Default of Raw fields: empty (falsy) when the key is absent; a JSON null arrives as b"null"."""


class EventHead(msgspec.Struct, gc=False):
    """What the log indexes for any event."""

    type: str
    created_at: int | None  # µs since the epoch (UTC); None when absent, null or unset
    cid: str | None  # "<type>:<id>", "*" for health.check, None when not channel-scoped
    connection_id: str | None = None  # health.check
    channel_type: str | None = None  # given, or split from cid
    channel_id: str | None = None


class _WireHead(msgspec.Struct, gc=False):
    """Decode target of `decode_event`: undeclared keys are skipped without building objects."""

    type: str
    created_at: str | None = None
    cid: str | None = None
    channel_type: str | None = None
    channel_id: str | None = None
    connection_id: str | None = None
    channel: msgspec.Raw = NO_RAW  # read only when no cid is given (notification.*)
    draft: msgspec.Raw = NO_RAW  # read only when no cid is given (draft.*)


class _ChannelRef(msgspec.Struct, gc=False):
    cid: str | None = None
    type: str | None = None
    id: str | None = None


class _DraftRef(msgspec.Struct, gc=False):
    channel_cid: str | None = None


_HEAD_DECODER = msgspec.json.Decoder(_WireHead)
_CHANNEL_REF_DECODER = msgspec.json.Decoder(_ChannelRef | None)
_DRAFT_REF_DECODER = msgspec.json.Decoder(_DraftRef | None)


def _channel_ref_cid(ref: _ChannelRef | None) -> str | None:
    if ref is None:
        return None
    if ref.cid:
        return ref.cid
    if ref.type and ref.id:
        return f"{ref.type}:{ref.id}"
    return None


def _derive_cid(head: _WireHead) -> str | None:
    """cid for events without one: channel_type/channel_id, then channel, then draft.channel_cid."""
    if head.channel_type and head.channel_id:
        return f"{head.channel_type}:{head.channel_id}"
    if head.channel:
        cid = _channel_ref_cid(decode_or_raise(_CHANNEL_REF_DECODER, head.channel, "channel"))
        if cid:
            return cid
    if head.draft:
        draft = decode_or_raise(_DRAFT_REF_DECODER, head.draft, "draft")
        if draft is not None and draft.channel_cid:
            return draft.channel_cid
    return None


def decode_event(raw: Buffer) -> EventHead:
    """Decode the log head of one event; WireError when the log cannot accept it.

    Unknown keys and types are fine (the caller keeps the bytes). Only decoded fields are checked,
    including their UTF-8; bytes inside skipped values are not validated.
    """
    try:
        head = _HEAD_DECODER.decode(raw)
    except msgspec.ValidationError as exc:
        raise WireError(validation_reason(exc)) from None
    except (msgspec.DecodeError, UnicodeError, RecursionError) as exc:
        raise WireError(not_json_reason(exc, raw)) from None
    if not head.type:
        raise WireError("'type' must not be empty")
    created_at: int | None = None
    # An empty `created_at` says no time, as null and the zero time do: the event is kept.
    if head.created_at:
        try:
            created_at = parse_time(head.created_at)
        except WireError as exc:
            raise WireError(f"'created_at' is {exc.reason}") from None
    channel_type = head.channel_type
    channel_id = head.channel_id
    cid = head.cid or _derive_cid(head)
    if channel_type is None and channel_id is None and cid and ":" in cid:
        channel_type, _, channel_id = cid.partition(":")
    return EventHead(head.type, created_at, cid, head.connection_id, channel_type, channel_id)


# --------------------------------------------------------------------------------------------
# Responses that carry many payloads: split into exact byte slices.


class QueryChannelsResponse(msgspec.Struct):
    """`POST /channels` answer; each channel state is a Raw slice of the response buffer."""

    channels: list[msgspec.Raw]  # exact bytes of each channel state (b"".join-able)
    duration: str | None = None


class _WireQueryChannels(msgspec.Struct):
    channels: list[msgspec.Raw] | None  # Go marshals an empty slice as null
    duration: str | None = None


_QUERY_CHANNELS_DECODER = msgspec.json.Decoder(_WireQueryChannels)


def decode_query_channels(raw: Buffer) -> QueryChannelsResponse:
    """Split a query-channels answer; WireError unless `channels` lists objects (null = [])."""
    wire = decode_or_raise(_QUERY_CHANNELS_DECODER, raw)
    channels = wire.channels if wire.channels is not None else []
    require_objects(channels, "channels")
    return QueryChannelsResponse(channels, wire.duration)


class ChannelStateHead(msgspec.Struct, gc=False):
    """What the store needs to file one channel state before projecting it."""

    cid: str
    channel_type: str | None
    channel_id: str | None
    last_message_at: str | None = None  # raw RFC 3339 text, the usual sort key
    message_count: int = 0  # number of messages in this state (a page, not the channel total)


class _WireChannelRef(msgspec.Struct, gc=False):
    cid: str | None = None
    type: str | None = None
    id: str | None = None
    last_message_at: str | None = None


class _WireChannelState(msgspec.Struct):
    channel: _WireChannelRef | None = None
    messages: list[msgspec.Raw] | None = None


_CHANNEL_STATE_DECODER = msgspec.json.Decoder(_WireChannelState)


def decode_channel_state(raw: Buffer) -> ChannelStateHead:
    """Head of one channel state; WireError when it has no channel or no derivable cid."""
    state = decode_or_raise(_CHANNEL_STATE_DECODER, raw)
    channel = state.channel
    if channel is None:
        raise WireError("channel state without 'channel'")
    cid = channel.cid or (f"{channel.type}:{channel.id}" if channel.type and channel.id else None)
    if not cid:
        raise WireError("channel without 'cid' or 'type' and 'id'")
    channel_type, channel_id = channel.type, channel.id
    if (channel_type is None or channel_id is None) and ":" in cid:
        split_type, _, split_id = cid.partition(":")
        channel_type = channel_type if channel_type is not None else split_type
        channel_id = channel_id if channel_id is not None else split_id
    count = len(state.messages) if state.messages else 0
    return ChannelStateHead(cid, channel_type, channel_id, channel.last_message_at, count)


class SyncResponse(msgspec.Struct):
    """`POST /sync` answer; each event is a Raw slice of the response buffer."""

    events: list[msgspec.Raw]
    inaccessible_cids: list[str] = []
    duration: str | None = None


class _WireSync(msgspec.Struct):
    events: list[msgspec.Raw] | None
    inaccessible_cids: list[str] | None = None
    duration: str | None = None


_SYNC_DECODER = msgspec.json.Decoder(_WireSync)


def decode_sync(raw: Buffer) -> SyncResponse:
    """Split a sync answer; WireError unless `events` is a list of objects (null = [])."""
    wire = decode_or_raise(_SYNC_DECODER, raw)
    events = wire.events if wire.events is not None else []
    require_objects(events, "events")
    return SyncResponse(events, wire.inaccessible_cids or [], wire.duration)


class ErrorBody(msgspec.Struct):
    """The backend's error body; `code` is Stream's error code, `StatusCode` the HTTP status."""

    code: int
    message: str = ""
    StatusCode: int | None = None
    duration: str | None = None
    more_info: str | None = None
    exception_fields: dict[str, str] | None = None
    unrecoverable: bool | None = None

    @property
    def status_code(self) -> int | None:
        return self.StatusCode


# Any JSON value, untyped (wire.models decodes a whole unknown body with it too).
ANY_DECODER = msgspec.json.Decoder()


def _typed(body: dict[str, Any], key: str, kind: type) -> Any:
    """body[key] when it has the expected JSON kind (bool is not an int here), else None."""
    value = body.get(key)
    if isinstance(value, kind) and not (kind is int and isinstance(value, bool)):
        return value
    return None


def decode_error(raw: Buffer) -> ErrorBody | None:
    """The error body in an HTTP answer, or None when it is not one (needs an integer `code`).

    Lenient: odd types in the other fields are dropped rather than failing, since an error body is
    read to decide what to do next, never stored as data.
    """
    try:
        body = ANY_DECODER.decode(raw)
    except (msgspec.DecodeError, UnicodeError, RecursionError):
        return None
    if not isinstance(body, dict):
        return None
    code = _typed(body, "code", int)
    message = body.get("message")
    if message is None:
        message = ""
    if code is None or not isinstance(message, str):
        return None
    fields = _typed(body, "exception_fields", dict)
    if fields is not None and not all(isinstance(v, str) for v in fields.values()):
        fields = None
    return ErrorBody(
        code=code,
        message=message,
        StatusCode=_typed(body, "StatusCode", int),
        duration=_typed(body, "duration", str),
        more_info=_typed(body, "more_info", str),
        exception_fields=fields,
        unrecoverable=_typed(body, "unrecoverable", bool),
    )
