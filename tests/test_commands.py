"""Local actions as commands: the aggregate, folding, outcomes, restarts, rebuild, point in time."""

from __future__ import annotations

import inspect
import threading
from pathlib import Path

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chatledger import ChatStore
from chatledger.eventstore import command_codec
from chatledger.eventstore import commands as cmd
from chatledger.eventstore.commands import (
    Command,
    CommandKind,
    Delivered,
    Failed,
    InvalidTransition,
    Refused,
    UnknownCommand,
    send_command_id,
)
from chatledger.projections.actions import UnknownMessage
from chatledger.projections.schema import SLOT_RESPONSE
from chatledger.sync.backend import Backend
from fixtures import event, message

CID = "messaging:general"
ERROR_500 = {"status": 500, "code": -1, "message": "internal", "retry_at": None}
RATE_LIMITED = {"status": 429, "code": 9, "message": "too many requests", "retry_at": None}
NO_ANSWER = {"status": None, "code": None, "message": "timeout", "retry_at": None}


@pytest.fixture()
def store(tmp_path: Path) -> ChatStore:
    s = ChatStore.open(tmp_path, "alice")
    yield s
    assert s.verify() == []  # whatever a test did, the live tables equal a fresh rebuild
    s.close()


def answer(mid: str, text: str = "hi", **fields) -> bytes:
    return msgspec.json.encode({"message": message(mid, uid="alice", text=text, **fields),
                                "duration": "1ms"})


def received(store: ChatStore, mid: str, text: str = "hi") -> None:
    store.ingest(event("message.new", message=message(mid, text=text)))


def status(store: ChatStore, command_id: str) -> str:
    return store.outbox.get(command_id).status


# -- the aggregate --------------------------------------------------------------------------------


def test_lifecycle_events_map_to_stored_events_and_back() -> None:
    c = Command.request_command("send_message:m1", CommandKind.SEND_MESSAGE, cid=CID,
                                message_id="m1", request={"cid": CID}, message={"id": "m1"})
    c.start_attempt()
    c.fail_attempt(ERROR_500, 12.5)
    c.start_attempt()
    raw = b'{"message": {"id": "m1"},  "odd spacing": true}'
    c.succeed(raw)
    stored = [command_codec.MAPPER.to_stored_event(e) for e in c.collect_events()]
    assert [s.topic for s in stored] == [cmd.REQUESTED, cmd.ATTEMPT_STARTED, cmd.ATTEMPT_FAILED,
                                        cmd.ATTEMPT_STARTED, cmd.SUCCEEDED]
    assert [s.originator_version for s in stored] == [1, 2, 3, 4, 5]
    assert raw in stored[-1].state  # the server's answer, byte for byte
    assert msgspec.json.decode(stored[0].state)["message"] == {"id": "m1"}
    again = command_codec.replay(stored)
    assert again is not None and again.id == "send_message:m1" and again.version == 5
    assert (again.status, again.attempts, bytes(again.response)) == ("succeeded", 2, raw)


def test_transitions_that_make_no_sense_are_refused() -> None:
    c = Command.request_command("x:1", CommandKind.MARK_READ, cid=CID, message_id=None,
                                request={})
    with pytest.raises(InvalidTransition):
        c.retry()  # nothing failed
    c.start_attempt()
    c.succeed(b"{}")
    for action in (lambda: c.cancel("no"), lambda: c.reject("no"), c.start_attempt,
                   lambda: c.amend({}, None), lambda: c.retry()):
        with pytest.raises(InvalidTransition):
            action()


# -- requests as the backend wants them ---------------------------------------------------------


