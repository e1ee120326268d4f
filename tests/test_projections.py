"""Read tables: each event's effect, snapshots, rebuild, verify, and the read API."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chatledger import ChatStore
from fixtures import channel_state, event, message, query_channels_response, user


@pytest.fixture()
def store(tmp_path: Path) -> ChatStore:
    s = ChatStore.open(tmp_path, "alice")
    yield s
    assert s.verify() == []  # whatever a test did, the live tables equal a fresh rebuild
    s.close()


def at(n: int) -> str:
    return f"2026-11-25T10:{n // 60:02d}:{n % 60:02d}.000000Z"


def ids(messages) -> list[str]:
    return [m.id for m in messages]


def test_new_messages_fill_the_channel_and_count_unread(store: ChatStore) -> None:
    store.ingest_many([event("message.new", at=at(i), message=message(f"m{i}", at=at(i)),
                             user=user("bob"), channel_member_count=2) for i in range(3)])
    assert ids(store.messages("messaging:general")) == ["m0", "m1", "m2"]
    [summary] = store.channels()
    assert summary.cid == "messaging:general" and summary.unread_count == 3
    assert summary.last_message.id == "m2" and summary.member_count == 2
    assert summary.last_message.json()["text"] == "hi"
    store.ingest(event("message.new", at=at(9), message=message("own", at=at(9), uid="alice"),
                       user=user("alice")))
    assert store.unread_counts().total_unread_count == 0


def test_update_delete_undelete(store: ChatStore) -> None:
    store.ingest(event("message.new", message=message("m1", text="first")))
    store.ingest(event("message.updated", at=at(5), message=message("m1", text="second")))
    assert store.message("m1").json()["text"] == "second"
    store.ingest(event("message.deleted", at=at(6),
                       message=message("m1", type="deleted", deleted_at=at(6))))
    soft = store.message("m1")
    assert soft.type == "deleted" and soft.deleted_at is not None
    store.ingest(event("message.undeleted", at=at(7), message=message("m1", text="back")))
    assert store.message("m1").type == "regular"
    store.ingest(event("message.deleted", at=at(8), message=message("m1"), hard_delete=True))
    assert store.message("m1") is None


def test_delete_for_me_hides_only_from_pages(store: ChatStore) -> None:
    store.ingest(event("message.new", message=message("m1")))
    store.ingest(event("message.deleted", message=message("m1"), deleted_for_me=True))
    assert store.messages("messaging:general") == []
    assert store.message("m1").deleted_for_me


def test_thread_replies_and_reply_counts(store: ChatStore) -> None:
    store.ingest(event("message.new", message=message("p")))
    for i in range(3):
        store.ingest(event("message.new", at=at(i + 1),
                           message=message(f"r{i}", at=at(i + 1), parent_id="p",
                                           show_in_channel=i == 2)))
    assert store.message("p").reply_count == 3
    assert ids(store.thread("p")) == ["r0", "r1", "r2"]
    assert ids(store.messages("messaging:general")) == ["p", "r2"]
    store.ingest(event("message.deleted", message=message("r0"), hard_delete=True))
    assert store.message("p").reply_count == 2


def test_reactions_and_counters_from_the_event(store: ChatStore) -> None:
    store.ingest(event("message.new", message=message("m1")))
    store.ingest(event("reaction.new", at=at(1),
                       reaction={"message_id": "m1", "user_id": "alice", "type": "like", "score": 1},
                       message=message("m1", reaction_counts={"like": 1})))
    store.ingest(event("reaction.new", at=at(2),
                       reaction={"message_id": "m1", "user_id": "bob", "type": "love"},
                       message=message("m1", reaction_counts={"like": 1, "love": 1})))
    assert len(store.reactions("m1")) == 2
    assert [r.type for r in store.reactions("m1", own=True)] == ["like"]
    assert store.message("m1").json()["reaction_counts"] == {"like": 1, "love": 1}
    store.ingest(event("reaction.deleted", at=at(3),
                       reaction={"message_id": "m1", "user_id": "bob", "type": "love"},
                       message=message("m1", reaction_counts={"like": 1})))
    assert [r.user_id for r in store.reactions("m1")] == ["alice"]


def test_reads(store: ChatStore) -> None:
    store.ingest_many([event("message.new", cid=c, message=message(f"m-{c}", cid=c))
                       for c in ("messaging:a", "messaging:b")])
    assert store.unread_counts().total_unread_count == 2
    store.ingest(event("message.read", cid="messaging:a", user=user("alice"),
                       last_read_message_id="m-messaging:a"))
    assert store.unread_counts().channels == {"messaging:b": 1}
    store.ingest(event("notification.mark_unread", cid="messaging:a", user=user("alice"),
                       unread_messages=4, last_read_at=at(1), first_unread_message_id="x"))
    assert store.unread_counts().channels == {"messaging:a": 4, "messaging:b": 1}
    store.ingest(event("notification.mark_read", cid=None, user=user("alice")))
    assert store.unread_counts().total_unread_count == 0


def test_truncation_drops_only_older_messages(store: ChatStore) -> None:
    store.ingest_many([event("message.new", at=at(i), message=message(f"m{i}", at=at(i)))
                       for i in range(4)])
    store.ingest(event("channel.truncated", at=at(10),
                       channel={"cid": "messaging:general", "id": "general", "type": "messaging",
                                "truncated_at": at(2)}))
    assert ids(store.messages("messaging:general")) == ["m2", "m3"]


def test_channel_updates_hidden_and_deleted(store: ChatStore) -> None:
    store.ingest(event("channel.updated", channel={"cid": "messaging:general", "id": "general",
                                                   "type": "messaging", "name": "General",
                                                   "colour": "teal"}))
    [summary] = store.channels()
    # `name` is custom data in the backend's model too.
    assert summary.name == "General" and summary.custom == {"colour": "teal", "name": "General"}
    store.ingest(event("message.new", message=message("m1")))
    store.ingest(event("channel.hidden", at=at(30), clear_history=True))
    assert store.channels() == []  # hidden channels are listed only when asked for
    assert store.channels({"hidden": True})[0].hidden
    assert store.messages("messaging:general") == []
    store.ingest(event("channel.visible", at=at(31)))
    assert not store.channels()[0].hidden
    store.ingest(event("channel.deleted", channel={"cid": "messaging:general"}))
    assert store.channels() == [] and store.channel("messaging:general") is None


def test_members_and_own_removal(store: ChatStore) -> None:
    store.ingest(event("member.added", member={"user_id": "alice", "user": user("alice"),
                                               "channel_role": "channel_member"}))
    store.ingest(event("member.added", member={"user_id": "bob", "user": user("bob")}))
    assert [m.user_id for m in store.members("messaging:general")] == ["alice", "bob"]
    store.ingest(event("member.removed", member={"user_id": "bob"}))
    assert [m.user_id for m in store.members("messaging:general")] == ["alice"]
    store.ingest(event("notification.removed_from_channel", member={"user_id": "alice"}))
    assert store.channels() == []


def test_users(store: ChatStore) -> None:
    store.ingest(event("user.updated", cid=None, user={**user("bob"), "name": "Robert"}))
    assert store.user("bob").name == "Robert"
    store.ingest(event("user.banned", cid=None, user=user("bob")))
    assert store.user("bob").row["banned"] == 1
    store.ingest_many([event("message.new", message=message("b1", uid="bob")),
                       event("message.new", cid="messaging:x", message=message("b2", cid="messaging:x", uid="bob"))])
    store.ingest(event("user.messages.deleted", cid="messaging:x", user=user("bob")))
    assert store.message("b2").type == "deleted" and store.message("b1").type == "regular"
    store.ingest(event("user.messages.deleted", cid=None, user=user("bob"), hard_delete=True))
    assert store.message("b1") is None and store.message("b2") is None


def test_a_channel_states_members_are_known_users(store: ChatStore) -> None:
    state = channel_state("messaging:general")
    state["members"].append({"user_id": "bob", "user": {**user("bob"), "mood": "sunny"}})
    store.ingest_channel_state(msgspec.json.encode(state))
    bob = store.user("bob")  # the member's own object, verbatim, custom fields and all
    assert (bob.name, bob.user["mood"], bob.row["slot"]) == ("Bob", "sunny", 1)
    assert store.user("alice").user["favourite_colour"] == "teal"
    store.ingest(event("user.updated", cid=None, user={**user("bob"), "name": "Robert"}))
    assert store.user("bob").name == "Robert"  # newer news of the user wins
    store.ingest_channel_state(msgspec.json.encode(state))
    assert store.user("bob").name == "Bob"  # and so does a newer channel state
    assert store.user("carol") is None


def test_snapshots_replace_what_they_cover_and_keep_the_rest(store: ChatStore) -> None:
    store.ingest(event("message.new", message=message("older", at="2026-11-24T00:00:00Z")))
    store.ingest_query_channels(query_channels_response(["messaging:general", "messaging:b"]),
                                filter={"members": {"$in": ["alice"]}})
    assert "older" in ids(store.messages("messaging:general"))
    assert set(store.cached_channels({"members": {"$in": ["alice"]}})) == {
        "messaging:general", "messaging:b"}
    state = store.channel("messaging:b")
    assert state.channel["team_colour"] == "blue"
    assert [m.user_id for m in state.members] == ["alice"]
    assert len(state.messages) == 2 and state.messages[0].json()["cid"] == "messaging:b"


def test_drafts_polls_and_connection(store: ChatStore) -> None:
    store.ingest(event("draft.updated", cid=None,
                       draft={"channel_cid": "messaging:general", "message": {"text": "wip"}}))
    assert store.channel("messaging:general").draft_position is not None
    store.ingest(event("draft.deleted", cid=None, draft={"channel_cid": "messaging:general"}))
    assert store.channel("messaging:general").draft_position is None
    store.ingest(event("health.check", cid=None, connection_id="c-1", me=user("alice")))
    assert store.connection_info().connection_id == "c-1"


def test_cursor_paging(store: ChatStore) -> None:
    store.ingest_many([event("message.new", at=at(i), message=message(f"m{i}", at=at(i)))
                       for i in range(10)])
    page = store.messages("messaging:general", limit=3)
    assert ids(page) == ["m7", "m8", "m9"]
    cursor = (page[0].created_at, page[0].id)
    assert ids(store.messages("messaging:general", before=cursor, limit=3)) == ["m4", "m5", "m6"]
    assert ids(store.messages("messaging:general", before=cursor, inclusive=True, limit=2)) == ["m6", "m7"]
    assert ids(store.messages("messaging:general", after=cursor, limit=2)) == ["m8", "m9"]
    assert ids(store.messages("messaging:general", after=cursor, inclusive=True, limit=2)) == ["m7", "m8"]


def test_channel_ids_to_sync_newest_first(store: ChatStore) -> None:
    store.ingest_many([event("message.new", cid=f"messaging:c{i}", at=at(i),
                             message=message(f"m{i}", cid=f"messaging:c{i}", at=at(i)))
                       for i in range(5)])
    assert store.channel_ids_to_sync(3) == ["messaging:c4", "messaging:c3", "messaging:c2"]


def test_rebuild_gives_the_same_tables_and_upgrades_rebuild(tmp_path: Path) -> None:
    store = ChatStore.open(tmp_path, "alice")
    store.ingest_many([event("message.new", at=at(i), message=message(f"m{i}", at=at(i)))
                       for i in range(20)])
    before = ids(store.messages("messaging:general"))
    store.rebuild()
    assert ids(store.messages("messaging:general")) == before
    store.log.set_meta("projection_version", 0)  # as if built by an older version
    store.close()
    reopened = ChatStore.open(tmp_path, "alice")
    assert reopened.opened_as == "rebuilt"
    assert ids(reopened.messages("messaging:general")) == before
    assert reopened.verify() == []
    reopened.close()


def test_tables_behind_the_log_catch_up(tmp_path: Path) -> None:
    from chatledger.eventstore.log import EventLog
    from chatledger.eventstore.userfiles import user_db_path

    ChatStore.open(tmp_path, "alice").close()
    raw = EventLog.open(user_db_path(tmp_path, "alice"))  # a program that does not project
    raw.append_event(event("message.new", message=message("late")))
    raw.close()
    store = ChatStore.open(tmp_path, "alice")
    assert store.opened_as == "caught up" and ids(store.messages("messaging:general")) == ["late"]
    store.close()


def test_verify_reports_a_tampered_row(store: ChatStore) -> None:
    store.ingest(event("message.new", message=message("m1")))
    with store.log.datastore.transaction(commit=True) as c:
        c.execute("UPDATE messages SET reply_count=99 WHERE id='m1'")
    differences = store.verify()
    assert {(d.table, d.side) for d in differences} == {("messages", "missing"), ("messages", "extra")}
    store.rebuild()  # and rebuild repairs it (the fixture verifies again)


def test_events_for_unknown_channels_and_odd_shapes_never_fail(store: ChatStore) -> None:
    store.ingest_many([
        event("message.new", cid="messaging:nowhere", message={"id": "x", "created_at": "bad"}),
        event("reaction.new", reaction={"type": "like"}),
        event("message.new", message=[1, 2, 3]),
        event("member.added", member=None),
        msgspec.json.encode({"type": "channel.updated", "created_at": T0, "channel": "no"}),
        event("poll.vote_casted", poll={"id": "p1"}),
        event("typing.start"),
    ])
    assert store.message("x") is not None


T0 = "2026-11-25T10:00:00Z"


def _all_rows(store: ChatStore) -> dict[str, list[tuple]]:
    from chatledger.projections.schema import TABLES

    with store.log.datastore.transaction(commit=False) as c:
        # position differs between stores only if entries differ; compare everything.
        return {name: sorted(map(tuple, c.execute(f"SELECT * FROM {name}")), key=repr)
                for name in TABLES if name != "connection"}


def test_one_batch_projects_exactly_like_one_event_at_a_time(tmp_path: Path) -> None:
    seq = []
    for i in range(12):
        cid = f"messaging:c{i % 3}"
        author = "alice" if i % 5 == 4 else "bob"
        seq.append(event("message.new", cid=cid, at=at(i), channel_member_count=i,
                         message=message(f"m{i}", cid=cid, at=at(i), uid=author,
                                         parent_id="m0" if i == 7 else None)))
        if i == 6:
            seq.append(event("message.read", cid="messaging:c0", at=at(i), user=user("alice")))
        if i == 8:
            seq.append(event("notification.message_new", cid="messaging:c2", at=at(i),
                             channel={"cid": "messaging:c2", "type": "messaging", "id": "c2",
                                      "member_count": 40},
                             message=message("n8", cid="messaging:c2", at=at(i))))
    batched = ChatStore.open(tmp_path / "a", "alice")
    batched.ingest_many(seq)
    single = ChatStore.open(tmp_path / "b", "alice")
    for e in seq:
        single.ingest(e)
    assert _all_rows(batched) == _all_rows(single)
    assert batched.unread_counts() == single.unread_counts()
    assert batched.verify() == [] and single.verify() == []
    batched.close()
    single.close()


def _generated(n: int, seed: int) -> list[bytes]:
    import sys

    sys.path.insert(0, str(Path(__file__).parent.parent))
    from benchmarks.workload import generate_events

    return list(generate_events(n, seed=seed))


_ONE_AT_A_TIME: dict[int, dict[str, list[tuple]]] = {}


@settings(max_examples=8, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(seed=st.sampled_from([3, 4]), cuts=st.lists(st.integers(1, 399), max_size=12))
def test_any_split_into_batches_projects_like_one_event_at_a_time(
    tmp_path_factory: pytest.TempPathFactory, seed: int, cuts: list[int]
) -> None:
    # The projector writes what a run of new messages does to channels and unread counts once
    # per run, and remembers users and memberships between events: wherever the batches break,
    # the tables must come out as if every event had been applied on its own.
    events = _generated(400, seed)
    if seed not in _ONE_AT_A_TIME:
        with ChatStore.open(tmp_path_factory.mktemp("single"), "alice") as single:
            for e in events:
                single.ingest(e)
            _ONE_AT_A_TIME[seed] = _all_rows(single)
    bounds = [0, *sorted(set(cuts)), len(events)]
    with ChatStore.open(tmp_path_factory.mktemp("batched"), "alice") as batched:
        for start, end in zip(bounds, bounds[1:]):
            batched.ingest_many(events[start:end])
        assert _all_rows(batched) == _ONE_AT_A_TIME[seed]


def test_rows_another_connection_wrote_are_not_taken_as_remembered(tmp_path: Path) -> None:
    # The projector remembers users' rows and channels' memberships between appends; a write by
    # another connection to the same file must make it read them again.
    def said(name: str, n: int) -> bytes:
        return event("message.new", cid="messaging:c", at=at(n),
                     message=message(f"m{n}", cid="messaging:c", at=at(n), uid="bob"),
                     user={"id": "bob", "name": name})

    first = ChatStore.open(tmp_path, "alice")
    first.ingest(said("Bob", 1))  # a channel without known members: alice's unread counts
    with ChatStore.open(tmp_path, "alice") as second:
        second.ingest(said("Robert", 2))
        second.ingest(event("member.added", cid="messaging:c", member={"user_id": "bob"}))
    first.ingest(said("Bob", 3))
    assert first.user("bob").name == "Bob"
    assert first.unread_counts().channels == {"messaging:c": 2}  # not m3: alice is not in it
    assert first.verify() == []
    first.close()


def test_a_second_session_projects_like_a_rebuild(tmp_path: Path) -> None:
    events = _generated(1_200, seed=5)
    with ChatStore.open(tmp_path, "alice") as first:
        first.ingest_many(events[:1_000])
    with ChatStore.open(tmp_path, "alice") as second:  # remembers nothing of the first
        second.ingest_many(events[1_000:])
        second.ingest_many(events[1_100:1_103])  # the same events again
        assert second.verify() == []


def test_unread_counts_only_in_channels_the_user_is_in(store: ChatStore) -> None:
    store.ingest(event("member.added", cid="messaging:theirs", member={"user_id": "bob"}))
    store.ingest(event("message.new", cid="messaging:theirs",
                       message=message("t1", cid="messaging:theirs")))
    store.ingest(event("message.new", cid="messaging:unknown",
                       message=message("u1", cid="messaging:unknown")))
    assert store.unread_counts().channels == {"messaging:unknown": 1}


def test_hidden_channels_listed_when_any_part_of_the_filter_asks(store: ChatStore) -> None:
    store.ingest(event("channel.hidden", cid="messaging:h"))
    store.ingest(event("channel.updated", cid="messaging:v",
                       channel={"cid": "messaging:v", "type": "messaging", "id": "v"}))
    assert [s.cid for s in store.channels()] == ["messaging:v"]
    both = store.channels({"$or": [{"hidden": True}, {"cid": "messaging:v"}]})
    assert sorted(s.cid for s in both) == ["messaging:h", "messaging:v"]


def test_a_page_from_one_channel_state_reads_that_entry_once(store: ChatStore) -> None:
    # A query response files many messages under one log entry: a page of them decompresses and
    # decodes that entry once, not once per message (a 20,000-message state would otherwise
    # cost 20,000 decodings of itself, and as many copies of it in memory).
    state = channel_state("messaging:big", messages=120)
    older = {**state["messages"][3], "id": "older-pinned", "pinned": True, "pinned_at": T0}
    state["pinned_messages"] = [older]  # not among the page: filed from `pinned_messages`
    store.ingest_channel_state(msgspec.json.encode(state))
    codec = store.log.datastore.codec
    real_decode = codec.decode
    calls = []

    def counting_decode(kind: int, stored: bytes, position: int | None = None) -> bytes:
        calls.append(len(stored))
        return real_decode(kind, stored, position)

    codec.decode = counting_decode  # type: ignore[method-assign]
    try:
        page = store.messages("messaging:big", limit=200)
        pinned = store.pinned("messaging:big")
    finally:
        del codec.decode
    assert sorted(m.id for m in page) == sorted(
        ["older-pinned", *(f"messaging:big-m{i}" for i in range(120))])
    assert all(m.json()["id"] == m.id for m in page)
    assert [m.json()["id"] for m in pinned] == ["older-pinned"]
    assert len(calls) == 2  # one entry per query
