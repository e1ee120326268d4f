"""Rows as the wire objects (docs/wire.md, "Objects"): custom keys at the top level, RFC 3339 times.

The reserved keys are written after the custom ones, so a custom key can never shadow `id` or
`created_at` in what a client receives.
"""

from __future__ import annotations

import html
from typing import Any, Protocol

from chatledger.sync.devserver.models import Channel, Draft, Member, Message, Reaction, Read, User
from chatledger.sync.devserver.wire import iso


class State(Protocol):
    """What the object builders read of the server's state (`state.State` is the one)."""

    users: dict[str, User]
    messages: dict[str, Message]
    reactions: dict[str, dict[tuple[str, str], Reaction]]

    def user(self, user_id: str) -> User: ...

LATEST_REACTIONS = 10

CAPABILITIES_MEMBER = [
    "ban-channel-members", "connect-events", "delete-own-message", "flag-message",
    "mute-channel", "pin-message", "quote-message", "read-events", "search-messages",
    "send-message", "send-reaction", "send-reply", "typing-events", "update-own-message",
    "upload-file",
]
CAPABILITIES_READER = ["connect-events", "read-events", "search-messages"]


def channel_config(channel_type: str) -> dict[str, Any]:
    return {"name": channel_type, "typing_events": True, "read_events": True,
            "connect_events": True, "search": True, "reactions": True, "replies": True,
            "quotes": True, "mutes": True, "uploads": True, "url_enrichment": False,
            "custom_events": True, "push_notifications": True, "message_retention": "infinite",
            "max_message_length": 5000, "automod": "disabled", "commands": []}


def user_obj(user: User) -> dict[str, Any]:
    return {**user.custom, "id": user.id, "name": user.name, "image": user.image,
            "role": user.role, "created_at": iso(user.created_at),
            "updated_at": iso(user.updated_at), "last_active": iso(user.last_active),
            "online": user.online, "banned": user.banned}


def member_obj(state: State, member: Member) -> dict[str, Any]:
    return {"user_id": member.user_id, "user": user_obj(state.user(member.user_id)),
            "role": member.role, "channel_role": member.channel_role,
            "created_at": iso(member.created_at), "updated_at": iso(member.updated_at),
            "banned": member.banned, "shadow_banned": False, "pinned_at": iso(member.pinned_at),
            "archived_at": iso(member.archived_at), "notifications_muted": False}


def channel_obj(state: State, channel: Channel, viewer: str | None = None) -> dict[str, Any]:
    creator = state.users.get(channel.created_by) if channel.created_by else None
    member = viewer is not None and viewer in channel.members
    return {**channel.custom, "id": channel.id, "type": channel.type, "cid": channel.cid,
            "created_by": user_obj(creator) if creator else None,
            "created_at": iso(channel.created_at), "updated_at": iso(channel.updated_at),
            "last_message_at": iso(channel.last_message_at),
            "member_count": len(channel.members), "frozen": channel.frozen,
            "disabled": channel.disabled, "hidden": False,
            "truncated_at": iso(channel.truncated_at), "team": channel.team,
            "config": channel_config(channel.type),
            "own_capabilities": list(CAPABILITIES_MEMBER if member or viewer is None
                                     else CAPABILITIES_READER)}


def reaction_obj(state: State, reaction: Reaction) -> dict[str, Any]:
    return {**reaction.custom, "message_id": reaction.message_id, "user_id": reaction.user_id,
            "user": user_obj(state.user(reaction.user_id)), "type": reaction.type,
            "score": reaction.score, "created_at": iso(reaction.created_at),
            "updated_at": iso(reaction.updated_at)}


def message_obj(state: State, message: Message, viewer: str | None = None, *,
                with_quote: bool = True) -> dict[str, Any]:
    """`viewer` fills `own_reactions`; events carry none (one frame goes to many users)."""
    reactions = list(state.reactions.get(message.id, {}).values())
    counts: dict[str, int] = {}
    scores: dict[str, int] = {}
    groups: dict[str, dict[str, Any]] = {}
    for reaction in sorted(reactions, key=lambda r: r.created_at):
        counts[reaction.type] = counts.get(reaction.type, 0) + 1
        scores[reaction.type] = scores.get(reaction.type, 0) + reaction.score
        group = groups.setdefault(reaction.type, {
            "count": 0, "sum_scores": 0, "first_reaction_at": iso(reaction.created_at),
            "last_reaction_at": iso(reaction.created_at)})
        group["count"] += 1
        group["sum_scores"] += reaction.score
        group["last_reaction_at"] = iso(reaction.created_at)
    latest = sorted(reactions, key=lambda r: r.created_at, reverse=True)[:LATEST_REACTIONS]
    own = [r for r in latest if viewer is not None and r.user_id == viewer]
    quoted = None
    if with_quote and message.quoted_message_id:
        target = state.messages.get(message.quoted_message_id)
        if target is not None:
            quoted = message_obj(state, target, viewer, with_quote=False)
    text = message.text
    return {
        **message.custom,
        "id": message.id, "cid": message.cid, "text": text,
        "html": f"<p>{html.escape(text)}</p>\n" if text else "",
        "type": message.type, "user": user_obj(state.user(message.user_id)),
        "attachments": list(message.attachments),
        "mentioned_users": [user_obj(state.user(u)) for u in message.mentioned_users],
        "parent_id": message.parent_id, "show_in_channel": message.show_in_channel,
        "quoted_message_id": message.quoted_message_id, "quoted_message": quoted,
        "reply_count": message.reply_count, "deleted_reply_count": message.deleted_reply_count,
        "reaction_counts": counts, "reaction_scores": scores, "reaction_groups": groups or None,
        "latest_reactions": [reaction_obj(state, r) for r in latest],
        "own_reactions": [reaction_obj(state, r) for r in own],
        "pinned": message.pinned, "pinned_at": iso(message.pinned_at),
        "pinned_by": user_obj(state.user(message.pinned_by)) if message.pinned_by else None,
        "pin_expires": message.pin_expires, "silent": message.silent,
        "created_at": iso(message.created_at), "updated_at": iso(message.updated_at),
        "deleted_at": iso(message.deleted_at),
        "message_text_updated_at": iso(message.message_text_updated_at),
        "poll_id": message.poll_id,
    }


def read_obj(state: State, user_id: str, read: Read) -> dict[str, Any]:
    return {"user": user_obj(state.user(user_id)), "last_read": iso(read.last_read),
            "unread_messages": read.unread_messages,
            "last_read_message_id": read.last_read_message_id}


def draft_obj(draft: Draft) -> dict[str, Any]:
    return {"channel_cid": draft.cid, "parent_id": draft.parent_id,
            "created_at": iso(draft.created_at), "message": dict(draft.message)}