def test_each_request_holds_exactly_the_backend_calls_arguments(store: ChatStore) -> None:
    received(store, "theirs")
    store.send_message(CID, "hello", id="m1", silent=True, colour="teal")
    ids = [
        store.update_message("theirs", "edited"),
        store.partial_update_message("theirs", set={"pinned": True}, unset=["colour"]),
        store.send_reaction("theirs", "like", score=2, emoji="+1"),
        store.delete_reaction("theirs", "love"),
        store.mark_read(CID, message_id="theirs"),
        store.mark_unread(CID, message_id="theirs"),
        store.save_draft(CID, "draft text", parent_id="theirs"),
        store.delete_draft(CID, parent_id="theirs"),
        store.delete_message("theirs", hard=True),
    ]
    pending = {p.id: p for p in store.outbox.pending()}
    assert list(pending) == [send_command_id("m1"), *ids]  # request order
    for p in pending.values():
        parameters = inspect.signature(getattr(Backend, p.kind)).parameters
        names = [n for n in parameters if n != "self"]
        required = [n for n in names if parameters[n].default is inspect.Parameter.empty]
        assert set(required) <= set(p.request) <= set(names), (p.kind, p.request)
    send = pending[send_command_id("m1")].request
    assert send == {"cid": CID, "skip_push": False, "message": {
        "id": "m1", "text": "hello", "attachments": [], "mentioned_users": [], "silent": True,
        "colour": "teal"}}
    update = pending[ids[0]].request["message"]
    assert update["id"] == "theirs" and update["text"] == "edited"
    assert not {"user", "created_at", "cid", "type"} & set(update)  # what the server computes
    assert pending[ids[1]].request == {"message_id": "theirs", "set": {"pinned": True},
                                       "unset": ["colour"]}
    assert pending[ids[2]].request == {"message_id": "theirs", "enforce_unique": False,
                                       "reaction": {"type": "like", "score": 2, "emoji": "+1"}}
    assert pending[ids[3]].request == {"message_id": "theirs", "reaction_type": "love"}
    assert pending[ids[8]].request == {"message_id": "theirs", "hard": True, "for_me": False}


# -- optimistic rows and outcomes ---------------------------------------------------------------


def test_a_send_shows_at_once_and_the_answer_confirms_it(store: ChatStore) -> None:
    received(store, "parent")
    command_id = store.send_message(CID, "reply", id="r1", parent_id="parent")
    assert command_id == send_command_id("r1")
    row = store.message("r1")
    assert (row.local_state, row.local_command, row.type) == ("sending", command_id, "reply")
    assert row.json()["text"] == "reply" and row.json()["user"] == {"id": "alice"}
    assert store.message("parent").reply_count == 1
    assert store.channel(CID).channel  # filed under its channel
    store.outbox.start([command_id])
    store.outbox.settle([Failed(command_id, ERROR_500, 99.0)])
    assert store.message("r1").local_state == "sending"  # a failed attempt changes nothing shown
    failed = store.outbox.pending()[0]
    assert (failed.status, failed.attempts, failed.next_try_at) == ("failed", 1, 99.0)
    assert failed.last_error == ERROR_500
    store.outbox.start([command_id])
    store.outbox.settle([Delivered(command_id, answer("r1", "reply (server)", parent_id="parent"))])
    row = store.message("r1")
    assert row.local_state is None and row.local_command is None
    assert row.json()["text"] == "reply (server)"
    assert store.message("parent").reply_count == 1
    assert store.outbox.pending() == []
    info = store.outbox.get(command_id)
    assert [e.name for e in info.history] == ["requested", "attempt_started", "attempt_failed",
                                               "attempt_started", "succeeded"]
    assert info.response == answer("r1", "reply (server)", parent_id="parent")


def test_already_exists_is_confirmed_from_the_commands_own_message(store: ChatStore) -> None:
    command_id = store.send_message(CID, "mine", id="m1")
    store.outbox.start([command_id])
    body = b'{"code":4,"message":"message with id m1 already exists","StatusCode":400}'
    store.outbox.settle([Delivered(command_id, body)])
    row = store.message("m1")
    assert row.local_state is None and row.json()["text"] == "mine"


