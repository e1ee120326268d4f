"""The server's state and every write, as plain Python: no I/O, no asyncio.

Each write checks what the real service checks (existence, membership, authorship), changes
the rows, and emits the events the real service would send. `emit` records an event in the
history `/sync` reads, then hands it to `listener` (the WebSocket hub, when the server runs).
Errors are `ApiError`s in Stream's shape; the HTTP layer only serializes them.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from datetime import timedelta
from typing import Any, cast

from chatledger.sync.devserver.models import (
    Channel, Draft, HistoryEntry, Member, Message, Reaction, Read, User,
)
from chatledger.sync.devserver.objects import (
    channel_obj, draft_obj, member_obj, message_obj, reaction_obj, user_obj,
)
from chatledger.sync.devserver.wire import (
    Clock, input_error, iso, not_allowed, not_found, parse_time,
)

MAX_TEXT = 5000

# Keys of a message request the client may set; everything else unknown is custom data.
MESSAGE_FIELDS = frozenset({
    "id", "text", "attachments", "parent_id", "show_in_channel", "quoted_message_id",
    "mentioned_users", "silent", "type", "pinned", "pin_expires", "poll_id",
})
# Keys only the server writes: dropped from requests, refused in partial updates.
SERVER_FIELDS = frozenset({
    "cid", "user", "user_id", "html", "created_at", "updated_at", "deleted_at", "reply_count",
    "deleted_reply_count", "reaction_counts", "reaction_scores", "reaction_groups",
    "latest_reactions", "own_reactions", "quoted_message", "pinned_at", "pinned_by",
    "message_text_updated_at", "i18n", "thread_participants", "command", "args",
})
USER_FIELDS = frozenset({"id", "name", "image", "role", "created_at", "updated_at",
                         "last_active", "online", "banned"})
CHANNEL_FIELDS = frozenset({"type", "id", "cid", "members", "messages", "created_by",
                            "created_by_id", "created_at", "updated_at", "last_message_at",
                            "member_count", "frozen", "disabled", "hidden", "truncated_at",
                            "team", "config", "own_capabilities"})
REACTION_FIELDS = frozenset({"type", "score", "message_id", "user_id", "user", "created_at",
                             "updated_at"})

Listener = Callable[[dict[str, Any], list[str]], None]


class State:
    """Users, channels, members, messages, reactions, reads, drafts and the event history."""

    def __init__(self) -> None:
        self.clock = Clock()
        self.users: dict[str, User] = {}
        self.channels: dict[str, Channel] = {}
        self.messages: dict[str, Message] = {}
        self.reactions: dict[str, dict[tuple[str, str], Reaction]] = {}  # msg -> (user, type)
        self.reads: dict[tuple[str, str], Read] = {}                      # (cid, user)
        self.drafts: dict[tuple[str, str, str], Draft] = {}               # (user, cid, parent)
        self.history: list[HistoryEntry] = []
        self.used_message_ids: set[str] = set()  # hard-deleted ids stay taken: resends stay safe
        self.send_attempts: Counter[str] = Counter()  # every send request, by message id
        self.send_applied: Counter[str] = Counter()   # sends that stored a message (always <= 1)
        self.listener: Listener | None = None

    # -- lookups -------------------------------------------------------------------------------

    def user(self, user_id: str) -> User:
        """The user, created bare on first sight (a token may name a user nobody seeded)."""
        user = self.users.get(user_id)
        if user is None:
            now = self.clock.now()
            user = self.users[user_id] = User(id=user_id, created_at=now, updated_at=now)
        return user

    def upsert_user(self, data: dict[str, Any] | str) -> User:
        if isinstance(data, str):
            data = {"id": data}
        user_id = data.get("id")
        if not isinstance(user_id, str) or not user_id:
            raise input_error("user id is required")
        user = self.user(user_id)
        for key in ("name", "image", "role"):
            if key in data:
                setattr(user, key, data[key])
        user.custom.update({k: v for k, v in data.items() if k not in USER_FIELDS})
        user.updated_at = self.clock.now()
        return user

    def channel(self, cid: str) -> Channel:
        channel = self.channels.get(cid)
        if channel is None:
            raise not_found(f"channel '{cid}' does not exist")
        return channel

    def message(self, message_id: str) -> Message:
        message = self.messages.get(message_id)
        if message is None:
            raise not_found(f"message with id '{message_id}' does not exist")
        return message

    @staticmethod
    def can_read(channel: Channel, user_id: str) -> bool:
        # Livestream channels are public; the others are for their members.
        return user_id in channel.members or channel.type == "livestream"

    def require_member(self, channel: Channel, user_id: str) -> None:
        if not self.can_read(channel, user_id):
            raise not_allowed(f"user '{user_id}' is not allowed to access channel "
                              f"'{channel.cid}': not a member")

    def read_row(self, cid: str, user_id: str) -> Read:
        read = self.reads.get((cid, user_id))
        if read is None:
            channel = self.channels[cid]
            read = self.reads[(cid, user_id)] = Read(last_read=channel.created_at)
        return read

    def unread_totals(self, user_id: str) -> tuple[int, int]:
        """(total_unread_count, unread_channels) over the user's channels."""
        total = channels = 0
        for (cid, uid), read in self.reads.items():
            if uid == user_id and cid in self.channels and user_id in self.channels[cid].members:
                total += read.unread_messages
                channels += read.unread_messages > 0
        return total, channels

    def me(self, user_id: str) -> dict[str, Any]:
        total, channels = self.unread_totals(user_id)
        return {**user_obj(self.user(user_id)), "total_unread_count": total,
                "unread_count": total, "unread_channels": channels, "mutes": [],
                "channel_mutes": [], "devices": []}

    # -- events --------------------------------------------------------------------------------

    def channel_event(self, kind: str, channel: Channel, /, **fields: Any) -> dict[str, Any]:
        return {"type": kind, "cid": channel.cid, "channel_type": channel.type,
                "channel_id": channel.id, "channel_member_count": len(channel.members),
                "channel_message_count": channel.message_count,
                "channel_custom": dict(channel.custom),
                "channel_last_message_at": iso(channel.last_message_at),
                **fields, "created_at": iso(self.clock.now())}

    def emit(self, event: dict[str, Any], channel: Channel, *, only_user: str | None = None,
             recipients: Iterable[str] | None = None) -> None:
        """Record `event` for `/sync` and deliver it to the channel's members (or `only_user`)."""
        self.history.append(HistoryEntry(channel.cid, parse_time(event["created_at"]), event,
                                         only_user))
        if self.listener is not None:
            if only_user is not None:
                targets = [only_user]
            else:
                targets = list(channel.members if recipients is None else recipients)
            self.listener(event, targets)

    # -- channels and members --------------------------------------------------------------------

    def create_channel(self, channel_type: str, channel_id: str, *, created_by: str | None = None,
                       members: Iterable[str] = (), custom: dict[str, Any] | None = None
                       ) -> Channel:
        cid = f"{channel_type}:{channel_id}"
        if not channel_type or not channel_id or ":" in channel_id:
            raise input_error(f"invalid channel type or id: {cid!r}")
        if cid in self.channels:
            raise input_error(f"channel '{cid}' already exists")
        now = self.clock.now()
        channel = self.channels[cid] = Channel(
            type=channel_type, id=channel_id, created_at=now, updated_at=now,
            created_by=created_by, custom=dict(custom or {}))
        if created_by:
            self.user(created_by)
        for user_id in members:
            self.add_member(cid, user_id, announce=False, role="owner" if user_id == created_by
                            else "member")
        for user_id in channel.members:
            self.emit(self.channel_event("notification.added_to_channel", channel,
                                         channel=channel_obj(self, channel, user_id),
                                         member=member_obj(self, channel.members[user_id])),
                      channel, only_user=user_id)
        return channel

    def add_member(self, cid: str, user_id: str, *, announce: bool = True,
                   role: str = "member") -> bool:
        """Add `user_id` to the channel; False when already a member. `announce` sends
        `member.added` to the members and `notification.added_to_channel` to the newcomer."""
        channel = self.channel(cid)
        if user_id in channel.members:
            return False
        self.user(user_id)
        now = self.clock.now()
        member = channel.members[user_id] = Member(
            user_id=user_id, created_at=now, updated_at=now, role=role,
            channel_role="channel_moderator" if role == "owner" else "channel_member")
        self.reads[(cid, user_id)] = Read(last_read=now)
        if announce:
            self.emit(self.channel_event("member.added", channel, member=member_obj(self, member),
                                         user=user_obj(self.user(user_id))), channel)
            self.emit(self.channel_event("notification.added_to_channel", channel,
                                         channel=channel_obj(self, channel, user_id),
                                         member=member_obj(self, member)),
                      channel, only_user=user_id)
        return True

    def remove_member(self, cid: str, user_id: str) -> None:
        channel = self.channel(cid)
        member = channel.members.get(user_id)
        if member is None:
            raise not_found(f"user '{user_id}' is not a member of '{cid}'")
        recipients = list(channel.members)
        del channel.members[user_id]
        self.reads.pop((cid, user_id), None)
        self.emit(self.channel_event("member.removed", channel, member=member_obj(self, member),
                                     user=user_obj(self.user(user_id))),
                  channel, recipients=recipients)

    def update_channel(self, user_id: str, cid: str, data: dict[str, Any]) -> dict[str, Any]:
        """Replace the channel's custom data (and `frozen`), like `channel.update`."""
        channel = self.channel(cid)
        self.require_member(channel, user_id)
        channel.custom = {k: v for k, v in data.items() if k not in CHANNEL_FIELDS}
        if "frozen" in data:
            channel.frozen = bool(data["frozen"])
        channel.updated_at = self.clock.now()
        self.emit(self.channel_event("channel.updated", channel,
                                     channel=channel_obj(self, channel),
                                     user=user_obj(self.user(user_id))), channel)
        return {"channel": channel_obj(self, channel, user_id)}

    def truncate_channel(self, user_id: str, cid: str) -> dict[str, Any]:
        channel = self.channel(cid)
        self.require_member(channel, user_id)
        channel.truncated_at = channel.updated_at = self.clock.now()
        for read in (self.reads.get((cid, m)) for m in channel.members):
            if read is not None:
                read.unread_messages = 0
        self.emit(self.channel_event("channel.truncated", channel,
                                     channel=channel_obj(self, channel),
                                     user=user_obj(self.user(user_id))), channel)
        return {"channel": channel_obj(self, channel, user_id)}

    # -- messages --------------------------------------------------------------------------------

    @staticmethod
    def _custom(data: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in data.items() if k not in MESSAGE_FIELDS and k not in SERVER_FIELDS}

    @staticmethod
    def _mentions(value: Any) -> list[str]:
        if not value:
            return []
        if not isinstance(value, list):
            raise input_error("mentioned_users must be a list of user ids")
        ids = [v.get("id") if isinstance(v, dict) else v for v in value]
        if not all(isinstance(v, str) and v for v in ids):
            raise input_error("mentioned_users must be a list of user ids")
        return cast("list[str]", ids)  # each one checked just above

    @staticmethod
    def _check_content(text: Any, attachments: Any) -> None:
        if not isinstance(text, str):
            raise input_error("message.text must be a string")
        if not isinstance(attachments, list):
            raise input_error("message.attachments must be a list")
        if len(text) > MAX_TEXT:
            raise input_error(f"message is too long: {len(text)} characters, max {MAX_TEXT}")

    def send_message(self, user_id: str, cid: str, data: object, *,
                     skip_push: bool = False) -> dict[str, Any]:
        if not isinstance(data, dict):
            raise input_error("message must be an object")
        message_id = data.get("id") or str(uuid.uuid4())
        if not isinstance(message_id, str):
            raise input_error("message.id must be a string")
        self.send_attempts[message_id] += 1
        channel = self.channel(cid)
        self.require_member(channel, user_id)
        if channel.frozen:
            raise not_allowed(f"channel '{cid}' is frozen")
        if message_id in self.used_message_ids:
            raise input_error(f"a message with ID {message_id} already exists")
        text, attachments = data.get("text", ""), data.get("attachments") or []
        self._check_content(text, attachments)
        if not text and not attachments and not data.get("poll_id"):
            raise input_error("message text or attachments are required")
        parent_id = data.get("parent_id") or None
        parent = None
        if parent_id is not None:
            parent = self.messages.get(parent_id)
            if parent is None or parent.cid != cid:
                raise input_error(f"parent message '{parent_id}' does not exist in '{cid}'")
        quoted = data.get("quoted_message_id") or None
        if quoted is not None and quoted not in self.messages:
            raise input_error(f"quoted message '{quoted}' does not exist")
        mentions = self._mentions(data.get("mentioned_users"))
        for mentioned in mentions:
            self.user(mentioned)
        now = self.clock.now()
        kind = "reply" if parent is not None else (
            "system" if data.get("type") == "system" else "regular")
        message = Message(
            id=message_id, cid=cid, user_id=user_id, created_at=now, updated_at=now, text=text,
            type=kind, attachments=list(attachments), mentioned_users=mentions,
            parent_id=parent_id, show_in_channel=data.get("show_in_channel"),
            quoted_message_id=quoted, silent=bool(data.get("silent", False)),
            pinned=bool(data.get("pinned", False)), poll_id=data.get("poll_id"),
            pin_expires=data.get("pin_expires"), custom=self._custom(data))
        if message.pinned:
            message.pinned_at, message.pinned_by = now, user_id
        self.messages[message_id] = message
        self.used_message_ids.add(message_id)
        self.send_applied[message_id] += 1
        channel.message_ids.append(message_id)
        channel.message_count += 1
        if parent is not None:
            parent.reply_count += 1
        if message.in_channel:
            channel.last_message_at = now
            for member in channel.members:
                read = self.read_row(cid, member)
                if member == user_id:
                    # Writing in a channel reads it, as on the real service.
                    read.last_read, read.unread_messages = now, 0
                    read.last_read_message_id = message_id
                elif not message.silent:
                    read.unread_messages += 1
        self.emit(self.channel_event("message.new", channel, message_id=message_id,
                                     message=message_obj(self, message),
                                     user=user_obj(self.user(user_id)), watcher_count=0),
                  channel)
        return {"message": message_obj(self, message, user_id)}

    def _own_message(self, user_id: str, message_id: str) -> Message:
        message = self.message(message_id)
        if message.user_id != user_id:
            raise not_allowed(f"user '{user_id}' may not change message '{message_id}' "
                              "of another user")
        if message.type == "deleted":
            raise input_error(f"message '{message_id}' was deleted")
        return message

    def _updated(self, user_id: str, message: Message, old_text: str) -> dict[str, Any]:
        now = self.clock.now()
        message.updated_at = now
        if message.text != old_text:
            message.message_text_updated_at = now
        channel = self.channels[message.cid]
        self.emit(self.channel_event("message.updated", channel, message_id=message.id,
                                     message=message_obj(self, message),
                                     user=user_obj(self.user(user_id))), channel)
        return {"message": message_obj(self, message, user_id)}

    def update_message(self, user_id: str, message_id: str, data: object) -> dict[str, Any]:
        """Full replace of text, attachments, mentions and custom data (what `update` means)."""
        if not isinstance(data, dict):
            raise input_error("message must be an object")
        if data.get("id") not in (None, message_id):
            raise input_error("message.id does not match the id in the URL")
        message = self._own_message(user_id, message_id)
        text, attachments = data.get("text", ""), data.get("attachments") or []
        self._check_content(text, attachments)
        old_text = message.text
        message.text, message.attachments = text, list(attachments)
        message.mentioned_users = self._mentions(data.get("mentioned_users"))
        message.custom = self._custom(data)
        if "quoted_message_id" in data:
            message.quoted_message_id = data["quoted_message_id"] or None
        if "silent" in data:
            message.silent = bool(data["silent"])
        if "pinned" in data:
            self._pin(message, bool(data["pinned"]), user_id)
        return self._updated(user_id, message, old_text)

    def _pin(self, message: Message, pinned: bool, user_id: str) -> None:
        if pinned != message.pinned:
            message.pinned = pinned
            message.pinned_at = self.clock.now() if pinned else None
            message.pinned_by = user_id if pinned else None

    def partial_update_message(self, user_id: str, message_id: str, set: dict[str, Any],
                               unset: list[str]) -> dict[str, Any]:
        if not isinstance(set, dict) or not isinstance(unset, list):
            raise input_error("set must be an object and unset a list")
        message = self._own_message(user_id, message_id)
        for key in [*set, *unset]:
            if key in SERVER_FIELDS or key in ("id", "type", "parent_id"):
                raise input_error(f"field '{key}' cannot be changed")
        old_text = message.text
        if "text" in set or "attachments" in set:
            self._check_content(set.get("text", message.text),
                                set.get("attachments", message.attachments))
        for key, value in set.items():
            if key == "text":
                message.text = value
            elif key == "attachments":
                message.attachments = list(value)
            elif key == "mentioned_users":
                message.mentioned_users = self._mentions(value)
            elif key == "pinned":
                self._pin(message, bool(value), user_id)
            elif key in ("silent", "show_in_channel", "pin_expires", "quoted_message_id",
                         "poll_id"):
                setattr(message, key, value)
            else:
                message.custom[key] = value
        for key in unset:
            if key == "text":
                message.text = ""
            elif key in ("attachments", "mentioned_users"):
                setattr(message, key, [])
            elif key == "pinned":
                self._pin(message, False, user_id)
            elif key in ("pin_expires", "quoted_message_id", "poll_id"):
                setattr(message, key, None)
            else:
                message.custom.pop(key, None)
        return self._updated(user_id, message, old_text)

    def delete_message(self, user_id: str, message_id: str, *, hard: bool = False,
                       delete_for_me: bool = False) -> dict[str, Any]:
        message = self.message(message_id)
        channel = self.channels[message.cid]
        if delete_for_me:
            if hard:
                raise input_error("hard and delete_for_me cannot be combined")
            self.require_member(channel, user_id)
            message.deleted_for.add(user_id)
            shown = {**message_obj(self, message, user_id), "type": "deleted",
                     "deleted_at": iso(self.clock.now())}
            self.emit(self.channel_event("message.deleted", channel, message_id=message_id,
                                         message=shown, user=user_obj(self.user(user_id)),
                                         hard_delete=False, deleted_for_me=True),
                      channel, only_user=user_id)
            return {"message": shown}
        if message.user_id != user_id:
            raise not_allowed(f"user '{user_id}' may not delete message '{message_id}' "
                              "of another user")
        parent = self.messages.get(message.parent_id) if message.parent_id else None
        was_deleted = message.type == "deleted"
        if was_deleted and not hard:
            return {"message": message_obj(self, message, user_id)}  # already soft-deleted
        now = self.clock.now()
        if not was_deleted:
            channel.message_count -= 1
            message.type, message.deleted_at, message.updated_at = "deleted", now, now
            if parent is not None:
                parent.deleted_reply_count += 1
        shown = message_obj(self, message, user_id)
        if hard:
            del self.messages[message_id]
            self.reactions.pop(message_id, None)
            channel.message_ids.remove(message_id)
            if parent is not None:
                parent.reply_count = max(0, parent.reply_count - 1)
                parent.deleted_reply_count = max(0, parent.deleted_reply_count - 1)
        self.emit(self.channel_event("message.deleted", channel, message_id=message_id,
                                     message={**shown, "own_reactions": []},
                                     user=user_obj(self.user(user_id)), hard_delete=hard,
                                     deleted_for_me=False), channel)
        return {"message": shown}

    # -- reactions -------------------------------------------------------------------------------

    def send_reaction(self, user_id: str, message_id: str, data: object, *,
                      enforce_unique: bool = False) -> dict[str, Any]:
        if not isinstance(data, dict) or not isinstance(data.get("type"), str) \
                or not data["type"]:
            raise input_error("reaction.type is required")
        message = self.message(message_id)
        channel = self.channels[message.cid]
        self.require_member(channel, user_id)
        if message.type == "deleted":
            raise input_error(f"message '{message_id}' was deleted")
        score = data.get("score", 1)
        if not isinstance(score, int) or isinstance(score, bool):
            raise input_error("reaction.score must be an integer")
        kind = data["type"]
        on_message = self.reactions.setdefault(message_id, {})
        replaced = False
        if enforce_unique:
            for key in [k for k in on_message if k[0] == user_id and k[1] != kind]:
                del on_message[key]
                replaced = True
        now = self.clock.now()
        reaction = on_message.get((user_id, kind))
        if reaction is not None:
            reaction.score, reaction.updated_at = score, now
            reaction.custom = {k: v for k, v in data.items() if k not in REACTION_FIELDS}
            replaced = True
        else:
            reaction = on_message[(user_id, kind)] = Reaction(
                message_id=message_id, user_id=user_id, type=kind, created_at=now,
                updated_at=now, score=score,
                custom={k: v for k, v in data.items() if k not in REACTION_FIELDS})
        event = "reaction.updated" if replaced else "reaction.new"
        self.emit(self.channel_event(event, channel, message_id=message_id,
                                     reaction=reaction_obj(self, reaction),
                                     message=message_obj(self, message),
                                     user=user_obj(self.user(user_id))), channel)
        return {"message": message_obj(self, message, user_id),
                "reaction": reaction_obj(self, reaction)}

    def delete_reaction(self, user_id: str, message_id: str, kind: str) -> dict[str, Any]:
        message = self.message(message_id)
        channel = self.channels[message.cid]
        reaction = self.reactions.get(message_id, {}).pop((user_id, kind), None)
        if reaction is None:
            raise not_found(f"reaction '{kind}' of user '{user_id}' on message "
                            f"'{message_id}' does not exist")
        self.emit(self.channel_event("reaction.deleted", channel, message_id=message_id,
                                     reaction=reaction_obj(self, reaction),
                                     message=message_obj(self, message),
                                     user=user_obj(self.user(user_id))), channel)
        return {"message": message_obj(self, message, user_id),
                "reaction": reaction_obj(self, reaction)}

    # -- reads -----------------------------------------------------------------------------------

    def _visible_ids(self, channel: Channel, user_id: str) -> list[str]:
        return [mid for mid in channel.message_ids
                if (m := self.messages[mid]).in_channel and user_id not in m.deleted_for
                and (channel.truncated_at is None or m.created_at > channel.truncated_at)]

    def mark_read(self, user_id: str, cid: str, *, message_id: str | None = None,
                  thread_id: str | None = None) -> dict[str, Any]:
        channel = self.channel(cid)
        if user_id not in channel.members:
            raise not_allowed(f"user '{user_id}' is not a member of '{cid}'")
        for named in (message_id, thread_id):
            if named is not None and (named not in self.messages
                                      or self.messages[named].cid != cid):
                raise not_found(f"message with id '{named}' does not exist in '{cid}'")
        fields: dict[str, Any] = {"user": user_obj(self.user(user_id))}
        if thread_id is not None:
            # A thread read leaves the channel's read row alone.
            fields["thread"] = {"parent_message_id": thread_id}
            fields["last_read_message_id"] = message_id
        else:
            visible = self._visible_ids(channel, user_id)
            last_id = message_id or (visible[-1] if visible else None)
            read = self.read_row(cid, user_id)
            read.last_read, read.unread_messages = self.clock.now(), 0
            read.last_read_message_id = last_id
            fields["last_read_message_id"] = last_id
        event = self.channel_event("message.read", channel, **fields)
        if thread_id is None:
            # One moment: the read row's `last_read` is the event's time, as clients take it.
            event["created_at"] = iso(read.last_read)
        self.emit(event, channel)
        return {"event": event}

    def mark_unread(self, user_id: str, cid: str, *, message_id: object) -> dict[str, Any]:
        channel = self.channel(cid)
        if user_id not in channel.members:
            raise not_allowed(f"user '{user_id}' is not a member of '{cid}'")
        if not isinstance(message_id, str) or message_id not in self.messages \
                or self.messages[message_id].cid != cid:
            raise not_found(f"message with id '{message_id}' does not exist in '{cid}'")
        visible = self._visible_ids(channel, user_id)
        target = self.messages[message_id]
        before = [mid for mid in visible if self.messages[mid].created_at < target.created_at]
        unread = len(visible) - len(before)
        read = self.read_row(cid, user_id)
        # Read up to just before the first unread message.
        read.last_read = target.created_at - timedelta(microseconds=1)
        read.unread_messages = max(unread, 1)
        read.last_read_message_id = before[-1] if before else None
        total, channels = self.unread_totals(user_id)
        self.emit(self.channel_event(
            "notification.mark_unread", channel, user=user_obj(self.user(user_id)),
            last_read_at=iso(read.last_read), unread_messages=read.unread_messages,
            last_read_message_id=read.last_read_message_id, first_unread_message_id=message_id,
            unread_count=read.unread_messages, total_unread_count=total,
            unread_channels=channels), channel, only_user=user_id)
        return {}

    # -- drafts ----------------------------------------------------------------------------------

    def save_draft(self, user_id: str, cid: str, data: object) -> dict[str, Any]:
        if not isinstance(data, dict):
            raise input_error("message must be an object")
        channel = self.channel(cid)
        self.require_member(channel, user_id)
        parent_id = data.get("parent_id") or None
        if parent_id is not None and (parent_id not in self.messages
                                      or self.messages[parent_id].cid != cid):
            raise input_error(f"parent message '{parent_id}' does not exist in '{cid}'")
        self._check_content(data.get("text", ""), data.get("attachments") or [])
        message = {k: v for k, v in data.items() if k not in SERVER_FIELDS}
        message.setdefault("id", str(uuid.uuid4()))
        message.setdefault("text", "")
        draft = Draft(user_id=user_id, cid=cid, parent_id=parent_id, message=message,
                      created_at=self.clock.now())
        self.drafts[(user_id, cid, parent_id or "")] = draft
        self.emit(self.channel_event("draft.updated", channel, draft=draft_obj(draft),
                                     user=user_obj(self.user(user_id))),
                  channel, only_user=user_id)
        return {"draft": draft_obj(draft)}

    def delete_draft(self, user_id: str, cid: str, *, parent_id: str | None = None
                     ) -> dict[str, Any]:
        channel = self.channel(cid)
        draft = self.drafts.pop((user_id, cid, parent_id or ""), None)
        if draft is None:
            raise not_found(f"no draft in '{cid}'" + (f" for thread '{parent_id}'"
                                                     if parent_id else ""))
        self.emit(self.channel_event("draft.deleted", channel, draft=draft_obj(draft),
                                     user=user_obj(self.user(user_id))),
                  channel, only_user=user_id)
        return {}

    # -- the admin view ---------------------------------------------------------------------------

    def dump(self) -> dict[str, Any]:
        """Everything, for tests comparing the server with a client's tables."""
        messages = []
        for channel in self.channels.values():
            for mid in channel.message_ids:
                message = self.messages[mid]
                messages.append({**message_obj(self, message),
                                 "deleted": message.type == "deleted",
                                 "deleted_for": sorted(message.deleted_for)})
        hard_deleted = sorted(self.used_message_ids - set(self.messages))
        return {
            "users": [user_obj(u) for u in self.users.values()],
            "channels": [{**channel_obj(self, c),
                          "members": [member_obj(self, m) for m in c.members.values()],
                          "message_count": c.message_count} for c in self.channels.values()],
            "messages": messages,
            "hard_deleted_message_ids": hard_deleted,
            "reactions": [reaction_obj(self, r) for per in self.reactions.values()
                          for r in per.values()],
            "reads": [{"cid": cid, "user_id": uid, "last_read": iso(r.last_read),
                       "unread_messages": r.unread_messages,
                       "last_read_message_id": r.last_read_message_id}
                      for (cid, uid), r in self.reads.items()],
            "drafts": [{**draft_obj(d), "user_id": d.user_id} for d in self.drafts.values()],
            "send_attempts": dict(self.send_attempts),
            "send_applied": dict(self.send_applied),
            "events": len(self.history),
        }
