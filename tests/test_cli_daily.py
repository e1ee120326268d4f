"""The command line and the Python API as a new user meets them (issue 19): history and output,
ids and names, imports and interrupts, times in the API."""

from __future__ import annotations

import csv
import io
import json
import os
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from chatledger import ChatStore
from chatledger.cli import render
from chatledger.cli.devserver import export_line
from chatledger.cli.main import cli
from chatledger.cli.output import settings
from chatledger.eventstore.commands import Refused, send_command_id
from chatledger.eventstore.log import EventLog
from chatledger.projections.actions import UnknownTarget
from chatledger.projections.ids import AmbiguousId
from fixtures import message_new, query_channels_response

LONG_CID = "messaging:a-channel-with-a-rather-long-identifier-that-must-not-be-cut"


@pytest.fixture(autouse=True)
def _plain_settings():
    yield
    settings.local_time = False
    settings.no_pager = False


@pytest.fixture()
def data(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture()
def run(data: Path):
    runner = CliRunner()

    def invoke(*args: str, input: bytes | str | None = None, user: str | None = "alice",
               env: dict[str, str] | None = None):
        base = ["--data-dir", str(data)] + (["--user", user] if user else [])
        return runner.invoke(cli, [*base, *args], input=input, env=env)

    return invoke


def _store_with(data: Path, events: list[bytes], user: str = "alice") -> None:
    with ChatStore.open(data, user) as store:
        store.ingest_many(events)


def _rows(text: str, delimiter: str = ",") -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text), delimiter=delimiter))


# -- global options ------------------------------------------------------------------------------


def test_global_options_are_accepted_after_the_subcommand(data: Path) -> None:
    _store_with(data, [message_new()])
    runner = CliRunner()
    result = runner.invoke(cli, ["channels", "--data-dir", str(data), "--user", "alice"])
    assert result.exit_code == 0, result.output
    assert "messaging:general" in result.output
    result = runner.invoke(cli, ["show", "message", "m1", "--user", "alice", "--data-dir",
                                 str(data), "--json"])
    assert result.exit_code == 0 and json.loads(result.stdout)["message"]["id"] == "m1"
    # In a group's subcommand too, and the short form.
    result = runner.invoke(cli, ["as-of", "--position", "1", "message", "m1", "-u", "alice",
                                 "--data-dir", str(data)])
    assert result.exit_code == 0, result.output


# -- history and output --------------------------------------------------------------------------


def test_log_has_a_default_limit_and_all_shows_everything(run, data: Path) -> None:
    _store_with(data, [message_new(mid=f"m{i}") for i in range(105)])
    shown = run("log", "--json")
    positions = [json.loads(line)["position"] for line in shown.stdout.splitlines()]
    assert positions == list(range(6, 106))  # the newest 100, in order
    assert "--all" in shown.stderr
    assert len(run("log", "--all", "--json").stdout.splitlines()) == 105
    assert len(run("log", "--limit", "3", "--json").stdout.splitlines()) == 3
    assert run("log", "--all", "--limit", "3").exit_code == 2
    table = run("log")
    assert table.stdout.splitlines()[0].split()[:3] == ["pos", "time", "(UTC)"]
    assert len(table.stdout.splitlines()) == 101


def test_tables_stream_a_chunk_at_a_time() -> None:
    consumed = []

    def rows():
        for number in range(10_000):
            consumed.append(number)
            yield (number, f"text {number}")

    lines = render.table_lines([render.Column("pos", "key"), render.Column("text")], rows(), None)
    assert next(lines).split() == ["pos", "text"]
    assert len(consumed) <= render.CHUNK_ROWS
    assert next(lines).split() == ["0", "text", "0"]


def test_piped_tables_carry_no_trailing_padding(run, data: Path) -> None:
    _store_with(data, [message_new(mid="m1", text="a" * 150), message_new(mid="m2", text="b")])
    for args in (("log",), ("channels",), ("show", "channel", "messaging:general")):
        result = run(*args)
        assert result.exit_code == 0, result.output
        assert all(line == line.rstrip() for line in result.stdout.splitlines()), args
        assert "a" * 150 in result.stdout or args[0] == "channels"  # piped: nothing cut


