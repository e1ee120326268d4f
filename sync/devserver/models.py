"""The server's in-memory rows: plain classes, no I/O, no serialization (see objects.py)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass
class User:
    id: str
    created_at: datetime
    updated_at: datetime
    name: str | None = None
    image: str | None = None
    role: str = "user"
    last_active: datetime | None = None
    online: bool = False
    banned: bool = False
    custom: dict[str, Any] = field(default_factory=dict)


@dataclass
class Member:
    user_id: str
    created_at: datetime
    updated_at: datetime
    role: str = "member"
    channel_role: str = "channel_member"
    banned: bool = False
    pinned_at: datetime | None = None
    archived_at: datetime | None = None


@dataclass
class Channel:
    type: str
    id: str
    created_at: datetime
    updated_at: datetime
    created_by: str | None = None
    last_message_at: datetime | None = None
    frozen: bool = False
    disabled: bool = False
    truncated_at: datetime | None = None
    team: str | None = None
    custom: dict[str, Any] = field(default_factory=dict)
    members: dict[str, Member] = field(default_factory=dict)  # insertion order = join order
    message_ids: list[str] = field(default_factory=list)       # created_at order
    message_count: int = 0                                      # not deleted

    @property
    def cid(self) -> str:
        return f"{self.type}:{self.id}"


@dataclass
class Message:
    id: str
    cid: str
    user_id: str
    created_at: datetime
    updated_at: datetime
    text: str = ""
    type: str = "regular"
    attachments: list[Any] = field(default_factory=list)
    mentioned_users: list[str] = field(default_factory=list)
    parent_id: str | None = None
    show_in_channel: bool | None = None
    quoted_message_id: str | None = None
    reply_count: int = 0
    deleted_reply_count: int = 0
    pinned: bool = False
    pinned_at: datetime | None = None
    pinned_by: str | None = None
    pin_expires: str | None = None
    silent: bool = False
    deleted_at: datetime | None = None
    message_text_updated_at: datetime | None = None
    poll_id: str | None = None
    custom: dict[str, Any] = field(default_factory=dict)
    deleted_for: set[str] = field(default_factory=set)  # delete_for_me: hidden for these users

    @property
    def in_channel(self) -> bool:
        """Shown in the channel's message list (not a thread-only reply)."""
        return self.parent_id is None or bool(self.show_in_channel)


@dataclass
class Reaction:
    message_id: str
    user_id: str
    type: str
    created_at: datetime
    updated_at: datetime
    score: int = 1
    custom: dict[str, Any] = field(default_factory=dict)


@dataclass
class Read:
    last_read: datetime
    unread_messages: int = 0
    last_read_message_id: str | None = None


@dataclass
class Draft:
    user_id: str
    cid: str
    parent_id: str | None
    message: dict[str, Any]
    created_at: datetime


@dataclass
class HistoryEntry:
    """One event as recorded for `/sync`: `only_user` marks events meant for one user
    (delete for me, mark unread, drafts), which `/sync` must not hand to anyone else."""

    cid: str
    created_at: datetime
    event: dict[str, Any]
    only_user: str | None = None
