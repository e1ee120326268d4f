"""Hostile values: what the log accepts at ingest, and what every reader shows of what it holds.

The rule: each entry point decides at ingest (stored, or quarantined with a reason), and every
reader, command and export shows whatever is stored without failing, `explain`, `show` and `log`
agreeing about it. Stores written by an older version may hold values today's ingest refuses:
`older_version` writes such a store by switching the ingest checks off.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import msgspec
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chatledger import ChatStore
from chatledger.cli.main import cli
from chatledger.eventstore import wire
from chatledger.eventstore.wire import times as wire_times
from chatledger.projections.store import RejectedInput
from fixtures import channel_state, message_new, sync_response
from reliability import scaled

# --------------------------------------------------------------------------------------------
# The class of values: text that is not UTF-8, escapes that are not text, numbers no column or
# float holds, nesting no decoder stack holds, times no calendar writes.

BAD_TEXT = [b'"h\xffi"', b'"\xc3"', b'"\xed\xa0\x80"', b'"\xf4\x90\x80\x80"', b'"\xc0\xaf"',
            b'"\\ud800"', b'"\\uDC00x"', b'"a\\ud83d"']
BAD_NUMBERS = [b"1e999", b"-1E+400", b"1" + b"0" * 400 + b".5"]
# Integers of any size read back exactly; only the tables cannot hold those past 64 bits.
BIG_INTEGERS = [b"123456789012345678901234567890", b"-9223372036854775809",
                b"9223372036854775808", b"1" + b"0" * 400]
DEEP = [b"[" * 65 + b"]" * 65, b"[" * 1000 + b"]" * 1000, b"{\"a\":" * 3000 + b"1" + b"}" * 3000]
BAD_TIMES = ["0000-01-01T00:00:00Z", "0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-23:59",
             "0000-12-31T23:59:59.999999Z", "9999-12-31T23:59:59.999999-00:01"]
HOSTILE_VALUES = BAD_TEXT + BAD_NUMBERS + DEEP


def _with_value(value: bytes, where: str, mid: str = "x1") -> bytes:
    """A message.new whose `where` (a top-level key, the text, or a custom field of the
    message) holds `value` as raw JSON."""
    doc = message_new(mid=mid)
    if where == "text":
        return doc.replace(b'"text":"hello"', b'"text":' + value)
    if where == "message":
        return doc.replace(b'"custom_flag":true', b'"custom_flag":' + value)
    return doc[:-1] + b',"extra":' + value + b"}"


@pytest.mark.parametrize("value", HOSTILE_VALUES, ids=lambda v: repr(v[:12]))
@pytest.mark.parametrize("where", ["top", "text", "message"])
def test_ingest_refuses_what_a_reader_could_not_read_back(tmp_path: Path, value: bytes,
                                                          where: str) -> None:
    with ChatStore.open(tmp_path, "alice") as store:
        payload = _with_value(value, where)
        with pytest.raises(RejectedInput) as info:
            store.ingest(payload)
        assert info.value.reason and "\n" not in info.value.reason
        # The same value inside a response costs only its own item.
        state = msgspec.json.encode(channel_state("messaging:a")).replace(
            b'"team_colour":"blue"', b'"team_colour":' + value)
        result = store.ingest_query_channels(
            b'{"channels":[' + state + b"," + msgspec.json.encode(channel_state("messaging:b"))
            + b'],"duration":"1ms"}')
        # Only the bad channel state is refused (or the whole response, when the response's
        # own decoder already sees the value: a surrogate escape).
        assert len(result.quarantined) == 1
        assert {c.cid for c in store.channels()} <= {"messaging:b"}
        result = store.ingest_sync(sync_response([message_new(mid="ok"), payload]))
        assert len(result.quarantined) == 1
        assert result.stored in (0, 2)  # nothing, or the good event and the summary
        assert (store.message("ok") is not None) == (result.stored == 2)
        assert store.message("x1") is None
        assert store.verify() == []


@pytest.mark.parametrize("when", BAD_TIMES)
def test_a_time_out_of_range_is_refused_at_ingest(tmp_path: Path, when: str) -> None:
    with ChatStore.open(tmp_path, "alice") as store:
        with pytest.raises(RejectedInput) as info:
            store.ingest(message_new(mid="t1", at=when))
        assert "range" in info.value.reason
        assert store.message("t1") is None


def test_the_last_microsecond_of_year_9999_is_exact_everywhere(tmp_path: Path) -> None:
    last = "9999-12-31T23:59:59.999999Z"
    assert wire.parse_time(last) == wire.MAX_TIME_US
    with ChatStore.open(tmp_path, "alice") as store:
        store.ingest(message_new(mid="late", at=last))
    runner = CliRunner()
    base = ["--data-dir", str(tmp_path), "--user", "alice"]
    for command in (["log"], ["channels"], ["show", "message", "late"], ["explain", "late"],
                    ["show", "channel", "messaging:general"]):
        result = runner.invoke(cli, [*base, *command])
        assert result.exit_code == 0, (command, result.output)
        assert "9999-12-31 23:59:59.999" in result.output, (command, result.output)
    line = json.loads(runner.invoke(cli, [*base, "log", "--json"]).stdout)
    assert line["event_at"] == last
    assert json.loads(runner.invoke(cli, [*base, "explain", "late", "--json"]).stdout)[
        "changes"]["created_at"][1] == last


@pytest.mark.parametrize("value", BIG_INTEGERS, ids=lambda v: repr(v[:12]))
@pytest.mark.parametrize("where", ["top", "text", "message"])
def test_an_integer_beyond_64_bits_is_stored_and_every_reader_shows_it(
        tmp_path: Path, value: bytes, where: str) -> None:
    with ChatStore.open(tmp_path, "alice") as store:
        payload = _with_value(value, where)
        position = store.ingest(payload)
        [entry] = store.history()
        assert entry.position == position and bytes(entry.payload) == payload
        assert int(value) in (entry.json().get("extra"), entry.json()["message"].get("text"),
                              entry.json()["message"].get("custom_flag"))
        assert store.message("x1") is not None
        assert store.verify() == []


def test_an_import_with_integers_beyond_64_bits_keeps_every_line(tmp_path: Path) -> None:
    big = msgspec.json.decode(message_new(mid="big"))
    big["channel_member_count"] = 10**30
    big["message"]["reply_count"] = -(10**25)
    lines = b"\n".join([message_new(mid="ok1"), msgspec.json.encode(big),
                        message_new(mid="ok2")]) + b"\n"
    result = CliRunner().invoke(cli, ["--data-dir", str(tmp_path), "--user", "alice", "import",
                                      "-"], input=lines)
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output and "Overflow" not in result.output
    with ChatStore.open(tmp_path, "alice", create=False) as store:
        assert store.message("ok1") and store.message("ok2") and store.message("big")
        assert not store.quarantine()
        [unprojected] = store.unprojected()
        assert "64 bits" in unprojected.reason
        assert store.verify() == []


def test_local_actions_refuse_text_that_is_not_text_and_nesting_past_the_stack(
        tmp_path: Path) -> None:
    from chatledger.eventstore.commands import CommandError

    deep: list = []
    for _ in range(5_000):
        deep = [deep]
    with ChatStore.open(tmp_path, "alice") as store:
        for text, custom in (("a\ud800b", None), ("ok", {"x": deep}), ("ok", {"k\udcff": 1})):
            with pytest.raises(CommandError) as info:
                store.send_message("messaging:general", text, custom=custom)
            assert "\n" not in str(info.value)
        store.ingest(message_new(mid="m1"))
        for kwargs in ({"score": 10**30}, {"score": 2**63}, {"note": {"n": -(10**20)}}):
            with pytest.raises(CommandError) as info:
                store.send_reaction("m1", "like", **kwargs)
            assert "64 bits" in str(info.value)
        store.send_message("messaging:general", "fine", id="fine1")
        assert store.verify() == []
    _read_everything(tmp_path, "fine1")


# --------------------------------------------------------------------------------------------
# What an older version stored: every reader shows it.


@contextmanager
def older_version() -> Iterator[None]:
    """Ingest as a version without the checks did: no value check, no time range."""
    saved = (getattr(wire, "check_storable", None), getattr(wire_times, "MIN_TIME_US", None),
             getattr(wire_times, "MAX_TIME_US", None))
    wire.check_storable = lambda raw: None  # type: ignore[assignment]
    wire_times.MIN_TIME_US, wire_times.MAX_TIME_US = -(10**30), 10**30
    try:
        yield
    finally:
        wire.check_storable, wire_times.MIN_TIME_US, wire_times.MAX_TIME_US = saved


READ_COMMANDS = [["channels"], ["channels", "--json"], ["log"], ["log", "--json"],
                 ["show", "channel", "messaging:general"],
                 ["show", "channel", "messaging:general", "--json"], ["stats"], ["verify"],
                 ["as-of", "--position", "1", "channel", "messaging:general"]]


def _read_everything(data: Path, mid: str) -> dict[str, str]:
    runner = CliRunner()
    base = ["--data-dir", str(data), "--user", "alice"]
    outputs = {}
    for command in [*READ_COMMANDS, ["show", "message", mid], ["show", "message", mid, "--json"],
                    ["explain", mid], ["explain", mid, "--json"],
                    ["export", str(data / "export.json")]]:
        result = runner.invoke(cli, [*base, *command])
        assert result.exit_code == 0, (command, result.output, result.exception)
        assert "Traceback" not in result.output
        if "--json" in command:
            for line in result.stdout.splitlines():
                json.loads(line)  # one JSON value per line, valid UTF-8
        else:
            assert "\x1b" not in result.output
        outputs[" ".join(command)] = result.output
    json.loads((data / "export.json").read_bytes())
    return outputs


@pytest.mark.parametrize("text", [b'"h\xffi \xc3"', b'"\xed\xa0\x80 lone"', b'"\\u001b[2Jx\\u0000\xff"'])
def test_invalid_text_stored_by_an_older_version_is_shown_everywhere(tmp_path: Path,
                                                                      text: bytes) -> None:
    with older_version(), ChatStore.open(tmp_path, "alice") as store:
        store.ingest(message_new(mid="ok0"))
        store.ingest(_with_value(text, "text", mid="bad"))  # the newest message of its channel
    with ChatStore.open(tmp_path, "alice", create=False) as store:
        for entry in store.history():
            entry.json()
        assert [c.cid for c in store.channels()] == ["messaging:general"]
    shown = _read_everything(tmp_path, "bad")
    # explain, show and log agree that the message is stored.
    assert "bad" in shown["show message bad"] and "bad" in shown["log"]
    assert json.loads(shown["show message bad --json"])["message"]["id"] == "bad"
    assert "stored" in shown["explain bad"]


@pytest.mark.parametrize("when", BAD_TIMES)
def test_times_out_of_range_stored_by_an_older_version_are_shown(tmp_path: Path,
                                                                 when: str) -> None:
    with older_version(), ChatStore.open(tmp_path, "alice") as store:
        store.ingest(message_new(mid="ok0"))
        store.ingest(message_new(mid="odd", at=when))
    _read_everything(tmp_path, "ok0")


# --------------------------------------------------------------------------------------------
# Any value: stored or refused at ingest, and then readable by every command.

_SCALARS = st.one_of(st.integers(min_value=-(2**70), max_value=2**70).map(str),
                     st.sampled_from(["1e999", "-1e400", "1.5", "true", "null", '""']),
                     st.binary(max_size=8).map(lambda b: b'"' + b.replace(b'"', b"").replace(
                         b"\\", b"") + b'"'),
                     st.sampled_from(["\\ud800", "\\udfff", "\\u0000", "\\u001b[2J"]).map(
                         lambda e: f'"{e}"'))


def _as_bytes(value: str | bytes) -> bytes:
    return value if isinstance(value, bytes) else value.encode()


@settings(max_examples=scaled(10, 200), deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(value=_SCALARS.map(_as_bytes), depth=st.integers(0, 80),
       where=st.sampled_from(["top", "text", "message"]))
def test_any_value_is_refused_or_readable(tmp_path_factory: pytest.TempPathFactory,
                                          value: bytes, depth: int, where: str) -> None:
    data = tmp_path_factory.mktemp("store")
    nested = b"[" * depth + value + b"]" * depth
    with ChatStore.open(data, "alice") as store:
        store.ingest(message_new(mid="ok0"))
        try:
            store.ingest(_with_value(nested, where, mid="x1"))
        except RejectedInput as e:
            assert e.reason and "\n" not in e.reason
    _read_everything(data, "ok0")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))


# --------------------------------------------------------------------------------------------
# The ingest check's signs: a number with a 3-digit exponent wherever a value can stand is
# refused; "e" and three digits inside text (hex ids: half the events of a chat) cost no decode.

BIG_EXPONENT_DOCUMENTS = [b"1e999", b'{"a":1e999}', b'{"a": -1.5E+400}', b'[1,2e400]',
                          b'[\n3e999]', b'{"a":[0.25E0400]}', b'{"a":\t-7e+9999}']


@pytest.mark.parametrize("raw", BIG_EXPONENT_DOCUMENTS)
def test_a_number_past_the_double_range_is_refused_wherever_it_stands(raw: bytes) -> None:
    with pytest.raises(wire.WireError):
        wire.check_storable(raw)


def test_hex_ids_that_look_like_exponents_take_no_full_check(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from chatledger.eventstore.wire import values

    walked: list[object] = []
    monkeypatch.setattr(values, "unstorable_reason",
                        lambda document, **options: walked.append(document))
    raw = (b'{"message_id":"3e456789-1643-4e12-8848-8d73170d7e97","id":"e7340618",'
           b'"text":"x","n":1.5e10}')
    wire.check_storable(raw)
    assert walked == []
    wire.check_storable(b'{"message_id":"x","n":1.5e100}')  # a sign: decoded and walked
    assert len(walked) == 1
