"""Fuzzing every ingest entry point that tests/test_ingest_fuzz.py does not reach.

test_ingest_fuzz.py covers `ingest_many` with random batches and mutated responses on an
in-memory store. Here: `ingest` (one item, as bytes, text and Python objects), structurally
generated query-channels, channel-state and `/sync` responses (not only byte mutations), the
outcomes the replayer hands to `Outbox.settle` (`Delivered` with any answer bytes, `Failed` and
`Refused` with any error), and files given to `chatledger import`, all on stores on disk. Each
example: no exception but `RejectedInput` (and, from the command line, no traceback), every item
stored or quarantined with a reason, the read tables equal to a fresh rebuild and the file
passing `PRAGMA integrity_check`.
"""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path
from typing import Any

import msgspec
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chatledger import ChatStore
from chatledger.cli.main import cli
from chatledger.eventstore.commands import CommandStatus, Delivered, Failed, Refused
from chatledger.projections.store import RejectedInput
from fixtures import channel_state, message_new, query_channels_response, sync_response
from reliability import integrity, scaled
from test_ingest_fuzz import event_like, json_values, mutate

SETTINGS = settings(max_examples=scaled(40, 400), deadline=None,
                    suppress_health_check=[HealthCheck.too_slow,
                                           HealthCheck.function_scoped_fixture])

CIDS = st.sampled_from(["messaging:general", "messaging:a", "team:x", "", "a:", ":b", "x" * 300])
TIMES = st.one_of(st.just("2026-11-25T10:00:00Z"), st.just("2026-13-45T99:99:99Z"), st.text(),
                  st.integers(), st.none(), st.just("0001-01-01T00:00:00Z"),
                  st.just("9999-12-31T23:59:59.999999999Z"))
IDS = st.one_of(st.sampled_from(["m1", "m2", "demo", ""]), st.text(max_size=20), st.integers(),
                st.none())
USERS = st.one_of(st.none(), json_values,
                  st.fixed_dictionaries({"id": IDS}, optional={"name": st.text(), "role": IDS}))
MESSAGES = st.one_of(json_values, st.fixed_dictionaries(
    {"id": IDS}, optional={"cid": CIDS, "text": st.one_of(st.text(), st.integers()),
                           "type": st.sampled_from(["regular", "reply", "deleted", "system", 7]),
                           "user": USERS, "created_at": TIMES, "updated_at": TIMES,
                           "parent_id": IDS, "reaction_counts": json_values,
                           "attachments": json_values, "deleted_at": TIMES}))
EVENT_TYPES = st.sampled_from([
    "message.new", "message.updated", "message.deleted", "reaction.new", "reaction.deleted",
    "message.read", "notification.mark_unread", "channel.updated", "channel.truncated",
    "channel.deleted", "member.added", "member.removed", "user.updated", "health.check",
    "user.messages.deleted", "draft.updated", "poll.updated", "typing.start", "brand.new.type"])
EVENTS = st.one_of(
    event_like,
    st.fixed_dictionaries(
        {"type": EVENT_TYPES, "created_at": TIMES},
        optional={"cid": CIDS, "message": MESSAGES, "user": USERS, "channel": json_values,
                  "member": json_values, "reaction": json_values, "hard_delete": st.booleans(),
                  "connection_id": IDS, "me": USERS, "unread_messages": json_values}),
)
CHANNEL_STATES = st.fixed_dictionaries(
    {"channel": st.one_of(json_values, st.fixed_dictionaries(
        {"cid": CIDS}, optional={"id": IDS, "type": IDS, "member_count": json_values,
                                 "created_at": TIMES, "truncated_at": TIMES}))},
    optional={"messages": st.one_of(json_values, st.lists(MESSAGES, max_size=4)),
              "members": json_values, "read": json_values, "pinned_messages": json_values,
              "watcher_count": json_values},
)


def raw_forms(value: Any) -> st.SearchStrategy[Any]:
    """The same value as bytes, as text, or as the Python object itself."""
    encoded = msgspec.json.encode(value)
    return st.sampled_from([encoded, encoded.decode(), value])


def check_store(store: ChatStore) -> None:
    assert store.verify() == []
    assert integrity(store.path) == "ok"


@pytest.fixture()
def store(tmp_path: Path):
    s = ChatStore.open(tmp_path, "alice")
    s.ingest(message_new(mid="anchor"))
    yield s
    s.close()


def fresh_store() -> tuple[tempfile.TemporaryDirectory, ChatStore]:
    directory = tempfile.TemporaryDirectory()
    s = ChatStore.open(directory.name, "alice")
    s.ingest(message_new(mid="anchor"))
    return directory, s


# --------------------------------------------------------------------------------------------
# store.ingest: one item, every form


