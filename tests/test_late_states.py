"""Shapes of real traffic, and deliveries out of order, that the other projection tests do not
vary: polls, drafts, threads and bans delivered late; pinned messages, truncations,
`user.messages.deleted` and `notification.mark_read` without a channel. Every test ends with
`verify()`: a rebuild makes the same tables."""

from __future__ import annotations

import itertools
import random
from pathlib import Path
from typing import Any

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


def new(mid: str, n: int, uid: str = "bob", cid: str = CID, **fields: Any) -> bytes:
    return event("message.new", cid=cid, at=at(n),
                 message=message(mid, cid=cid, at=at(n), uid=uid, **fields), user=user(uid))


def channel_object(cid: str = CID, n: int = 0, **fields: Any) -> dict[str, Any]:
    kind, ident = cid.split(":", 1)
    return {"id": ident, "type": kind, "cid": cid, "created_at": at(0), "updated_at": at(n),
            "member_count": 2, "frozen": False, "disabled": False, **fields}


def state(cid: str = CID, **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"channel": channel_object(cid), "messages": [], "pinned_messages": [],
                            "members": [], "read": [], "watcher_count": 0}
    body.update(fields)
    return body


def poll(n: int, votes: int) -> dict[str, Any]:
    return {"id": "poll-1", "name": "Lunch?", "vote_count": votes, "updated_at": at(n)}


def draft(kind: str, n: int, text: str) -> bytes:
    return event(kind, at=at(n), draft={"channel_cid": CID, "created_at": at(n),
                                        "message": {"id": f"d{n}", "text": text}})


def thread(n: int, replies: int) -> bytes:
    return event("thread.updated", at=at(n), thread={
        "parent_message_id": "p", "channel_cid": CID, "reply_count": replies,
        "participant_count": 2, "last_message_at": at(n), "updated_at": at(n)})


# -- polls, drafts, threads: the newest state wins, deletions are sticky -------------------------


def test_an_older_poll_state_delivered_late_does_not_roll_back(store: ChatStore) -> None:
    store.ingest(new("m1", 1, poll_id="poll-1"))
    m1 = message("m1", at=at(1))
    store.ingest(event("poll.vote_casted", at=at(5), poll=poll(5, 3), message=m1))
    store.ingest(event("poll.updated", at=at(3), poll=poll(3, 1), message=m1))  # late
    assert store.poll("poll-1").poll["vote_count"] == 3
    assert store.poll("poll-1").updated_at == store.polls()[0].updated_at


def test_a_deleted_poll_stays_deleted_against_an_older_update(store: ChatStore) -> None:
    store.ingest(event("poll.deleted", at=at(6), poll=poll(6, 3)))
    store.ingest(event("poll.updated", at=at(3), poll=poll(3, 1)))
    assert store.poll("poll-1") is None


def test_an_older_draft_delivered_late_does_not_replace_a_newer_one(store: ChatStore) -> None:
    store.ingest(draft("draft.updated", 5, "newer"))
    store.ingest(draft("draft.updated", 3, "older"))
    older_state = state()
    older_state["draft"] = {"channel_cid": CID, "created_at": at(4),
                            "message": {"id": "d4", "text": "from an older query"}}
    store.ingest_channel_state(older_state)
    assert store.draft(CID).draft["message"]["text"] == "newer"
    store.ingest(draft("draft.updated", 7, "newest"))
    assert store.draft(CID).draft["message"]["text"] == "newest"


def test_a_deleted_draft_stays_deleted_against_an_older_update(store: ChatStore) -> None:
    store.ingest(draft("draft.updated", 1, "first"))
    store.ingest(draft("draft.deleted", 5, "gone"))
    store.ingest(draft("draft.updated", 3, "older"))  # saved before the deletion, late
    assert store.draft(CID) is None
    store.ingest(draft("draft.updated", 6, "saved again"))
    assert store.draft(CID).draft["message"]["text"] == "saved again"


def test_an_older_thread_state_does_not_roll_back_the_thread_or_its_parent(
        store: ChatStore) -> None:
    store.ingest(new("p", 1))
    store.ingest(thread(6, 4))
    store.ingest(thread(3, 1))
    [t] = store.threads()
    assert t.reply_count == 4
    assert store.message("p").reply_count == 4


# -- bans: ordered by the events' times ----------------------------------------------------------