def test_a_refused_send_is_a_conflict_and_takes_its_dependents_along(store: ChatStore) -> None:
    command_id = store.send_message(CID, "x" * 10, id="m1")
    store.outbox.start([command_id])
    reaction = store.send_reaction("m1", "like")
    edit = store.update_message("m1", "edited while in flight")
    assert store.outbox.get(reaction).depends_on == command_id
    assert store.outbox.get(edit).depends_on == command_id
    error = {"status": 400, "code": 4, "message": "message too long", "retry_at": None}
    store.outbox.settle([Refused(command_id, "message too long", error)])
    assert store.message("m1").local_state in ("send_failed", "update_failed")
    conflicts = {c.id: c for c in store.outbox.conflicts()}
    assert conflicts[command_id].reason == "message too long"
    assert conflicts[command_id].last_error == error
    assert conflicts[reaction].reason == f"depends on rejected {command_id}"
    assert conflicts[edit].status == "rejected"
    assert store.outbox.pending() == []
    # Editing the refused message fixes the send itself; retrying it retries what was refused
    # with it.
    assert store.update_message("m1", "short") == command_id
    assert store.message("m1").json()["text"] == "short"
    assert status(store, command_id) == "rejected"
    store.outbox.retry(command_id)
    assert store.outbox.pending()[0].request["message"]["text"] == "short"
    # The edit queued earlier is in the send now: superseded, not sent on its own.
    assert store.outbox.get(edit).reason.startswith("superseded")
    assert {p.id for p in store.outbox.pending()} == {command_id, reaction}
    assert store.message("m1").local_state == "sending"
    # Cancelling it drops the message and what waits for it.
    store.outbox.cancel(command_id)
    assert store.message("m1") is None
    assert status(store, reaction) == "cancelled"


def test_edits_of_an_unsent_message_amend_its_send(store: ChatStore) -> None:
    command_id = store.send_message(CID, "first", id="m1")
    assert store.update_message("m1", "second", colour="red") == command_id
    assert store.partial_update_message("m1", set={"pinned": True}, unset=["colour"]) == command_id
    [p] = store.outbox.pending()
    assert p.request["message"]["text"] == "second" and p.request["message"]["pinned"] is True
    assert "colour" not in p.request["message"]
    row = store.message("m1")
    assert row.local_state == "sending" and row.json()["text"] == "second"
    # A try the backend refused (a 4xx: here a rate limit) never took effect: still folded.
    store.outbox.start([command_id])
    store.outbox.settle([Failed(command_id, RATE_LIMITED, 1.0)])
    assert store.update_message("m1", "third") == command_id
    # A try without an answer, or answered 5xx (a gateway's 502 can follow the write), may
    # have been applied: the edit waits for the send instead.
    for failure in (NO_ANSWER, ERROR_500):
        store.outbox.start([command_id])
        store.outbox.settle([Failed(command_id, failure, 1.0)])
        edit = store.update_message("m1", "fourth")
        assert edit != command_id and store.outbox.get(edit).depends_on == command_id


def test_a_delete_of_an_unsent_message_cancels_it_and_its_dependents(store: ChatStore) -> None:
    command_id = store.send_message(CID, "oops", id="m1")
    reaction = store.send_reaction("m1", "like")
    assert store.delete_message("m1") == command_id
    assert store.message("m1") is None and store.reactions("m1") == []
    assert status(store, command_id) == "cancelled"
    assert store.outbox.get(reaction).reason == f"depends on cancelled {command_id}"
    assert store.outbox.pending() == []
    # In flight, the delete has to wait for the send instead.
    second = store.send_message(CID, "again", id="m2")
    store.outbox.start([second])
    delete = store.delete_message("m2")
    assert store.outbox.get(delete).depends_on == second
    assert store.message("m2").local_state == "deleting"


def test_update_refused_then_cancelled_restores_the_message(store: ChatStore) -> None:
    received(store, "m1", text="original")
    edit = store.update_message("m1", "changed")
    row = store.message("m1")
    assert (row.local_state, row.json()["text"]) == ("updating", "changed")
    store.outbox.start([edit])
    store.outbox.settle([Refused(edit, "not allowed", {"status": 403, "code": 17})])
    assert store.message("m1").local_state == "update_failed"
    store.outbox.cancel(edit)
    row = store.message("m1")
    assert row.local_state is None and row.local_command is None
    assert row.json()["text"] == "original"
    with pytest.raises(InvalidTransition):
        store.outbox.cancel(edit)