@SETTINGS
@given(st.data())
def test_ingest_one_item_is_stored_or_refused_with_a_reason(data: st.DataObject) -> None:
    directory, store = fresh_store()
    try:
        payloads = [e.payload for e in store.history()]
        quarantined = len(store.quarantine())
        for _ in range(data.draw(st.integers(1, 6))):
            item = data.draw(st.one_of(
                EVENTS.flatmap(raw_forms), st.binary(max_size=80),
                st.builds(lambda d: mutate(message_new(), d), st.data()),
                json_values, st.text(max_size=40)))
            try:
                position = store.ingest(item, source=data.draw(
                    st.sampled_from(["websocket", "sync", "import"])))
            except RejectedInput as e:
                assert str(e)  # a reason
                quarantined += 1
                assert len(store.quarantine()) == quarantined
                assert store.quarantine(limit=1)[0].reason
            else:
                assert position > 0
                payloads.append(store.history(newest_first=True, limit=1)[0].payload)
        assert [e.payload for e in store.history()] == payloads  # nothing earlier changed
        check_store(store)
    finally:
        store.close()
        directory.cleanup()


# --------------------------------------------------------------------------------------------
# Responses, generated by structure (and then maybe mutated)


def _maybe_mutate(data: st.DataObject, raw: bytes) -> bytes:
    return mutate(raw, data) if data.draw(st.booleans()) else raw


@SETTINGS
@given(st.data())
def test_generated_responses_are_stored_or_quarantined(data: st.DataObject) -> None:
    directory, store = fresh_store()
    try:
        before = [e.payload for e in store.history()]
        calls = 0
        for _ in range(data.draw(st.integers(1, 4))):
            which = data.draw(st.sampled_from(["query", "state", "sync"]))
            if which == "query":
                body = {"channels": data.draw(st.one_of(
                    st.lists(CHANNEL_STATES, max_size=4), json_values)), "duration": "1ms"}
                raw = _maybe_mutate(data, msgspec.json.encode(body))
                result = store.ingest_query_channels(
                    raw, filter=data.draw(st.one_of(st.none(), st.dictionaries(
                        st.text(max_size=8), json_values, max_size=3))),
                    sort=data.draw(st.one_of(st.none(), st.lists(json_values, max_size=2))))
            elif which == "state":
                raw = _maybe_mutate(data, msgspec.json.encode(data.draw(CHANNEL_STATES)))
                result = store.ingest_channel_state(raw)
            else:
                events = data.draw(st.lists(EVENTS, max_size=6))
                raw = _maybe_mutate(data, sync_response([msgspec.json.encode(e) for e in events],
                                                        data.draw(st.lists(CIDS, max_size=2))))
                result = store.ingest_sync(raw, synced_at=data.draw(st.one_of(
                    st.none(), st.just("2026-11-25T11:00:00Z"), st.text(max_size=12))))
            calls += 1
            assert result.stored + len(result.quarantined) >= 1
            assert all(q.reason for q in result.quarantined)
            assert len(result.positions) >= len(result.quarantined)
        payloads = [e.payload for e in store.history()]
        assert payloads[: len(before)] == before
        check_store(store)
        assert store.ingest(message_new(mid="after")) > 0
    finally:
        store.close()
        directory.cleanup()


def test_good_generated_responses_still_project(store: ChatStore) -> None:
    """The generators above are not only noise: the well-formed shapes land in the tables."""
    result = store.ingest_query_channels(query_channels_response(["messaging:q1"]))
    assert not result.quarantined and store.message("messaging:q1-m0") is not None
    store.ingest_channel_state(msgspec.json.encode(channel_state("messaging:q2")))
    assert store.message("messaging:q2-m1") is not None
    store.ingest_sync(sync_response([message_new("messaging:q3", "s1")]))
    assert store.message("s1") is not None
    check_store(store)


# --------------------------------------------------------------------------------------------
# Outbox.settle: whatever the backend answered


# Any answer: JSON documents however odd their shape, mutated ones, and bytes that are not JSON
# at all (an empty body, a proxy's page).
ANSWERS = st.one_of(
    json_values.map(msgspec.json.encode),
    st.fixed_dictionaries({"message": MESSAGES}, optional={
        "duration": st.text(max_size=5), "reaction": json_values}).map(msgspec.json.encode),
    st.builds(lambda d: mutate(b'{"message":{"id":"m-1","text":"hi","type":"regular",'
                               b'"cid":"messaging:general","user":{"id":"alice"},'
                               b'"created_at":"2026-11-25T10:00:00Z"},"duration":"1ms"}', d),
              st.data()),
    st.binary(max_size=60),
)
ERRORS = st.one_of(st.none(), st.dictionaries(st.sampled_from(
    ["status", "code", "message", "retry_at", "x"]), json_values, max_size=5))