def test_an_older_channel_ban_does_not_undo_a_newer_unban(store: ChatStore) -> None:
    store.ingest(event("member.added", at=at(1), member={"user_id": "bob", "user": user("bob"),
                                                          "role": "member", "updated_at": at(1)}))
    store.ingest(event("user.unbanned", at=at(7), user=user("bob")))
    store.ingest(event("user.banned", at=at(5), user=user("bob")))  # late
    assert store.members(CID)[0].banned == 0
    # A member object older than the unban does not ban again; a newer one says what is.
    store.ingest(event("member.updated", at=at(6), member={"user_id": "bob", "banned": True,
                                                            "updated_at": at(6)}))
    assert store.members(CID)[0].banned == 0
    store.ingest(event("member.updated", at=at(9), member={"user_id": "bob", "banned": True,
                                                            "updated_at": at(9)}))
    assert store.members(CID)[0].banned == 1


def test_an_older_global_ban_does_not_undo_a_newer_unban(store: ChatStore) -> None:
    store.ingest(event("user.unbanned", cid=None, at=at(7), user=user("bob")))
    store.ingest(event("user.banned", cid=None, at=at(5), user=user("bob")))  # late
    assert store.user("bob").banned == 0


def test_a_ban_stands_against_the_older_user_object_of_a_later_message(store: ChatStore) -> None:
    # The user objects events carry keep the user's own times (here January), not the ban's.
    store.ingest(event("user.banned", cid=None, at=at(5), user={**user("bob"), "banned": True}))
    store.ingest(new("m6", 6))
    assert store.user("bob").banned is True
    store.ingest(event("user.updated", cid=None, at=at(7),
                       user={**user("bob"), "updated_at": at(7), "banned": False}))
    assert store.user("bob").banned is False


# -- channel states, truncations, deleted channels ------------------------------------------------


def test_a_pinned_message_older_than_the_page_pins_a_message_on_file(store: ChatStore) -> None:
    store.ingest(new("m1", 1))
    page = [message(f"m{i}", at=at(i)) for i in range(10, 13)]
    pinned = {**message("m1", at=at(1)), "pinned": True, "pinned_at": at(5),
              "updated_at": at(5), "pinned_by": user("bob")}
    store.ingest_channel_state(state(messages=page, pinned_messages=[pinned]))
    assert [m.id for m in store.pinned(CID)] == ["m1"]
    assert [m.id for m in store.channel(CID).pinned_messages] == ["m1"]


def test_a_truncation_stays_after_a_channel_update_without_truncated_at(store: ChatStore) -> None:
    store.ingest(new("m1", 1))
    store.ingest(event("channel.truncated", at=at(5),
                       channel=channel_object(n=5, truncated_at=at(5))))
    store.ingest(event("channel.updated", at=at(6), channel=channel_object(n=6, name="x")))
    store.ingest(new("m3", 3))  # from before the truncation, delivered late
    assert store.message("m3") is None
    store.ingest(new("m7", 7))
    assert [m.id for m in store.messages(CID)] == ["m7"]


def test_a_truncation_delivered_after_a_newer_channel_update_still_cuts(store: ChatStore) -> None:
    store.ingest(new("m1", 1))
    store.ingest(event("channel.updated", at=at(6), channel=channel_object(n=6, name="x")))
    store.ingest(event("channel.truncated", at=at(5),  # late: its channel object is older
                       channel=channel_object(n=5, truncated_at=at(5))))
    store.ingest(new("m3", 3))  # from before the cut, delivered later still
    assert store.message("m1") is None and store.message("m3") is None
    assert store.channels()[0].name == "x"


def test_the_system_message_of_a_truncation_stays_even_a_little_older(store: ChatStore) -> None:
    store.ingest(new("m1", 1))
    # The cut is a microsecond after the system message's creation.
    sysmsg = {**message("sys", at=at(5), text="Channel truncated"), "type": "system"}
    store.ingest(event("channel.truncated", at=at(5),
                       channel=channel_object(n=5, truncated_at="2026-11-25T10:00:05.000001Z"),
                       message=sysmsg))
    assert [m.id for m in store.messages(CID)] == ["sys"]


def test_a_truncation_takes_the_unread_messages_before_the_cut_with_it(store: ChatStore) -> None:
    store.ingest_many([new("m1", 1), new("m2", 2), new("m7", 7)])  # m7: after the cut, early
    assert store.unread_counts().channels == {CID: 3}
    store.ingest(event("channel.truncated", at=at(5),
                       channel=channel_object(n=5, truncated_at=at(5)),
                       message={**message("sys", at=at(5)), "type": "system"}))
    assert store.unread_counts().channels == {CID: 1}
    store.ingest(new("m8", 8))
    assert store.unread_counts().channels == {CID: 2}


