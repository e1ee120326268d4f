"""The replayer against a scripted backend: one test per outcome and ordering rule."""

from __future__ import annotations

import asyncio
import random

import pytest

from chatledger import ChatStore
from chatledger.sync.backend import NoResponse
from chatledger.sync.outcomes import Backoff, Outcome, classify
from chatledger.sync.replayer import Replayer
from scripted import ScriptedBackend, error

A, B = "messaging:a", "messaging:b"


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def store(tmp_path):
    s = ChatStore.open(tmp_path, "alice")
    yield s
    s.close()


def replay(store, backend, **kwargs):
    kwargs.setdefault("rng", random.Random(1))
    replayer = Replayer(store, backend, **kwargs)
    return asyncio.run(replayer.replay())


def statuses(store):
    return {c.id: c.status for c in store.outbox.list()}


def test_delivers_each_channel_in_order_and_confirms_rows(store):
    ids = [store.send_message(A if i % 2 else B, f"m{i}", id=f"m{i}") for i in range(6)]
    backend = ScriptedBackend()
    report = replay(store, backend)
    assert report.delivered == 6 and report.rejected == report.retrying == 0
    assert store.outbox.pending() == []
    sent = [kw["message"]["id"] for kw in backend.calls_to("send_message")]
    assert [m for m in sent if m in ("m1", "m3", "m5")] == ["m1", "m3", "m5"]
    assert [m for m in sent if m in ("m0", "m2", "m4")] == ["m0", "m2", "m4"]
    for mid in ("m0", "m5"):
        assert store.message(mid).local_state is None
    assert len(ids) == 6


def test_the_oldest_action_goes_first_across_channels(store):
    # Channel A's long queue does not hold B back: each free slot takes the oldest head.
    for mid, cid in [("a1", A), ("b1", B), ("a2", A), ("a3", A), ("b2", B), ("a4", A)]:
        store.send_message(cid, mid, id=mid)
    backend = ScriptedBackend()
    replay(store, backend, concurrency=1)
    sent = [kw["message"]["id"] for kw in backend.calls_to("send_message")]
    assert sent == ["a1", "b1", "a2", "a3", "b2", "a4"]
    backend = ScriptedBackend(delay=0.001)  # calls overlap
    for mid, cid in [("c1", A), ("c2", A), ("c3", A), ("d1", B)]:
        store.send_message(cid, mid, id=mid)
    replay(store, backend, concurrency=2)  # never two of one channel at once, still in order
    sent = [kw["message"]["id"] for kw in backend.calls_to("send_message")]
    assert sent == ["c1", "d1", "c2", "c3"]


def test_already_exists_is_delivered(store):
    store.send_message(A, "hello", id="dup")
    backend = ScriptedBackend()
    backend.messages["dup"] = {"id": "dup", "text": "hello"}  # it arrived before the answer got lost
    report = replay(store, backend)
    assert report.delivered == 1
    assert store.outbox.pending() == []
    assert store.message("dup").local_state is None


def test_transient_error_retries_after_backoff(store):
    command = store.send_message(A, "hello", id="m1")
    clock = Clock()
    backend = ScriptedBackend().then("send_message", error(500, -1, "internal error"))
    report = replay(store, backend, clock=clock, backoff=Backoff(base=2, factor=2, cap=10))
    assert report.retrying == 1
    [pending] = store.outbox.pending()
    assert pending.id == command and pending.status == "failed" and pending.attempts == 1
    assert clock.now <= pending.next_try_at <= clock.now + 2
    assert pending.last_error["status"] == 500
    assert store.message("m1").local_state == "sending"
    # Not due yet: nothing is sent.
    report = replay(store, backend, clock=clock)
    assert report.waiting == 1 and len(backend.calls_to("send_message")) == 1
    clock.now += 3
    report = replay(store, backend, clock=clock)
    assert report.delivered == 1 and store.outbox.pending() == []


def test_each_attempt_is_one_numbered_event_in_the_log(store):
    command = store.send_message(A, "hello", id="m1")
    clock = Clock()
    backend = ScriptedBackend().then("send_message", error(500, -1, "internal error"))
    replay(store, backend, clock=clock, backoff=Backoff(base=2, factor=2, cap=10))
    clock.now += 3
    replay(store, backend, clock=clock)
    info = store.outbox.get(command)
    assert (info.status, info.attempts) == ("succeeded", 2)
    # Each attempt's start was recorded with its outcome, in one batch: folded into it.
    assert [(e.name, e.data.get("attempt")) for e in info.history] == [
        ("requested", None), ("attempt_failed", 1), ("succeeded", 2)]
    assert store.verify() == []


class EditsWhileSending(ScriptedBackend):
    """Runs `act` while a send is on the wire (before its start is recorded)."""

    def __init__(self, act) -> None:
        super().__init__()
        self.act = act

    async def send_message(self, cid, message, *, skip_push=False):
        self.act(message["id"])
        return await super().send_message(cid, message, skip_push=skip_push)


