"""What the projections read of each payload: lean msgspec structs, one decoding pass.

Only the fields that decide a row are declared; everything else in the payload is skipped by the
decoder without building objects (the bytes stay in the log for whoever wants the whole thing).
Times stay RFC 3339 text here and are converted only where a row needs them.
"""

from __future__ import annotations

import msgspec

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


class SyncResult(msgspec.Struct, gc=False):
    """The summary entry of a `/sync` (or of another way the gap was closed)."""

    synced_at: str | None = None


EVENT = msgspec.json.Decoder(Event)
CHANNEL = msgspec.json.Decoder(Channel)
CHANNEL_STATE = msgspec.json.Decoder(ChannelState)
SYNC_RESULT = msgspec.json.Decoder(SyncResult)
QUERY_RESULT = msgspec.json.Decoder(QueryResult)