@pytest.mark.parametrize("width", [60, 100])
def test_ids_cids_and_positions_are_never_cut_at_any_width(run, data: Path, tmp_path: Path,
                                                           monkeypatch, width: int) -> None:
    _store_with(data, [message_new(LONG_CID, mid="m1", text="x " * 80)])
    assert run("send", "--cid", LONG_CID, "--text", "y " * 80, "--id",
               "an-id-long-enough-to-overflow-a-narrow-screen-0123456789").exit_code == 0
    monkeypatch.setattr(render, "terminal_width", lambda: width)
    outbox = run("outbox", "--all").stdout.splitlines()
    assert "send_message:an-id-long-enough-to-overflow-a-narrow-screen-0123456789" in outbox[1]
    channels = run("channels").stdout.splitlines()
    assert channels[1].split()[0] == LONG_CID
    log = run("log").stdout.splitlines()
    assert log[0].startswith("pos") and log[1].split()[0] == "1"
    assert LONG_CID in log[1]
    for line in outbox[1:] + channels[1:] + log[1:]:
        # A line may run past the width only by the uncut ids, never by other columns.
        if len(line) > width:
            assert LONG_CID in line or "an-id-long-enough" in line, line


def test_fit_shortens_text_then_drops_columns() -> None:
    columns = [render.Column("id", "key"), render.Column("kind", drop=2),
               render.Column("note", drop=1)]
    shown, widths = render.fit(columns, [30, 10, 50], 60)
    assert shown == [0, 1, 2] and widths[0] == 30 and sum(widths) + 4 <= 60
    shown, widths = render.fit(columns, [50, 10, 50], 60)
    assert 0 in shown and widths[0] == 50 and 2 not in shown


@pytest.mark.parametrize("fmt,delimiter", [("--csv", ","), ("--tsv", "\t")])
def test_csv_and_tsv_on_tabular_commands(run, data: Path, fmt: str, delimiter: str) -> None:
    _store_with(data, [message_new(mid="m1", text="hello, \"world\"\nnext"),
                       message_new(mid="m3"), b'{"type": 3}'])
    assert run("send", "--cid", "messaging:general", "--text", "hi", "--id", "m2").exit_code == 0
    log = _rows(run("log", fmt).stdout, delimiter)
    assert [row["pos"] for row in log] == ["1", "2", "3"]  # the bad one is quarantined
    assert log[0]["time"] == "2026-11-25T10:00:00Z"
    channels = _rows(run("channels", fmt).stdout, delimiter)
    assert channels[0]["cid"] == "messaging:general"
    messages = _rows(run("show", "channel", "messaging:general", fmt).stdout, delimiter)
    assert {row["id"] for row in messages} == {"m1", "m2", "m3"}
    assert "hello, \"world\"\nnext" in {row["text"] for row in messages}  # whole, quoted
    outbox = _rows(run("outbox", fmt).stdout, delimiter)
    assert outbox[0]["id"] == "send_message:m2"
    explained = _rows(run("explain", "m1", fmt).stdout, delimiter)
    assert explained[0]["type"] == "message.new"
    quarantined = _rows(run("quarantine", fmt).stdout, delimiter)
    assert len(quarantined) == 1 and quarantined[0]["reason"]
    users = _rows(run("users", fmt, user=None).stdout, delimiter)
    assert users[0]["user"] == "alice" and int(users[0]["events"]) == 3


def test_local_time_is_labelled_with_its_zone(run, data: Path, monkeypatch) -> None:
    _store_with(data, [message_new()])
    monkeypatch.setenv("TZ", "Asia/Tokyo")
    time.tzset()
    try:
        header, row = run("log", "--local-time").stdout.splitlines()
        assert "(JST)" in header and "2026-11-25 19:00:00.000" in row
        env = run("log", env={"CHATLEDGER_LOCAL_TIME": "1"}).stdout
        assert "(JST)" in env
        assert "(UTC)" in run("log").stdout.splitlines()[0]
        assert "10:00:00Z" in run("log", "--local-time", "--json").stdout  # JSON stays UTC
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()