TRY_AT = st.one_of(st.floats(allow_nan=False, allow_infinity=False, min_value=-1e12,
                             max_value=1e12), st.integers(0, 2**40).map(float))


def _queue(store: ChatStore) -> list[str]:
    return [
        store.send_message("messaging:general", "hello", id="m-1"),
        store.update_message("anchor", "edited"),
        store.send_reaction("anchor", "like"),
        store.send_reaction("m-1", "love"),
        store.delete_reaction("anchor", "like"),
        store.mark_read("messaging:general"),
        store.send_message("messaging:general", "second", id="m-2"),
        store.delete_message("m-2", hard=True),
        store.save_draft("messaging:general", "draft"),
    ]


@SETTINGS
@given(st.data())
def test_any_outcome_is_recorded_and_the_tables_follow(data: st.DataObject) -> None:
    directory, store = fresh_store()
    try:
        commands = _queue(store)
        for _ in range(data.draw(st.integers(1, 5))):
            pending = [c.id for c in store.outbox.pending()] or commands
            chosen = data.draw(st.lists(st.sampled_from(pending), min_size=1, max_size=4))
            outcomes: list[Any] = []
            for command in chosen:
                kind = data.draw(st.sampled_from(["delivered", "failed", "refused", "start"]))
                if kind == "delivered":
                    outcomes.append(Delivered(command, data.draw(ANSWERS)))
                elif kind == "failed":
                    outcomes.append(Failed(command, data.draw(ERRORS) or {}, data.draw(TRY_AT)))
                elif kind == "refused":
                    outcomes.append(Refused(command, data.draw(st.text(max_size=30)),
                                            data.draw(ERRORS)))
                else:
                    outcomes.append(command)
            how = data.draw(st.sampled_from(["settle", "record"]))
            if how == "settle":
                store.outbox.start([c for c in chosen])
                store.outbox.settle([o for o in outcomes if not isinstance(o, str)])
            else:
                store.outbox.record(outcomes)
        statuses = {c.id: c.status for c in store.outbox.list()}
        assert set(commands) <= set(statuses)
        for command in commands:
            info = store.outbox.get(command)  # the whole lifecycle reads back
            assert info.history and info.history[0].name == "requested"
            if info.status == CommandStatus.SUCCEEDED:
                assert info.response is not None
        check_store(store)
        # and a rebuild from the log gives the same tables, outcomes and all
        assert store.rebuild() > 0
        check_store(store)
    finally:
        store.close()
        directory.cleanup()


@pytest.mark.parametrize("answer", [b"", b"{broken", b"<html>502 Bad Gateway</html>", b"\xff\xfe"])
def test_a_delivery_whose_answer_is_not_json_is_kept_readable(store: ChatStore,
                                                               answer: bytes) -> None:
    """The answer is kept byte for byte (actions.md), whatever a proxy in between sent; the
    command must still read back and the message be confirmed."""
    command = store.send_message("messaging:general", "hello", id="m-1")
    store.outbox.start([command])
    store.outbox.settle([Delivered(command, answer)])
    info = store.outbox.get(command)
    assert info.status == CommandStatus.SUCCEEDED and info.response == answer
    assert store.message("m-1").local_state is None
    check_store(store)


# --------------------------------------------------------------------------------------------
# `chatledger import`: files of anything


FILES = st.one_of(
    st.lists(st.one_of(EVENTS.map(msgspec.json.encode), st.binary(max_size=40),
                       json_values.map(msgspec.json.encode),
                       st.builds(lambda d: mutate(message_new(), d), st.data())),
             min_size=1, max_size=8).map(lambda lines: b"\n".join(lines) + b"\n"),
    st.builds(lambda d: mutate(query_channels_response(["messaging:a"]), d), st.data()),
    st.builds(lambda d: mutate(sync_response([message_new(mid="s")]), d), st.data()),
    st.binary(max_size=200),
    CHANNEL_STATES.map(msgspec.json.encode),
)


