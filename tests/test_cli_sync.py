"""`chatledger demo`, `chatledger sync` and `chatledger devserver` from the command line."""

from __future__ import annotations

import json

from click.testing import CliRunner

from chatledger import ChatStore
from chatledger.cli.main import cli
from chatledger.sync.devserver import ThreadedDevServer


def run(*args: str, env: dict[str, str] | None = None):
    return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)


def test_demo_tells_the_story_and_leaves_its_store(tmp_path):
    result = run("--data-dir", str(tmp_path), "demo")
    assert result.exit_code == 0, result.output
    out = result.output
    for heading in ("channels", "The outbox", "Refused by the server", "Audit trail"):
        assert heading in out
    assert "Went offline" in out and "Back online" in out
    assert "not a member" in out  # the conflict
    # It ends with a diff against the server that shows the refused action, and nothing else.
    diff = out[out.index("The store against the server"):]
    assert "refused  message" in diff and "not a member" in diff
    assert "unexplained" not in diff and "missed" not in diff and "pending" not in diff
    with ChatStore.open(tmp_path, "alice", create=False) as store:
        assert store.outbox.pending() == []
        assert len(store.outbox.conflicts()) == 1
        assert store.verify() == []
        assert store.last_sync_at() is not None
    # The other commands can explore it.
    listing = run("--data-dir", str(tmp_path), "--user", "alice", "outbox", "--all", "--json")
    assert listing.exit_code == 0
    assert {json.loads(line)["status"] for line in listing.output.splitlines()} >= {
        "succeeded", "rejected", "cancelled"}


def test_demo_runs_again_over_its_own_store_but_not_over_another(tmp_path):
    assert run("--data-dir", str(tmp_path), "demo").exit_code == 0
    assert run("--data-dir", str(tmp_path), "demo").exit_code == 0
    other = tmp_path / "other"
    with ChatStore.open(other, "alice") as store:
        store.send_message("messaging:general", "mine", id="keep-me")
    result = CliRunner().invoke(cli, ["--data-dir", str(other), "demo"])
    assert result.exit_code == 1
    assert "did not make" in result.output
    with ChatStore.open(other, "alice", create=False) as store:
        assert store.message("keep-me") is not None


def test_demo_replaces_a_store_an_earlier_release_of_the_demo_made(tmp_path):
    # Earlier releases marked the demo's store under the bare meta key `made_by`.
    assert run("--data-dir", str(tmp_path), "demo").exit_code == 0
    with ChatStore.open(tmp_path, "alice", create=False) as store:
        store.set_note("made_by", None)
        store.log.set_meta("made_by", "chatledger demo")
        assert store.note("made_by") == "chatledger demo"
    result = CliRunner().invoke(cli, ["--data-dir", str(tmp_path), "demo"])
    assert result.exit_code == 0, result.output


def test_sync_once_against_the_development_server(tmp_path):
    with ThreadedDevServer(seed="demo", health_interval=0.5) as server:
        env = {"CHATLEDGER_BASE_URL": server.url, "CHATLEDGER_API_KEY": server.api_key,
               "CHATLEDGER_TOKEN": server.make_token("alice")}
        base = ("--data-dir", str(tmp_path), "--user", "alice")
        first = run(*base, "sync", "--once", "--json", env=env)
        assert first.exit_code == 0, first.output
        report = json.loads(first.output)
        assert "messaging:general" in report["loaded"] and report["pending"] == 0
        assert run(*base, "send", "--cid", "messaging:general", "--text", "from the CLI",
                   "--id", "cli-1").exit_code == 0
        second = json.loads(run(*base, "sync", "--once", "--json", env=env).output)
        assert second["delivered"] == 1 and second["pending"] == 0
        assert "cli-1" in {m["id"] for m in server.snapshot()["messages"]}


def test_sync_needs_a_backend(tmp_path):
    result = CliRunner().invoke(cli, ["--data-dir", str(tmp_path), "--user", "alice", "sync"],
                                env={"CHATLEDGER_BASE_URL": "", "CHATLEDGER_API_KEY": "",
                                     "CHATLEDGER_TOKEN": ""})
    assert result.exit_code == 2
    assert "--base-url" in result.output
