"""Turning what the backend sent into log entries, or into rejections with a reason.

Events are kept verbatim: an entry's payload is the exact slice of bytes that arrived. A query
response or a sync response is split into its channel states or events (each one its own slice of
the original bytes) plus one summary entry in the user's stream that records what the response
said as a whole (which channels, in which order, which were inaccessible).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, final

import msgspec

from chatledger.eventstore import wire
from chatledger.eventstore.salvage import split_object_list

# The backend's own limit for a message is 5 KB of text; an event is a few KB. Anything past
# these bounds is not chat data, and would only bloat the log.
MAX_EVENT_BYTES = 4 * 1024 * 1024
MAX_RESPONSE_BYTES = 64 * 1024 * 1024

# Stream for everything that is about the user and the connection rather than one channel.
USER_STREAM = "@user"

# Topics of the entries this store writes itself (backend event types never contain "/").
CHANNEL_STATE = "chatledger/channel.state"
QUERY_RESULT = "chatledger/query.result"
SYNC_RESULT = "chatledger/sync.result"

Payload = bytes | bytearray | memoryview | str | dict[str, Any]


# Final, so that `type(item) is Rejection` tells mypy the other case is an `Entry`.
@final
@dataclass(slots=True)
class Entry:
    """One thing to append: its stream, its type (the topic) and the bytes to keep."""

    stream: str
    type: str
    payload: bytes
    event_at: int | None = None
    connection_id: str | None = None


@final
@dataclass(slots=True)
class Rejection:
    """Input the log refuses to append; it goes to the quarantine table with the reason."""

    payload: bytes
    reason: str


def as_bytes(item: Payload | Any) -> bytes:
    """The bytes of an item: verbatim for bytes and text, encoded once for a dict."""
    if isinstance(item, bytes):
        return item
    if isinstance(item, (bytearray, memoryview)):
        return bytes(item)
    if isinstance(item, str):
        return item.encode("utf-8", "surrogatepass")
    try:
        return msgspec.json.encode(item)
    except (TypeError, ValueError, OverflowError) as error:
        raise wire.WireError(f"cannot encode {type(item).__name__} as JSON: {error}") from error


def _too_big(payload: bytes, limit: int) -> Rejection | None:
    if len(payload) > limit:
        return Rejection(payload, f"payload of {len(payload):,} bytes exceeds the {limit:,}-byte limit")
    return None


def stream_of(head: wire.EventHead) -> str:
    """Channel events go to the channel's stream; the rest to the user's."""
    cid = head.cid
    return cid if cid and cid != "*" else USER_STREAM


def payload_of(item: Payload | Any) -> bytes | Rejection:
    """The bytes to keep for an item, or why there are none."""
    try:
        payload = as_bytes(item)
    except wire.WireError as error:
        return Rejection(repr(item).encode("utf-8", "replace"), error.reason)
    return _too_big(payload, MAX_EVENT_BYTES) or payload


def entry_of(payload: bytes) -> Entry | Rejection:
    """The entry for one backend event's bytes."""
    try:
        head = wire.decode_event(payload)
        wire.check_storable(payload)  # the head decoder skips what it does not read
    except wire.WireError as error:
        return Rejection(payload, error.reason)
    return Entry(stream_of(head), head.type, payload, head.created_at, head.connection_id)


def event_entry(item: Payload | Any) -> Entry | Rejection:
    """One backend event."""
    payload = payload_of(item)
    return payload if isinstance(payload, Rejection) else entry_of(payload)


def _summary(stream: str, topic: str, body: dict[str, Any]) -> Entry:
    return Entry(stream, topic, msgspec.json.encode(body))


def channel_state_entry(raw: bytes) -> Entry | Rejection:
    """One channel state (a channel query's answer, or one element of a query-channels answer)."""
    if rejection := _too_big(raw, MAX_EVENT_BYTES):
        return rejection
    try:
        head = wire.decode_channel_state(raw)
        wire.check_storable(raw)
    except wire.WireError as error:
        return Rejection(raw, error.reason)
    return Entry(head.cid, CHANNEL_STATE, raw)