def test_a_deleted_channel_takes_its_threads_polls_members_and_reads(store: ChatStore) -> None:
    store.ingest(new("p", 1))
    store.ingest(event("thread.updated", at=at(2), thread={
        "parent_message_id": "p", "channel_cid": CID, "reply_count": 1,
        "participant_count": 2, "last_message_at": at(2), "updated_at": at(2)}))
    store.ingest(event("poll.updated", at=at(3), poll=poll(3, 1), message=message("p", at=at(1))))
    store.ingest(event("channel.deleted", at=at(5), channel=channel_object(n=5)))
    assert store.threads() == [] and store.polls() == []
    assert store.members(CID) == [] and store.reads(CID) == []


# -- reads -------------------------------------------------------------------------------------


def test_mark_read_without_cid_reads_all_and_late_older_messages_stay_read(
        store: ChatStore) -> None:
    store.ingest(new("m1", 1))
    store.ingest(event("notification.mark_unread", at=at(3), user=user("alice"),
                       last_read_at=at(0), unread_messages=1, last_read_message_id="m0",
                       first_unread_message_id="m1"))
    store.ingest(new("m5", 5, cid="messaging:other"))
    assert store.unread_counts().total_unread_count == 2
    store.ingest(event("notification.mark_read", cid=None, at=at(8), user=user("alice")))
    assert store.unread_counts().total_unread_count == 0
    [own] = [r for r in store.reads(CID) if r.user_id == "alice"]
    assert own.first_unread_message_id is None  # nothing is unread any more
    store.ingest(new("m2", 2))
    assert store.unread_counts().total_unread_count == 0


def test_mark_read_without_cid_covers_channels_without_a_read_row(store: ChatStore) -> None:
    store.ingest_channel_state(state(messages=[message("m1", at=at(1))]))
    store.ingest(event("notification.mark_read", cid=None, at=at(8), user=user("alice")))
    store.ingest(new("m2", 2))  # from before the mark, delivered late
    assert store.unread_counts().total_unread_count == 0
    store.ingest(new("m9", 9))
    assert store.unread_counts().channels == {CID: 1}


def test_mark_read_without_cid_of_another_user_makes_no_rows_in_every_channel(
        store: ChatStore) -> None:
    # Only the own user's unread counts are kept: another user's "read everything" updates the
    # rows they have, and makes none in the channels they have no read state in (most of
    # which they are not in: a store of many channels would gain a row per channel per event).
    store.ingest_channel_state(state(messages=[message("m1", at=at(1))]))
    store.ingest_channel_state(state(cid="messaging:other", messages=[message("o1", at=at(1))]))
    store.ingest(event("message.read", cid=CID, at=at(2), user=user("carol")))
    store.ingest(event("notification.mark_read", cid=None, at=at(8), user=user("carol")))
    carol = [read for cid in (CID, "messaging:other") for read in store.reads(cid)
             if read.user_id == "carol"]
    assert [(read.cid, read.unread_messages) for read in carol] == [(CID, 0)]
    assert store.verify() == []


def test_a_read_older_than_messages_on_file_leaves_them_unread(store: ChatStore) -> None:
    store.ingest_many([new("m2", 2), new("m6", 6)])
    store.ingest(event("message.read", at=at(5), user=user("alice"), last_read_message_id="m2"))
    assert store.unread_counts().channels == {CID: 1}  # m6 came after the read
    store.ingest(event("notification.mark_unread", at=at(7), user=user("alice"),
                       last_read_at=at(1), unread_messages=2, last_read_message_id="m1",
                       first_unread_message_id="m2"))
    store.ingest(new("m8", 8, uid="alice"))  # the own message, older than m9 on file
    store.ingest(new("m9", 9))
    store.ingest(new("m10", 10, silent=True))
    store.ingest(new("m7", 7, uid="alice"))  # late and older than the mark: changes nothing
    assert store.unread_counts().channels == {CID: 1}


def test_any_order_of_reads_and_messages_gives_the_in_order_unread_count(
        tmp_path_factory: pytest.TempPathFactory) -> None:
    history = [new("m1", 1), new("m2", 2),
               event("message.read", at=at(3), user=user("alice")), new("m4", 4),
               event("notification.mark_unread", at=at(5), user=user("alice"),
                     last_read_at=at(1), unread_messages=2, first_unread_message_id="m2"),
               new("m6", 6), new("m7", 7, uid="alice"), new("m8", 8)]
    orders = list(itertools.islice(itertools.permutations(history), 0, None, 997))
    random.Random(8).shuffle(orders)
    with ChatStore.open(tmp_path_factory.mktemp("ordered"), "alice") as ordered:
        ordered.ingest_many(history)
        expected = ordered.unread_counts()
    assert expected.channels == {CID: 1}
    for order in orders[:12]:
        with ChatStore.open(tmp_path_factory.mktemp("shuffled"), "alice") as delivered:
            for payload in order:
                delivered.ingest(payload)
            assert delivered.unread_counts() == expected
            assert delivered.verify() == []