def test_an_update_confirmed_by_its_answer(store: ChatStore) -> None:
    received(store, "m1", text="original")
    edit = store.update_message("m1", "changed")
    store.outbox.start([edit])
    store.outbox.settle([Delivered(edit, answer("m1", "changed (server)"))])
    row = store.message("m1")
    assert row.local_state is None and row.json()["text"] == "changed (server)"
    with store.log.datastore.transaction(commit=False) as c:
        assert c.execute("SELECT slot FROM messages WHERE id='m1'").fetchone()[0] == SLOT_RESPONSE


def test_deletes_soft_hard_and_for_me(store: ChatStore) -> None:
    for mid in ("soft", "hard", "mine"):
        received(store, mid)
    soft = store.delete_message("soft")
    hard = store.delete_message("hard", hard=True)
    mine = store.delete_message("mine", for_me=True)
    assert store.message("soft").type == "deleted"
    assert store.message("hard").local_state == "deleting"
    assert store.message("mine").deleted_for_me
    store.outbox.start([soft, hard, mine])
    store.outbox.settle([Delivered(soft, answer("soft", type="deleted")),
                         Delivered(hard, answer("hard")), Delivered(mine, answer("mine"))])
    assert store.message("soft").local_state is None and store.message("soft").type == "deleted"
    assert store.message("hard") is None
    assert store.message("mine").local_state is None
    # Cancelling a soft delete brings the message back.
    received(store, "again")
    undo = store.delete_message("again")
    store.outbox.cancel(undo)
    again = store.message("again")
    assert again.type == "regular" and again.deleted_at is None and again.local_state is None


def test_reactions_reads_and_drafts(store: ChatStore) -> None:
    received(store, "m1")
    received(store, "m2")
    first = store.send_reaction("m1", "like")
    store.send_reaction("m1", "love", enforce_unique=True)
    assert [r.type for r in store.reactions("m1", own=True)] == ["love"]
    removal = store.delete_reaction("m1", "love")
    assert store.reactions("m1", own=True) == []
    store.outbox.cancel(removal)
    assert [r.type for r in store.reactions("m1", own=True)] == ["love"]
    store.outbox.start([first])
    reply = {"message": {"id": "m1", "reaction_counts": {"like": 1}},
             "reaction": {"message_id": "m1", "user_id": "alice", "type": "like", "score": 1}}
    store.outbox.settle([Delivered(first, msgspec.json.encode(reply))])
    assert store.unread_counts().total_unread_count == 2
    store.mark_read(CID)
    assert store.unread_counts().total_unread_count == 0
    assert store.reads(CID)[0].last_read_message_id == "m2"
    store.mark_unread(CID, message_id="m2")
    assert store.unread_counts().total_unread_count == 1
    store.save_draft(CID, "later")
    assert store.channel(CID).draft_position is not None
    store.delete_draft(CID)
    assert store.channel(CID).draft_position is None


def test_cancelling_read_marks_and_drafts_puts_back_what_they_replaced(store: ChatStore) -> None:
    received(store, "m1")
    received(store, "m2")
    assert store.unread_counts().total_unread_count == 2
    read = store.mark_read(CID)
    assert store.unread_counts().total_unread_count == 0
    store.outbox.cancel(read)
    assert store.unread_counts().total_unread_count == 2  # unread again, as before
    unread = store.mark_unread(CID, message_id="m2")
    store.outbox.cancel(unread)
    assert store.unread_counts().total_unread_count == 2

    first = store.save_draft(CID, "first thoughts")
    kept = store.channel(CID).draft_position
    second = store.save_draft(CID, "second thoughts")
    store.outbox.cancel(second)
    assert store.channel(CID).draft_position == kept  # the earlier draft is back
    removal = store.delete_draft(CID)
    assert store.channel(CID).draft_position is None
    store.outbox.cancel(removal)
    assert store.channel(CID).draft_position == kept
    store.outbox.cancel(first)
    assert store.channel(CID).draft_position is None  # no draft before the first

    # Something newer than the command: its cancel leaves the row alone.
    read = store.mark_read(CID)
    received(store, "m3")
    store.outbox.cancel(read)
    assert store.unread_counts().total_unread_count == 1  # m3 only: the read mark stays