def test_explain_has_a_header_and_names_each_attempts_command(run, data: Path) -> None:
    _store_with(data, [message_new(mid="m1")])
    run("react", "--message", "m1", "--type", "like")
    with ChatStore.open(data, "alice") as store:
        [command] = [info.id for info in store.outbox.list()]
        store.outbox.start([command])
    lines = run("explain", "m1").stdout.splitlines()
    assert lines[0].split()[:5] == ["pos", "time", "(UTC)", "source", "type"]
    assert any("send_reaction attempt 1 started" in line for line in lines)


def test_a_conflicts_reason_is_said_once(run, data: Path) -> None:
    assert run("send", "--cid", "messaging:general", "--text", "x", "--id", "m1",
               "--force").exit_code == 0
    reason = "user 'alice' may not write here (HTTP 403, code 17)"
    with ChatStore.open(data, "alice") as store:
        command_id = send_command_id("m1")
        store.outbox.start([command_id])
        store.outbox.settle([Refused(command_id, reason, {"status": 403, "code": 17,
                                                          "message": "user 'alice' may not write here"})])
    output = run("conflicts").stdout
    assert output.count("may not write here") == 1, output
    assert "attempt 1" in output


# -- ids and names -------------------------------------------------------------------------------


def test_unique_prefixes_resolve_and_ambiguous_ones_list_candidates(run, data: Path) -> None:
    _store_with(data, [message_new(mid="3f1c0001"), message_new(mid="3f1d0002")])
    shown = run("show", "message", "3f1c", "--json")
    assert shown.exit_code == 0 and json.loads(shown.stdout)["message"]["id"] == "3f1c0001"
    ambiguous = run("show", "message", "3f1")
    assert ambiguous.exit_code == 1
    assert "3f1c0001" in ambiguous.output and "3f1d0002" in ambiguous.output
    assert run("explain", "3f1d").exit_code == 0
    reacted = run("react", "--message", "3f1d", "--type", "like", "--json")
    command_id = json.loads(reacted.stdout)["command_id"]
    assert run("outbox", "cancel", command_id[:20]).exit_code == 0
    assert json.loads(run("outbox", "--all", "--json").stdout)["status"] == "cancelled"
    with ChatStore.open(data, "alice") as store:
        assert store.resolve_id("message", "3f1c") == "3f1c0001"
        assert store.resolve_id("message", "nope") is None
        with pytest.raises(AmbiguousId) as info:
            store.resolve_id("message", "3f")
        assert info.value.candidates == ["3f1c0001", "3f1d0002"]
        assert store.ids_with_prefix("channel", "mess") == ["messaging:general"]


def test_close_cids_and_users_are_suggested(run, data: Path, tmp_path: Path) -> None:
    _store_with(data, [message_new()])
    channel = run("show", "channel", "general")
    assert channel.exit_code == 1 and "did you mean 'messaging:general'" in channel.output
    unknown = run("show", "user", "Alice")
    assert unknown.exit_code == 1 and "did you mean 'alice'" in unknown.output
    user = run("channels", user="Alice")
    assert user.exit_code == 1 and "did you mean 'alice'" in user.output
    assert "stores there: alice" in user.output
    missing = CliRunner().invoke(cli, ["--data-dir", str(tmp_path / "nope"), "--user", "alice",
                                       "stats"])
    assert missing.exit_code == 1 and "does not exist" in missing.output


def test_users_lists_the_stores_of_the_data_directory(run, data: Path) -> None:
    _store_with(data, [message_new(mid=f"m{i}") for i in range(3)])
    _store_with(data, [message_new()], user="bob/../x")
    listed = [json.loads(line) for line in run("users", "--json", user=None).stdout.splitlines()]
    assert [entry["user_id"] for entry in listed] == ["alice", "bob/../x"]
    assert listed[0]["events"] == 3 and listed[0]["bytes"] > 0
    assert listed[0]["last_activity_at"].endswith("Z")
    table = run("users", user=None).stdout
    assert "alice" in table and "bob/../x" in table and "(UTC)" in table
    assert [store.user_id for store in ChatStore.list_users(data)] == ["alice", "bob/../x"]


