"""The newest state wins, by the server's clock: events delivered out of order.

A WebSocket frame can land while an older `/sync` answer is still being ingested, and a retried
request's answer can come after later events. Every object's own times (`updated_at`,
`deleted_at`, the event's `created_at`, a read's time) order its states; the arrival order
does not. An older event stays in the log but never rolls a row back; deletions are sticky.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chatledger import ChatStore
from fixtures import event, message, user

CID = "messaging:general"


@pytest.fixture()
def store(tmp_path: Path) -> ChatStore:
    s = ChatStore.open(tmp_path, "alice")
    yield s
    assert s.verify() == []  # a rebuild replays the log into the same tables
    s.close()


def at(n: int) -> str:
    return f"2026-11-25T10:{n // 60:02d}:{n % 60:02d}.000000Z"


def new(mid: str, n: int, **fields: Any) -> bytes:
    return event("message.new", at=at(n), message=message(mid, at=at(n), **fields),
                 user=user("bob"))


def updated(mid: str, created: int, n: int, text: str, **fields: Any) -> bytes:
    return event("message.updated", at=at(n),
                 message={**message(mid, at=at(created), text=text), "updated_at": at(n), **fields})


def soft_deleted(mid: str, created: int, n: int) -> bytes:
    return event("message.deleted", at=at(n),
                 message={**message(mid, at=at(created), text="gone"), "type": "deleted",
                          "deleted_at": at(n), "updated_at": at(n)})


def hard_deleted(mid: str, created: int, n: int, **fields: Any) -> bytes:
    return event("message.deleted", at=at(n), hard_delete=True,
                 message={**message(mid, at=at(created)), "deleted_at": at(n), **fields})


def reaction(kind: str, mid: str, created: int, n: int, uid: str = "carol",
             counts: dict[str, int] | None = None, **fields: Any) -> bytes:
    return event(kind, at=at(n),
                 reaction={"message_id": mid, "user_id": uid, "user": user(uid), "type": "like",
                           "score": 1, "created_at": at(n), "updated_at": at(n)},
                 message={**message(mid, at=at(created)),
                          "reaction_counts": counts if counts is not None else {"like": 1},
                          **fields},
                 user=user(uid))


# -- the three reported cases ---------------------------------------------------------------------


def test_a_soft_delete_stays_against_an_older_update(store: ChatStore) -> None:
    store.ingest(new("m1", 1))
    store.ingest(soft_deleted("m1", 1, 3))
    store.ingest(updated("m1", 1, 2, "edited at T2"))  # a late frame of an older state
    row = store.message("m1")
    assert row.type == "deleted" and row.deleted_at is not None
    assert row.json()["text"] == "gone"


def test_a_late_message_new_does_not_revert_a_newer_update(store: ChatStore) -> None:
    store.ingest(new("m1", 1, text="first"))
    store.ingest(updated("m1", 1, 3, "third"))
    store.ingest(new("m1", 1, text="first"))  # the answer of a retried request, late
    assert store.message("m1").json()["text"] == "third"


def test_a_late_update_arriving_before_the_message_new_keeps_the_newest(store: ChatStore) -> None:
    store.ingest(updated("m1", 1, 3, "third"))
    store.ingest(new("m1", 1, text="first"))
    assert store.message("m1").json()["text"] == "third"
    assert [m.id for m in store.messages(CID)] == ["m1"]


def test_a_reaction_older_than_a_hard_delete_leaves_no_orphan(store: ChatStore) -> None:
    store.ingest(new("m1", 1))
    store.ingest(hard_deleted("m1", 1, 3))
    store.ingest(reaction("reaction.new", "m1", 1, 2))
    assert store.reactions("m1") == []
    assert store.message("m1") is None


def test_a_hard_deleted_message_stays_gone_whatever_mentions_it_late(store: ChatStore) -> None:
    store.ingest(hard_deleted("m1", 1, 5))  # never seen before the deletion
    for late in (new("m1", 1), updated("m1", 1, 2, "edit"), soft_deleted("m1", 1, 3),
                 event("message.undeleted", at=at(4), message=message("m1", at=at(1))),
                 reaction("reaction.new", "m1", 1, 4)):
        store.ingest(late)
    assert store.message("m1") is None and store.reactions("m1") == []
    assert store.messages(CID) == []


def test_a_hard_deleted_reply_takes_its_count_and_pin_for_good(store: ChatStore) -> None:
    store.ingest(new("p", 1))
    store.ingest(new("r1", 2, parent_id="p", pinned=True, pinned_at=at(2)))
    store.ingest(new("r2", 3, parent_id="p"))
    assert store.message("p").reply_count == 2
    store.ingest(hard_deleted("r1", 2, 6, parent_id="p"))
    store.ingest(new("r1", 2, parent_id="p", pinned=True, pinned_at=at(2)))  # late, from /sync
    store.ingest(reaction("reaction.new", "r1", 2, 4, parent_id="p"))
    assert store.message("p").reply_count == 1
    assert [m.id for m in store.thread("p")] == ["r2"]
    assert store.pinned(CID) == []


def test_reply_counts_do_not_depend_on_the_order_replies_and_parents_arrive(
    store: ChatStore,
) -> None:
    store.ingest(new("r2", 2, parent_id="p"))  # a reply before its parent
    store.ingest(new("p", 1))
    assert store.message("p").reply_count == 1
    store.ingest(updated("p", 1, 4, "edited", reply_count=2))  # counts r2 and r3
    store.ingest(new("r3", 3, parent_id="p"))  # late: already in the count
    assert store.message("p").reply_count == 2
    store.ingest(new("r5", 5, parent_id="p"))
    assert store.message("p").reply_count == 3
    store.ingest(hard_deleted("r3", 3, 6, parent_id="p"))
    store.ingest(hard_deleted("r3", 3, 6, parent_id="p"))  # the same deletion again
    assert store.message("p").reply_count == 2


def test_a_reply_never_on_file_leaves_the_count_when_hard_deleted(store: ChatStore) -> None:
    store.ingest(updated("p", 1, 3, "edited", reply_count=1))  # counts a reply made at T2
    store.ingest(hard_deleted("r2", 2, 4, parent_id="p"))
    assert store.message("p").reply_count == 0


def test_a_truncation_stays_against_older_messages_delivered_late(store: ChatStore) -> None:
    store.ingest_many([new("m1", 1), new("m3", 3)])
    store.ingest(event("channel.truncated", at=at(5),
                       channel={"cid": CID, "id": "general", "type": "messaging",
                                "truncated_at": at(4), "updated_at": at(5)}))
    store.ingest(new("m2", 2))  # sent before the truncation, delivered after it
    store.ingest(updated("m1", 1, 3, "edited before the truncation"))
    store.ingest(new("m6", 6))
    assert [m.id for m in store.messages(CID)] == ["m6"]
    assert store.message("m2") is None and store.message("m1") is None


def test_a_deleted_channel_stays_deleted_against_older_events(store: ChatStore) -> None:
    def channel(n: int, **fields: Any) -> dict[str, Any]:
        return {"cid": CID, "id": "general", "type": "messaging", "created_at": at(n),
                "updated_at": at(n), **fields}

    store.ingest(new("m1", 1))
    store.ingest(event("channel.deleted", at=at(5), channel=channel(0, deleted_at=at(5))))
    for late in (new("m3", 3), event("member.added", at=at(2), member={"user_id": "bob"}),
                 event("channel.updated", at=at(4), channel=channel(0, name="Old"))):
        store.ingest(late)
    stale = {"channel": channel(0), "messages": [message("m4", at=at(4))], "members": []}
    store.ingest_channel_state(msgspec.json.encode(stale))  # a query answered before it
    assert store.channels() == [] and store.channel(CID) is None
    assert store.message("m3") is None and store.message("m4") is None
    # The same cid made again later is a new channel.
    store.ingest_channel_state(msgspec.json.encode(
        {"channel": channel(6, name="Again"), "messages": [message("m6", at=at(6))]}))
    store.ingest(new("m7", 7))
    assert [s.name for s in store.channels()] == ["Again"]
    assert [m.id for m in store.messages(CID)] == ["m6", "m7"]


def test_a_channel_left_stays_left_against_older_events(store: ChatStore) -> None:
    store.ingest(new("m1", 1))
    store.ingest(event("notification.removed_from_channel", at=at(5),
                       member={"user_id": "alice"}))
    store.ingest(new("m3", 3))  # from before the removal, delivered after it
    assert store.channels() == [] and store.unread_counts().channels == {}
    store.ingest(event("notification.added_to_channel", at=at(8),
                       member={"user_id": "alice", "user": user("alice")}))
    store.ingest(new("m9", 9))
    assert [s.cid for s in store.channels()] == [CID]
    assert [m.id for m in store.messages(CID)] == ["m9"]


# -- the same rule for every object ---------------------------------------------------------------


def test_an_undelete_stays_against_an_older_soft_delete(store: ChatStore) -> None:
    store.ingest(new("m1", 1))
    store.ingest(event("message.undeleted", at=at(4),
                       message={**message("m1", at=at(1), text="back"), "updated_at": at(4)}))
    store.ingest(soft_deleted("m1", 1, 3))
    row = store.message("m1")
    assert row.type == "regular" and row.deleted_at is None and row.json()["text"] == "back"


def test_a_late_reaction_event_does_not_roll_back_the_message(store: ChatStore) -> None:
    store.ingest(new("m1", 1))
    store.ingest(updated("m1", 1, 5, "fifth"))
    store.ingest(reaction("reaction.new", "m1", 1, 3))  # carries the message as it was at T3
    assert store.message("m1").json()["text"] == "fifth"
    assert [r.user_id for r in store.reactions("m1")] == ["carol"]  # the reaction itself is new


def test_a_reaction_deleted_later_stays_deleted_against_an_older_add(store: ChatStore) -> None:
    store.ingest(new("m1", 1))
    store.ingest(reaction("reaction.deleted", "m1", 1, 4, counts={}))
    store.ingest(reaction("reaction.new", "m1", 1, 3))
    assert store.reactions("m1") == []
    store.ingest(reaction("reaction.new", "m1", 1, 6, counts={"like": 1}))  # added again, later
    assert [r.user_id for r in store.reactions("m1")] == ["carol"]
    store.ingest(reaction("reaction.deleted", "m1", 1, 5, counts={}))  # older than the re-add
    assert [r.user_id for r in store.reactions("m1")] == ["carol"]


def test_a_reaction_given_again_shows_its_second_creation_whatever_the_order(
        store: ChatStore) -> None:
    # Given at T3, removed at T4, given again at T5; the removal arrives last. The row is the
    # reaction of T5, created then, not the first one's creation time with the newer update.
    store.ingest(new("m1", 1))
    store.ingest(reaction("reaction.new", "m1", 1, 3))
    store.ingest(reaction("reaction.new", "m1", 1, 5))
    store.ingest(reaction("reaction.deleted", "m1", 1, 4, counts={}))
    [given] = store.reactions("m1")
    assert given.created is not None and given.created.second == 5
    assert given.updated == given.created


def test_an_older_read_does_not_undo_a_newer_one(store: ChatStore) -> None:
    store.ingest_many([new(f"m{i}", i) for i in range(1, 4)])
    store.ingest(event("message.read", at=at(5), user=user("alice"), last_read_message_id="m3"))
    store.ingest(event("notification.mark_unread", at=at(4), user=user("alice"),
                       last_read_at=at(1), unread_messages=2, last_read_message_id="m1",
                       first_unread_message_id="m2"))
    assert store.unread_counts().channels == {}
    [read] = [r for r in store.reads(CID) if r.user_id == "alice"]
    assert read.last_read_message_id == "m3"


def test_a_message_older_than_the_read_mark_is_not_unread(store: ChatStore) -> None:
    store.ingest(new("m1", 1))
    store.ingest(event("message.read", at=at(5), user=user("alice"), last_read_message_id="m1"))
    store.ingest(new("m0", 3))  # sent before the read mark, delivered after it
    assert store.unread_counts().channels == {}
    store.ingest(new("m9", 9))
    assert store.unread_counts().channels == {CID: 1}


def test_an_older_member_event_does_not_undo_a_newer_one(store: ChatStore) -> None:
    store.ingest(event("member.updated", at=at(3),
                       member={"user_id": "bob", "user": user("bob"), "role": "moderator",
                               "channel_role": "channel_moderator", "updated_at": at(3)}))
    store.ingest(event("member.added", at=at(1),
                       member={"user_id": "bob", "user": user("bob"), "role": "member",
                               "channel_role": "channel_member", "updated_at": at(1)}))
    [bob] = store.members(CID)
    assert (bob.role, bob.channel_role) == ("moderator", "channel_moderator")


def test_an_older_channel_object_does_not_undo_a_newer_one(store: ChatStore) -> None:
    def renamed(name: str, n: int) -> bytes:
        return event("channel.updated", at=at(n),
                     channel={"cid": CID, "id": "general", "type": "messaging", "name": name,
                              "updated_at": at(n), "frozen": n > 2})

    store.ingest(renamed("Third", 3))
    store.ingest(renamed("Second", 2))
    [summary] = store.channels()
    assert summary.name == "Third"
    assert store.channel(CID).channel["name"] == "Third"


def test_an_older_delivery_mark_does_not_undo_a_newer_one(store: ChatStore) -> None:
    store.ingest_many([new("m1", 1), new("m2", 2)])
    store.ingest(event("message.delivered", at=at(4), user=user("bob"),
                       last_delivered_at=at(4), last_delivered_message_id="m2"))
    store.ingest(event("message.delivered", at=at(3), user=user("bob"),
                       last_delivered_at=at(3), last_delivered_message_id="m1"))
    [read] = [r for r in store.reads(CID) if r.user_id == "bob"]
    assert read.last_delivered_message_id == "m2"


def test_an_older_hide_or_show_does_not_undo_a_newer_one(store: ChatStore) -> None:
    store.ingest(new("m1", 1))
    store.ingest(event("channel.hidden", at=at(5), user=user("alice")))
    store.ingest(event("channel.visible", at=at(4), user=user("alice")))
    assert store.channels() == []
    store.ingest(event("channel.visible", at=at(7), user=user("alice")))
    store.ingest(event("channel.hidden", at=at(6), user=user("alice")))
    assert [s.cid for s in store.channels()] == [CID]


def test_a_removed_member_stays_removed_against_older_member_events(store: ChatStore) -> None:
    store.ingest(event("member.added", at=at(1), member={"user_id": "bob", "user": user("bob"),
                                                         "created_at": at(1), "updated_at": at(1)}))
    store.ingest(event("member.removed", at=at(5), member={"user_id": "bob"}))
    store.ingest(event("member.updated", at=at(3), member={"user_id": "bob", "role": "moderator",
                                                           "updated_at": at(3)}))
    assert store.members(CID) == []
    store.ingest(event("member.added", at=at(8), member={"user_id": "bob", "created_at": at(8),
                                                         "updated_at": at(8)}))
    assert [m.user_id for m in store.members(CID)] == ["bob"]


def test_an_older_user_object_does_not_undo_a_newer_one(store: ChatStore) -> None:
    store.ingest(event("user.updated", cid=None, at=at(3),
                       user={**user("bob"), "name": "Robert", "updated_at": at(3)}))
    store.ingest(event("user.updated", cid=None, at=at(2),
                       user={**user("bob"), "name": "Bobby", "updated_at": at(2)}))
    assert store.user("bob").name == "Robert"


def test_a_local_edit_in_flight_still_shows_over_an_older_backend_state(store: ChatStore) -> None:
    store.ingest(new("m1", 1))
    store.ingest(updated("m1", 1, 3, "server third"))
    command_id = store.update_message("m1", "mine")
    store.outbox.start([command_id])  # on its way: a newer backend state would confirm it
    store.ingest(updated("m1", 1, 2, "server second"))  # late and older: changes nothing
    row = store.message("m1")
    assert row.local_state == "updating" and row.json()["text"] == "mine"


# -- any order of delivery ends in the in-order tables --------------------------------------------

_LONG = bool(os.environ.get("CHATLEDGER_TEST_LONG"))


class _History:
    """A server-side history of a few messages and replies to them: every event carries the
    object as it stands then, with its reply count."""

    def __init__(self) -> None:
        self.now = 0
        self.events: list[bytes] = []
        self.messages: dict[str, dict[str, Any]] = {}
        self.reactions: dict[str, set[str]] = {}  # message id -> users who reacted

    def _tick(self) -> str:
        self.now += 1
        return at(self.now)

    def _state(self, mid: str) -> dict[str, Any]:
        """The message as the server would send it now."""
        replies = sum(1 for m in self.messages.values() if m.get("parent_id") == mid)
        counts = {"like": len(self.reactions[mid])} if self.reactions[mid] else {}
        return {**self.messages[mid], "reply_count": replies, "reaction_counts": counts}

    def apply(self, op: str, pick: int, uid: str) -> None:
        """Apply `op` to the `pick`-th message alive (modulo), or create one ("new": a message,
        "reply": a reply to the `pick`-th message alive that is not a reply itself)."""
        alive = sorted(self.messages)
        if op in ("new", "reply"):
            parents = [mid for mid in alive if not self.messages[mid].get("parent_id")]
            if op == "reply" and not parents:
                return
            mid = f"{op[0]}{len(self.reactions) + 1}"  # ids are never used twice
            when = self._tick()
            fields = {"parent_id": parents[pick % len(parents)]} if op == "reply" else {}
            self.messages[mid] = message(mid, at=when, text=f"{mid}@{when}", **fields)
            self.reactions[mid] = set()
            self.events.append(event("message.new", at=when, message=self._state(mid),
                                     user=user("bob")))
            return
        if not alive:
            return
        mid = alive[pick % len(alive)]
        current = self.messages[mid]
        deleted = current["type"] == "deleted"
        if op == "update" and not deleted:
            when = self._tick()
            current.update(text=f"{mid}@{when}", updated_at=when)
            self.events.append(event("message.updated", at=when, message=self._state(mid)))
        elif op == "soft" and not deleted:
            when = self._tick()
            current.update(type="deleted", deleted_at=when, updated_at=when)
            self.events.append(event("message.deleted", at=when, message=self._state(mid)))
        elif op == "undelete" and deleted:
            when = self._tick()
            current.update(type="regular", deleted_at=None, updated_at=when)
            self.events.append(event("message.undeleted", at=when, message=self._state(mid)))
        elif op == "hard" and not any(m.get("parent_id") == mid for m in self.messages.values()):
            when = self._tick()
            state = self._state(mid)
            del self.messages[mid]
            self.events.append(event("message.deleted", at=when, hard_delete=True,
                                     message={**state, "deleted_at": when}))
        elif op == "react" and not deleted:
            when = self._tick()
            kind = "reaction.deleted" if uid in self.reactions[mid] else "reaction.new"
            self.reactions[mid] ^= {uid}
            self.events.append(event(
                kind, at=when, user=user(uid), message=self._state(mid),
                reaction={"message_id": mid, "user_id": uid, "type": "like", "score": 1,
                          "created_at": when, "updated_at": when}))


def _history(ops: list[tuple[str, int, str]]) -> list[bytes]:
    history = _History()
    for op, pick, uid in ops:
        history.apply(op, pick, uid)
    return history.events


def _tables(store: ChatStore) -> dict[str, list[tuple[Any, ...]]]:
    """The message and reaction tables, each row with the object it shows instead of where it
    is in the log (positions differ with the order of delivery; what they point at must not)."""
    with store.log.datastore.transaction(commit=False) as c:
        messages = [r for r in c.execute(
            "SELECT id, cid, created_at, user_id, type, parent_id, show_in_channel, reply_count, "
            "pinned, pinned_at, updated_at, deleted_at, deleted_for_me, silent, local_state "
            "FROM messages ORDER BY id")]
        reactions = list(c.execute(
            "SELECT message_id, user_id, type, score, created_at, updated_at FROM reactions "
            "ORDER BY message_id, user_id, type"))
        tombstones = list(c.execute("SELECT * FROM deleted_messages ORDER BY id"))
        reaction_tombstones = list(c.execute(
            "SELECT * FROM deleted_reactions ORDER BY message_id, user_id, type"))
    shown = [(*row, msgspec.json.encode(store.message(row[0]).json(), order="sorted"))
             for row in messages]
    return {"messages": shown, "reactions": reactions, "deleted_messages": tombstones,
            "deleted_reactions": reaction_tombstones}


_OPS = st.lists(st.tuples(st.sampled_from(["new", "reply", "update", "soft", "undelete", "hard",
                                           "react"]),
                          st.integers(0, 3), st.sampled_from(["carol", "dave"])),
                min_size=8, max_size=30)


@settings(max_examples=300 if _LONG else 60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(ops=_OPS, window=st.integers(1, 6), data=st.data())
def test_any_delivery_order_within_a_window_ends_in_the_in_order_tables(
    tmp_path_factory: pytest.TempPathFactory, ops: list[tuple[str, int, str]], window: int,
    data: st.DataObject,
) -> None:
    events = _history(ops)
    # Each event may be delivered up to `window` places later than it happened.
    delays = data.draw(st.lists(st.integers(0, window), min_size=len(events),
                                max_size=len(events)))
    shuffled = [e for _, e in sorted(zip((i + d for i, d in enumerate(delays)), events),
                                     key=lambda pair: pair[0])]
    with ChatStore.open(tmp_path_factory.mktemp("ordered"), "alice") as ordered:
        ordered.ingest_many(events)
        expected = _tables(ordered)
    with ChatStore.open(tmp_path_factory.mktemp("shuffled"), "alice") as delivered:
        for e in shuffled:  # one append each, as frames arrive
            delivered.ingest(e)
        assert _tables(delivered) == expected
        assert delivered.verify() == []


def counted(mid: str, n: int, **counts: int) -> bytes:
    """A message.new whose event carries the channel's counters as of its time."""
    return event("message.new", at=at(n), message=message(mid, at=at(n)), user=user("bob"),
                 **counts)


