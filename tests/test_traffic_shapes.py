"""Shapes the backend sends in real traffic, written here by hand: each one projects right.

Thread reads, partial `membership`, channel-state flags, reactions carrying the whole message,
system messages on channel events, reactions inside channel states, thread notifications, Go's
zero time, and unread marks for channels known only by that mark.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import pytest

from chatledger import ChatStore
from fixtures import event, message, user

CID = "messaging:general"
ZERO = "0001-01-01T00:00:00Z"


@pytest.fixture()
def store(tmp_path: Path) -> ChatStore:
    s = ChatStore.open(tmp_path, "alice")
    yield s
    assert s.verify() == []
    s.close()


def at(n: int) -> str:
    return f"2026-11-25T10:{n // 60:02d}:{n % 60:02d}.000000Z"


def channel_object(cid: str = CID, **fields: Any) -> dict[str, Any]:
    kind, ident = cid.split(":", 1)
    return {"id": ident, "type": kind, "cid": cid, "created_at": at(0), "updated_at": at(0),
            "member_count": 2, "frozen": False, "disabled": False, **fields}


def state(cid: str = CID, **fields: Any) -> bytes:
    """A channel state (one entry of a query-channels answer)."""
    body: dict[str, Any] = {"channel": channel_object(cid), "messages": [], "pinned_messages": [],
                            "members": [], "read": [], "watcher_count": 0}
    body.update(fields)
    return msgspec.json.encode(body)


def reaction_object(mid: str, uid: str, kind: str, n: int) -> dict[str, Any]:
    return {"message_id": mid, "user_id": uid, "user": user(uid), "type": kind, "score": 1,
            "created_at": at(n), "updated_at": at(n)}


# -- 1: a thread read leaves the channel's read state alone ---------------------------------------


def test_a_thread_read_does_not_touch_the_channel_read(store: ChatStore) -> None:
    store.ingest_many([event("message.new", at=at(i), message=message(f"m{i}", at=at(i)),
                             user=user("bob")) for i in range(1, 4)])
    store.ingest(event("message.read", at=at(9), user=user("alice"), last_read_message_id="r2",
                       thread={"parent_message_id": "m1", "channel_cid": CID, "reply_count": 2,
                               "participants": [{"user_id": "bob", "user": user("bob")}]}))
    assert store.unread_counts().channels == {CID: 3}
    [read] = [r for r in store.reads(CID) if r.user_id == "alice"]
    assert read.last_read is None and read.last_read_message_id is None
    # The thread's own read state is kept, and an older thread read arriving late leaves it.
    [thread_read] = store.thread_reads("m1")
    assert (thread_read.user_id, thread_read.last_read_message_id) == ("alice", "r2")
    assert thread_read.cid == CID and thread_read.last_read is not None
    store.ingest(event("message.read", at=at(5), user=user("alice"), last_read_message_id="r1",
                       thread={"parent_message_id": "m1", "channel_cid": CID}))
    assert [r.last_read_message_id for r in store.thread_reads("m1")] == ["r2"]
    assert store.thread_reads("m2") == []
    assert store.verify() == []


# -- 2: membership and members[] merge ------------------------------------------------------------


def test_a_partial_membership_keeps_the_role_members_give(store: ChatStore) -> None:
    members = [{"user_id": "alice", "user": user("alice"), "role": "owner",
                "channel_role": "channel_member", "created_at": at(0), "updated_at": at(0)},
               {"user_id": "bob", "user": user("bob"), "role": "member",
                "channel_role": "channel_member", "created_at": at(0), "updated_at": at(0)}]
    membership = {"user": user("alice"), "channel_role": "channel_member",
                  "created_at": at(0), "updated_at": at(0), "banned": False}
    store.ingest_channel_state(state(members=members, membership=membership))
    roles = {m.user_id: (m.role, m.channel_role) for m in store.members(CID)}
    assert roles == {"alice": ("owner", "channel_member"), "bob": ("member", "channel_member")}
    [summary] = store.channels()
    assert summary.membership.role == "owner"
    assert store.channel(CID).membership.role == "owner"
    # An event about the member without a role keeps it too; one with a pin sets it, and an
    # explicit null unpins.
    store.ingest(event("member.updated", at=at(2),
                       member={"user_id": "alice", "pinned_at": at(2), "updated_at": at(2)}))
    assert store.channel(CID).membership.role == "owner"
    assert store.channel(CID).membership.pinned_at is not None
    store.ingest(event("member.updated", at=at(3),
                       member={"user_id": "alice", "pinned_at": None, "updated_at": at(3)}))
    assert store.channel(CID).membership.pinned_at is None


# -- 3: a channel state's own hidden flag ---------------------------------------------------------


def test_a_hidden_channel_state_is_hidden(store: ChatStore) -> None:
    store.ingest_channel_state(state(hidden=True))
    store.ingest_channel_state(state("messaging:shown"))
    assert [s.cid for s in store.channels()] == ["messaging:shown"]
    assert [s.cid for s in store.channels({"hidden": True})] == [CID]
    store.ingest_channel_state(state(hidden=False))
    assert sorted(s.cid for s in store.channels()) == [CID, "messaging:shown"]


# -- 5: a reaction to a message not on file files the message -------------------------------------


def test_a_reaction_to_a_message_not_on_file_stores_the_message(store: ChatStore) -> None:
    whole = {**message("m1", at=at(1), text="never seen"), "reaction_counts": {"like": 1},
             "reaction_scores": {"like": 1},
             "latest_reactions": [reaction_object("m1", "bob", "like", 2)], "own_reactions": []}
    store.ingest(event("reaction.new", at=at(2), user=user("bob"), message=whole,
                       reaction=reaction_object("m1", "bob", "like", 2)))
    stored = store.message("m1")
    assert stored is not None and stored.json()["reaction_counts"] == {"like": 1}
    assert stored.json()["text"] == "never seen"
    assert [m.id for m in store.messages(CID)] == ["m1"]
    assert [r.user_id for r in store.reactions("m1")] == ["bob"]


# -- 6: the system message of channel.updated -----------------------------------------------------


def test_the_system_message_of_a_channel_update_is_in_the_history(store: ChatStore) -> None:
    store.ingest(event("channel.updated", at=at(4), user=user("bob"),
                       channel=channel_object(name="Renamed", updated_at=at(4)),
                       message={**message("sys1", at=at(4), text="Bob renamed the channel"),
                                "type": "system"}))
    assert store.channels()[0].name == "Renamed"
    assert [m.id for m in store.messages(CID)] == ["sys1"]
    assert store.message("sys1").type == "system"
    assert store.unread_counts().channels == {}  # a system message is not unread


# -- 7: reactions inside channel states -----------------------------------------------------------


def test_latest_and_own_reactions_of_a_channel_state_reach_reactions(store: ChatStore) -> None:
    m1 = {**message("m1", at=at(1)), "reaction_counts": {"like": 2, "love": 1},
          "latest_reactions": [reaction_object("m1", "bob", "like", 2),
                               reaction_object("m1", "carol", "love", 3)],
          "own_reactions": [reaction_object("m1", "alice", "like", 4)]}
    store.ingest_channel_state(state(messages=[m1]))
    assert sorted((r.user_id, r.type) for r in store.reactions("m1")) == [
        ("alice", "like"), ("bob", "like"), ("carol", "love")]
    assert [(r.user_id, r.type) for r in store.reactions("m1", own=True)] == [
        ("alice", "like")]


def test_a_reaction_value_the_table_cannot_hold_costs_only_that_reaction(store: ChatStore) -> None:
    huge = {**reaction_object("m1", "bob", "like", 2), "score": 2**70}
    m1 = {**message("m1", at=at(1)),
          "latest_reactions": [huge, reaction_object("m1", "carol", "love", 3)]}
    store.ingest_channel_state(state(messages=[m1, message("m2", at=at(2))],
                                     members=[{"user_id": "bob", "user": user("bob")}]))
    assert [m.id for m in store.messages(CID)] == ["m1", "m2"]
    # The score no column holds is left out (and recorded); the reaction itself is known.
    assert sorted(r.user_id for r in store.reactions("m1")) == ["bob", "carol"]
    assert [entry.reason for entry in store.unprojected()] and "64 bits" in (
        store.unprojected()[0].reason)
    assert [m.user_id for m in store.members(CID)] == ["bob"]
    assert store.verify() == []


# -- 8: notification.thread_message_new -----------------------------------------------------------


def test_a_thread_notification_stores_the_reply_and_touches_its_thread(store: ChatStore) -> None:
    store.ingest(event("message.new", at=at(1), message=message("p", at=at(1), uid="alice"),
                       user=user("alice")))
    store.ingest(event("thread.updated", at=at(2),
                       thread={"parent_message_id": "p", "channel_cid": CID, "reply_count": 1,
                               "participant_count": 2, "last_message_at": at(2),
                               "updated_at": at(2)}))
    reply = message("r2", at=at(5), parent_id="p")
    store.ingest(event("notification.thread_message_new", at=at(5), message=reply,
                       channel=channel_object(), user=user("bob")))
    assert [m.id for m in store.thread("p")] == ["r2"]
    assert store.message("p").reply_count == 2
    [thread] = store.threads()
    assert thread.reply_count == 2 and thread.last_message_at is not None
    assert store.unread_counts().channels == {}  # a reply only in its thread
    store.ingest(event("message.new", at=at(5), message=reply, user=user("bob")))
    assert store.message("p").reply_count == 2  # the same reply again counts once


# -- 12: Go's zero time is unset ------------------------------------------------------------------


def test_the_zero_time_is_unset_in_rows(store: ChatStore) -> None:
    channel = channel_object(last_message_at=ZERO, truncated_at=ZERO, deleted_at=ZERO)
    members = [{"user_id": "alice", "user": {**user("alice"), "last_active": ZERO},
                "role": "owner", "pinned_at": ZERO, "archived_at": ZERO, "created_at": ZERO,
                "updated_at": ZERO}]
    store.ingest_channel_state(state(
        channel=channel, members=members,
        messages=[{**message("m1", at=at(1)), "pinned_at": ZERO, "deleted_at": ZERO}],
        read=[{"user": user("alice"), "last_read": ZERO, "unread_messages": 0}]))
    [summary] = store.channels()  # not deleted, not truncated
    assert summary.membership.pinned_at is None and summary.membership.archived_at is None
    assert store.channels({"pinned": True}) == [] and store.channels({"archived": True}) == []
    assert store.message("m1").deleted_at is None
    assert store.user("alice").row["last_active"] is None
    assert [m.id for m in store.messages(CID)] == ["m1"]


# -- 13: an unread mark for a channel known only by that mark -------------------------------------


def test_an_unread_mark_for_a_channel_not_on_file_is_counted(store: ChatStore) -> None:
    store.ingest(event("notification.mark_unread", cid="messaging:new", at=at(3),
                       user=user("alice"), last_read_at=at(1), unread_messages=4,
                       last_read_message_id="x0", first_unread_message_id="x1"))
    assert msgspec.structs.asdict(store.unread_counts()) == {
        "total_unread_count": 4, "unread_channels": 1, "channels": {"messaging:new": 4}}
