"""The command line's local actions, outbox and conflicts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from chatledger import ChatStore
from chatledger.cli.main import cli
from chatledger.eventstore.commands import Refused, send_command_id


@pytest.fixture()
def run(tmp_path: Path):
    runner = CliRunner()

    def invoke(*args: str, user: str | None = "alice"):
        base = ["--data-dir", str(tmp_path / "data")] + (["--user", user] if user else [])
        return runner.invoke(cli, [*base, *args], catch_exceptions=False)

    return invoke


def lines(result) -> list[dict]:
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_actions_queue_and_show_at_once(run) -> None:
    sent = run("send", "--cid", "messaging:general", "--text", "hello", "--id", "m1", "--json",
               "--force")
    assert sent.exit_code == 0, sent.output
    assert lines(sent) == [{"command_id": "send_message:m1", "status": "pending"}]
    shown = run("show", "message", "m1", "--json")
    assert lines(shown)[0]["local_state"] == "sending"
    edited = run("edit", "m1", "--text", "hello again")
    assert "changed the unsent message" in edited.output
    reacted = run("react", "--message", "m1", "--type", "like", "--json")
    reaction = lines(reacted)[0]["command_id"]
    assert run("read", "--cid", "messaging:general").exit_code == 0
    outbox = lines(run("outbox", "--json"))
    assert [c["id"] for c in outbox][:2] == ["send_message:m1", reaction]
    assert outbox[0]["request"]["message"]["text"] == "hello again"
    assert outbox[1]["depends_on"] == "send_message:m1"
    table = run("outbox")
    assert "waits for send_message:m1" in table.output
    assert run("unreact", "--message", "m1", "--type", "like").exit_code == 0
    deleted = run("delete", "m1")
    assert "not sent" in deleted.output and deleted.exit_code == 0
    assert run("show", "message", "m1").exit_code == 1
    # The message's commands are cancelled with it; the read mark still waits.
    assert [c["kind"] for c in lines(run("outbox", "--json"))] == ["mark_read"]
    everything = lines(run("outbox", "--all", "--json"))
    assert {c["status"] for c in everything} >= {"cancelled"}
    assert run("verify").exit_code == 0


def test_an_outcome_recorded_with_its_start_still_says_which_attempt(run, tmp_path: Path) -> None:
    # The replayer records a start and its outcome in one batch; the outcome then carries the
    # attempt number and there is no attempt_started event: conflicts and explain still say it.
    assert run("send", "--cid", "messaging:general", "--text", "x", "--id", "m1",
               "--force").exit_code == 0
    with ChatStore.open(tmp_path / "data", "alice") as store:
        command_id = send_command_id("m1")
        store.outbox.record([command_id, Refused(command_id, "message too long",
                                                 {"status": 400, "code": 4, "message": "no"})])
    [record] = lines(run("conflicts", "--json"))
    assert [e["event"] for e in record["events"]] == ["requested", "rejected"]
    assert "attempt 1" in run("conflicts").output
    assert "attempt 1 rejected: message too long" in run("explain", "m1").output


def test_retry_cancel_and_conflicts(run, tmp_path: Path) -> None:
    assert run("send", "--cid", "messaging:general", "--text", "x", "--id", "m1",
               "--force").exit_code == 0
    with ChatStore.open(tmp_path / "data", "alice") as store:
        command_id = send_command_id("m1")
        store.outbox.start([command_id])
        store.outbox.settle([Refused(command_id, "message too long",
                                     {"status": 400, "code": 4, "message": "too long"})])
    conflicts = run("conflicts")
    assert "message too long" in conflicts.output and "attempt 1" in conflicts.output
    [record] = lines(run("conflicts", "--json"))
    assert record["reason"] == "message too long"
    assert [e["event"] for e in record["events"]] == ["requested", "attempt_started", "rejected"]
    explained = run("explain", "m1")
    assert "rejected: message too long" in explained.output
    assert run("outbox", "retry", command_id).exit_code == 0
    assert lines(run("outbox", "--json"))[0]["status"] == "pending"
    assert run("outbox", "cancel", command_id).exit_code == 0
    assert "No conflicts" in run("conflicts").output
    again = run("outbox", "cancel", command_id)
    assert again.exit_code == 1 and "cannot cancel" in again.output
    unknown = run("outbox", "retry", "nope")
    assert unknown.exit_code == 1 and "no command 'nope'" in unknown.output
    assert "Traceback" not in unknown.output


def test_bad_input_is_one_line(run) -> None:
    assert run("send", "--cid", "messaging:general", "--text", "x", "--force").exit_code == 0
    bad_cid = run("send", "--cid", "general", "--text", "x")
    assert bad_cid.exit_code == 1 and "not a channel id" in bad_cid.output
    missing = run("edit", "nope", "--text", "x")
    assert missing.exit_code == 1 and "no message 'nope'" in missing.output
    both = run("delete", "x", "--hard", "--for-me")
    assert both.exit_code == 2