@settings(max_examples=scaled(30, 300), deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(FILES, st.sampled_from(["auto", "events", "query", "sync", "channel"]),
       st.sampled_from([1, 3, 1000]))
def test_import_of_any_file_is_a_clean_report(content: bytes, kind: str, batch: int) -> None:
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "input.jsonl"
        path.write_bytes(content)
        runner = CliRunner()
        base = ["--data-dir", str(Path(directory) / "data"), "--user", "alice"]
        result = runner.invoke(cli, [*base, "import", "--kind", kind, "--batch", str(batch),
                                     "--json", str(path)])
        assert result.exception is None or isinstance(result.exception, SystemExit), \
            result.exception
        assert result.exit_code in (0, 1), result.output
        assert "Traceback" not in result.output
        if result.exit_code == 1:
            error = [line for line in result.output.splitlines() if line.startswith("Error: ")]
            assert len(error) == 1, result.output
        report_lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
        if report_lines:
            report = json.loads(report_lines[0])
            assert report["stored"] + report["quarantined"] == report["items"]
            assert (result.exit_code == 1) == (report["quarantined"] > 0 or report["items"] == 0)
            store = ChatStore.open(Path(directory) / "data", "alice", create=False)
            try:
                assert len(store.quarantine()) == report["quarantined"]
                assert all(q.reason for q in store.quarantine())
                check_store(store)
            finally:
                store.close()
        verify = runner.invoke(cli, [*base, "verify"])
        assert verify.exit_code in (0, 1) and "Traceback" not in verify.output
        if report_lines:
            assert verify.exit_code == 0, verify.output


def test_import_report_counts_add_up_for_a_known_file(tmp_path: Path) -> None:
    lines = [message_new(mid="a"), b"{broken", b"[1,2]", message_new(mid="b"), b'"text"']
    path = tmp_path / "f.jsonl"
    path.write_bytes(b"\n".join(lines))
    result = CliRunner().invoke(cli, ["--data-dir", str(tmp_path / "d"), "--user", "alice",
                                      "import", "--json", str(path)])
    report = json.loads(result.stdout.splitlines()[0])
    assert (report["items"], report["stored"], report["quarantined"]) == (5, 2, 3)
    assert result.exit_code == 1 and not math.isnan(float(report["first_position"]))


# --------------------------------------------------------------------------------------------
# Hostile values spliced into valid events: refused at ingest or shown by every reader

HOSTILE_SCALARS = st.one_of(
    # Any bytes in a string, but a line break (it would end the line: two items, not one).
    st.binary(min_size=1, max_size=6).map(lambda b: b'"' + b.replace(b'"', b"'").replace(
        b"\\", b"/").replace(b"\n", b" ").replace(b"\r", b" ") + b'"'),
    st.integers(min_value=-(2**80), max_value=2**80).map(lambda n: str(n).encode()),
    st.sampled_from([b"1e999", b"-1E+400", b"1.5e-999", b'"\\u001b]0;t\\u0007"',
                     b'"\\u2028\\u0085"', b'"\\ud83d\\ude00"', b'"0000-01-01T00:00:00Z"']),
)
HOSTILE_LINES = st.builds(
    lambda value, depth, where, mid: message_new(mid=mid).replace(
        {"text": b'"text":"hello"', "flag": b'"custom_flag":true',
         "time": b'"created_at":"2026-11-25T10:00:00.000000Z"'}[where],
        {"text": b'"text":', "flag": b'"custom_flag":', "time": b'"created_at":'}[where]
        + b"[" * depth + value + b"]" * depth, 1),
    HOSTILE_SCALARS, st.integers(0, 70), st.sampled_from(["text", "flag", "time"]),
    st.sampled_from(["h1", "h2", "h3"]))
READERS = [["channels"], ["channels", "--json"], ["log"], ["log", "--json"], ["stats"],
           ["show", "channel", "messaging:general"], ["show", "message", "h1", "--json"],
           ["explain", "h1"], ["export", "-"]]


@settings(max_examples=scaled(15, 200), deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(HOSTILE_LINES, st.just(message_new(mid="ok"))), min_size=1,
                max_size=6))
def test_hostile_values_in_an_import_are_refused_or_shown_by_every_reader(
        lines: list[bytes]) -> None:
    with tempfile.TemporaryDirectory() as directory:
        base = ["--data-dir", str(Path(directory) / "data"), "--user", "alice"]
        runner = CliRunner()
        result = runner.invoke(cli, [*base, "import", "--json", "-"],
                               input=b"\n".join(lines) + b"\n")
        assert result.exit_code in (0, 1) and "Traceback" not in result.output, result.output
        report = json.loads(result.stdout.splitlines()[0])
        assert report["items"] == len(lines)
        assert report["stored"] + report["quarantined"] == len(lines)
        for command in READERS:
            shown = runner.invoke(cli, [*base, *command])
            assert "Traceback" not in shown.output, (command, shown.output)
            assert shown.exit_code in (0, 1), (command, shown.output)  # 1: h1 not stored
            assert "\x1b" not in shown.output and "\u2028" not in shown.stdout
            if "--json" in command:
                for line in shown.stdout.splitlines():
                    json.loads(line)
        store = ChatStore.open(Path(directory) / "data", "alice", create=False)
        try:
            check_store(store)
            for entry in store.history():
                entry.json()
        finally:
            store.close()