def channel_counts(store: ChatStore) -> tuple[int | None, int | None]:
    import apsw

    assert store.path is not None
    connection = apsw.Connection(str(store.path), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        row = connection.execute("SELECT member_count, message_count FROM channels "
                                 "WHERE cid='messaging:general'").fetchone()
    finally:
        connection.close()
    return row


@pytest.mark.parametrize("together", [True, False], ids=["one batch", "apart"])
def test_channel_counters_from_a_late_event_do_not_roll_back(store: ChatStore,
                                                              together: bool) -> None:
    newer = counted("m3", 3, channel_member_count=5, channel_message_count=30)
    older = counted("m1", 1, channel_member_count=3, channel_message_count=10)
    quiet = counted("m4", 4)  # a newer event without counters says nothing about them
    if together:
        store.ingest_many([newer, older, quiet])
    else:
        for payload in (newer, older, quiet):
            store.ingest(payload)
    assert channel_counts(store) == (5, 30)
    store.ingest(counted("m5", 5, channel_member_count=6))
    assert channel_counts(store) == (6, 30)
    assert store.verify() == []


def test_cleared_history_stays_cleared_against_older_messages_delivered_late(
        store: ChatStore) -> None:
    store.ingest(new("m1", 1))
    store.ingest(event("channel.hidden", at=at(5), clear_history=True, user=user("alice")))
    assert store.message("m1") is None
    store.ingest(new("m3", 3))  # sent before the clear, delivered after it
    store.ingest(updated("m1", 1, 4, "edited before the clear"))
    store.ingest(new("m6", 6))
    assert store.message("m3") is None and store.message("m1") is None
    assert [m.id for m in store.messages("messaging:general")] == ["m6"]


def test_a_new_message_shows_a_hidden_channel_again_but_a_late_older_one_does_not(
        store: ChatStore) -> None:
    store.ingest(new("m1", 1))
    store.ingest(event("channel.hidden", at=at(5), user=user("alice")))
    hidden = {"hidden": True}
    assert [c.cid for c in store.channels(hidden)] == ["messaging:general"]
    store.ingest(new("m3", 3))  # from before the hide, delivered late
    assert [c.cid for c in store.channels(hidden)] == ["messaging:general"]
    store.ingest(new("m6", 6))
    assert store.channels(hidden) == [] and [c.cid for c in store.channels()] == [
        "messaging:general"]
    store.ingest(event("channel.hidden", at=at(4), user=user("alice")))  # older than m6
    assert store.channels(hidden) == []
