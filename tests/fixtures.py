"""Hand-written Stream-shaped payloads (from docs/wire.md), for tests that need a few events."""

from __future__ import annotations

import msgspec

T0 = "2026-11-25T10:00:00.000000Z"


def user(uid: str = "alice") -> dict:
    return {"id": uid, "name": uid.title(), "role": "user", "online": True,
            "created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:00Z",
            "favourite_colour": "teal"}


def message_new(cid: str = "messaging:general", mid: str = "m1", text: str = "hello",
                at: str = T0, uid: str = "alice") -> bytes:
    channel_type, channel_id = cid.split(":", 1)
    return msgspec.json.encode({
        "type": "message.new", "cid": cid, "channel_type": channel_type,
        "channel_id": channel_id, "created_at": at, "message_id": mid,
        "channel_member_count": 2, "user": user(uid),
        "message": {"id": mid, "cid": cid, "text": text, "type": "regular", "user": user(uid),
                    "attachments": [], "mentioned_users": [], "reaction_counts": None,
                    "latest_reactions": [], "created_at": at, "updated_at": at,
                    "pinned_at": None, "custom_flag": True},
    })


def reaction_new(cid: str = "messaging:general", mid: str = "m1", kind: str = "like",
                 at: str = T0) -> bytes:
    return msgspec.json.encode({
        "type": "reaction.new", "cid": cid, "channel_type": cid.split(":")[0],
        "channel_id": cid.split(":")[1], "created_at": at,
        "reaction": {"message_id": mid, "user_id": "bob", "type": kind, "score": 1,
                     "created_at": at, "updated_at": at},
        "message": {"id": mid, "text": "hello", "reaction_counts": {kind: 1}},
        "user": user("bob"),
    })


def health_check(connection_id: str = "conn-1", at: str = T0) -> bytes:
    return msgspec.json.encode({"type": "health.check", "cid": "*", "connection_id": connection_id,
                                "created_at": at, "me": {**user("alice"), "total_unread_count": 0}})


def channel_state(cid: str, messages: int = 2) -> dict:
    channel_type, channel_id = cid.split(":", 1)
    return {
        "channel": {"id": channel_id, "type": channel_type, "cid": cid, "member_count": 2,
                    "created_at": T0, "updated_at": T0, "last_message_at": T0, "frozen": False,
                    "team_colour": "blue"},
        "messages": [msgspec.json.decode(message_new(cid, f"{cid}-m{i}"))["message"]
                     for i in range(messages)],
        "members": [{"user_id": "alice", "user": user("alice"), "channel_role": "channel_member"}],
        "read": [{"user": user("alice"), "last_read": T0, "unread_messages": 0}],
        "pinned_messages": [], "watcher_count": 1,
    }


def query_channels_response(cids: list[str]) -> bytes:
    return msgspec.json.encode({"channels": [channel_state(c) for c in cids], "duration": "3.1ms"})


def sync_response(events: list[bytes], inaccessible: list[str] | None = None) -> bytes:
    return (b'{"events":[' + b",".join(events) + b'],"inaccessible_cids":'
            + msgspec.json.encode(inaccessible or []) + b',"duration":"1.2ms"}')


def event(kind: str, cid: str | None = "messaging:general", at: str = T0, **fields) -> bytes:
    body = {"type": kind, "created_at": at, **fields}
    if cid is not None:
        body["cid"] = cid
        body["channel_type"], body["channel_id"] = cid.split(":", 1)
    return msgspec.json.encode(body)


def message(mid: str, cid: str = "messaging:general", at: str = T0, uid: str = "bob",
            text: str = "hi", **fields) -> dict:
    return {"id": mid, "cid": cid, "text": text, "type": "regular", "user": user(uid),
            "created_at": at, "updated_at": at, **fields}
