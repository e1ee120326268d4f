"""The Stream Chat wire format (see WIRE.md): fast heads for the log, full models for projections.

The log stores every payload verbatim, so the hot path (`decode_event`) decodes only what the log
indexes (type, time, channel) and lets msgspec skip everything else without building objects.
Responses that carry many payloads (query channels, sync) are split into `msgspec.Raw` slices of
the original buffer: no payload is ever re-encoded, so what is stored is exactly what arrived.
(They are views: pass bytes, not a bytearray that may change while the slices are alive.)

The full models (`Event`, `Message`, `Channel`, ...) are for projections. Every optional field is
`T | None = None`, so absent and null read the same and decoding never trips over the nulls the
backend likes to send. Timestamps stay RFC 3339 text; convert with `parse_time` when needed.
Custom top-level keys of users, channels and messages are not modelled: `custom_fields` extracts
them from the raw object bytes (see `decode_event_parts` / `decode_channel_state_parts`).
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any, TypeVar

import msgspec

__all__ = [
    "WireError",
    "UNSET_TIME",
    "NO_RAW",
    "parse_time",
    "format_time",
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
    "User",
    "OwnUser",
    "ChannelConfig",
    "Channel",
    "Attachment",
    "ReactionGroup",
    "Reaction",
    "Poll",
    "Message",
    "Member",
    "Read",
    "Draft",
    "ChannelState",
    "Event",
    "EventParts",
    "ChannelStateParts",
    "decode_full_event",
    "decode_model",
    "decode_event_parts",
    "decode_channel_state_parts",
    "custom_fields",
    "USER_FIELDS",
    "CHANNEL_FIELDS",
    "MESSAGE_FIELDS",
    "REACTION_FIELDS",
]


class WireError(ValueError):
    """A payload the store cannot accept; `reason` is a short sentence for logs and quarantine."""

    reason: str

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


Buffer = bytes | bytearray | memoryview | str
"""What the decoders accept: JSON text as bytes-like or str (msgspec reads all without copying)."""

# --------------------------------------------------------------------------------------------
# Errors: msgspec's messages turned into the short sentences WireError promises.

_EXPECTED_RE = re.compile(r"Expected `(.+?)`, got `(\w+)`(?: - at `\$(.*)`)?\Z", re.S)
_MISSING_RE = re.compile(r"Object missing required field `(.+?)`(?: - at `\$(.*)`)?\Z", re.S)
_KIND_WORDS = {
    "str": "a string",
    "int": "an integer",
    "float": "a number",
    "bool": "a boolean",
    "object": "an object",
    "array": "an array",
}


def _path(prefix: str, at: str | None) -> str:
    """msgspec's path (`$.message.user.id`) under `prefix`, written `message.user.id`."""
    at = (at or "").lstrip(".")
    if prefix and at:
        return f"{prefix}{'' if at.startswith('[') else '.'}{at}"
    return prefix or at


def _validation_reason(exc: msgspec.ValidationError, prefix: str = "") -> str:
    message = str(exc)
    match = _EXPECTED_RE.match(message)
    if match is not None:
        expected, got, at = match.groups()
        where = _path(prefix, at)
        if not where and expected == "object":
            return "not a JSON object"
        kinds = [k for k in expected.split(" | ") if k != "null"] or ["null"]
        wanted = " or ".join(_KIND_WORDS.get(k, f"`{k}`") for k in kinds)
        return f"'{where or '$'}' must be {wanted}, got {got}"
    match = _MISSING_RE.match(message)
    if match is not None:
        name, at = match.groups()
        return f"missing '{_path(_path(prefix, at), name)}'"
    return f"{prefix}: {message}" if prefix else message


def _not_json_reason(exc: BaseException) -> str:
    if isinstance(exc, RecursionError):
        return "not JSON: nested too deeply"
    if isinstance(exc, UnicodeError):
        return "not JSON: invalid UTF-8 text"
    message = str(exc).removeprefix("JSON is malformed: ")
    return f"not JSON: {message[:1].lower()}{message[1:]}"


_T = TypeVar("_T")