def test_a_cancelled_send_gives_back_the_channels_time_and_read_mark(store: ChatStore) -> None:
    received(store, "m1")
    before = store.channels()[0]
    assert before.unread_count == 1
    sent = store.send_message(CID, "second thoughts", id="mine")
    assert store.channels()[0].last_message_at > before.last_message_at
    assert store.channels()[0].unread_count == 0  # sending read the channel
    store.outbox.cancel(sent)
    after = store.channels()[0]
    assert (after.last_message_at, after.unread_count) == (before.last_message_at, 1)
    # Its echo arrived before the cancel: the backend has it, so its effects stay.
    sent = store.send_message(CID, "echoed", id="echoed")
    moved = store.channels()[0].last_message_at
    store.outbox.start([sent])  # on the wire
    store.ingest(event("message.new", message=message("echoed", uid="alice", text="echoed")))
    store.outbox.cancel(sent)
    assert store.message("echoed") is not None
    assert (store.channels()[0].last_message_at, store.channels()[0].unread_count) == (moved, 0)


def test_the_websocket_echo_and_other_backend_news(store: ChatStore) -> None:
    command_id = store.send_message(CID, "hello", id="m1")
    store.outbox.start([command_id])
    echo = message("m1", uid="alice", text="hello")
    store.ingest(event("message.new", message=echo))
    assert store.message("m1").local_state is None  # the backend has it
    store.outbox.settle([Delivered(command_id, answer("m1", "hello"))])
    assert store.message("m1").local_state is None
    # An edit never tried: what the backend says about the message predates it.
    edit = store.update_message("m1", "mine, not sent yet")
    store.ingest(event("message.updated", message=message("m1", uid="alice", text="old")))
    store.ingest(event("reaction.new", reaction={"message_id": "m1", "user_id": "bob",
                                                 "type": "like"},
                       message=message("m1", uid="alice", text="old")))
    row = store.message("m1")
    assert (row.local_state, row.json()["text"]) == ("updating", "mine, not sent yet")
    store.outbox.start([edit])
    store.ingest(event("message.updated",
                       message=message("m1", uid="alice", text="mine, not sent yet")))
    assert store.message("m1").local_state is None  # in flight: the echo confirms it


def test_errors_name_the_problem(store: ChatStore) -> None:
    with pytest.raises(UnknownCommand, match="no command 'nope'"):
        store.outbox.get("nope")
    with pytest.raises(UnknownCommand):
        store.outbox.settle([Delivered("nope", b"{}")])
    with pytest.raises(UnknownMessage):
        store.update_message("never-seen", "text")
    with pytest.raises(cmd.CommandError, match="not a channel id"):
        store.send_message("general", "x")
    received(store, "m1")
    with pytest.raises(cmd.CommandError, match="stored already"):
        store.send_message(CID, "x", id="m1")


def test_a_resend_is_the_same_command(store: ChatStore) -> None:
    first = store.send_message(CID, "hello", id="m1")
    assert store.send_message(CID, "hello", id="m1") == first
    assert len(store.outbox.pending()) == 1
    store.delete_message("m1")
    with pytest.raises(cmd.CommandError, match="was cancelled"):
        store.send_message(CID, "hello", id="m1")


def test_the_async_store_queues_actions_in_order(tmp_path: Path) -> None:
    import asyncio

    from chatledger import AsyncChatStore

    async def main() -> None:
        store = await AsyncChatStore.open(tmp_path, "alice")
        try:
            sent = store.send_message(CID, "hello", id="m1")
            reacted = store.send_reaction("m1", "like")
            assert await sent == send_command_id("m1")
            assert (await store.outbox.get(await reacted)).depends_on == send_command_id("m1")
            assert (await store.message("m1")).local_state == "sending"
        finally:
            await store.close()

    asyncio.run(main())