def test_an_edit_while_the_send_is_on_the_wire_waits_for_it(store):
    send = store.send_message(A, "hello", id="m1")
    backend = EditsWhileSending(lambda mid: store.update_message(mid, "edited"))
    replay(store, backend)
    replay(store, backend)  # the edit was queued during the first pass
    # The send went out as it was; the edit did not fold into it, and went after it.
    assert [kw["message"]["text"] for kw in backend.calls_to("send_message")] == ["hello"]
    assert [kw["message"]["text"] for kw in backend.calls_to("update_message")] == ["edited"]
    assert store.outbox.get(send).status == "succeeded"
    assert store.outbox.pending() == []
    assert store.message("m1").json()["text"] == "edited"
    assert store.outbox._sending == {}
    assert store.verify() == []


def test_rate_limit_waits_for_the_reset(store):
    store.send_message(A, "hello", id="m1")
    clock = Clock()
    backend = ScriptedBackend().then(
        "send_message", error(429, 9, "too many requests", retry_at=clock.now + 42))
    replay(store, backend, clock=clock)
    [pending] = store.outbox.pending()
    assert pending.next_try_at >= clock.now + 42


def test_a_failing_head_blocks_its_channel_only(store):
    store.send_message(A, "first", id="a1")
    store.send_message(A, "second", id="a2")
    store.send_message(B, "other", id="b1")
    backend = ScriptedBackend().then("send_message", NoResponse("connection reset"))
    backend.delay = 0.001  # the failing call is the first one: channel A's head
    report = replay(store, backend, concurrency=1)
    sent = [kw["message"]["id"] for kw in backend.calls_to("send_message")]
    assert "a2" not in sent and "b1" in sent
    assert report.retrying == 1 and report.delivered == 1 and report.waiting == 1


def test_permanent_error_rejects_and_records_a_conflict(store):
    store.send_message(A, "not allowed", id="m1")
    store.send_reaction("m1", "like")
    store.send_message(A, "next", id="m2")
    backend = ScriptedBackend().then("send_message", error(403, 17, "not allowed to send"))
    report = replay(store, backend)
    assert report.rejected == 1 and report.delivered == 1
    assert backend.calls_to("send_reaction") == []  # it depended on the rejected send
    conflicts = store.outbox.conflicts()
    assert {c.kind for c in conflicts} == {"send_message", "send_reaction"}
    send = next(c for c in conflicts if c.kind == "send_message")
    assert "not allowed" in send.reason
    assert store.message("m1").local_state == "send_failed"
    assert store.message("m2").local_state is None


def test_expired_token_asks_for_a_fresh_one_once(store):
    for i in range(3):
        store.send_message(A if i else B, f"m{i}", id=f"m{i}")
    asked = []

    async def fresh() -> str:
        asked.append(1)
        return "t1"

    # Both channels' first sends are on the wire when the token expires.
    backend = ScriptedBackend(delay=0.001).then(
        "send_message", error(401, 40, "token expired"), error(401, 40, "token expired"))
    report = replay(store, backend, token_provider=fresh)
    assert report.delivered == 3 and backend.token == "t1"
    assert len(asked) == 1


def test_a_token_refused_again_after_a_refresh_backs_off(store):
    store.send_message(A, "hello", id="m1")
    backend = ScriptedBackend().then(
        "send_message", error(401, 40, "token expired"), error(401, 40, "token expired"))
    report = replay(store, backend, token_provider=lambda: "t1")
    assert report.retrying == 1 and backend.token == "t1"
    [pending] = store.outbox.pending()
    assert pending.status == "failed" and pending.attempts == 2


def test_expired_token_without_provider_keeps_the_command(store):
    store.send_message(A, "hello", id="m1")
    backend = ScriptedBackend().then("send_message", error(401, 40, "token expired"))
    report = replay(store, backend)
    assert report.retrying == 1
    assert [c.status for c in store.outbox.pending()] == ["failed"]


def test_app_suspended_stops_replay_and_keeps_everything(store):
    for i in range(4):
        store.send_message(A, f"m{i}", id=f"m{i}")
    backend = ScriptedBackend().then("send_message", error(403, 99, "app suspended"))
    report = replay(store, backend)
    assert report.stopped and "suspended" in report.stopped
    assert len(store.outbox.pending()) == 4


def test_delete_of_something_already_gone_is_success(store):
    store.ingest(_message_new("m1"))
    store.delete_message("m1")
    report = replay(store, ScriptedBackend())  # the scripted server never had m1: 404
    assert report.delivered == 1 and store.outbox.pending() == []


def test_update_of_something_missing_is_rejected(store):
    store.ingest(_message_new("m1"))
    store.update_message("m1", "edited")
    report = replay(store, ScriptedBackend())
    assert report.rejected == 1
    assert store.message("m1").local_state == "update_failed"


def test_edit_of_an_unsent_message_amends_the_send(store):
    store.send_message(A, "draft", id="m1")
    store.update_message("m1", "final")
    backend = ScriptedBackend()
    replay(store, backend)
    [send] = backend.calls_to("send_message")
    assert send["message"]["text"] == "final"
    assert backend.calls_to("update_message") == []