def _decode(decoder: msgspec.json.Decoder[_T], raw: Buffer, prefix: str = "") -> _T:
    """decoder.decode(raw) with every failure mapped to WireError (off the hot path)."""
    try:
        return decoder.decode(raw)
    except msgspec.ValidationError as exc:
        raise WireError(_validation_reason(exc, prefix)) from None
    except msgspec.DecodeError as exc:
        raise WireError(_not_json_reason(exc)) from None
    except (UnicodeError, RecursionError) as exc:
        # msgspec decodes the strings it keeps strictly (UnicodeDecodeError), encodes str input
        # (UnicodeEncodeError on lone surrogates) and bounds nesting (RecursionError).
        raise WireError(_not_json_reason(exc)) from None


_JSON_KINDS = {ord("{"): "object", ord("["): "array", ord('"'): "str", ord("n"): "null"}
_JSON_KINDS.update({ord("t"): "bool", ord("f"): "bool"})


def _require_objects(items: list[msgspec.Raw], name: str) -> None:
    """Each Raw slice must be a JSON object (msgspec.Raw accepts any value)."""
    for index, item in enumerate(items):
        view = memoryview(item)
        if view[:1] != b"{":
            kind = _JSON_KINDS.get(view[0], "number") if len(view) else "nothing"
            raise WireError(f"'{name}[{index}]' must be an object, got {kind}")


# --------------------------------------------------------------------------------------------
# Time: RFC 3339 text <-> integer microseconds since the Unix epoch (UTC).

UNSET_TIME = "0001-01-01T00:00:00Z"
"""Go's zero time: the backend's way of saying "no time"."""