# -- times -------------------------------------------------------------------------------------


def test_times_with_offsets_and_nine_digits_order_messages(store: ChatStore) -> None:
    a = "2026-11-25T12:00:01.123456789+02:00"  # 10:00:01.123456 Z
    b = "2026-11-25T10:00:01.5Z"
    c = "2026-11-25T10:00:01Z"
    for mid, when in (("b", b), ("a", a), ("c", c)):
        store.ingest(event("message.new", at=when, message=message(mid, at=when),
                           user=user("bob")))
    assert [m.id for m in store.messages(CID)] == ["c", "a", "b"]


def test_every_spelling_of_the_zero_time_is_unset(store: ChatStore) -> None:
    for zero in ("0001-01-01T00:00:00Z", "0001-01-01T00:00:00.000000000Z",
                 "0001-01-01T00:00:00+00:00"):
        store.ingest(event("member.updated", at=at(3), member={
            "user_id": "bob", "user": user("bob"), "pinned_at": zero, "archived_at": zero,
            "updated_at": at(3)}))
        [bob] = store.members(CID)
        assert bob.pinned_at is None and bob.archived_at is None, zero


# -- user.messages.deleted ---------------------------------------------------------------------


def test_a_soft_user_messages_deletion_covers_an_older_message_delivered_late(
        store: ChatStore) -> None:
    store.ingest(new("m1", 1))
    store.ingest(event("user.messages.deleted", at=at(5), user=user("bob")))
    assert store.message("m1").type == "deleted"
    store.ingest(new("m3", 3))  # sent before the deletion, delivered after it
    store.ingest(new("m4", 4, cid="messaging:other"))  # another channel: not deleted
    store.ingest(new("m6", 6))  # sent after it
    assert store.message("m3").type == "deleted" and store.message("m3").deleted_at is not None
    assert store.message("m4").type == "regular" and store.message("m6").type == "regular"


def test_a_message_undeleted_after_a_user_messages_deletion_stands(store: ChatStore) -> None:
    store.ingest(event("user.messages.deleted", at=at(5), user=user("bob")))
    # First heard of by its undeletion, newer than the deletion.
    store.ingest(event("message.undeleted", at=at(8),
                       message={**message("m1", at=at(1)), "updated_at": at(8)}))
    assert store.message("m1").type == "regular"


def test_a_hard_user_messages_deletion_covers_an_older_message_delivered_late(
        store: ChatStore) -> None:
    store.ingest(new("m1", 1))
    store.ingest(event("user.messages.deleted", cid=None, at=at(5), user=user("bob"),
                       hard_delete=True))
    assert store.message("m1") is None
    store.ingest(new("m3", 3, cid="messaging:other"))  # sent before, delivered after
    store.ingest(event("reaction.new", cid="messaging:other", at=at(4), user=user("carol"),
                       message=message("m3", cid="messaging:other", at=at(3)),
                       reaction={"message_id": "m3", "user_id": "carol", "type": "like",
                                 "created_at": at(4), "updated_at": at(4)}))
    assert store.message("m3") is None and store.reactions("m3") == []
    store.ingest(new("m6", 6, uid="bob"))
    store.ingest(new("m2", 2, uid="carol"))  # another author's: not deleted
    assert [m.id for m in store.messages(CID)] == ["m2", "m6"]


def test_user_messages_deleted_without_cid_deletes_everywhere(store: ChatStore) -> None:
    store.ingest(new("m1", 1))
    store.ingest(new("m2", 2, cid="messaging:other"))
    store.ingest(event("user.messages.deleted", cid=None, at=at(5), user=user("bob")))
    assert store.message("m1").type == "deleted" and store.message("m2").type == "deleted"


def test_user_messages_deleted_with_cid_hard_deletes_only_there(store: ChatStore) -> None:
    store.ingest(new("m1", 1))
    store.ingest(new("m2", 2, cid="messaging:other"))
    store.ingest(event("user.messages.deleted", at=at(5), user=user("bob"), hard_delete=True))
    assert store.message("m1") is None and store.message("m2").type == "regular"


# -- reminders, mutes, members -----------------------------------------------------------------


