"""The Stream Chat wire format (docs/wire.md): fast heads for the log, full models for projections.

- `errors`: `WireError`, and msgspec's errors turned into its short reasons.
- `times`: RFC 3339 text <-> integer microseconds (`parse_time`, `format_time`, `UNSET_TIME`).
- `heads`: what the log needs: event heads and exact Raw splits of query-channels and sync answers.
- `values`: what the log stores must read back (`check_storable`), and never-failing reads.
- `models`: the full models for projections (`Event`, `Message`, `Channel`, ...) and `custom_fields`.

Every public name is re-exported here: `from chatledger.eventstore.wire import X` is the usual way.
"""

from __future__ import annotations

from chatledger.eventstore.wire.errors import Buffer as Buffer
from chatledger.eventstore.wire.errors import WireError
from chatledger.eventstore.wire.heads import (
    NO_RAW,
    ChannelStateHead,
    ErrorBody,
    EventHead,
    QueryChannelsResponse,
    SyncResponse,
    decode_channel_state,
    decode_error,
    decode_event,
    decode_query_channels,
    decode_sync,
)
from chatledger.eventstore.wire.models import (
    CHANNEL_FIELDS,
    MESSAGE_FIELDS,
    REACTION_FIELDS,
    USER_FIELDS,
    Attachment,
    Channel,
    ChannelConfig,
    ChannelState,
    ChannelStateParts,
    Draft,
    Event,
    EventParts,
    Member,
    Message,
    OwnUser,
    Poll,
    Reaction,
    ReactionGroup,
    Read,
    User,
    custom_fields,
    decode_channel_state_parts,
    decode_event_parts,
    decode_full_event,
    decode_model,
)
from chatledger.eventstore.wire.times import (
    MAX_TIME_US,
    MIN_TIME_US,
    UNSET_TIME,
    format_time,
    format_time_or_none,
    parse_time,
)
from chatledger.eventstore.wire.values import (
    MAX_DEPTH,
    UNREADABLE_KEY,
    check_storable,
    compact_json,
    decode_stored,
    repair_utf8,
    unstorable_reason,
)

__all__ = [
    "WireError",
    "UNSET_TIME",
    "MIN_TIME_US",
    "MAX_TIME_US",
    "NO_RAW",
    "parse_time",
    "format_time",
    "format_time_or_none",
    "MAX_DEPTH",
    "UNREADABLE_KEY",
    "check_storable",
    "compact_json",
    "decode_stored",
    "repair_utf8",
    "unstorable_reason",
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