def test_late_and_duplicate_outcomes(store: ChatStore) -> None:
    command_id = store.send_message(CID, "hello", id="m1")
    store.outbox.start([command_id, command_id])  # two attempts in one batch
    assert store.outbox.get(command_id).attempts == 2
    store.outbox.cancel(command_id)
    assert store.message("m1") is None
    store.outbox.start([command_id])  # cancelled since: left as it is
    assert status(store, command_id) == "cancelled"
    # The backend had it after all: its answer counts, and the message is back.
    store.outbox.settle([Delivered(command_id, answer("m1", "hello")),
                         Failed(command_id, ERROR_500, 1.0)])
    assert status(store, command_id) == "succeeded"
    assert store.message("m1").local_state is None


def history(store: ChatStore, command_id: str) -> list[tuple[str, int | None]]:
    return [(e.name, e.data.get("attempt")) for e in store.outbox.get(command_id).history]


def test_a_start_and_its_outcome_in_one_batch_are_one_event(store: ChatStore) -> None:
    a = store.send_message(CID, "one", id="m1")
    b = store.send_message(CID, "two", id="m2")
    c = store.send_message(CID, "three", id="m3")
    store.outbox.record([a, b, Delivered(a, answer("m1", "one")), c,
                         Failed(b, ERROR_500, 5.0), b, Delivered(b, answer("m2", "two"))])
    # The outcome carries the attempt its folded start would have recorded.
    assert history(store, a) == [("requested", None), ("succeeded", 1)]
    assert history(store, b) == [("requested", None), ("attempt_failed", 1), ("succeeded", 2)]
    # A start without its outcome in the batch is recorded as it is: in flight.
    assert history(store, c) == [("requested", None), ("attempt_started", 1)]
    assert [(i.id, i.status, i.attempts) for i in store.outbox.list()] == [
        (a, "succeeded", 1), (b, "succeeded", 2), (c, "in_flight", 1)]
    assert store.message("m1").local_state is None and store.message("m2").local_state is None
    assert store.message("m3").local_state == "sending"
    store.outbox.record([Delivered(c, answer("m3", "three"))])
    assert history(store, c)[-1] == ("succeeded", None)
    assert store.outbox.get(c).attempts == 1
    store.rebuild()
    assert [(i.id, i.status, i.attempts) for i in store.outbox.list()] == [
        (a, "succeeded", 1), (b, "succeeded", 2), (c, "succeeded", 1)]


def test_a_start_is_not_folded_across_a_rejection_or_a_second_start(store: ChatStore) -> None:
    a = store.send_message(CID, "one", id="m1")
    reaction = store.send_reaction("m1", "like")  # waits for the send
    store.outbox.record([reaction, Refused(a, "too long", None), Delivered(reaction, b"{}")])
    # The rejection was carried over to the reaction while it was in flight: its start stays
    # on record, and the late answer changes nothing.
    assert history(store, reaction) == [("requested", None), ("attempt_started", 1),
                                        ("rejected", None)]
    assert history(store, a) == [("requested", None), ("rejected", None)]
    store.outbox.retry(a)
    store.outbox.record([a, a, Delivered(a, answer("m1", "one"))])
    # Two starts: the first had no outcome; the second is folded into the answer.
    assert history(store, a)[-2:] == [("attempt_started", 1), ("succeeded", 2)]
    assert store.outbox.get(a).attempts == 2


# -- restarts, rebuild, the past, explain --------------------------------------------------------


def test_unfinished_commands_survive_a_restart(tmp_path: Path) -> None:
    with ChatStore.open(tmp_path, "alice") as store:
        a = store.send_message(CID, "one", id="m1")
        b = store.send_message(CID, "two", id="m2")
        store.outbox.start([a, b])
        store.outbox.settle([Delivered(b, answer("m2", "two"))])
        c = store.send_reaction("m1", "like")
    with ChatStore.open(tmp_path, "alice") as store:
        pending = store.outbox.pending()
        assert [(p.id, p.status) for p in pending] == [(a, "in_flight"), (c, "pending")]
        assert store.message("m1").local_state == "sending"
        store.rebuild()
        assert store.outbox.pending() == pending
        assert store.verify() == []