def test_a_reminder_updated_to_no_time_has_none(store: ChatStore) -> None:
    def rem(kind: str, n: int, remind_at: str | None) -> bytes:
        return event(kind, at=at(n), reminder={
            "message_id": "m1", "cid": CID, "user_id": "alice", "remind_at": remind_at,
            "created_at": at(1), "updated_at": at(n)})
    store.ingest(rem("reminder.created", 1, at(30)))
    store.ingest(rem("reminder.updated", 2, None))
    [r] = store.reminders()
    assert r.remind_at is None


def _mute_me(n: int, expires: str | None = None) -> bytes:
    mute = {"user": user("alice"), "channel": channel_object(), "created_at": at(0),
            "updated_at": at(0)}
    if expires:
        mute["expires"] = expires
    return event("health.check", cid=None, at=at(n), connection_id="c",
                 me={**user("alice"), "channel_mutes": [mute], "mutes": []})


def test_a_message_after_a_mute_expired_counts_and_shows_the_channel(store: ChatStore) -> None:
    store.ingest(new("m1", 1))
    store.ingest(event("channel.hidden", at=at(2), user=user("alice")))
    store.ingest(_mute_me(3, expires=at(10)))
    store.ingest(new("m5", 5))
    assert store.channels() == []
    store.ingest(new("m11", 11))
    assert [c.cid for c in store.channels()] == [CID]
    assert store.unread_counts().channels == {CID: 2}


def test_a_partial_member_in_a_channel_object_keeps_the_known_role(store: ChatStore) -> None:
    store.ingest(event("member.added", at=at(1), member={"user_id": "bob", "user": user("bob"),
                                                          "role": "moderator",
                                                          "channel_role": "channel_moderator",
                                                          "updated_at": at(1)}))
    store.ingest(event("channel.updated", at=at(4), channel=channel_object(
        n=4, members=[{"user_id": "bob", "channel_role": "channel_moderator"}])))
    [bob] = store.members(CID)
    assert bob.role == "moderator"



# -- any order of delivery ends in the in-order tables (the objects the other properties leave
# -- alone: polls, drafts, threads, bans, reminders) -------------------------------------------


class _Server:
    """A server-side history: every event carries its object as it stands then."""

    def __init__(self) -> None:
        self.now = 10
        self.events: list[bytes] = []
        self.votes = 0
        self.poll_gone = False
        self.replies = 0
        self.banned_here = False
        self.banned = False

    def apply(self, op: str) -> None:
        self.now += 1
        n = self.now
        if op == "vote" and not self.poll_gone:
            self.votes += 1
            self.events.append(event("poll.vote_casted", at=at(n), poll=poll(n, self.votes),
                                     message=message("p", at=at(1))))
        elif op == "unpoll" and not self.poll_gone:
            self.poll_gone = True
            self.events.append(event("poll.deleted", at=at(n), poll=poll(n, self.votes)))
        elif op == "draft":
            self.events.append(draft("draft.updated", n, f"draft@{n}"))
        elif op == "undraft":
            self.events.append(draft("draft.deleted", n, "gone"))
        elif op == "reply":
            self.replies += 1
            self.events.append(thread(n, self.replies))
        elif op in ("ban", "unban"):
            self.banned_here = op == "ban"
            self.events.append(event(f"user.{op}ned", at=at(n), user=user("bob")))
        elif op == "member":
            self.events.append(event("member.updated", at=at(n), member={
                "user_id": "bob", "banned": self.banned_here, "updated_at": at(n)}))
        elif op in ("gban", "gunban"):
            self.banned = op == "gban"
            self.events.append(event(f"user.{op[1:]}ned", cid=None, at=at(n),
                                     user={**user("bob"), "banned": self.banned}))
        elif op == "profile":
            self.events.append(event("user.updated", cid=None, at=at(n), user={
                **user("bob"), "updated_at": at(n), "banned": self.banned, "name": f"Bob{n}"}))
        elif op in ("remind", "unremind"):
            self.events.append(event(
                "reminder.updated" if op == "remind" else "reminder.deleted", at=at(n),
                reminder={"message_id": "p", "cid": CID, "user_id": "alice",
                          "remind_at": at(n + 30), "created_at": at(2), "updated_at": at(n)}))


def _shown(store: ChatStore) -> dict[str, Any]:
    bob = store.user("bob")
    return {
        "polls": [(p.id, p.updated_at, p.poll["vote_count"]) for p in store.polls()],
        "drafts": [(d.cid, d.parent_id, d.created_at, d.draft["message"]["text"])
                   for d in store.drafts()],
        "threads": [(t.parent_id, t.reply_count, t.last_message_at) for t in store.threads()],
        "parent": store.message("p").reply_count,
        "members": [(m.user_id, m.banned, m.updated_at) for m in store.members(CID)],
        "bob": (bob.banned, bob.name) if bob else None,
        "reminders": [(r.message_id, r.remind_at, r.updated_at) for r in store.reminders()],
    }


