"""The command line against hostile values in stored data, and its daily-tool conventions.

Classes of input, not single cases: ids, cids, user ids, reaction kinds and texts holding
terminal escapes (C0, C1, OSC 8), bidirectional overrides, zero-width characters, Rich markup
and emoji codes, very wide text, very long values, option look-alikes and path-like ids. Every
human reader must show them escaped and whole (never cut, wrapped or altered); `--json` must stay
one valid JSON value per line and `--csv` must give each value back exactly; errors stay one
line. Tests run through `CliRunner(color=True)`: without it click strips escape sequences from
what it echoes, which would hide a raw escape that a terminal receives.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import tempfile
from pathlib import Path

import pytest
from chatledger import ChatStore
from chatledger.cli import render
from chatledger.cli.main import cli
from chatledger.cli.output import escape_controls
from chatledger.projections.store import RejectedInput
from click.testing import CliRunner
from fixtures import T0, message, message_new, reaction_new, user
from hypothesis import HealthCheck, Phase, assume, example, given, settings
from hypothesis import strategies as st

# What must never reach a terminal raw: C0 (but the newline ending a line), DEL, C1, the line
# and paragraph separators, bidi embeddings/overrides/isolates, zero-width space, word joiner,
# BOM, lone surrogates.
RAW_CONTROL = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069"
                         "\u200b\u2060\ufeff\ud800-\udfff]")

PIECES = ["\x1b[2J", "\x1b]0;pwned\x07", "\x1b]8;;http://evil.example/\x1b\\link\x1b]8;;\x1b\\",
          "\x9b31m", "\x85", "\x00", "\r", "\x08\x08", "\n", "\t", "\u202eRTL", "\u2066iso\u2069",
          "zero\u200bwidth", "\ufeff", "e\u0301\u0301", "界" * 3, "👨\u200d👩\u200d👧", "[bold]",
          "[/]", ":joy:", ":x:", "%2e%2e", "../", "a/b", " ", "\\", "'\"", "\u2028"]
HOSTILE = st.builds(
    lambda prefix, pieces, tail: prefix + "".join(pieces) + tail,
    st.sampled_from(["", "-x", "--", "a:", " lead"]),
    st.lists(st.sampled_from(PIECES), min_size=1, max_size=4),
    st.sampled_from(["", "z", "L" * 300, "界" * 150]))

# Few examples, no shrinking: each example builds a store and runs a dozen commands.
HOSTILE_SETTINGS = settings(max_examples=8, deadline=None, derandomize=True,
                            phases=(Phase.explicit, Phase.generate),
                            suppress_health_check=[HealthCheck.too_slow])
# The values that found the defects, always tried: an emoji code and a 300-character id (Rich
# made `x😂y` of `x:joy:y` and broke lines at 200 columns), a lone CR (unquoted in CSV).
KNOWN = example(mid="a:joy:b" + "L" * 300, uid="u\r:x:", channel="\u202ec\x1b[2J",
                kind="\u2066k\x9b")


def run(data: Path, *args: str, user_id: str = "alice"):
    return CliRunner().invoke(cli, ["--data-dir", str(data), "--user", user_id, *args],
                              color=True)


def assert_clean(result, command, *, tabs: bool = False) -> None:
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        command, result.output, result.exception)
    assert "Traceback" not in result.output, (command, result.output)
    output = result.output.replace("\t", "") if tabs else result.output
    assert not RAW_CONTROL.search(output), (command, result.output)


def _store_with(data: Path, mid: str, uid: str, cid: str, kind: str) -> bool:
    """A store holding a message `mid` by `uid` in `cid` with a reaction `kind`; False when
    ingest refuses the values (they are then no concern of the readers)."""
    with ChatStore.open(data, "alice") as store:
        store.ingest(message_new(mid="ok0"))
        try:
            store.ingest(message_new(cid=cid, mid=mid, uid=uid, text=f"text {mid}"))
            store.ingest(reaction_new(cid=cid, mid=mid, kind=kind))
        except RejectedInput:
            return False
    return True


@HOSTILE_SETTINGS
@KNOWN
@given(mid=HOSTILE, uid=HOSTILE, channel=HOSTILE, kind=HOSTILE)
def test_hostile_ids_are_shown_escaped_whole_and_unaltered_by_every_human_reader(
        mid: str, uid: str, channel: str, kind: str) -> None:
    cid = "messaging:" + channel
    with tempfile.TemporaryDirectory() as directory:
        data = Path(directory)
        assume(_store_with(data, mid, uid, cid, kind))
        expect = {
            ("show", "message", "--", mid): [mid, uid, cid, kind],
            ("show", "channel", "--", cid): [cid, mid, uid],
            ("show", "user", "--", uid): [uid],
            ("explain", "--", mid): [uid],
            ("log",): [cid],
            ("channels",): [cid],
            ("as-of", "--position", "3", "channel", "--", cid): [cid, mid, uid],
            ("as-of", "--position", "3", "message", "--", mid): [mid, uid, cid],
        }
        for command, values in expect.items():
            result = run(data, *command)
            assert_clean(result, command)
            assert result.exit_code == 0, (command, result.output)
            for value in values:
                # Whole and unaltered: no emoji for `:joy:`, no line broken inside it.
                assert escape_controls(value) in result.output, (command, value, result.output)
        lines = run(data, "show", "message", "--", mid).output.splitlines()
        assert len(lines) == 11, lines  # one labelled line each, none wrapped


@HOSTILE_SETTINGS
@KNOWN
@given(mid=HOSTILE, uid=HOSTILE, channel=HOSTILE, kind=HOSTILE)
def test_hostile_ids_come_back_exactly_from_json_and_csv(mid: str, uid: str, channel: str,
                                                         kind: str) -> None:
    cid = "messaging:" + channel
    with tempfile.TemporaryDirectory() as directory:
        data = Path(directory)
        assume(_store_with(data, mid, uid, cid, kind))
        for command in (("log", "--json"), ("channels", "--json"), ("explain", "--json", "--", mid),
                        ("show", "message", "--json", "--", mid),
                        ("show", "user", "--json", "--", uid),
                        ("show", "channel", "--json", "--", cid)):
            result = run(data, *command)
            assert result.exit_code == 0, (command, result.output)
            for line in result.stdout.split("\n")[:-1]:
                json.loads(line)
            assert result.stdout.endswith("\n")
            assert not re.search("[\u2028\u2029\x85]", result.stdout), command
        shown = json.loads(run(data, "show", "message", "--json", "--", mid).stdout)
        assert shown["message"]["id"] == mid
        assert json.loads(run(data, "show", "user", "--json", "--", uid).stdout)["id"] == uid
        for fmt in ("--csv", "--tsv"):
            result = run(data, "show", "channel", fmt, "--", cid)
            rows = list(csv.reader(io.StringIO(result.stdout, newline=""),
                                   dialect="excel-tab" if fmt == "--tsv" else "excel"))
            assert [(row[1], row[2]) for row in rows[1:]] == [(uid, mid)], rows
            result = run(data, "log", fmt)
            rows = list(csv.reader(io.StringIO(result.stdout, newline=""),
                                   dialect="excel-tab" if fmt == "--tsv" else "excel"))
            assert [row[3] for row in rows[1:]] == ["messaging:general", cid, cid], rows


WIDE_TEXTS = st.lists(st.sampled_from(["界", "😀", "e\u0301", "a", " ", "Ｗ", "\u0300"]),
                     min_size=0, max_size=40).map("".join)


@settings(max_examples=40, deadline=None, derandomize=True)
@given(rows=st.lists(st.tuples(WIDE_TEXTS, WIDE_TEXTS, WIDE_TEXTS), min_size=1, max_size=5),
       width=st.one_of(st.none(), st.integers(20, 120)))
def test_tables_line_up_and_fit_by_the_columns_characters_take(rows, width) -> None:
    """A CJK character or an emoji takes two terminal columns, a combining accent none: columns
    line up by display width, and a fitted table stays within the terminal unless a key does
    not fit."""
    from rich.cells import cell_len

    columns = [render.Column("user", "key"), render.Column("text"), render.Column("id", "key")]
    rows = [("u" + user_id.strip(), text, ident.strip() + "i") for user_id, text, ident in rows]
    lines = list(render.table_lines(columns, rows, width))
    id_at = cell_len(lines[0][: lines[0].index("id", 4)])
    for line, (user_id, text, ident) in zip(lines[1:], rows):
        before_id = line[: len(line) - len(ident)]
        assert line.endswith(ident) and line.startswith(user_id), (line, ident)
        assert cell_len(before_id) == id_at, lines  # the id column starts at one place
    # What cannot give way: the key columns, and a text column no wider than the shortest
    # text is ever cut to (`render.MIN_TEXT`: a short value cut would say nothing), else half
    # of that (`render.fit`). Within that, every line fits.
    keys = (max(4, *(cell_len(user_id) for user_id, _, _ in rows))
            + max(2, *(cell_len(ident) for _, _, ident in rows)))
    text_width = max(4, *(cell_len(text) for _, text, _ in rows))
    floor = keys + (text_width if text_width <= render.MIN_TEXT
                    else max(4, render.MIN_TEXT // 2)) + 2 * 2
    if width is not None and floor <= width:
        assert all(cell_len(line) <= width for line in lines), (width, lines)


def test_an_ambiguous_prefix_of_hostile_ids_is_a_one_line_escaped_error(tmp_path: Path) -> None:
    with ChatStore.open(tmp_path, "alice") as store:
        store.ingest(message_new(mid="ab\x1b[2J\x1b]0;title\x07one"))
        store.ingest(message_new(mid="ab\u202etwo\nthree"))
    for command in (("show", "message", "ab"), ("explain", "ab"),
                    ("as-of", "--position", "2", "message", "ab")):
        result = run(tmp_path, *command)
        assert result.exit_code == 1, (command, result.output)
        assert_clean(result, command)
        assert result.output.count("\n") == 1 and "ambiguous" in result.output, result.output
        assert "ab\\x1b[2J\\x1b]0;title\\x07one" in result.output


def test_a_missing_store_names_hostile_user_ids_escaped(tmp_path: Path) -> None:
    ChatStore.open(tmp_path, "\x1b[2Jmallory\u202e").close()
    result = run(tmp_path, "stats", user_id="bob")
    assert result.exit_code == 1
    assert_clean(result, "stats")
    assert "\\x1b[2Jmallory\\u202e" in result.output and result.output.count("\n") == 1


def test_the_gap_line_of_show_channel_escapes_ids(tmp_path: Path) -> None:
    cid = "messaging:general"
    pinned = message("old[bold]\x1b[2J:joy:", cid, at="2026-11-25T09:00:00Z", pinned=True,
                     pinned_at="2026-11-25T09:01:00Z", pinned_by=user("bob"))
    with ChatStore.open(tmp_path, "alice") as store:
        store.ingest_channel_state({
            "channel": {"id": "general", "type": "messaging", "cid": cid, "created_at": T0,
                        "updated_at": T0},
            "messages": [message(f"p{n}", cid, at=f"2026-11-25T10:{n:02d}:00Z")
                         for n in range(3)],
            "pinned_messages": [pinned], "members": [], "read": []})
    result = run(tmp_path, "show", "channel", cid)
    assert_clean(result, "show channel")
    assert "gap: the store may lack messages between old[bold]\\x1b[2J:joy: (" in result.output


def _bad_file_name(data: Path, name: bytes) -> None:
    os.close(os.open(os.fsencode(data) + b"/" + name, os.O_CREAT | os.O_WRONLY, 0o600))


def test_users_shows_a_store_whose_file_name_decodes_to_no_text(tmp_path: Path) -> None:
    """`~ED~A0~80` decodes to a lone surrogate: no output encoding can write it as it is."""
    ChatStore.open(tmp_path, "alice").close()
    _bad_file_name(tmp_path, b"~ED~A0~80.chatledger")
    for fmt in ((), ("--json",), ("--csv",), ("--tsv",)):
        result = run(tmp_path, "users", *fmt)
        assert result.exit_code == 0, (fmt, result.output, result.exception)
        assert_clean(result, fmt, tabs=fmt == ("--tsv",))
        assert "\\ud800" in result.output and "alice" in result.output
        if fmt == ("--json",):
            assert [json.loads(line)["user_id"] for line in result.stdout.splitlines()] == [
                "alice", "\\ud800"]


@pytest.mark.parametrize("name", ["é".encode(), b"a~zz", b"b\xffc", "日本".encode()])
def test_a_stray_file_in_the_data_directory_does_not_break_users(tmp_path: Path,
                                                                   name: bytes) -> None:
    ChatStore.open(tmp_path, "alice").close()
    _bad_file_name(tmp_path, name + b".chatledger")
    for command, user_id in ((("users",), "alice"), (("stats",), "bob")):
        result = run(tmp_path, *command, user_id=user_id)
        assert result.exception is None or isinstance(result.exception, SystemExit), (
            command, result.exception)
        assert result.exit_code in (0, 1)



# -- what local actions and the outbox echo ---------------------------------------------------


def test_actions_and_the_outbox_echo_hostile_message_ids_escaped(tmp_path: Path) -> None:
    hostile = "m\x1b[2J\x1b]0;t\x07\u202e"
    with ChatStore.open(tmp_path, "alice") as store:
        store.ingest(message_new(mid=hostile))
    for command in (("react", "--message", "m", "--type", "like"),
                    ("edit", "m", "--text", "changed"),
                    ("outbox",), ("outbox", "--all"), ("conflicts",)):
        result = run(tmp_path, *command)
        assert result.exit_code == 0, (command, result.output)
        assert_clean(result, command)
    [command_id] = [info.id for info in ChatStore.open(tmp_path, "alice").outbox.waiting()
                    if info.kind == "send_reaction"]
    for command in (("outbox", "cancel", command_id), ("outbox", "retry", command_id)):
        result = run(tmp_path, *command)
        assert_clean(result, command)
        assert escape_controls(command_id) in result.output, result.output


# -- stats ----------------------------------------------------------------------------------------


def test_stats_piped_has_no_trailing_padding_and_keeps_long_values_whole(tmp_path: Path) -> None:
    user_id = "u" * 150 + "\x1b[2J:joy:[b]"
    with ChatStore.open(tmp_path, user_id) as store:
        store.ingest(message_new(mid="m1"))
    result = run(tmp_path, "stats", user_id=user_id)
    assert result.exit_code == 0, result.output
    assert_clean(result, "stats")
    assert all(line == line.rstrip() for line in result.output.splitlines()), result.output
    assert escape_controls(user_id) in result.output


# -- credentials ------------------------------------------------------------------------------


SECRETS = ("s3cretpw", "APIKEYQ", "KEYQQQ", "TOKZZZ")


@pytest.mark.parametrize("url", ["ftp://u:s3cretpw@h/?api_key=APIKEYQ",
                                 "unix://u:s3cretpw@h/?api_key=APIKEYQ"])
def test_diff_with_a_url_the_http_library_refuses_is_one_line_without_credentials(
        tmp_path: Path, url: str) -> None:
    with ChatStore.open(tmp_path, "alice") as store:
        store.ingest(message_new(mid="m1"))
    result = run(tmp_path, "diff", "--base-url", url, "--api-key", "KEYQQQ", "--token", "TOKZZZ",
                 "--timeout", "2")
    assert result.exit_code == 2, (result.output, result.exception)
    assert isinstance(result.exception, SystemExit), result.exception
    assert result.output.startswith("Error: ") and result.output.count("\n") == 1, result.output
    assert not any(secret in result.output for secret in SECRETS), result.output


@pytest.mark.parametrize("url", ["mysql://u:s3cretpw@h/db", "https://u:s3cretpw@h/db",
                                 "sqlite://u:s3cretpw@h/db?api_key=APIKEYQ"])
def test_archive_errors_never_print_a_urls_password(tmp_path: Path, url: str) -> None:
    for command in (("archive", "users", "--from", url), ("archive", "stats", "--from", url),
                    ("archive", "find", "m1", "--from", url)):
        result = run(tmp_path, *command)
        assert result.exit_code == 1, (command, result.output, result.exception)
        assert result.output.count("\n") == 1
        assert not any(secret in result.output for secret in SECRETS), result.output


def test_the_archive_apis_error_for_a_foreign_url_holds_no_password() -> None:
    from chatledger.errors import ArchiveError
    from chatledger.sync.archive.connection import check_url

    with pytest.raises(ArchiveError) as info:
        check_url("mysql://u:s3cretpw@h/db")
    assert "s3cretpw" not in str(info.value)


# -- conventions ----------------------------------------------------------------------------------


def test_key_options_are_accepted_after_the_subcommand_too(tmp_path: Path) -> None:
    """`--key-file` and `--keyring` are global options: accepted anywhere, as the others."""
    key = tmp_path / "alice.key"
    key.write_text("ab" * 32)
    with ChatStore.open(tmp_path, "alice", key=bytes.fromhex("ab" * 32)) as store:
        store.ingest(message_new(mid="m1"))
    base = ["--data-dir", str(tmp_path), "--user", "alice"]
    for command in (["stats", "--key-file", str(key)],
                    ["show", "message", "--key-file", str(key), "m1"],
                    ["as-of", "--position", "1", "--key-file", str(key), "message", "m1"],
                    ["log", "--key-file", str(key), "--json"]):
        result = CliRunner().invoke(cli, [*base, *command])
        assert result.exit_code == 0, (command, result.output)
    refused = CliRunner().invoke(cli, [*base, "log", "--keyring"])
    assert "No such option" not in refused.output, refused.output


@pytest.mark.parametrize("option", ["--since", "--until"])
def test_an_empty_time_is_a_usage_error_not_no_limit(tmp_path: Path, option: str) -> None:
    with ChatStore.open(tmp_path, "alice") as store:
        store.ingest(message_new(mid="m1"))
    result = run(tmp_path, "log", option, "")
    assert result.exit_code == 2, result.output
    assert result.output.startswith("Error: ") and result.output.count("\n") == 1
