"""Seeding: users and channels (with members and message history) put into a `State`.

Seeding a running server goes through the same writes as requests, so connected clients get
`member.added` / `notification.added_to_channel` / `message.new` exactly as for real traffic.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from chatledger.sync.devserver.state import CHANNEL_FIELDS, State
from chatledger.sync.devserver.wire import input_error

SeedUser = dict[str, Any] | str
SeedChannel = dict[str, Any]


def seed(state: State, users: Iterable[SeedUser] = (), channels: Iterable[SeedChannel] = ()
         ) -> dict[str, Any]:
    """Add users, then channels: `{"type", "id", "members": [ids], "created_by_id",
    "messages": [{"user_id", "text", ...}], custom...}`. An existing channel gains the new
    members and messages. Returns what was added."""
    added_users = [state.upsert_user(u).id for u in users]
    added_channels, added_members, added_messages = [], 0, 0
    for spec in channels:
        if not isinstance(spec, dict) or not spec.get("type") or not spec.get("id"):
            raise input_error("each seeded channel needs a type and an id")
        # A seed is the developer's own input: its member ids are taken as they are.
        members: list[Any] = [m.get("user_id") if isinstance(m, dict) else m
                              for m in spec.get("members", [])]
        cid = f"{spec['type']}:{spec['id']}"
        custom = {k: v for k, v in spec.items() if k not in CHANNEL_FIELDS}
        if cid not in state.channels:
            creator = spec.get("created_by_id") or (members[0] if members else None)
            state.create_channel(spec["type"], spec["id"], created_by=creator, members=members,
                                 custom=custom)
            added_channels.append(cid)
            added_members += len(members)
        else:
            state.channels[cid].custom.update(custom)
            added_members += sum(state.add_member(cid, m) for m in members)
        for message in spec.get("messages", []):
            message = dict(message)
            author = message.pop("user_id", None) or message.pop("user", None)
            if not isinstance(author, str):
                raise input_error(f"seeded message in {cid} needs a user_id")
            if author not in state.channels[cid].members:
                state.add_member(cid, author)
            state.send_message(author, cid, message)
            added_messages += 1
    return {"users": added_users, "channels": added_channels, "members": added_members,
            "messages": added_messages}


DEMO_USERS: list[SeedUser] = [
    {"id": "alice", "name": "Alice Liddell", "image": "https://example.com/alice.png"},
    {"id": "bob", "name": "Bob Builder", "title": "site lead"},
    {"id": "carol", "name": "Carol Danvers"},
    {"id": "dave", "name": "Dave Bowman"},
]


def demo_channels() -> list[SeedChannel]:
    """A few channels with some history: a team room with a thread and a quote, a direct
    chat, a support channel with custom data, and an empty one."""
    return [
        {"type": "messaging", "id": "general", "name": "General",
         "members": ["alice", "bob", "carol", "dave"],
         "messages": [
             {"id": "demo-welcome", "user_id": "alice", "text": "Welcome to the dev server!"},
             {"id": "demo-hello", "user_id": "bob", "text": "Hello everyone"},
             {"id": "demo-thread-1", "user_id": "carol", "text": "Thread: lunch plans?",
              "parent_id": "demo-welcome"},
             {"id": "demo-thread-2", "user_id": "dave", "text": "Pizza, obviously",
              "parent_id": "demo-welcome", "show_in_channel": True},
             {"id": "demo-quote", "user_id": "alice", "text": "Agreed with Bob",
              "quoted_message_id": "demo-hello", "mentioned_users": ["bob"]},
         ]},
        {"type": "messaging", "id": "alice-bob", "members": ["alice", "bob"],
         "messages": [
             {"id": "demo-dm-1", "user_id": "bob", "text": "Are you coming tomorrow?"},
             {"id": "demo-dm-2", "user_id": "alice", "text": "Yes, at ten",
              "priority": "high"},
         ]},
        {"type": "team", "id": "support", "name": "Support", "region": "eu",
         "members": ["alice", "carol"],
         "messages": [
             {"id": "demo-ticket", "user_id": "carol", "text": "Ticket #42 is open",
              "attachments": [{"type": "file", "title": "log.txt",
                               "asset_url": "https://example.com/log.txt"}],
              "ticket": {"id": 42, "state": "open"}},
         ]},
        {"type": "messaging", "id": "random", "name": "Random",
         "members": ["alice", "bob", "carol"]},
    ]


def demo_seed(state: State) -> dict[str, Any]:
    return seed(state, DEMO_USERS, demo_channels())


SEEDS = {"demo": demo_seed, "empty": lambda state: seed(state)}
