"""Views of one figure agree: each figure is decided once (one function) and every view shows
that one. Checked on a store built from a generated mixed workload (a query-channels answer,
live events, a stale `me`, a muted and a hidden channel, local commands in every outcome)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import msgspec
import pytest
from click.testing import CliRunner

from chatledger import ChatStore
from chatledger.cli.main import cli
from chatledger.eventstore.commands import Delivered, Failed, Refused
from fixtures import T0, event, user

sys.path.insert(0, str(Path(__file__).parent.parent))
from benchmarks.workload import generate_events, generate_query_channels_response  # noqa: E402

ERROR_500 = {"status": 500, "code": -1, "message": "internal (injected)", "retry_at": None}
REFUSAL = {"status": 403, "code": 17, "message": "not allowed", "retry_at": None}


def _answer(message_id: str, cid: str) -> bytes:
    return msgspec.json.encode({"message": {
        "id": message_id, "cid": cid, "text": "sent", "type": "regular", "user": user("x"),
        "created_at": T0, "updated_at": T0}})


@pytest.fixture(scope="module")
def mixed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """(data dir, own user id) of a store built from a mixed workload, closed."""
    answer = generate_query_channels_response(12, 8, seed=5, users=150)
    states = msgspec.json.decode(answer)["channels"]
    own = states[0]["membership"]["user_id"]
    cids = [state["channel"]["cid"] for state in states]
    data_dir = tmp_path_factory.mktemp("mixed")
    with ChatStore.open(data_dir, own) as store:
        # The connection's `me` says what the backend counted then: stale by the end.
        store.ingest(msgspec.json.encode({
            "type": "health.check", "cid": "*", "created_at": T0, "connection_id": "c1",
            "me": {**user(own), "id": own, "total_unread_count": 99, "unread_count": 99,
                   "unread_channels": 9, "mutes": [],
                   "channel_mutes": [{"channel": {"cid": cids[1]}, "created_at": T0}]}}))
        store.ingest_query_channels(answer)
        store.ingest_many(generate_events(1_500, seed=5, channels=12, users=150))
        store.ingest(event("channel.hidden", cid=cids[2], clear_history=False))
        # Local commands: one waits, one succeeded after a failed attempt, one was refused.
        store.send_message(cids[0], "waits", id="waits")
        retried = store.send_message(cids[0], "retried", id="retried")
        store.outbox.start([retried])
        store.outbox.settle([Failed(retried, ERROR_500, 0.0)])
        store.outbox.start([retried])
        store.outbox.settle([Delivered(retried, _answer("retried", cids[0]))])
        refused = store.send_message(cids[3], "refused", id="refused")
        store.outbox.start([refused])
        store.outbox.settle([Refused(refused, "not allowed", REFUSAL)])
        assert store.verify() == []
    return data_dir, own


@pytest.fixture
def store(mixed: tuple[Path, str]):
    data_dir, own = mixed
    with ChatStore.open(data_dir, own) as opened:
        yield opened


@pytest.fixture
def run(mixed: tuple[Path, str]):
    data_dir, own = mixed

    def invoke(*args: str) -> str:
        result = CliRunner().invoke(cli, ["--data-dir", str(data_dir), "--user", own, *args],
                                    catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return result.stdout

    return invoke


def reaction_text(counts: dict[str, int]) -> str:
    """How a human view writes reaction counts: `like 2, wow 1`, most frequent first."""
    ordered = sorted(counts.items(), key=lambda pair: (-pair[1], pair[0]))
    return ", ".join(f"{kind} {count}" for kind, count in ordered)


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines()]


def test_stats_counts_the_channels_that_channels_lists(store, run) -> None:
    listed = store.channels(limit=1_000)
    hidden = store.channels({"hidden": True}, limit=1_000)
    assert hidden  # the workload hid one
    stats = store.stats()
    assert stats.channels == len(listed)
    assert stats.hidden_channels == len(hidden) and store.channel_count() == len(listed)
    shown = json.loads(run("stats", "--json"))
    assert shown["channels"] == len(json_lines(run("channels", "--limit", "1000", "--json")))
    human = run("stats")
    assert f"channels              {len(listed)} (and {len(hidden)} hidden)" in human


def test_the_own_user_shows_the_unread_counts_and_mutes_of_the_store(store, run) -> None:
    counts = store.unread_counts()
    shown = json.loads(run("show", "user", store.user_id, "--json"))
    assert counts.total_unread_count != 99  # the stale figure of the connection's `me`
    assert shown.get("total_unread_count") == counts.total_unread_count
    assert shown["unread_count"] == counts.total_unread_count
    assert shown["unread_channels"] == counts.unread_channels
    assert shown["channel_mutes"] == [m.mute for m in store.channel_mutes()]
    human = run("show", "user", store.user_id)
    assert f"total_unread_count  {counts.total_unread_count}\n" in human


def test_show_message_shows_the_reactions_its_json_shows(store, run) -> None:
    with_reactions = [m for cid in [c.cid for c in store.channels(limit=100)]
                      for m in store.messages(cid, limit=200) if m.json().get("reaction_counts")]
    assert with_reactions
    for stored in with_reactions[:5]:
        shown = json.loads(run("show", "message", stored.id, "--json"))["message"]
        counts = {kind: n for kind, n in shown["reaction_counts"].items() if n}
        human = run("show", "message", stored.id)
        assert f"reactions  {reaction_text(counts)}\n" in human


def test_the_outbox_lists_the_conflicts_and_no_error_of_a_success(store, run) -> None:
    conflicts = {info.id for info in store.outbox.conflicts()}
    assert conflicts
    waiting = {row["id"] for row in json_lines(run("outbox", "--json"))}
    assert conflicts <= waiting
    human = run("outbox")
    assert "empty" not in human and all(command in human for command in conflicts)
    everything = run("outbox", "--all")
    succeeded = next(line for line in everything.splitlines() if "send_message:retried" in line)
    assert "succeeded" in succeeded and "internal" not in succeeded
    listed = {row["id"]: row for row in json_lines(run("outbox", "--all", "--json"))}
    assert listed["send_message:retried"]["standing_error"] is None
    assert listed["send_message:retried"]["last_error"] == ERROR_500  # the record stays
    assert {info.id for info in store.outbox.waiting()} == waiting