def test_as_of_shows_commands_as_they_stood(store: ChatStore) -> None:
    command_id = store.send_message(CID, "hello", id="m1")
    before = store.log.max_position()
    store.outbox.start([command_id])
    store.outbox.settle([Delivered(command_id, answer("m1", "hello (server)"))])
    with store.as_of(position=before) as past:
        assert past.message("m1").local_state == "sending"
        assert past.message("m1").json()["text"] == "hello"
    with store.as_of(position=store.log.max_position()) as now:
        assert now.message("m1").json()["text"] == "hello (server)"


def test_explain_lists_the_commands_and_their_attempts(store: ChatStore) -> None:
    command_id = store.send_message(CID, "hello", id="m1")
    store.outbox.start([command_id])
    store.outbox.settle([Failed(command_id, ERROR_500, 1.0)])
    store.outbox.start([command_id])
    store.outbox.settle([Delivered(command_id, answer("m1", "hello"))])
    store.ingest(event("message.new", message=message("m1", uid="alice")))
    steps = [(e.source, e.command or e.note) for e in store.explain("m1")]
    assert steps[:5] == [
        ("local", "send_message requested"), ("local", "attempt 1 started"),
        ("local", "attempt 1 failed: 500 internal"), ("local", "attempt 2 started"),
        ("local", "succeeded")]


# -- any sequence of actions and outcomes ---------------------------------------------------------

ACTIONS = st.lists(st.tuples(
    st.sampled_from(["send", "edit", "patch", "delete", "react", "unreact", "read", "start",
                     "deliver", "fail", "refuse", "retry", "cancel", "echo", "attempt"]),
    st.integers(0, 3)), max_size=25)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=ACTIONS)
def test_any_sequence_keeps_the_tables_equal_to_a_rebuild(tmp_path_factory, steps) -> None:
    store = ChatStore.open(tmp_path_factory.mktemp("seq"), "alice")
    try:
        for action, n in steps:
            mid = f"m{n}"
            pending = store.outbox.pending()
            target = pending[n % len(pending)].id if pending else None
            try:
                if action == "send":
                    store.send_message(CID, "text", id=mid)
                elif action == "edit":
                    store.update_message(mid, f"edit {n}")
                elif action == "patch":
                    store.partial_update_message(mid, set={"n": n})
                elif action == "delete":
                    store.delete_message(mid, hard=n == 1)
                elif action == "react":
                    store.send_reaction(mid, "like")
                elif action == "unreact":
                    store.delete_reaction(mid, "like")
                elif action == "read":
                    store.mark_read(CID)
                elif action == "echo":
                    store.ingest(event("message.new", message=message(mid, uid="alice")))
                elif target is not None and action == "start":
                    store.outbox.start([target])
                elif target is not None and action == "deliver":
                    store.outbox.settle([Delivered(target, answer(mid))])
                elif target is not None and action == "fail":
                    store.outbox.settle([Failed(target, ERROR_500, 5.0)])
                elif target is not None and action == "refuse":
                    store.outbox.settle([Refused(target, "no", None)])
                elif target is not None and action == "attempt":
                    # A start and its outcome in one batch (the start is folded into it).
                    outcome = [Delivered(target, answer(mid)), Failed(target, ERROR_500, 5.0),
                               Refused(target, "no", None)][n % 3]
                    store.outbox.record([target, outcome])
                elif action in ("retry", "cancel"):
                    listed = store.outbox.list()
                    if listed:
                        getattr(store.outbox, action)(listed[n % len(listed)].id)
            except (UnknownMessage, InvalidTransition, cmd.CommandError):
                pass
            for p in store.outbox.pending():
                assert p.status in cmd.UNFINISHED
        assert store.verify() == []
        # Every command's outbox row agrees with its own events.
        with store.log.datastore.transaction(commit=False) as c:
            for info in store.outbox.list():
                again = command_codec.replay([s for _, s in store.log.select_local(c, info.id)])
                assert again is not None
                assert (again.status, again.attempts) == (info.status, info.attempts)
    finally:
        store.close()