_SERVER_OPS = st.lists(st.sampled_from(["vote", "unpoll", "draft", "undraft", "reply", "ban",
                                        "unban", "member", "gban", "gunban", "profile",
                                        "remind", "unremind"]), min_size=4, max_size=25)


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(ops=_SERVER_OPS, data=st.data())
def test_any_delivery_order_of_polls_drafts_threads_bans_and_reminders_ends_the_same(
        tmp_path_factory: pytest.TempPathFactory, ops: list[str], data: st.DataObject) -> None:
    server = _Server()
    for op in ops:
        server.apply(op)
    # The parent message and bob's membership come first; the rest in any order.
    first = [new("p", 1), event("member.added", at=at(2), member={
        "user_id": "bob", "user": user("bob"), "role": "member", "updated_at": at(2)})]
    shuffled = data.draw(st.permutations(server.events))
    with ChatStore.open(tmp_path_factory.mktemp("ordered"), "alice") as ordered:
        ordered.ingest_many(first + server.events)
        expected = _shown(ordered)
    with ChatStore.open(tmp_path_factory.mktemp("shuffled"), "alice") as delivered:
        delivered.ingest_many(first)
        for payload in shuffled:
            delivered.ingest(payload)
        assert _shown(delivered) == expected
        assert delivered.verify() == []


def _channel_history(ops: list[str]) -> list[bytes]:
    """Messages of bob and carol, the own user's messages and reads, deletions of bob's
    messages, truncations: each event as the server sends it then."""
    events: list[bytes] = []
    for n, op in enumerate(ops, start=10):
        if op in ("bob", "carol", "alice"):
            events.append(new(f"{op[0]}{n}", n, uid=op))
        elif op == "read":
            events.append(event("message.read", at=at(n), user=user("alice")))
        elif op in ("purge", "hard purge"):
            events.append(event("user.messages.deleted", at=at(n), user=user("bob"),
                                hard_delete=op == "hard purge"))
        elif op == "truncate":
            events.append(event("channel.truncated", at=at(n),
                                channel=channel_object(n=n, truncated_at=at(n)),
                                message={**message(f"t{n}", at=at(n), uid="admin"),
                                         "type": "system"}))
    return events


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(ops=st.lists(st.sampled_from(["bob", "carol", "alice", "read", "purge", "truncate"]),
                    min_size=3, max_size=14), data=st.data())
def test_any_delivery_order_of_messages_reads_purges_and_cuts_ends_the_same(
        tmp_path_factory: pytest.TempPathFactory, ops: list[str], data: st.DataObject) -> None:
    events = _channel_history(ops)
    shuffled = data.draw(st.permutations(events))

    def shown(store: ChatStore) -> tuple[Any, ...]:
        return ([(m.id, m.type) for m in store.messages(CID, limit=100)],
                store.unread_counts().channels)

    with ChatStore.open(tmp_path_factory.mktemp("ordered"), "alice") as ordered:
        ordered.ingest_many(events)
        expected = shown(ordered)
    with ChatStore.open(tmp_path_factory.mktemp("shuffled"), "alice") as delivered:
        for payload in shuffled:
            delivered.ingest(payload)
        assert shown(delivered) == expected
        assert delivered.verify() == []


def test_the_pages_of_a_query_are_cached_together_until_its_first_page_comes_again(
        store: ChatStore) -> None:
    def page(*cids: str) -> dict[str, Any]:
        return {"channels": [state(cid=cid) for cid in cids], "duration": "1ms"}

    query = {"filter": {"type": "messaging"}, "sort": [{"field": "last_message_at",
                                                        "direction": -1}]}
    store.ingest_query_channels(page("messaging:a", "messaging:b"), **query)
    store.ingest_query_channels(page("messaging:b", "messaging:c"), **query, offset=2)
    assert store.cached_channels(**query) == ["messaging:a", "messaging:b", "messaging:c"]
    # A first page again is a new answer to the query: it replaces the list.
    store.ingest_query_channels(page("messaging:c"), **query)
    assert store.cached_channels(**query) == ["messaging:c"]


# -- threads: a reply newer than the thread's state counts on top of it --------------------------


