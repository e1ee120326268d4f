"""The command line: import, log, stats, quarantine, flush; clear errors, never a traceback."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from chatledger.cli.main import cli
from fixtures import message_new, query_channels_response, reaction_new, sync_response


@pytest.fixture()
def run(tmp_path: Path):
    runner = CliRunner()

    def invoke(*args: str, input: bytes | str | None = None, user: str | None = "alice"):
        base = ["--data-dir", str(tmp_path / "data")] + (["--user", user] if user else [])
        return runner.invoke(cli, [*base, *args], input=input, catch_exceptions=False)

    return invoke


def events_file(tmp_path: Path, lines: list[bytes]) -> Path:
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def test_import_then_log_as_json_gives_back_the_exact_bytes(run, tmp_path: Path) -> None:
    lines = [message_new(mid=f"m{i}") for i in range(3)] + [reaction_new()]
    result = run("import", str(events_file(tmp_path, lines)))
    assert result.exit_code == 0, result.output
    assert "Imported 4 of 4" in result.output
    out = run("log", "--json")
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert [r["position"] for r in rows] == [1, 2, 3, 4]
    assert rows[3]["type"] == "reaction.new" and rows[3]["source"] == "import"
    # The event is embedded verbatim.
    assert out.stdout_bytes.splitlines()[0].endswith(b'"event":' + lines[0] + b"}")


def test_import_from_stdin_and_of_responses(run) -> None:
    assert run("import", "-", input=query_channels_response(["messaging:a"])).exit_code == 0
    assert run("import", "-", input=sync_response([message_new(mid="x")])).exit_code == 0
    types = [json.loads(line)["type"] for line in run("log", "--json").stdout.splitlines()]
    assert types == ["chatledger/channel.state", "chatledger/query.result", "message.new",
                     "chatledger/sync.result"]


def test_pretty_printed_document_is_one_item(run, tmp_path: Path) -> None:
    path = tmp_path / "pretty.json"
    path.write_text(json.dumps(json.loads(message_new()), indent=2))
    result = run("import", str(path))
    assert result.exit_code == 0 and "Imported 1 of 1" in result.output


def test_bad_lines_are_quarantined_and_the_exit_status_says_so(run, tmp_path: Path) -> None:
    path = events_file(tmp_path, [message_new(), b"{not json", b'{"type": 3}', reaction_new()])
    result = run("import", str(path))
    assert result.exit_code == 1
    assert "2 of 4 items were quarantined" in result.output
    assert "line 2" in result.output
    assert "Traceback" not in result.output
    q = run("quarantine", "--json")
    reasons = [json.loads(line)["reason"] for line in q.stdout.splitlines()]
    assert reasons[1].startswith("line 2") and reasons[0].startswith("line 3")
    assert json.loads(run("stats", "--json").stdout)["quarantined"] == 2


def test_log_filters(run, tmp_path: Path) -> None:
    run("import", str(events_file(tmp_path, [
        message_new("messaging:a", "m1", at="2026-11-01T00:00:00Z"),
        reaction_new("messaging:a", "m1", at="2026-11-02T00:00:00Z"),
        message_new("messaging:b", "m2", at="2026-11-03T00:00:00Z"),
    ])))

    def positions(*args: str) -> list[int]:
        result = run("log", "--json", *args)
        assert result.exit_code == 0, result.output
        return [json.loads(line)["position"] for line in result.stdout.splitlines()]

    assert positions("--cid", "messaging:a") == [1, 2]
    assert positions("--type", "message.new") == [1, 3]
    assert positions("--since", "2026-11-02") == [2, 3]
    assert positions("--until", "2026-11-02T00:00:00Z") == [1, 2]
    assert positions("--limit", "1", "--newest-first") == [3]
    human = run("log", "--cid", "messaging:a")
    assert "reaction.new" in human.output and "messaging:b" not in human.output


def test_stats(run, tmp_path: Path) -> None:
    run("import", str(events_file(tmp_path, [message_new(), reaction_new()])))
    stats = json.loads(run("stats", "--json").stdout)
    assert stats["events"] == 2 and stats["channels"] == 1 and stats["user_id"] == "alice"
    assert stats["by_type"] == {"message.new": 1, "reaction.new": 1}
    assert "events" in run("stats").output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["log", "--since", "someday"], "is not a time"),
        (["log", "--limit", "0"], "0"),
        (["import", "/no/such/file"], "No such file"),
    ],
)
def test_bad_input_is_one_line_and_non_zero(run, args: list[str], message: str) -> None:
    run("import", "-", input=message_new())
    result = run(*args)
    assert result.exit_code != 0
    assert message in result.output
    assert "Traceback" not in result.output


def test_reading_a_store_that_does_not_exist_is_an_error(run) -> None:
    result = run("log", user="nobody")
    assert result.exit_code == 1 and "no store for user 'nobody'" in result.output


def test_a_user_is_required(run) -> None:
    result = run("stats", user=None)
    assert result.exit_code == 2 and "--user" in result.output


def test_flush_asks_first(run, tmp_path: Path) -> None:
    run("import", "-", input=message_new())
    declined = run("flush", input="n\n")
    assert declined.exit_code == 1 and (tmp_path / "data" / "alice.chatledger").exists()
    done = run("flush", "--yes")
    assert done.exit_code == 0
    assert list((tmp_path / "data").iterdir()) == []
    assert run("flush", "--yes").exit_code == 1


def test_the_installed_command_runs(tmp_path: Path) -> None:
    data = str(tmp_path / "d")
    env_cmd = [sys.executable, "-c", "from chatledger.cli.main import main; main()"]
    proc = subprocess.run(
        [*env_cmd, "--data-dir", data, "--user", "zoe", "import", "-"],
        input=b"garbage\n", capture_output=True, timeout=60,
    )
    assert proc.returncode == 1
    assert proc.stderr.decode().startswith("Error: 1 of 1 items were quarantined")
    assert b"Traceback" not in proc.stderr
    assert len(proc.stderr.decode().strip().splitlines()) == 1


def test_jsonl_with_a_broken_first_line_keeps_the_rest(run, tmp_path: Path) -> None:
    path = events_file(tmp_path, [b"", b"{broken", message_new(mid="a"), message_new(mid="b")])
    result = run("import", str(path))
    assert result.exit_code == 1
    assert "1 of 3 items were quarantined (first: line 2:" in result.output
    assert [json.loads(line)["event"]["message"]["id"]
            for line in run("log", "--json").stdout.splitlines()] == ["a", "b"]


def test_an_empty_file_is_an_error(run, tmp_path: Path) -> None:
    path = tmp_path / "empty.jsonl"
    path.write_bytes(b"\n\n")
    result = run("import", str(path))
    assert result.exit_code == 1 and "nothing to import" in result.output
    assert "Imported" not in result.output  # one error line, no success line before it
    assert not list((tmp_path / "data").glob("*"))  # and no empty store left behind


def test_an_empty_import_into_an_existing_store_keeps_it(run, tmp_path: Path) -> None:
    assert run("import", "-", input=message_new()).exit_code == 0
    assert run("import", "-", input=b"").exit_code == 1
    assert len(run("log", "--json").stdout.splitlines()) == 1


def test_flush_removes_a_store_that_cannot_be_opened(run, tmp_path: Path) -> None:
    run("import", "-", input=message_new())
    path = tmp_path / "data" / "alice.chatledger"
    path.write_bytes(b"garbage" * 1000)
    assert run("stats").exit_code == 1
    assert run("flush", "--yes").exit_code == 0
    assert not path.exists()


def test_a_locked_store_is_a_one_line_error(run, tmp_path: Path) -> None:
    import apsw

    run("import", "-", input=message_new())
    blocker = apsw.Connection(str(tmp_path / "data" / "alice.chatledger"))
    blocker.execute("BEGIN EXCLUSIVE")
    try:
        env_cmd = [sys.executable, "-c", "from chatledger.cli.main import main; main()"]
        proc = subprocess.run(
            [*env_cmd, "--data-dir", str(tmp_path / "data"), "--user", "alice", "import", "-"],
            input=message_new(mid="late"), capture_output=True, timeout=120,
            env={**__import__("os").environ, "CHATLEDGER_LOCK_TIMEOUT": "0.2"},
        )
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert proc.returncode == 1
    assert b"Traceback" not in proc.stderr
    assert proc.stderr.startswith(b"Error: ") and b"locked" in proc.stderr


def _conversation(tmp_path: Path) -> Path:
    from fixtures import event, message, user

    lines = [event("channel.updated", cid=c, channel={"cid": c, "type": "messaging",
                                                       "id": c.split(":")[1], "name": c.upper(),
                                                       "topic": "t" if c.endswith("a") else "u"})
             for c in ("messaging:a", "messaging:b")]
    lines += [event("message.new", cid="messaging:a", at=f"2026-11-25T10:00:0{i}Z",
                    message=message(f"m{i}", cid="messaging:a", at=f"2026-11-25T10:00:0{i}Z",
                                    text=f"hello {i}"), user=user("bob"))
              for i in range(3)]
    return events_file(tmp_path, lines)


def test_channels_with_filter_and_sort(run, tmp_path: Path) -> None:
    run("import", str(_conversation(tmp_path)))
    rows = [json.loads(line) for line in run("channels", "--json").stdout.splitlines()]
    assert [r["cid"] for r in rows] == ["messaging:a", "messaging:b"]
    assert rows[0]["unread_count"] == 3 and rows[0]["last_message"]["message"]["text"] == "hello 2"
    filtered = run("channels", "--json", "--filter", '{"topic": "u"}')
    assert [json.loads(line)["cid"] for line in filtered.stdout.splitlines()] == ["messaging:b"]
    by_cid = run("channels", "--json", "--sort", '[{"field": "cid", "direction": -1}]')
    assert [json.loads(line)["cid"] for line in by_cid.stdout.splitlines()] == ["messaging:b",
                                                                                 "messaging:a"]
    bad = run("channels", "--filter", '{"name": {"$regex": "x"}}')
    assert bad.exit_code == 1 and "$regex" in bad.output and "Traceback" not in bad.output
    assert run("channels", "--filter", "{nope").exit_code == 2


def test_show_channel_message_user(run, tmp_path: Path) -> None:
    run("import", str(_conversation(tmp_path)))
    channel = run("show", "channel", "messaging:a", "--messages", "2")
    assert channel.exit_code == 0 and "hello 2" in channel.output and "hello 0" not in channel.output
    as_json = json.loads(run("show", "channel", "messaging:a", "--json").stdout)
    assert [m["message"]["id"] for m in as_json["messages"]] == ["m0", "m1", "m2"]
    assert json.loads(run("show", "message", "m1", "--json").stdout)["message"]["text"] == "hello 1"
    assert "hello 1" in run("show", "message", "m1").output
    assert json.loads(run("show", "user", "bob", "--json").stdout)["name"] == "Bob"
    missing = run("show", "message", "nope")
    assert missing.exit_code == 1 and "no message 'nope'" in missing.output


def test_rebuild_and_verify(run, tmp_path: Path) -> None:
    import apsw

    run("import", str(_conversation(tmp_path)))
    assert run("verify").exit_code == 0
    db = apsw.Connection(str(tmp_path / "data" / "alice.chatledger"))
    db.execute("DELETE FROM messages WHERE id='m1'")
    db.close()
    broken = run("verify")
    assert broken.exit_code == 1 and "differ from a fresh rebuild in 1 rows" in broken.output
    assert "messages: missing" in broken.output
    assert run("rebuild").exit_code == 0
    assert run("verify").exit_code == 0