def test_delete_of_an_unsent_message_sends_nothing(store):
    store.send_message(A, "oops", id="m1")
    store.send_reaction("m1", "like")
    store.delete_message("m1")
    backend = ScriptedBackend()
    replay(store, backend)
    assert backend.calls == []
    assert store.outbox.pending() == []
    assert store.message("m1") is None


def test_a_reaction_waits_for_its_message(store):
    store.send_message(A, "hello", id="m1")
    store.send_reaction("m1", "like")
    backend = ScriptedBackend().then("send_message", error(500, -1, "internal"))
    clock = Clock()
    replay(store, backend, clock=clock)
    assert backend.calls_to("send_reaction") == []
    clock.now += 120
    replay(store, backend, clock=clock)
    assert [name for name, _ in backend.calls] == ["send_message", "send_message", "send_reaction"]
    assert store.outbox.pending() == []


def test_channels_run_in_parallel_up_to_the_bound(store):
    for i in range(12):
        store.send_message(f"messaging:c{i}", "hi", id=f"m{i}")
    backend = ScriptedBackend(delay=0.01)
    replay(store, backend, concurrency=3)
    assert backend.max_in_flight == 3


def test_in_flight_commands_are_sent_again_after_a_restart(tmp_path):
    store = ChatStore.open(tmp_path, "alice")
    command = store.send_message(A, "hello", id="m1")
    store.outbox.start([command])  # the process died while the request was on the wire
    store.close()
    backend = ScriptedBackend()
    backend.messages["m1"] = {"id": "m1"}  # the request had arrived
    store = ChatStore.open(tmp_path, "alice")
    try:
        [pending] = store.outbox.pending()
        assert pending.id == command and pending.status == "in_flight"
        report = replay(store, backend)
        assert report.delivered == 1 and store.outbox.pending() == []
        assert backend.sent["m1"] == 0  # never stored twice
        assert store.verify() == []
    finally:
        store.close()


def test_every_command_ends_with_a_recorded_outcome(store):
    store.send_message(A, "a", id="m1")
    store.send_message(B, "b", id="m2")
    store.mark_read(A)
    backend = ScriptedBackend().then("send_message", error(400, 22, "message too long"))
    replay(store, backend)
    for command in store.outbox.list():
        assert command.status in ("succeeded", "rejected")
        history = store.outbox.get(command.id).history
        assert history[-1].name in ("succeeded", "rejected")


def test_backoff_is_exponential_with_full_jitter():
    backoff = Backoff(base=1, factor=2, cap=8)
    rng = random.Random(7)
    for attempt, ceiling in [(1, 1), (2, 2), (3, 4), (4, 8), (9, 8)]:
        delays = [backoff.delay(attempt, rng) for _ in range(200)]
        assert all(0 <= d <= ceiling for d in delays)
        assert max(delays) > ceiling * 0.8  # full jitter spreads over the whole range


@pytest.mark.parametrize("kind, status, code, message, outcome", [
    ("send_message", 400, 4, "message with id x already exists", Outcome.DELIVERED),
    ("send_message", 400, 4, "text is required", Outcome.REJECT),
    ("send_message", 400, 22, "too big", Outcome.REJECT),
    ("send_message", 401, 40, "token expired", Outcome.REFRESH_TOKEN),
    ("send_message", 403, 17, "not allowed", Outcome.REJECT),
    ("send_message", 403, 60, "cooldown", Outcome.RETRY),
    ("send_message", 403, 99, "app suspended", Outcome.STOP),
    ("send_message", 404, 16, "no channel", Outcome.REJECT),
    ("delete_message", 404, 16, "no message", Outcome.DELIVERED),
    ("delete_reaction", 404, 16, "no reaction", Outcome.DELIVERED),
    ("send_reaction", 408, 23, "timeout", Outcome.RETRY),
    ("send_reaction", 429, 9, "rate limited", Outcome.RETRY),
    ("mark_read", 500, -1, "internal", Outcome.RETRY),
])
def test_error_table(kind, status, code, message, outcome):
    assert classify(kind, error(status, code, message)) is outcome
    assert classify(kind, NoResponse("timeout")) is Outcome.RETRY


def _message_new(mid: str) -> bytes:
    from fixtures import message_new

    return message_new(A, mid, uid="alice")


def test_replays_through_an_async_store(tmp_path):
    """Background mode: the outbox is read in the read pool and written on the writer thread."""
    from chatledger import AsyncChatStore

    async def main() -> None:
        async with AsyncChatStore.open(tmp_path, "alice") as store:
            for i in range(5):
                await store.send_message(A if i % 2 else B, f"m{i}", id=f"m{i}")
            await store.send_reaction("m1", "like")
            backend = ScriptedBackend().then("send_message", error(403, 17, "not allowed"))
            report = await Replayer(store, backend, rng=random.Random(1)).replay()
            assert report.delivered == 5 and report.rejected == 1  # m0 refused; the rest through
            assert await store.outbox.pending() == []
            assert [c.kind for c in await store.outbox.conflicts()] == ["send_message"]
            assert await store.verify() == []

    asyncio.run(main())