@pytest.mark.parametrize("reply_first", [False, True])
def test_a_reply_newer_than_the_thread_state_counts_in_either_order(
        store: ChatStore, reply_first: bool) -> None:
    store.ingest(new("p", 1))
    reply, older_reply = new("r", 7, parent_id="p"), new("q", 5, parent_id="p")
    deliveries = [reply, older_reply, thread(6, 4)]
    for payload in (deliveries if reply_first else deliveries[::-1]):
        store.ingest(payload)
    [t] = store.threads()
    # The reply at t5 is in the count of t6; the one at t7 is on top of it.
    assert t.reply_count == 5
    assert t.last_message_at == store.message("r").created_at  # the reply at t7 is the last
    assert store.message("p").reply_count == 5


class _OtherServer:
    """Threads and their reads, reminders, mutes and members as the server sends them: event
    `n` at time `n` (from 10 on), each object as the server holds it then."""

    def __init__(self) -> None:
        self.events: list[bytes] = []
        self.replies: list[str] = []
        self.reminder: dict[str, Any] | None = None
        self.muted_users: list[str] = []
        self.muted_channels: list[str] = []
        self.other_member = False

    def apply(self, n: int, op: str) -> None:
        if op == "reply":
            self.replies.append(f"r{n}")
            self.events.append(new(f"r{n}", n, uid="carol", parent_id="p"))
        elif op == "thread":
            self.events.append(thread(n, len(self.replies)))
        elif op in ("read alice", "read bob"):
            reader = op.split()[1]
            fields: dict[str, Any] = {"last_read_message_id": self.replies[-1]} \
                if self.replies else {}
            self.events.append(event("message.read", at=at(n), user=user(reader),
                                     thread={"parent_message_id": "p", "channel_cid": CID},
                                     **fields))
        elif op == "remind":
            kind = "reminder.updated" if self.reminder else "reminder.created"
            self.reminder = {"message_id": "p", "cid": CID, "user_id": "alice",
                             "remind_at": at(n + 30), "created_at": at(n), "updated_at": at(n)}
            self.events.append(event(kind, at=at(n), reminder=self.reminder))
        elif op == "due" and self.reminder:  # the reminder as it is, with its own updated_at
            self.events.append(event("notification.reminder_due", at=at(n),
                                     reminder=self.reminder))
        elif op == "unremind" and self.reminder:
            self.events.append(event("reminder.deleted", at=at(n),
                                     reminder={**self.reminder, "updated_at": at(n)}))
            self.reminder = None
        elif op in ("mute user", "mute channel", "hello"):
            if op == "mute user":
                self.muted_users = [] if self.muted_users else ["dave", "erin"][: n % 2 + 1]
            elif op == "mute channel":
                self.muted_channels = [] if self.muted_channels else ["messaging:x"]
            me = {**user("alice"),
                  "mutes": [{"user": user("alice"), "target": user(uid), "created_at": at(n),
                             "updated_at": at(n)} for uid in self.muted_users],
                  "channel_mutes": [{"user": user("alice"), "channel": channel_object(cid),
                                     "created_at": at(n), "updated_at": at(n)}
                                    for cid in self.muted_channels]}
            kind = {"mute user": "notification.mutes_updated", "hello": "health.check",
                    "mute channel": "notification.channel_mutes_updated"}[op]
            self.events.append(event(kind, cid=None, at=at(n), connection_id="c", me=me))
        elif op in ("add", "update"):
            kind = "member.updated" if op == "update" and self.other_member else "member.added"
            self.other_member = True
            self.events.append(event(kind, at=at(n), member={
                "user_id": "dave", "user": user("dave"), "role": "member",
                "channel_role": f"role{n}", "banned": False, "created_at": at(n),
                "updated_at": at(n)}))
        elif op == "remove" and self.other_member:
            self.other_member = False
            self.events.append(event("member.removed", at=at(n), user=user("dave"),
                                     member={"user_id": "dave", "user": user("dave")}))
        elif op in ("added me", "removed me"):
            cid = "messaging:other"
            kind = ("notification.added_to_channel" if op == "added me"
                    else "notification.removed_from_channel")
            self.events.append(event(kind, cid=cid, at=at(n), channel=channel_object(cid, n),
                                     member={"user_id": "alice", "user": user("alice"),
                                             "role": "member", "created_at": at(n),
                                             "updated_at": at(n)}))


def _other_shown(store: ChatStore) -> dict[str, Any]:
    return {
        "threads": [(t.parent_id, t.reply_count, t.last_message_at) for t in store.threads()],
        "parent": store.message("p").reply_count,
        "thread reads": [(r.user_id, r.last_read, r.last_read_message_id)
                         for r in store.thread_reads("p")],
        "reminders": [(r.message_id, r.remind_at, r.updated_at, r.due)
                      for r in store.reminders()],
        "mutes": [(m.user_id, m.updated_at) for m in store.mutes(expired=True)],
        "channel mutes": [(m.cid, m.updated_at) for m in store.channel_mutes(expired=True)],
        "members": {cid: [(m.user_id, m.role, m.channel_role, m.banned, m.updated_at)
                          for m in store.members(cid)] for cid in (CID, "messaging:other")},
        "channels": sorted(c.cid for c in store.channels()),
    }