def test_actions_on_what_the_store_never_saw_need_force(run, data: Path) -> None:
    _store_with(data, [message_new()])
    for args in (("send", "--cid", "messaging:generl", "--text", "x"),
                 ("react", "--message", "nope", "--type", "like"),
                 ("unreact", "--message", "nope", "--type", "like"),
                 ("read", "--cid", "messaging:nope"),
                 ("delete", "nope")):
        refused = run(*args)
        assert refused.exit_code == 1 and "--force" in refused.output, args
        assert "never seen" in refused.output
    assert "did you mean 'messaging:general'" in run("send", "--cid", "messaging:generl",
                                                     "--text", "x").output
    assert json.loads(run("outbox", "--json").stdout or "null") is None  # nothing queued
    assert run("send", "--cid", "messaging:new", "--text", "x", "--force").exit_code == 0
    assert run("send", "--cid", "messaging:new", "--text", "again").exit_code == 0  # seen now
    assert run("react", "--message", "m1", "--type", "like").exit_code == 0
    with ChatStore.open(data, "alice") as store:
        with pytest.raises(UnknownTarget):
            store.send_message("messaging:nope", "x", known_only=True)
        with pytest.raises(UnknownTarget):
            store.send_reaction("nope", "like", known_only=True)
        store.send_message("messaging:nope", "x")  # without the flag: queued, as before


def test_unknown_filter_fields_are_warned_about_and_sdk_sorts_accepted(run, data: Path) -> None:
    with ChatStore.open(data, "alice") as store:
        store.ingest_query_channels(query_channels_response(["messaging:a", "messaging:b"]))
        warned = store.unknown_filter_fields({"nmae": "General", "$or": [{"type": "x"}]})
        assert warned == {"nmae": ["name"]}
        listed = [s.cid for s in store.channels(sort={"cid": -1})]
        assert listed == ["messaging:b", "messaging:a"]
        assert [s.cid for s in store.channels(sort=[{"cid": -1}])] == listed
    result = run("channels", "--filter", '{"nmae": "General"}')
    assert result.exit_code == 0 and "'nmae'" in result.stderr and "'name'" in result.stderr
    assert "Warning" not in run("channels", "--filter", '{"name": "x"}').stderr
    sorted_rows = _rows(run("channels", "--sort", '{"cid": -1}', "--csv").stdout)
    assert [row["cid"] for row in sorted_rows] == ["messaging:b", "messaging:a"]


# -- imports and interrupts ----------------------------------------------------------------------


def _events_file(tmp_path: Path, count: int) -> Path:
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"\n".join(message_new(mid=f"i{i}") for i in range(count)) + b"\n")
    return path