_US_PER_DAY = 86_400_000_000
_TIME_RE = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})"  # date, time
    r"(?:[.,](\d{1,9}))?"  # fraction ("," is ISO 8601's; fromisoformat takes it too)
    r"(?:[Zz]|([+-])(\d{2}):(\d{2}))",  # offset
    re.ASCII,
)
_MONTH_DAYS = (0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
# "YYYY-MM-DDTHH:MM" -> epoch µs of that minute, filled by the validated slow path. Events arrive
# in time order, so nearly every timestamp hits the minute before it; a hit costs one dict lookup
# instead of five int() calls and a calendar computation.
_MINUTES: dict[str, int] = {}
_MINUTES_MAX = 8192
_fromisoformat = datetime.fromisoformat


def _days_from_civil(year: int, month: int, day: int) -> int:
    """Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm)."""
    year -= month <= 2
    era = year // 400
    yoe = year - era * 400
    doy = (153 * (month + (-3 if month > 2 else 9)) + 2) // 5 + day - 1
    return era * 146_097 + yoe * 365 + yoe // 4 - yoe // 100 + doy - 719_468


def _civil_from_days(days: int) -> tuple[int, int, int]:
    """Inverse of `_days_from_civil`."""
    days += 719_468
    era = days // 146_097
    doe = days - era * 146_097
    yoe = (doe - doe // 1460 + doe // 36_524 - doe // 146_096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    day = doy - (153 * mp + 2) // 5 + 1
    month = mp + 3 if mp < 10 else mp - 9
    return yoe + era * 400 + (month <= 2), month, day


_UNSET_US = _days_from_civil(1, 1, 1) * _US_PER_DAY


def _parse_time_slow(value: str) -> int | None:
    """Full RFC 3339 validation and conversion; also primes the minute cache for UTC times."""
    match = _TIME_RE.fullmatch(value)
    if match is None:
        raise WireError(f"not an RFC 3339 time: {value[:64]!r}")
    year, month, day, hour, minute, second = map(int, match.group(1, 2, 3, 4, 5, 6))
    fraction, sign, off_hour, off_minute = match.group(7, 8, 9, 10)
    leap = month == 2 and year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
    if not (
        1 <= month <= 12
        and 1 <= day <= _MONTH_DAYS[month] + leap
        and hour <= 23
        and minute <= 59
        and second <= 59
    ):
        raise WireError(f"not a valid time: {value[:64]!r}")
    base = (_days_from_civil(year, month, day) * 1440 + hour * 60 + minute) * 60_000_000
    micros = int(fraction[:6].ljust(6, "0")) if fraction else 0
    if sign is None:
        if base != _UNSET_US:  # the sentinel's minute keeps taking this path (it maps to None)
            if len(_MINUTES) >= _MINUTES_MAX:
                _MINUTES.clear()
            _MINUTES[value[:16]] = base
    else:
        off_h, off_m = int(off_hour), int(off_minute)
        if off_h > 23 or off_m > 59:
            raise WireError(f"not a valid time offset: {value[:64]!r}")
        offset = (off_h * 60 + off_m) * 60_000_000
        base -= offset if sign == "+" else -offset
    us = base + second * 1_000_000 + micros
    return None if us == _UNSET_US else us


def parse_time(value: str) -> int | None:
    """RFC 3339 text -> microseconds since the epoch (UTC), truncating below µs.

    0-9 fractional digits, "Z"/"z" or any "+hh:mm"/"-hh:mm" offset (converted to UTC). The unset
    sentinel (any spelling of 0001-01-01T00:00:00 UTC) gives None. Malformed text raises WireError.
    """
    # Fast path for the "YYYY-MM-DDTHH:MM:SS[.f{1,9}]Z" the backend sends, in a minute already
    # validated by the slow path: the cached prefix fixes date, hour and minute, the length and
    # "Z" leave fromisoformat (C, truncates below µs) only ":SS" and the fraction to check.
    base = _MINUTES.get(value[:16])
    if base is not None and value[-1] == "Z":
        size = len(value)
        if size == 20 or 21 < size < 31:
            try:
                moment = _fromisoformat(value)
            except ValueError:
                pass  # the slow path says what is wrong
            else:
                return base + moment.second * 1_000_000 + moment.microsecond
    return _parse_time_slow(value)


def format_time(us: int) -> str:
    """Microseconds since the epoch -> RFC 3339 UTC with 6 fractional digits and "Z"."""
    days, rest = divmod(us, _US_PER_DAY)
    year, month, day = _civil_from_days(days)
    if not 0 <= year <= 9999:
        raise ValueError(f"time out of the RFC 3339 range: {us} µs")
    seconds, micros = divmod(rest, 1_000_000)
    minutes, second = divmod(seconds, 60)
    hour, minute = divmod(minutes, 60)
    return f"{year:04d}-{month:02d}-{day:02d}T{hour:02d}:{minute:02d}:{second:02d}.{micros:06d}Z"


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
        cid = _channel_ref_cid(_decode(_CHANNEL_REF_DECODER, head.channel, "channel"))
        if cid:
            return cid
    if head.draft:
        draft = _decode(_DRAFT_REF_DECODER, head.draft, "draft")
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
        raise WireError(_validation_reason(exc)) from None
    except (msgspec.DecodeError, UnicodeError, RecursionError) as exc:
        raise WireError(_not_json_reason(exc)) from None
    if not head.type:
        raise WireError("'type' must not be empty")
    created_at = head.created_at
    if created_at is not None:
        try:
            created_at = parse_time(created_at)
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
    wire = _decode(_QUERY_CHANNELS_DECODER, raw)
    channels = wire.channels if wire.channels is not None else []
    _require_objects(channels, "channels")
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
    state = _decode(_CHANNEL_STATE_DECODER, raw)
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
    wire = _decode(_SYNC_DECODER, raw)
    events = wire.events if wire.events is not None else []
    _require_objects(events, "events")
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


_ANY_DECODER = msgspec.json.Decoder()


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
        body = _ANY_DECODER.decode(raw)
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


# --------------------------------------------------------------------------------------------
# Full models for projections. Unknown keys are ignored by decoding (the raw bytes are in the log).


class _Model(msgspec.Struct, kw_only=True, omit_defaults=True):
    """Base of the full models: keyword construction, defaults omitted when encoding."""


class User(_Model):
    """A user; custom keys live at the top level (see `custom_fields`, USER_FIELDS)."""

    id: str
    name: str | None = None
    image: str | None = None
    role: str | None = None
    teams: list[str] | None = None
    language: str | None = None
    created_at: str | None = None
    updated_at: str | None = None
    deleted_at: str | None = None
    deactivated_at: str | None = None
    last_active: str | None = None
    online: bool | None = None
    invisible: bool | None = None
    banned: bool | None = None
    shadow_banned: bool | None = None
    ban_expires: str | None = None


class OwnUser(User):
    """The connected user as `health.check` and `me` carry it: a user plus counters and settings."""

    total_unread_count: int | None = None
    unread_channels: int | None = None
    unread_count: int | None = None
    unread_threads: int | None = None
    mutes: list[msgspec.Raw] | None = None
    channel_mutes: list[msgspec.Raw] | None = None
    devices: list[msgspec.Raw] | None = None


class ChannelConfig(_Model):
    """The channel type's feature switches (the ones a client acts on)."""

    name: str | None = None
    typing_events: bool | None = None
    read_events: bool | None = None
    delivery_events: bool | None = None
    connect_events: bool | None = None
    search: bool | None = None
    reactions: bool | None = None
    replies: bool | None = None
    quotes: bool | None = None
    mutes: bool | None = None
    uploads: bool | None = None
    url_enrichment: bool | None = None
    custom_events: bool | None = None
    polls: bool | None = None
    reminders: bool | None = None
    mark_messages_pending: bool | None = None
    message_retention: str | None = None
    max_message_length: int | None = None
    commands: list[msgspec.Raw] | None = None


class Member(_Model):
    """A channel membership row."""

    user_id: str | None = None
    user: User | None = None
    role: str | None = None
    channel_role: str | None = None
    status: str | None = None
    created_at: str | None = None
    updated_at: str | None = None
    deleted_at: str | None = None
    banned: bool | None = None
    shadow_banned: bool | None = None
    ban_expires: str | None = None
    is_moderator: bool | None = None
    notifications_muted: bool | None = None
    pinned_at: str | None = None
    archived_at: str | None = None
    invited: bool | None = None
    invite_accepted_at: str | None = None
    invite_rejected_at: str | None = None


class Channel(_Model):
    """A channel; custom keys (name, image, ...) live at the top level (CHANNEL_FIELDS)."""

    id: str
    type: str
    cid: str | None = None
    team: str | None = None
    created_by: User | None = None
    created_at: str | None = None
    updated_at: str | None = None
    deleted_at: str | None = None
    last_message_at: str | None = None
    truncated_at: str | None = None
    truncated_by: User | None = None
    member_count: int | None = None
    message_count: int | None = None
    frozen: bool | None = None
    disabled: bool | None = None
    hidden: bool | None = None
    blocked: bool | None = None
    cooldown: int | None = None
    config: ChannelConfig | None = None
    own_capabilities: list[str] | None = None
    members: list[Member] | None = None  # channel.updated sometimes carries them


class Attachment(_Model):
    """The common attachment keys; messages keep attachments as Raw (they are stored verbatim)."""

    type: str | None = None
    fallback: str | None = None
    title: str | None = None
    title_link: str | None = None
    text: str | None = None
    pretext: str | None = None
    author_name: str | None = None
    image_url: str | None = None
    thumb_url: str | None = None
    asset_url: str | None = None
    og_scrape_url: str | None = None
    mime_type: str | None = None
    file_size: int | None = None
    original_width: int | None = None
    original_height: int | None = None


class ReactionGroup(_Model):
    count: int | None = None
    sum_scores: int | None = None
    first_reaction_at: str | None = None
    last_reaction_at: str | None = None


class Reaction(_Model):
    """A reaction, keyed (message_id, user_id, type); custom keys at the top level."""

    type: str
    message_id: str | None = None
    user_id: str | None = None
    user: User | None = None
    score: int | None = None
    emoji_code: str | None = None
    created_at: str | None = None
    updated_at: str | None = None


class Poll(_Model):
    """A poll, lightly: enough to store and list it; options stay Raw."""

    id: str
    name: str | None = None
    description: str | None = None
    voting_visibility: str | None = None
    enforce_unique_vote: bool | None = None
    max_votes_allowed: int | None = None
    allow_user_suggested_options: bool | None = None
    allow_answers: bool | None = None
    is_closed: bool | None = None
    options: list[msgspec.Raw] | None = None
    vote_count: int | None = None
    answers_count: int | None = None
    vote_counts_by_option: dict[str, int] | None = None
    created_by_id: str | None = None
    created_by: User | None = None
    created_at: str | None = None
    updated_at: str | None = None


class Message(_Model):
    """A message; custom keys at the top level (MESSAGE_FIELDS). Attachments stay Raw."""

    id: str
    cid: str | None = None
    text: str | None = None
    html: str | None = None
    mml: str | None = None
    type: str | None = None  # regular, reply, system, ephemeral, error, deleted
    user: User | None = None
    user_id: str | None = None
    attachments: list[msgspec.Raw] | None = None
    mentioned_users: list[User] | None = None
    parent_id: str | None = None
    show_in_channel: bool | None = None
    thread_participants: list[User] | None = None
    quoted_message_id: str | None = None
    quoted_message: Message | None = None
    reply_count: int | None = None
    deleted_reply_count: int | None = None
    reaction_counts: dict[str, int] | None = None
    reaction_scores: dict[str, int] | None = None
    reaction_groups: dict[str, ReactionGroup] | None = None
    latest_reactions: list[Reaction] | None = None
    own_reactions: list[Reaction] | None = None
    pinned: bool | None = None
    pinned_at: str | None = None
    pinned_by: User | None = None
    pin_expires: str | None = None
    silent: bool | None = None
    shadowed: bool | None = None
    command: str | None = None
    i18n: dict[str, str] | None = None
    restricted_visibility: list[str] | None = None
    poll_id: str | None = None
    poll: Poll | None = None
    created_at: str | None = None
    updated_at: str | None = None
    deleted_at: str | None = None
    message_text_updated_at: str | None = None


class Read(_Model):
    """One user's read state in a channel."""

    user: User | None = None
    user_id: str | None = None
    last_read: str | None = None
    last_read_message_id: str | None = None
    unread_messages: int | None = None
    last_delivered_at: str | None = None
    last_delivered_message_id: str | None = None


class Draft(_Model):
    """A draft: one per (channel_cid, parent_id)."""

    channel_cid: str | None = None
    parent_id: str | None = None
    message: Message | None = None
    created_at: str | None = None
    channel: Channel | None = None
    parent_message: Message | None = None
    quoted_message: Message | None = None


class ChannelState(_Model):
    """One entry of a query-channels answer, or a channel query answer."""

    channel: Channel | None = None
    messages: list[Message] | None = None
    pinned_messages: list[Message] | None = None
    members: list[Member] | None = None
    read: list[Read] | None = None
    membership: Member | None = None
    watcher_count: int | None = None
    watchers: list[User] | None = None
    draft: Draft | None = None
    threads: list[msgspec.Raw] | None = None
    pending_messages: list[msgspec.Raw] | None = None
    hidden: bool | None = None
    duration: str | None = None


class Event(_Model):
    """Any event with the optional keys of WIRE.md's events table; projections read this."""

    type: str
    created_at: str | None = None
    cid: str | None = None
    channel_type: str | None = None
    channel_id: str | None = None
    channel_member_count: int | None = None
    channel_message_count: int | None = None
    channel_custom: dict[str, Any] | None = None
    channel_last_message_at: str | None = None
    team: str | None = None
    connection_id: str | None = None
    user: User | None = None
    user_id: str | None = None
    me: OwnUser | None = None
    channel: Channel | None = None
    message: Message | None = None
    message_id: str | None = None
    parent_id: str | None = None
    reaction: Reaction | None = None
    member: Member | None = None
    draft: Draft | None = None
    poll: Poll | None = None
    poll_vote: msgspec.Raw = NO_RAW
    thread: msgspec.Raw = NO_RAW
    reminder: msgspec.Raw = NO_RAW
    hard_delete: bool | None = None
    deleted_for_me: bool | None = None
    clear_history: bool | None = None
    last_read_message_id: str | None = None
    last_read_at: str | None = None
    unread_messages: int | None = None
    first_unread_message_id: str | None = None
    last_delivered_at: str | None = None
    last_delivered_message_id: str | None = None
    total_unread_count: int | None = None
    unread_channels: int | None = None
    unread_count: int | None = None
    unread_threads: int | None = None
    unread_thread_messages: int | None = None
    watcher_count: int | None = None
    ai_state: str | None = None


class EventParts(msgspec.Struct):
    """The nested objects of an event as Raw slices, for `custom_fields` and verbatim storage."""

    user: msgspec.Raw = NO_RAW
    me: msgspec.Raw = NO_RAW
    channel: msgspec.Raw = NO_RAW
    message: msgspec.Raw = NO_RAW
    reaction: msgspec.Raw = NO_RAW
    member: msgspec.Raw = NO_RAW
    draft: msgspec.Raw = NO_RAW
    poll: msgspec.Raw = NO_RAW


class ChannelStateParts(msgspec.Struct):
    """The parts of a channel state as Raw slices, for `custom_fields` and verbatim storage."""

    channel: msgspec.Raw = NO_RAW
    messages: list[msgspec.Raw] | None = None
    pinned_messages: list[msgspec.Raw] | None = None
    members: list[msgspec.Raw] | None = None
    read: list[msgspec.Raw] | None = None
    membership: msgspec.Raw = NO_RAW
    draft: msgspec.Raw = NO_RAW


_FULL_EVENT_DECODER = msgspec.json.Decoder(Event)
_EVENT_PARTS_DECODER = msgspec.json.Decoder(EventParts)
_STATE_PARTS_DECODER = msgspec.json.Decoder(ChannelStateParts)
_MODEL_DECODERS: dict[type, msgspec.json.Decoder[Any]] = {}


def decode_full_event(raw: Buffer) -> Event:
    """Decode an event with all the keys projections use; WireError names the first bad key."""
    event = _decode(_FULL_EVENT_DECODER, raw)
    if not event.type:
        raise WireError("'type' must not be empty")
    return event


_M = TypeVar("_M", bound=msgspec.Struct)


def decode_model(raw: Buffer, model: type[_M]) -> _M:
    """Decode one object (Message, ChannelState, ...) with WireError reasons; cached decoders."""
    decoder = _MODEL_DECODERS.get(model)
    if decoder is None:
        decoder = _MODEL_DECODERS[model] = msgspec.json.Decoder(model)
    return _decode(decoder, raw)


def decode_event_parts(raw: Buffer) -> EventParts:
    """Slice an event into its nested objects (absent ones are empty Raw, nulls are b"null")."""
    return _decode(_EVENT_PARTS_DECODER, raw)


def decode_channel_state_parts(raw: Buffer) -> ChannelStateParts:
    """Slice a channel state into its channel, messages, members, reads (as Raw)."""
    return _decode(_STATE_PARTS_DECODER, raw)


def _fields(*models: type[msgspec.Struct], extra: tuple[str, ...] = ()) -> frozenset[str]:
    names: set[str] = set(extra)
    for model in models:
        names.update(model.__struct_fields__)
    return frozenset(names)


# Keys the backend itself sets; everything else at the top level of these objects is custom data.
USER_FIELDS: frozenset[str] = _fields(
    User,
    OwnUser,
    extra=(
        "teams_role", "privacy_settings", "push_notifications", "push_preferences",
        "revoke_tokens_issued_after", "blocked_user_ids", "avg_response_time",
        "latest_hidden_channels", "total_unread_count", "channel_mutes",
    ),
)  # fmt: skip
CHANNEL_FIELDS: frozenset[str] = _fields(
    Channel,
    extra=(
        "auto_translation_enabled", "auto_translation_language", "filter_tags",
        "hide_messages_before", "created_by_id", "pinned_at", "membership", "messages",
        "read", "watcher_count", "watchers",
    ),
)  # fmt: skip
MESSAGE_FIELDS: frozenset[str] = _fields(
    Message,
    extra=(
        "args", "image_labels", "before_message_send_failed", "reminder", "shared_location",
        "moderation", "moderation_details", "draft", "channel", "member", "pinned_by_id",
        "mentioned_channel", "mentioned_here", "mentioned_roles", "mentioned_group_ids",
        "member_ids", "quoted_message_id", "skip_push", "skip_enrich_url",
    ),
)  # fmt: skip
REACTION_FIELDS: frozenset[str] = _fields(Reaction, extra=("enforce_unique", "skip_push"))


def custom_fields(raw: Buffer | msgspec.Raw, known: frozenset[str]) -> dict[str, Any]:
    """The top-level keys of one JSON object that are not in `known` (decoded only when asked).

    Use with the bytes of a user, channel or message (e.g. from `decode_event_parts`) and
    USER_FIELDS, CHANNEL_FIELDS or MESSAGE_FIELDS.
    """
    body = _decode(_ANY_DECODER, raw)
    if not isinstance(body, dict):
        raise WireError("not a JSON object")
    return {key: value for key, value in body.items() if key not in known}