_OTHER_OPS = st.lists(st.sampled_from([
    "reply", "thread", "read alice", "read bob", "remind", "due", "unremind", "mute user",
    # ("removed me" is left out: see the xfail test below.)
    "mute channel", "hello", "add", "update", "remove", "added me"]),
    min_size=4, max_size=25)


@settings(max_examples=200, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(ops=_OTHER_OPS, data=st.data())
def test_any_delivery_order_of_threads_reads_reminders_mutes_and_members_ends_the_same(
        tmp_path_factory: pytest.TempPathFactory, ops: list[str], data: st.DataObject) -> None:
    server = _OtherServer()
    for n, op in enumerate(ops, start=10):
        server.apply(n, op)
    first = [new("p", 1)]  # the parent message first; the rest in any order
    shuffled = data.draw(st.permutations(server.events))
    with ChatStore.open(tmp_path_factory.mktemp("ordered"), "alice") as ordered:
        ordered.ingest_many(first + server.events)
        expected = _other_shown(ordered)
    with ChatStore.open(tmp_path_factory.mktemp("shuffled"), "alice") as delivered:
        delivered.ingest_many(first)
        for payload in shuffled:
            delivered.ingest(payload)
        assert _other_shown(delivered) == expected
        assert delivered.verify() == []


def test_a_due_reminder_stays_due_against_its_own_state_delivered_late(store: ChatStore) -> None:
    # `notification.reminder_due` carries the reminder as it is: the same `updated_at` as the
    # `reminder.updated` before it. Either order ends due.
    reminder = {"message_id": "p", "cid": CID, "user_id": "alice", "remind_at": at(30),
                "created_at": at(5), "updated_at": at(5)}
    store.ingest(event("notification.reminder_due", at=at(30), reminder=reminder))
    store.ingest(event("reminder.updated", at=at(5), reminder=reminder))  # late
    [r] = store.reminders()
    assert r.due
    # A newer state of the reminder (snoozed) is due no more.
    store.ingest(event("reminder.updated", at=at(31), reminder={
        **reminder, "remind_at": at(60), "updated_at": at(31)}))
    assert not store.reminders()[0].due


@pytest.mark.xfail(strict=True, reason="open: the own user's removal delivered after a newer "
                   "re-add drops the channel (apply.member_removed -> rows.drop_channel)")
def test_an_older_removal_of_the_own_user_does_not_undo_a_newer_add(store: ChatStore) -> None:
    other = "messaging:other"

    def membership(kind: str, n: int) -> bytes:
        return event(kind, cid=other, at=at(n), channel=channel_object(other, n),
                     member={"user_id": "alice", "user": user("alice"), "role": "member",
                             "created_at": at(n), "updated_at": at(n)})

    store.ingest(membership("notification.added_to_channel", 13))
    store.ingest(membership("notification.removed_from_channel", 10))  # late
    assert other in [c.cid for c in store.channels()]


def _hard_deleted_reply(mid: str, n: int, created: int) -> bytes:
    return event("message.deleted", at=at(n), hard_delete=True, message={
        **message(mid, at=at(created), uid="carol", parent_id="p"), "type": "deleted"})


@pytest.mark.parametrize("story", [
    # reply r10, r11; the thread of t12 counts 2; r10 hard-deleted at t13; the thread of t14: 1
    [new("r10", 10, uid="carol", parent_id="p"), new("r11", 11, uid="carol", parent_id="p"),
     thread(12, 2), _hard_deleted_reply("r10", 13, 10), thread(14, 1)],
    # a reply after the thread's state, hard-deleted after it
    [new("r10", 10, uid="carol", parent_id="p"), thread(12, 1),
     new("r13", 13, uid="carol", parent_id="p"), _hard_deleted_reply("r13", 14, 13)],
])
def test_hard_deleted_replies_and_thread_states_count_alike_in_any_order(
        tmp_path_factory: pytest.TempPathFactory, story: list[bytes]) -> None:
    counts = set()
    for order in itertools.permutations(story):
        with ChatStore.open(tmp_path_factory.mktemp("order"), "alice") as store:
            store.ingest(new("p", 1))
            for payload in order:
                store.ingest(payload)
            counts.add(([t.reply_count for t in store.threads()][0],
                        store.message("p").reply_count))
            assert store.verify() == []
    assert counts == {(1, 1)}