def test_a_batch_is_one_transaction_and_a_failing_action_is_undone_alone(store: ChatStore) -> None:
    with store.batch():
        ids = [store.send_message(CID, f"text {i}", id=f"m{i}") for i in range(3)]
        with pytest.raises(UnknownMessage):
            store.update_message("never-seen", "x")
        store.outbox.start(ids[:2])
    assert [p.status for p in store.outbox.pending()] == ["in_flight", "in_flight", "pending"]
    with pytest.raises(RuntimeError), store.batch():
        store.send_message(CID, "lost", id="gone")
        raise RuntimeError("the whole block is undone")
    assert store.message("gone") is None and len(store.outbox.pending()) == 3


@pytest.mark.parametrize("where", ["file", "memory"])
def test_reads_inside_a_batch_see_its_changes_so_far(tmp_path: Path, where: str) -> None:
    store = (ChatStore.open(tmp_path, "alice") if where == "file"
             else ChatStore.open_file(":memory:"))
    store.user_id = store.user_id or "alice"
    other: list[object] = []
    with store.batch():
        store.send_message(CID, "draft of a thought", id="m1")
        assert store.message("m1").local_state == "sending"  # its own change, before the commit
        assert [c.id for c in store.outbox.pending()] == [send_command_id("m1")]
        if where == "file":  # another thread reads what is committed: nothing yet
            reader = threading.Thread(target=lambda: other.append(store.message("m1")))
            reader.start()
            reader.join()
            assert other == [None]
    assert store.message("m1") is not None
    store.close()


def test_a_killed_process_loses_no_command(tmp_path: Path) -> None:
    import signal
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent(f"""
        import os, signal
        from chatledger import ChatStore
        store = ChatStore.open({str(tmp_path)!r}, "alice")
        ids = [store.send_message("{CID}", "text", id=f"m{{i}}") for i in range(30)]
        store.outbox.start(ids[:10])
        store.send_reaction("m3", "like")
        print("ready", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == -signal.SIGKILL and "ready" in result.stdout, result.stderr
    with ChatStore.open(tmp_path, "alice") as store:
        pending = store.outbox.pending()
        assert len(pending) == 31
        assert [p.status for p in pending[:10]] == ["in_flight"] * 10
        assert store.verify() == []


def test_the_log_records_command_events_with_optimistic_concurrency(store: ChatStore) -> None:
    from eventsourcing.persistence import IntegrityError

    c = Command.request_command("mark_read:x", CommandKind.MARK_READ, cid=CID, message_id=None,
                                request={"cid": CID, "message_id": None, "thread_id": None})
    stored = [command_codec.MAPPER.to_stored_event(e) for e in c.collect_events()]
    [position] = store.log.insert_local(stored)
    assert store.outbox.get("mark_read:x").status == "pending"  # projected in the same write
    with pytest.raises(IntegrityError):
        store.log.insert_local(stored)  # version 1 again: someone else got there first
    assert store.log.max_position() == position
    # The library's own recorder reads it back as the aggregate's stream.
    [again] = store.log.recorder.select_events("mark_read:x")
    assert again.topic == cmd.REQUESTED and command_codec.replay([again]).status == "pending"


def test_a_store_used_offline_trains_its_dictionary_on_its_commands(tmp_path: Path) -> None:
    from chatledger.eventstore.log import TRAIN_AFTER_EVENTS

    store = ChatStore.open(tmp_path, "alice")
    sent = [store.send_message(CID, f"offline message number {i} " + "words " * (i % 7),
                               id=f"m{i}") for i in range(TRAIN_AFTER_EVENTS + 1)]
    assert store.stats().dictionaries == 1
    store.outbox.record([*sent[:3], *(Delivered(c, answer(f"m{i}", "from the server"))
                                      for i, c in enumerate(sent[:3]))])
    with store.log.datastore.transaction(commit=False) as c:
        raw = c.execute("SELECT count(*) FROM stored_events WHERE codec=0 AND length(state)>=64"
                        ).fetchone()[0]
    assert raw == 0  # the answers compressed with it, the requests re-encoded with it
    assert store.outbox.get(sent[0]).response == answer("m0", "from the server")
    assert store.message("m2").json()["text"] == "from the server"
    assert len(store.outbox.pending()) == TRAIN_AFTER_EVENTS - 2
    assert store.verify() == []
    store.close()
