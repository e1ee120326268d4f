"""Full models for projections: `Event`, `Message`, `Channel`, ... and the Raw parts splitters.

Every optional field is `T | None = None`, so absent and null read the same and decoding never
trips over the nulls the backend likes to send. Timestamps stay RFC 3339 text; convert with
`parse_time` when needed. Custom top-level keys of users, channels and messages are not modelled:
`custom_fields` extracts them from the raw object bytes (see `decode_event_parts` /
`decode_channel_state_parts`).
"""

from __future__ import annotations

from typing import Any, TypeVar

import msgspec

from chatledger.eventstore.wire.errors import Buffer, WireError, decode_or_raise
from chatledger.eventstore.wire.heads import ANY_DECODER, NO_RAW

__all__ = [
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
    """Any event, every key but `type` optional (docs/wire.md, "Events"); projections read this."""

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
    event = decode_or_raise(_FULL_EVENT_DECODER, raw)
    if not event.type:
        raise WireError("'type' must not be empty")
    return event


_M = TypeVar("_M", bound=msgspec.Struct)


def decode_model(raw: Buffer, model: type[_M]) -> _M:
    """Decode one object (Message, ChannelState, ...) with WireError reasons; cached decoders."""
    decoder = _MODEL_DECODERS.get(model)
    if decoder is None:
        decoder = _MODEL_DECODERS[model] = msgspec.json.Decoder(model)
    return decode_or_raise(decoder, raw)


def decode_event_parts(raw: Buffer) -> EventParts:
    """Slice an event into its nested objects (absent ones are empty Raw, nulls are b"null")."""
    return decode_or_raise(_EVENT_PARTS_DECODER, raw)


def decode_channel_state_parts(raw: Buffer) -> ChannelStateParts:
    """Slice a channel state into its channel, messages, members, reads (as Raw)."""
    return decode_or_raise(_STATE_PARTS_DECODER, raw)


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
    body = decode_or_raise(ANY_DECODER, raw)
    if not isinstance(body, dict):
        raise WireError("not a JSON object")
    return {key: value for key, value in body.items() if key not in known}