def test_ctrl_c_during_import_exits_130_and_says_what_was_committed(
        run, data: Path, tmp_path: Path, monkeypatch) -> None:
    source = _events_file(tmp_path, 50)
    append, calls = EventLog.append, [0]

    def interrupted_append(self: EventLog, *args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        if calls[0] == 3:
            raise KeyboardInterrupt
        return append(self, *args, **kwargs)

    monkeypatch.setattr(EventLog, "append", interrupted_append)
    result = run("import", "--batch", "10", str(source))
    assert result.exit_code == 130, result.output
    assert "20 items were stored (up to line 20)" in result.stderr and "--resume" in result.stderr
    monkeypatch.setattr(EventLog, "append", append)
    resumed = run("import", "--resume", "--batch", "10", str(source))
    assert resumed.exit_code == 0 and "Continued after line 20" in resumed.output
    with ChatStore.open(data, "alice", create=False) as store:
        assert [e.json()["message"]["id"] for e in store.history(limit=100)] == \
            [f"i{i}" for i in range(50)]


def test_ctrl_c_before_anything_is_stored_leaves_no_store(run, data: Path, tmp_path: Path,
                                                          monkeypatch) -> None:
    def interrupted(*args: Any, **kwargs: Any) -> Any:
        raise KeyboardInterrupt

    monkeypatch.setattr(EventLog, "append", interrupted)
    result = run("import", str(_events_file(tmp_path, 5)))
    assert result.exit_code == 130 and "Aborted" not in result.output
    assert not list(data.glob("*.chatledger"))
    nothing = run("import", "-", input=b"")
    assert nothing.exit_code == 1 and not list(data.glob("*.chatledger"))


def test_a_failed_first_sync_leaves_no_store(run, data: Path) -> None:
    result = run("sync", "--once", "--base-url", "http://127.0.0.1:9", "--api-key", "k",
                 "--token", "t", "--timeout", "1", user="bob")
    assert result.exit_code != 0
    assert not (data / "bob.chatledger").exists()


def test_the_import_ledger_stores_an_input_once_unless_again(run, data: Path,
                                                              tmp_path: Path) -> None:
    source = _events_file(tmp_path, 30)
    assert run("import", str(source)).exit_code == 0
    again = run("import", str(source))
    assert again.exit_code == 0 and "Already imported: 30 lines" in again.output
    assert json.loads(run("import", "--json", str(source)).stdout)["already_imported"] is True
    nothing = run("import", "--resume", str(source))
    assert nothing.exit_code == 0 and "Already imported" in nothing.output
    with ChatStore.open(data, "alice", create=False) as store:
        assert store.last_position() == 30
    assert run("import", "--again", str(source)).exit_code == 0
    # A file that grew: only the new lines are stored.
    with source.open("ab") as file:
        file.write(message_new(mid="new") + b"\n")
    grown = run("import", str(source))
    assert "Continued after line 30" in grown.output and "Imported 1 of 1" in grown.output
    with ChatStore.open(data, "alice", create=False) as store:
        assert store.last_position() == 61
    other = tmp_path / "other.jsonl"
    other.write_bytes(message_new(mid="o1") + b"\n" + message_new(mid="o2") + b"\n")
    assert "nothing to resume" in run("import", "--resume", str(other)).output
    # A response document is recorded by its hash.
    response = tmp_path / "query.json"
    response.write_bytes(query_channels_response(["messaging:q"]))
    assert run("import", str(response)).exit_code == 0
    assert "Already imported" in run("import", str(response)).output
    with ChatStore.open(data, "alice", create=False) as store:
        report = store.import_file(io.BytesIO(response.read_bytes()), again=True)
        assert report.stored > 0


# -- the Python API ------------------------------------------------------------------------------


def test_time_parameters_take_datetimes_rfc3339_and_ages(data: Path) -> None:
    with ChatStore.open(data, "alice") as store:
        store.ingest(message_new(mid="old", at="2026-11-25T10:00:00Z"))
        now = datetime.now(timezone.utc)
        store.ingest(message_new(mid="new", at=now.isoformat().replace("+00:00", "Z")))
        assert [e.json()["message"]["id"] for e in store.history(since="2h")] == ["new"]
        assert len(store.history(since=datetime(2026, 11, 25, tzinfo=timezone.utc))) == 2
        assert len(store.history(until="2026-11-25T10:00:00Z")) == 1
        assert len(store.history(since=now - timedelta(minutes=1))) == 1
        with pytest.raises(ValueError, match="no time zone"):
            store.history(since=datetime(2026, 11, 25))
        with pytest.raises(ValueError, match="not a time"):
            store.history(since="yesterday-ish")
        with store.as_of(time=now + timedelta(seconds=5)) as past:
            assert past.message("new") is not None


def test_results_have_datetimes_and_the_fields_people_look_for(data: Path) -> None:
    with ChatStore.open(data, "alice") as store:
        store.ingest(message_new(mid="m1", text="hi there", at="2026-11-25T10:00:00Z"))
        message = store.message("m1")
        assert message is not None
        assert message.text == "hi there" and message.user_id == "alice"
        assert message.created == datetime(2026, 11, 25, 10, tzinfo=timezone.utc)
        assert message.created_at == 1_795_600_800_000_000 and message.deleted is None
        [entry] = store.history()
        assert entry.event_time == message.created and entry.received.tzinfo is timezone.utc
        [summary] = store.channels()
        assert summary.last_message_time == message.created


def test_devserver_prints_a_line_sync_can_use() -> None:
    line = export_line("http://127.0.0.1:4400", "devkey", "o'neil", "a.b.c")
    assert line == ("export CHATLEDGER_BASE_URL=http://127.0.0.1:4400 CHATLEDGER_API_KEY=devkey "
                    "CHATLEDGER_USER='o'\"'\"'neil' CHATLEDGER_TOKEN=a.b.c")


def test_shell_completion_offers_ids_from_the_store(data: Path) -> None:
    _store_with(data, [message_new("messaging:general", mid="3f1c0001"),
                       message_new("messaging:random", mid="9a0e0002")])
    runner = CliRunner()

    def complete(words: str) -> list[str]:
        env = {"_CHATLEDGER_COMPLETE": "bash_complete", "COMP_WORDS": words,
               "COMP_CWORD": str(len(words.split()) - (0 if words.endswith(" ") else 1))}
        result = runner.invoke(cli, [], env=env, prog_name="chatledger")
        return [line.split(",", 1)[1] for line in result.stdout.splitlines()]

    base = f"chatledger --data-dir {data}"
    assert complete(f"{base} --user al") == ["alice"]
    assert complete(f"{base} --user alice show channel messaging:r") == ["messaging:random"]
    assert complete(f"{base} --user alice show message 3f") == ["3f1c0001"]
    assert complete(f"{base} --user alice log --cid mess") == ["messaging:general",
                                                               "messaging:random"]
    after = f"chatledger show message --user alice --data-dir {data} 9a"
    assert complete(after) == ["9a0e0002"]  # global options after the command count too
    os.environ.pop("_CHATLEDGER_COMPLETE", None)


def test_long_tables_page_through_the_pager_on_a_terminal(run, data: Path, monkeypatch) -> None:
    _store_with(data, [message_new(mid=f"m{i}") for i in range(5)])
    paged: list[str] = []
    monkeypatch.setattr(render, "use_pager", lambda: True)
    monkeypatch.setattr(render.click, "echo_via_pager",
                        lambda lines: paged.extend(lines))
    result = run("log")
    assert result.exit_code == 0 and result.stdout == ""
    assert paged[0].startswith("pos") and len(paged) == 6 and paged[1].endswith("\n")
    monkeypatch.undo()
    settings.no_pager = True  # --no-pager
    assert not render.use_pager()


def test_short_values_stay_whole_when_ids_overflow_the_width() -> None:
    columns = [render.Column("id", "key"), render.Column("status"),
               render.Column("target", "key"), render.Column("note", drop=1)]
    shown, widths = render.fit(columns, [50, 9, 36, 40], 70)
    assert shown == [0, 1, 2] and widths[:3] == [50, 9, 36]


def test_the_async_store_has_the_new_methods(data: Path) -> None:
    import asyncio

    from chatledger import AsyncChatStore

    async def main() -> None:
        chat = ChatStore.open(data, "alice")
        async with AsyncChatStore.wrap(chat) as store:
            await store.ingest_many([message_new(mid=f"m{i}") for i in range(3)])
            assert [entry.position async for entry in store.iter_history()] == [1, 2, 3]
            assert len(await store.history(since=datetime(2026, 1, 1, tzinfo=timezone.utc))) == 3
            assert await store.resolve_id("message", "m1") == "m1"
            assert await store.last_position() == 3 and not await store.is_empty()
            assert await store.unknown_filter_fields({"nmae": 1}) == {"nmae": ["name"]}
            users = await AsyncChatStore.list_users(data)
            assert [user.user_id for user in users] == ["alice"]

    asyncio.run(main())
