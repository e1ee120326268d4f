"""Point in time (`as_of`) and `explain`: the past of the read tables, and why a message is what
it is; with their commands."""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from chatledger import ChatStore
from chatledger.cli.main import cli
from chatledger.eventstore.log import EventLog, StoreError
from chatledger.projections.history import Explanation, as_of, explain, position_at
from fixtures import channel_state, event, message, query_channels_response, user

A = "messaging:general"
B = "messaging:b"


def at(n: int) -> str:
    return f"2026-11-25T10:{n // 60:02d}:{n % 60:02d}.000000Z"


def memory_store(user_id: str = "alice") -> ChatStore:
    return ChatStore(EventLog.open(":memory:"), user_id=user_id)


@pytest.fixture(params=["file", "memory"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ChatStore]:
    s = ChatStore.open(tmp_path, "alice") if request.param == "file" else memory_store()
    yield s
    s.close()


def story() -> list[list[bytes]]:
    """Batches of events: two channels, edits, reactions, replies, reads, members, a snapshot,
    deletes of every kind, a truncation, a hidden channel, a user's messages deleted."""
    return [
        [event("channel.updated", channel={"cid": A, "type": "messaging", "id": "general",
                                           "name": "General"})],
        [event("member.added", member={"user_id": "alice", "user": user("alice")}),
         event("member.added", member={"user_id": "bob", "user": user("bob")})],
        [event("message.new", at=at(i), message=message(f"m{i}", at=at(i), text=f"text {i}"),
               user=user("bob")) for i in range(1, 4)],
        [event("message.new", at=at(4), message=message("own", at=at(4), uid="alice"),
               user=user("alice"))],
        [event("message.updated", at=at(5), message=message("m1", at=at(1), text="edited"))],
        [event("reaction.new", at=at(6),
               reaction={"message_id": "m2", "user_id": "alice", "type": "like"},
               message=message("m2", at=at(2), text="text 2", reaction_counts={"like": 1}))],
        [event("message.new", at=at(7), message=message("r1", at=at(7), parent_id="m2",
                                                        text="a reply"))],
        [event("message.read", user=user("alice"), last_read_message_id="m3")],
        [event("message.new", cid=B, at=at(8), message=message("b1", cid=B, at=at(8)))],
        [query_channels_response([B])],
        [event("message.deleted", at=at(9),
               message=message("m3", at=at(3), type="deleted", deleted_at=at(9)))],
        [event("message.deleted", at=at(10), message=message("r1", at=at(7)), hard_delete=True)],
        [event("channel.truncated", at=at(20),
               channel={"cid": A, "type": "messaging", "id": "general", "name": "General",
                        "truncated_at": at(2)})],
        [event("user.messages.deleted", cid=None, at=at(21), user=user("bob"))],
        [event("message.new", cid=B, at=at(22), message=message("b2", cid=B, at=at(22)))],
        [event("channel.hidden", cid=B, at=at(30), clear_history=True)],
    ]


def ingest(store: ChatStore, batch: list[bytes], received_at: int | None = None) -> int:
    if batch[0].startswith(b'{"channels"'):
        result = store.log.append_query_channels(batch[0], received_at=received_at)
    else:
        result = store.log.append_events(batch, received_at=received_at)
    return result.last_position


Reader = Any  # a ChatStore or a PastStore


def view(s: Reader) -> dict[str, Any]:
    """Everything the read API shows of the story's channels and messages."""
    return {
        "channel": {cid: s.channel(cid, messages=50) for cid in (A, B)},
        "messages": {cid: s.messages(cid) for cid in (A, B)},
        "message": {mid: s.message(mid) for mid in ("m1", "m2", "m3", "r1", "own", "b1", "b2")},
        "thread": s.thread("m2"),
        "reactions": s.reactions("m2"),
        "members": s.members(A),
        "reads": {cid: s.reads(cid) for cid in (A, B)},
        "unread": s.unread_counts(),
        "channels": s.channels(),
        "pinned": s.pinned(A),
        "user": s.user("bob"),
        "to_sync": s.channel_ids_to_sync(),
    }


# -- as_of -----------------------------------------------------------------------------------------


def test_as_of_a_position_equals_what_the_live_store_showed_then(store: ChatStore) -> None:
    seen: dict[int, dict[str, Any]] = {0: view(store)}
    for batch in story():
        position = ingest(store, batch)
        seen[position] = view(store)
    assert len(seen) == len(story()) + 1
    for position, live in seen.items():
        with store.as_of(position=position) as past:
            assert past.position == position
            assert view(past) == live, f"as of position {position}"
    # And the live store is untouched by all that.
    assert view(store) == seen[max(seen)] and store.verify() == []


def test_as_of_a_time_uses_arrival_and_never_splits_a_batch(store: ChatStore) -> None:
    base = 1_795_000_000_000_000
    seen: list[tuple[int, dict[str, Any]]] = []
    for n, batch in enumerate(story()):
        received = base + n * 1_000_000
        ingest(store, batch, received_at=received)
        seen.append((received, view(store)))
    for received, live in seen:
        for moment in (received, received + 999_999):  # the moment it arrived, and until the next
            with store.as_of(time=moment) as past:
                assert view(past) == live
                assert past.time == moment
    with store.as_of(time=base - 1) as past:  # before anything arrived
        assert past.position == 0 and past.channel(A) is None and past.channels() == []
    # The third batch (three messages) is one transaction: no time shows part of it.
    third = store.log.entries(types=["message.new"], limit=3)
    assert len({e.received_at for e in third}) == 1
    assert position_at(store, third[0].received_at) == third[-1].position


def test_a_clock_that_went_back_follows_the_definition(store: ChatStore) -> None:
    first = ingest(store, [event("message.new", message=message("x1"))], received_at=100)
    second = ingest(store, [event("message.new", message=message("x2", at=at(1)))], received_at=50)
    ingest(store, [event("message.new", message=message("x3", at=at(2)))], received_at=200)
    # The last entry received at or before 60 is the second: the log as it stood then held both.
    assert position_at(store, 60) == second and position_at(store, 40) == 0
    assert position_at(store, 100) == second and first < second
    with store.as_of(time=60) as past:
        assert [m.id for m in past.messages(A)] == ["x1", "x2"]


def test_a_time_is_found_at_the_definitions_position_whatever_the_clock_did() -> None:
    """Arrival times in any order (a clock set back, times an importer gave): the position of a
    time is the highest one received at or before it, as a scan of every entry says."""
    rng = random.Random(7)
    with memory_store() as store:
        received: list[tuple[int, int]] = []
        for n in range(60):
            when = rng.choice([rng.randrange(1_000), n * 20])
            received.append((ingest(store, [event("message.new", message=message(f"t{n}"))],
                                    received_at=when), when))
        for moment in [-1, 0, *range(0, 1_300, 17), *(when for _, when in received)]:
            assert position_at(store, moment) == max(
                (p for p, when in received if when <= moment), default=0), moment


def test_a_recent_time_reads_the_end_of_the_log_not_all_of_it() -> None:
    """Finding the position of a time reads backwards from the end: a time near the end costs
    a small part of what a time near the start does (counted in SQLite's steps)."""
    with memory_store() as store:
        for n in range(40):
            store.log.append_events([event("message.new", message=message(f"r{n}-{k}"))
                                     for k in range(50)], received_at=1_000 + n)
        steps = [0]

        def count() -> bool:
            steps[0] += 1
            return False

        def steps_for(moment: int) -> int:
            steps[0] = 0
            store.log.datastore.writer.set_progress_handler(count, 10)
            try:
                assert position_at(store, moment) == (moment - 999) * 50
            finally:
                store.log.datastore.writer.set_progress_handler(None)
            return steps[0]

        assert steps_for(1_038) * 10 < steps_for(1_001)


def test_as_of_compressed_payloads_and_after_more_appends(tmp_path: Path) -> None:
    store = ChatStore.open(tmp_path, "alice")
    store.ingest_many([event("message.new", at=at(i), message=message(f"m{i}", at=at(i),
                                                                      text=f"words {i} " * 8))
                       for i in range(120)])
    assert store.log.train_dictionary() is not None  # payloads re-encoded with a dictionary
    position = store.ingest(event("message.updated", message=message("m5", at=at(5), text="new")))
    expected = view(store)
    past = store.as_of(position=position)
    store.ingest(event("message.updated", message=message("m5", at=at(5), text="newer")))
    assert view(past) == expected and past.message("m5").json()["text"] == "new"
    assert store.message("m5").json()["text"] == "newer"
    past.close()
    store.close()


def test_a_data_directory_with_uri_characters(tmp_path: Path) -> None:
    directory = tmp_path / "odd #dir% 20?x=1"
    store = ChatStore.open(directory, "alice")
    store.ingest(event("message.new", message=message("m1")))
    with store.as_of(position=1) as past:
        assert past.message("m1") is not None
    assert [e.note for e in store.explain("m1")] == ["stored"]
    store.close()


def test_as_of_refuses_bad_requests_and_is_read_only(store: ChatStore) -> None:
    store.ingest(event("message.new", message=message("m1")))
    for kwargs in ({}, {"position": 1, "time": 5}, {"position": -1}, {"position": 2}):
        with pytest.raises(ValueError):
            as_of(store, **kwargs)
    past = store.as_of(position=1)
    with pytest.raises(StoreError, match="read-only"):
        with past.read.datastore.transaction(commit=True):
            pass
    past.close()
    assert past.closed
    with pytest.raises(StoreError, match="closed"):
        past.message("m1")


# -- explain ---------------------------------------------------------------------------------------


def notes(explained: list[Explanation]) -> list[tuple[str, str]]:
    return [(e.type, e.note) for e in explained]


def test_a_message_edited_reacted_soft_and_hard_deleted_step_by_step(store: ChatStore) -> None:
    store.ingest(event("message.new", at=at(1), message=message("m1", at=at(1), text="first")))
    store.ingest(event("message.new", at=at(2), message=message("other", at=at(2))))
    store.ingest(event("message.updated", at=at(3),
                       message=message("m1", at=at(1), text="second", updated_at=at(3))))
    store.ingest(event("reaction.new", at=at(4),
                       reaction={"message_id": "m1", "user_id": "bob", "type": "like"},
                       message=message("m1", at=at(1), text="second", updated_at=at(3),
                                       reaction_counts={"like": 1})))
    store.ingest(event("reaction.updated", at=at(5),
                       reaction={"message_id": "m1", "user_id": "bob", "type": "like", "score": 3},
                       message=message("m1", at=at(1), text="second", updated_at=at(3),
                                       reaction_counts={"like": 1})))
    store.ingest(event("message.deleted", at=at(6),
                       message=message("m1", at=at(1), text="second", updated_at=at(3),
                                       reaction_counts={"like": 1}, type="deleted",
                                       deleted_at=at(6))))
    store.ingest(event("message.deleted", at=at(7), message=message("m1", at=at(1)),
                       hard_delete=True))
    explained = explain(store, "m1")
    assert [e.position for e in explained] == [1, 3, 4, 5, 6, 7]
    assert notes(explained) == [
        ("message.new", "stored"), ("message.updated", "edited"),
        ("reaction.new", "reaction added"), ("reaction.updated", "reaction updated"),
        ("message.deleted", "soft-deleted"), ("message.deleted", "hard-deleted")]
    stored, edited, reacted, rescored, soft, hard = explained
    assert stored.changes["text"] == (None, "first") and stored.changes["user_id"] == (None, "bob")
    assert stored.source == "websocket" and stored.event_at is not None
    assert set(edited.changes) == {"text", "updated_at"}
    assert edited.changes["text"] == ("first", "second")
    assert edited.changes["updated_at"][0] == stored.changes["updated_at"][1]
    assert reacted.changes == {"reaction_counts": (None, {"like": 1}),
                               "reactions": ({}, {"like(bob)": 1})}
    assert rescored.changes == {"reactions": ({"like(bob)": 1}, {"like(bob)": 3})}
    assert soft.changes["type"] == ("regular", "deleted")
    assert soft.changes["deleted_at"][0] is None and soft.changes["deleted_at"][1] is not None
    assert hard.changes["reactions"] == ({"like(bob)": 3}, {})
    assert hard.changes["text"] == ("second", None)
    assert explain(store, "other")[0].note == "stored"
    assert store.explain("m1") == explained


def test_replies_and_unchanged_mentions(store: ChatStore) -> None:
    store.ingest(event("message.new", message=message("p", text="parent")))
    store.ingest(event("message.new", at=at(1), message=message("r", at=at(1), parent_id="p")))
    # The same message again, as the backend has it now (with its reply count, so sent after
    # the reply was made): a duplicate.
    store.ingest(event("message.new", at=at(1),
                       message=message("p", text="parent", reply_count=1)))
    store.ingest(event("message.deleted", at=at(2), message=message("r", at=at(1)),
                       hard_delete=True))
    assert notes(explain(store, "p")) == [
        ("message.new", "stored"), ("message.new", "reply added"),
        # Removing the reply (an entry that names only "r") shows up: it changed the parent.
        ("message.deleted", "reply removed")]
    everything = explain(store, "p", unchanged=True)
    assert [(e.position, e.note) for e in everything] == [
        (1, "stored"), (2, "reply added"), (3, "no change"), (4, "reply removed")]
    assert everything[2].changes == {}


def test_truncation_and_channel_wide_removals_show_up(store: ChatStore) -> None:
    store.ingest_many([event("message.new", at=at(i), message=message(f"m{i}", at=at(i)))
                       for i in range(4)])
    store.ingest(event("channel.truncated", at=at(10),
                       channel={"cid": A, "id": "general", "type": "messaging",
                                "truncated_at": at(2)}))
    for mid in ("m0", "m1"):
        assert notes(explain(store, mid)) == [
            ("message.new", "stored"),
            ("channel.truncated", "removed: the channel was truncated")]
    assert notes(explain(store, "m2")) == [("message.new", "stored")]  # after truncated_at
    store.ingest(event("channel.hidden", at=at(30), clear_history=True))
    assert explain(store, "m3")[-1].note == "removed: the channel was hidden with its history cleared"
    store.ingest(event("message.new", cid=B, message=message("b1", cid=B)))
    store.ingest(event("channel.deleted", cid=B, channel={"cid": B}))
    assert explain(store, "b1")[-1].note == "removed: the channel was deleted"


def test_user_messages_deleted_soft_and_hard(store: ChatStore) -> None:
    store.ingest(event("message.new", message=message("b1", uid="bob")))
    store.ingest(event("message.new", cid=B, message=message("b2", cid=B, uid="bob")))
    store.ingest(event("message.new", at=at(1), message=message("a1", uid="alice", at=at(1))))
    store.ingest(event("user.messages.deleted", cid=A, at=at(5), user=user("bob")))
    store.ingest(event("user.messages.deleted", cid=None, at=at(6), user=user("bob"),
                       hard_delete=True))
    b1 = explain(store, "b1")
    assert notes(b1) == [
        ("message.new", "stored"),
        ("user.messages.deleted", "soft-deleted: all messages of its author were deleted"),
        ("user.messages.deleted", "removed: all messages of its author were hard-deleted")]
    assert b1[1].changes["type"] == ("regular", "deleted") and b1[2].stream == "@user"
    assert notes(explain(store, "b2")) == [
        ("message.new", "stored"),
        ("user.messages.deleted", "removed: all messages of its author were hard-deleted")]
    assert notes(explain(store, "a1")) == [("message.new", "stored")]


def test_messages_from_snapshots_and_a_message_moved_between_channels(store: ChatStore) -> None:
    store.ingest_channel_state(json.dumps(channel_state(B, messages=2)))
    store.ingest(event("message.updated", cid=B,
                       message=message(f"{B}-m0", cid=B, text="changed")))
    explained = explain(store, f"{B}-m0")
    assert notes(explained) == [("chatledger/channel.state", "stored"),
                                ("message.updated", "edited")]
    assert explained[0].source == "query" and explained[1].changes["text"] == ("hello", "changed")
    # Filed under another channel by an entry of that channel's stream: both streams count.
    store.ingest(event("message.new", cid="messaging:c", message=message("mv", cid="messaging:c")))
    store.ingest(event("message.updated", cid="messaging:d",
                       message=message("mv", cid="messaging:d", text="moved")))
    store.ingest(event("channel.deleted", cid="messaging:d", channel={"cid": "messaging:d"}))
    assert [e.note for e in explain(store, "mv")] == [
        "stored", "edited", "removed: the channel was deleted"]
    # Filed under a channel whose stream never names it: that stream is replayed too.
    store.ingest(event("message.new", cid="messaging:c",
                       message=message("mv2", cid="messaging:e")))
    store.ingest(event("channel.deleted", cid="messaging:e", channel={"cid": "messaging:e"}))
    explained = explain(store, "mv2")
    assert notes(explained) == [("message.new", "stored"),
                                ("channel.deleted", "removed: the channel was deleted")]
    assert explained[1].stream == "messaging:e"


def test_unknown_and_merely_mentioned_ids_explain_nothing(store: ChatStore) -> None:
    assert explain(store, "nope") == []
    store.ingest(event("message.new", message=message("m1", text="see message zz9 please")))
    assert explain(store, "zz9") == []  # in the text only: named, but not as a message
    store.ingest(event("reaction.new", reaction={"message_id": "ghost", "user_id": "bob",
                                                 "type": "like"}))
    assert explain(store, "ghost") == []  # reacted to, but never stored
    weird = 'quo"te\\ and ünïcode'
    store.ingest(event("message.new", message=message(weird)))
    assert notes(explain(store, weird)) == [("message.new", "stored")]


# -- command line ----------------------------------------------------------------------------------


@pytest.fixture()
def run(tmp_path: Path) -> Callable[..., Any]:
    runner = CliRunner()

    def invoke(*args: str, input: bytes | str | None = None):
        base = ["--data-dir", str(tmp_path / "data"), "--user", "alice"]
        return runner.invoke(cli, [*base, *args], input=input, catch_exceptions=False)

    return invoke


def jsonl(*batches: list[bytes]) -> bytes:
    return b"".join(line + b"\n" for batch in batches for line in batch)


def test_as_of_channel_equals_show_channel_then(run) -> None:
    shown: dict[int, dict[str, Any]] = {}
    human: dict[int, str] = {}
    for batch in story()[:8]:
        # --kind events: a file of one line would otherwise be read as one document, kept with
        # its trailing newline.
        assert run("import", "--kind", "events", "-", input=jsonl(batch)).exit_code == 0
        last = json.loads(run("log", "--json", "--newest-first", "--limit", "1").stdout)
        shown[last["position"]] = json.loads(run("show", "channel", A, "--json").stdout)
        human[last["position"]] = run("show", "channel", A).stdout
    for position, live in shown.items():
        result = run("as-of", "--position", str(position), "channel", A, "--json")
        assert result.exit_code == 0, result.output
        past = json.loads(result.stdout)
        assert past.pop("as_of") == {"position": position, "time": None}
        assert past == live
        text = run("as-of", "--position", str(position), "channel", A).stdout
        assert text.splitlines()[1:] == human[position].splitlines()[1:]
        assert f"as of log position {position:,}" in text.splitlines()[0]
    # By time: the moment an entry arrived gives the log as it stood once its import was done.
    entries = [json.loads(line) for line in run("log", "--json").stdout.splitlines()]
    first = entries[3]  # the first of three messages imported together (positions 4-6)
    result = run("as-of", "--time", first["received_at"], "channel", A, "--json")
    past = json.loads(result.stdout)
    assert past["as_of"]["position"] == 6 and past.pop("as_of")["time"] == first["received_at"]
    assert past == shown[6]
    message = json.loads(run("as-of", "--position", "5", "message", "m1", "--json").stdout)
    assert message["message"]["text"] == "text 1" and message["as_of"]["position"] == 5
    assert "text 1" in run("as-of", "--position", "5", "message", "m1").stdout


@pytest.mark.parametrize(
    ("args", "code", "says"),
    [
        (["as-of", "channel", A], 2, "give --position N or --time T"),
        (["as-of", "--position", "1", "--time", "2h", "channel", A], 2, "not both"),
        (["as-of", "--position", "-1", "channel", A], 2, "-1"),
        (["as-of", "--time", "someday", "channel", A], 2, "is not a time"),
        (["as-of", "--position", "99", "channel", A], 1, "past the end of the log"),
        (["as-of", "--position", "2", "channel", "messaging:nope"], 1,
         "no channel 'messaging:nope' was stored as of log position 2"),
        (["as-of", "--time", "2000-01-01", "channel", A], 1, "before the first entry"),
        (["as-of", "--position", "1", "message", "m1"], 1, "no message 'm1'"),
        (["explain", "nope"], 1, "no message 'nope' was ever stored"),
    ],
)
def test_bad_input_is_one_line_and_non_zero(run, args: list[str], code: int, says: str) -> None:
    run("import", "-", input=jsonl(*story()[:3]))
    result = run(*args)
    assert result.exit_code == code, result.output
    assert says in result.output and "Traceback" not in result.output


def test_explain_command(run) -> None:
    events = [b for b in story() if not b[0].startswith(b'{"channels"')]  # events only
    assert run("import", "-", input=jsonl(*events)).exit_code == 0
    header, *lines = run("explain", "m2").stdout.splitlines()
    assert header.split()[:5] == ["pos", "time", "(UTC)", "source", "type"]
    assert len(lines) == 5
    assert "message.new" in lines[0] and "stored: user_id 'bob', text 'text 2'" in lines[0]
    assert lines[1].split()[0] == "9" and "reactions: +like(alice)" in lines[1]
    assert "reply added: reply_count: 0 -> 1" in lines[2]
    assert "reply removed: reply_count: 1 -> 0" in lines[3]
    assert "user.messages.deleted" in lines[4] and "soft-deleted" in lines[4]
    soft = run("explain", "m3").stdout
    assert "type: 'regular' -> 'deleted'" in soft and "deleted_at: - -> 2026-11-25 10:00:09" in soft
    rows = [json.loads(line) for line in run("explain", "m1", "--json").stdout.splitlines()]
    assert [r["note"] for r in rows] == ["stored", "edited",
                                         "removed: the channel was truncated"]
    assert rows[1]["changes"]["text"] == ["text 1", "edited"]
    assert rows[0]["changes"]["created_at"] == [None, "2026-11-25T10:00:01Z"]
    assert rows[0]["source"] == "import" and rows[0]["stream"] == A
    assert len(run("explain", "m1", "--all").stdout.splitlines()) == 1 + 3