def query_channels_entries(
    item: Payload | Any,
    *,
    filter: dict[str, Any] | None = None,
    sort: list[Any] | None = None,
    offset: int = 0,
) -> list[Entry | Rejection]:
    """A query-channels response: one entry per channel state, then the query's result (with
    `offset`, the position in the query's list of the answer's first channel: a later page of
    the same query adds to the list its first page began)."""
    try:
        payload = as_bytes(item)
    except wire.WireError as error:
        return [Rejection(repr(item).encode("utf-8", "replace"), error.reason)]
    if rejection := _too_big(payload, MAX_RESPONSE_BYTES):
        return [rejection]
    try:
        response = wire.decode_query_channels(payload)
        states, duration = [bytes(raw) for raw in response.channels], response.duration
    except wire.WireError as error:
        split = split_object_list(payload, "channels") if _malformed(error) else None
        if split is None:
            return [Rejection(payload, f"not a query-channels response: {error.reason}")]
        # One channel state the decoder refuses must not cost the others.
        states, others = split
        duration = _lenient(others.get("duration"), str, None)
    out: list[Entry | Rejection] = [channel_state_entry(raw) for raw in states]
    cids = [e.stream for e in out if isinstance(e, Entry)]
    result: dict[str, Any] = {"filter": filter, "sort": sort, "cids": cids, "duration": duration}
    if offset:
        result["offset"] = offset  # (absent for a first page: such summaries stay as they were)
    out.append(_summary(USER_STREAM, QUERY_RESULT, result))
    return out


def channel_query_entries(item: Payload | Any) -> list[Entry | Rejection]:
    """The answer to a query of one channel."""
    try:
        payload = as_bytes(item)
    except wire.WireError as error:
        return [Rejection(repr(item).encode("utf-8", "replace"), error.reason)]
    return [channel_state_entry(payload)]


def sync_entries(
    item: Payload | Any, *, last_sync_at: str | None = None, synced_at: str | None = None,
) -> list[Entry | Rejection]:
    """A `/sync` response: each event, then what the response said as a whole.

    `last_sync_at` is the time the request asked from; `synced_at`, when given, the time up to
    which the store now holds every event (the next sync asks from there).
    """
    try:
        payload = as_bytes(item)
    except wire.WireError as error:
        return [Rejection(repr(item).encode("utf-8", "replace"), error.reason)]
    if rejection := _too_big(payload, MAX_RESPONSE_BYTES):
        return [rejection]
    salvaged: str | None = None
    try:
        response = wire.decode_sync(payload)
        events = [bytes(raw) for raw in response.events]
        inaccessible, duration = response.inaccessible_cids, response.duration
    except wire.WireError as error:
        split = split_object_list(payload, "events") if _malformed(error) else None
        if split is None:
            return [Rejection(payload, f"not a sync response: {error.reason}")]
        # One event the decoder refuses must not cost the others: each stands on its own.
        events, others = split
        inaccessible = _lenient(others.get("inaccessible_cids"), list[str], [])
        duration = _lenient(others.get("duration"), str, None)
        salvaged = error.reason
    out: list[Entry | Rejection] = [event_entry(raw) for raw in events]
    summary: dict[str, Any] = {
        "last_sync_at": last_sync_at,
        "synced_at": synced_at,
        "events": len(events),
        "inaccessible_cids": inaccessible,
        "duration": duration,
    }
    if salvaged is not None:
        summary["split_after"] = salvaged  # the answer as a whole was not JSON: why
    out.append(_summary(USER_STREAM, SYNC_RESULT, summary))
    return out


def _malformed(error: wire.WireError) -> bool:
    """A document refused for its bytes (not for its shape): splitting may save its items."""
    return error.reason.startswith("not JSON") and "truncated" not in error.reason


def _lenient(raw: bytes | None, kind: Any, default: Any) -> Any:
    """A top-level member of a split answer, when it is readable as `kind`."""
    if raw is None:
        return default
    try:
        return msgspec.json.decode(raw, type=kind)
    except (msgspec.DecodeError, UnicodeError, RecursionError):
        return default


def sync_point_entry(synced_at: str, *, requeried: list[str] | None = None) -> Entry:
    """A mark that the store holds every event up to `synced_at`, written when the gap was
    closed some other way than `/sync` (the channels were queried again, or the event stream
    was followed live until then)."""
    return _summary(USER_STREAM, SYNC_RESULT,
                    {"synced_at": synced_at, "requeried": requeried or []})
