"""Tests of the wire models: heads, time, splits, errors, full models.

The fixtures are written by hand from docs/wire.md (no SDK fixtures).
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chatledger.eventstore import wire
from chatledger.eventstore.wire import (
    CHANNEL_FIELDS,
    MESSAGE_FIELDS,
    UNSET_TIME,
    USER_FIELDS,
    ChannelState,
    Event,
    EventHead,
    Message,
    WireError,
    custom_fields,
    decode_channel_state,
    decode_channel_state_parts,
    decode_error,
    decode_event,
    decode_event_parts,
    decode_full_event,
    decode_model,
    decode_query_channels,
    decode_sync,
    format_time,
    parse_time,
)
from chatledger.eventstore.wire import times as wire_times

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def us_of(dt: datetime) -> int:
    return (dt - EPOCH) // timedelta(microseconds=1)


# --------------------------------------------------------------------------------------------
# Fixtures, written by hand from docs/wire.md. Bytes, with the spacing a server might use.

ALICE = {
    "id": "alice",
    "name": "Alice Liddell",
    "image": "https://example.org/alice.png",
    "role": "user",
    "created_at": "2023-01-01T00:00:00Z",
    "updated_at": "2024-02-01T09:00:00.5Z",
    "last_active": "2024-03-05T10:11:00.000001Z",
    "online": True,
    "banned": False,
    "team_color": "teal",  # custom key at the top level
}

MESSAGE_NEW = json.dumps(
    {
        "type": "message.new",
        "cid": "messaging:general",
        "channel_type": "messaging",
        "channel_id": "general",
        "channel_member_count": 12,
        "channel_message_count": 3401,
        "channel_custom": {"name": "General", "image": None},
        "channel_last_message_at": "2024-03-05T10:11:12.123456789Z",
        "message_id": "c0ffee00-0001",
        "message": {
            "id": "c0ffee00-0001",
            "cid": "messaging:general",
            "text": "Lunch at noon? été 🍕 午餐",
            "html": "<p>Lunch at noon? été 🍕 午餐</p>\n",
            "type": "regular",
            "user": ALICE,
            "attachments": [
                {"type": "image", "image_url": "https://example.org/p.jpg", "fallback": "p.jpg"},
                {"type": "file", "asset_url": "https://example.org/a.pdf", "file_size": 1234,
                 "mime_type": "application/pdf", "custom_note": "agenda"},
            ],
            "mentioned_users": [],
            "parent_id": None,
            "reply_count": 0,
            "deleted_reply_count": 0,
            "reaction_counts": {"like": 2, "love": 1},
            "reaction_scores": {"like": 2, "love": 1},
            "reaction_groups": {
                "like": {"count": 2, "sum_scores": 2, "first_reaction_at": "2024-03-05T10:11:12Z",
                         "last_reaction_at": "2024-03-05T10:11:13.5Z"},
            },
            "latest_reactions": [
                {"message_id": "c0ffee00-0001", "user_id": "bob", "type": "like", "score": 1,
                 "created_at": "2024-03-05T10:11:12Z", "updated_at": "2024-03-05T10:11:12Z"},
            ],
            "own_reactions": [],
            "pinned": False,
            "pinned_at": None,
            "pinned_by": None,
            "pin_expires": None,
            "silent": False,
            "shadowed": False,
            "i18n": {"fr_text": "Déjeuner à midi ?", "language": "en"},
            "created_at": "2024-03-05T10:11:12.123456789Z",
            "updated_at": "2024-03-05T10:11:12.123456789Z",
            "priority": "high",  # custom key at the top level
        },
        "user": ALICE,
        "watcher_count": 3,
        "unread_count": 0,
        "total_unread_count": 4,
        "unread_channels": 2,
        "created_at": "2024-03-05T10:11:12.123456789Z",
        "future_key": {"kept": [1, 2, 3]},
    },
    ensure_ascii=False,
    indent=1,
).encode()

REACTION_NEW = (
    b'{"type":"reaction.new","cid":"messaging:general","channel_type":"messaging",'
    b'"channel_id":"general","message_id":"c0ffee00-0001",'
    b'"reaction":{"message_id":"c0ffee00-0001","user_id":"bob","user":{"id":"bob","name":"Bob"},'
    b'"type":"love","score":1,"created_at":"2024-03-05T10:12:00.123Z","updated_at":"2024-03-05T10:12:00.123Z",'
    b'"sparkle":true},'
    b'"message":{"id":"c0ffee00-0001","text":"Lunch at noon?","type":"regular",'
    b'"reaction_counts":{"like":2,"love":2},"reaction_scores":{"like":2,"love":2},'
    b'"latest_reactions":[{"user_id":"bob","type":"love","score":1}],'
    b'"created_at":"2024-03-05T10:11:12.123456789Z"},'
    b'"user":{"id":"bob","name":"Bob"},"created_at":"2024-03-05T10:12:00.123Z"}'
)

HEALTH_CHECK = (
    b'{"type":"health.check","connection_id":"6a1b2c3d-0000-0000-0000-000000000042",'
    b'"cid":"*","me":{"id":"alice","role":"user","total_unread_count":4,"unread_channels":2,'
    b'"mutes":[],"channel_mutes":[],"devices":[{"id":"tok","push_provider":"firebase"}],'
    b'"created_at":"2023-01-01T00:00:00Z","team_color":"teal"},'
    b'"created_at":"2024-03-05T10:11:00Z"}'
)

NOTIFICATION_MESSAGE_NEW = (
    b'{"type":"notification.message_new",'
    b'"channel":{"id":"travel","type":"team","cid":"team:travel","member_count":3,'
    b'"created_by":null,"config":{"name":"team","reactions":true,"max_message_length":5000},'
    b'"name":"Travel plans","frozen":false},'
    b'"message":{"id":"m-77","text":"\\u00a1Hola! \\ud83d\\ude00","type":"regular","cid":"team:travel"},'
    b'"total_unread_count":5,"unread_channels":3,"created_at":"2024-03-05T10:13:00.5+00:00"}'
)

DRAFT_UPDATED = (
    b'{"type":"draft.updated","draft":{"channel_cid":"messaging:general","parent_id":null,'
    b'"message":{"id":"d-1","text":"half a thought"},"created_at":"2024-03-05T10:14:00Z"},'
    b'"created_at":"2024-03-05T10:14:00.000000001Z"}'
)

MEMBER_ADDED = (
    b'{"type":"member.added","cid":"messaging:general","channel_type":"messaging",'
    b'"channel_id":"general","member":{"user_id":"carol","user":{"id":"carol","name":"Carol"},'
    b'"channel_role":"channel_member","role":"member","banned":false,"pinned_at":null,'
    b'"archived_at":null,"invited":true,"created_at":"2024-03-05T10:15:00Z"},'
    b'"user":{"id":"carol"},"created_at":"2024-03-05T10:15:00.25Z"}'
)

UNKNOWN_TYPE = (
    b'{"type":"spaceship.launched","cid":"messaging:general","payload":{"stage":[1,2,{"x":null}]},'
    b'"created_at":"2024-03-05T10:16:00Z","unicode":"\xe2\x9c\x93 \xf0\x9f\x9a\x80"}'
)


# --------------------------------------------------------------------------------------------
# decode_event: the log head


def test_message_new_head() -> None:
    head = decode_event(MESSAGE_NEW)
    assert head == EventHead(
        type="message.new",
        created_at=us_of(datetime(2024, 3, 5, 10, 11, 12, 123456, tzinfo=timezone.utc)),
        cid="messaging:general",
        connection_id=None,
        channel_type="messaging",
        channel_id="general",
    )


def test_reaction_new_head() -> None:
    head = decode_event(REACTION_NEW)
    assert (head.type, head.cid) == ("reaction.new", "messaging:general")
    assert head.created_at == us_of(datetime(2024, 3, 5, 10, 12, 0, 123000, tzinfo=timezone.utc))


def test_health_check_head() -> None:
    head = decode_event(HEALTH_CHECK)
    assert head.type == "health.check"
    assert head.cid == "*"
    assert head.connection_id == "6a1b2c3d-0000-0000-0000-000000000042"
    assert head.channel_type is None and head.channel_id is None


def test_notification_takes_cid_from_channel() -> None:
    head = decode_event(NOTIFICATION_MESSAGE_NEW)
    assert head.cid == "team:travel"
    assert (head.channel_type, head.channel_id) == ("team", "travel")
    assert head.created_at == us_of(datetime(2024, 3, 5, 10, 13, 0, 500000, tzinfo=timezone.utc))


def test_draft_takes_cid_from_draft() -> None:
    head = decode_event(DRAFT_UPDATED)
    assert head.cid == "messaging:general"
    # 1 ns is below µs: truncated
    assert head.created_at == us_of(datetime(2024, 3, 5, 10, 14, tzinfo=timezone.utc))


def test_member_added_and_unknown_type() -> None:
    assert decode_event(MEMBER_ADDED).cid == "messaging:general"
    head = decode_event(UNKNOWN_TYPE)
    assert head.type == "spaceship.launched" and head.cid == "messaging:general"


@pytest.mark.parametrize("kind", [bytes, bytearray, memoryview, "str"])
def test_every_buffer_kind(kind: Any) -> None:
    raw = MESSAGE_NEW.decode() if kind == "str" else kind(MESSAGE_NEW)
    assert decode_event(raw) == decode_event(MESSAGE_NEW)


@pytest.mark.parametrize(
    ("payload", "cid", "channel_type", "channel_id"),
    [
        # the top-level cid wins over everything
        (b'{"type":"x","cid":"a:1","channel_type":"b","channel_id":"2","channel":{"cid":"c:3"}}',
         "a:1", "b", "2"),
        # channel_type + channel_id
        (b'{"type":"x","channel_type":"b","channel_id":"2","channel":{"cid":"c:3"}}', "b:2", "b", "2"),
        # an empty cid counts as absent
        (b'{"type":"x","cid":"","channel_type":"b","channel_id":"2"}', "b:2", "b", "2"),
        # only one of the pair: fall through to channel
        (b'{"type":"x","channel_type":"b","channel":{"cid":"c:3"}}', "c:3", "b", None),
        # channel.cid, then channel.type + channel.id
        (b'{"type":"x","channel":{"cid":"c:3","type":"z","id":"9"}}', "c:3", "c", "3"),
        (b'{"type":"x","channel":{"type":"c","id":"4"}}', "c:4", "c", "4"),
        # channel null or useless: on to the draft
        (b'{"type":"x","channel":null,"draft":{"channel_cid":"d:5"}}', "d:5", "d", "5"),
        (b'{"type":"x","channel":{"id":"4"},"draft":{"channel_cid":"d:5"}}', "d:5", "d", "5"),
        # nothing to go on: not channel-scoped (notification.mark_read = all channels)
        (b'{"type":"notification.mark_read"}', None, None, None),
        (b'{"type":"x","draft":null}', None, None, None),
        (b'{"type":"x","draft":{"channel_cid":null}}', None, None, None),
        # health.check's "*" is kept and not split
        (b'{"type":"health.check","cid":"*"}', "*", None, None),
        # channel_id containing ':' splits on the first colon only
        (b'{"type":"x","cid":"messaging:!members-a:b"}', "messaging:!members-a:b", "messaging",
         "!members-a:b"),
    ],
)
def test_cid_derivation(
    payload: bytes, cid: str | None, channel_type: str | None, channel_id: str | None
) -> None:
    head = decode_event(payload)
    assert (head.cid, head.channel_type, head.channel_id) == (cid, channel_type, channel_id)


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"", "not JSON: input data was truncated"),
        (b"<html>", "not JSON: invalid character (byte 0)"),
        (b'{"type":"x"', "not JSON: input data was truncated"),
        (b'{"type":"x"} {}', "not JSON: trailing characters (byte 14)"),
        (b'{"type":"\xff"}', "not JSON: invalid UTF-8 text"),
        ('{"type":"\ud800"}', "not JSON: invalid UTF-8 text"),
        (b"[" * 100_000 + b"]" * 100_000, "not a JSON object"),  # the shape is checked first
        (b'{"type":"x","deep":' + b"[" * 100_000 + b"]" * 100_000 + b"}", "not JSON: nested too deeply"),
        (b"[]", "not a JSON object"),
        (b'"message.new"', "not a JSON object"),
        (b"null", "not a JSON object"),
        (b"{}", "missing 'type'"),
        (b'{"created_at":"2024-03-05T10:11:12Z"}', "missing 'type'"),
        (b'{"type":null}', "'type' must be a string, got null"),
        (b'{"type":7}', "'type' must be a string, got int"),
        (b'{"type":""}', "'type' must not be empty"),
        (b'{"type":"x","created_at":1709633472}', "'created_at' must be a string, got int"),
        (b'{"type":"x","created_at":{}}', "'created_at' must be a string, got object"),
        (b'{"type":"x","created_at":"yesterday"}', "'created_at' is not an RFC 3339 time: 'yesterday'"),
        (b'{"type":"x","created_at":"2024-02-30T00:00:00Z"}',
         "'created_at' is not a valid time: '2024-02-30T00:00:00Z'"),
        (b'{"type":"x","cid":1}', "'cid' must be a string, got int"),
        (b'{"type":"x","cid":["a"]}', "'cid' must be a string, got array"),
        (b'{"type":"x","channel_type":true}', "'channel_type' must be a string, got bool"),
        (b'{"type":"x","channel_id":1.5}', "'channel_id' must be a string, got float"),
        (b'{"type":"x","connection_id":2}', "'connection_id' must be a string, got int"),
        (b'{"type":"x","channel":"team:travel"}', "'channel' must be an object, got str"),
        (b'{"type":"x","channel":{"cid":5}}', "'channel.cid' must be a string, got int"),
        (b'{"type":"x","draft":[]}', "'draft' must be an object, got array"),
        (b'{"type":"x","draft":{"channel_cid":{}}}', "'draft.channel_cid' must be a string, got object"),
    ],
)
def test_wire_errors(payload: bytes | str, reason: str) -> None:
    with pytest.raises(WireError) as caught:
        decode_event(payload)
    assert caught.value.reason == reason
    assert str(caught.value) == reason
    assert isinstance(caught.value, ValueError)


def test_nested_shapes_are_not_checked_when_not_needed() -> None:
    # With a cid at hand, channel and draft are skipped, whatever they hold.
    head = decode_event(b'{"type":"x","cid":"a:1","channel":"odd","draft":7,"message":[]}')
    assert head.cid == "a:1"


def test_nulls_are_absent() -> None:
    head = decode_event(
        b'{"type":"x","created_at":null,"cid":null,"channel_type":null,"channel_id":null,'
        b'"connection_id":null}'
    )
    assert head == EventHead("x", None, None, None, None, None)


def test_unset_created_at() -> None:
    assert decode_event(b'{"type":"x","created_at":"0001-01-01T00:00:00Z"}').created_at is None


# --------------------------------------------------------------------------------------------
# Time


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-03-05T10:11:12Z", datetime(2024, 3, 5, 10, 11, 12, tzinfo=timezone.utc)),
        ("2024-03-05T10:11:12.123Z", datetime(2024, 3, 5, 10, 11, 12, 123000, tzinfo=timezone.utc)),
        ("2024-03-05T10:11:12.123456Z", datetime(2024, 3, 5, 10, 11, 12, 123456, tzinfo=timezone.utc)),
        ("2024-03-05T10:11:12.123456789Z", datetime(2024, 3, 5, 10, 11, 12, 123456, tzinfo=timezone.utc)),
        ("2024-03-05T10:11:12.999999999Z", datetime(2024, 3, 5, 10, 11, 12, 999999, tzinfo=timezone.utc)),
        ("2024-03-05T10:11:12.5Z", datetime(2024, 3, 5, 10, 11, 12, 500000, tzinfo=timezone.utc)),
        ("2024-03-05T10:11:12,5Z", datetime(2024, 3, 5, 10, 11, 12, 500000, tzinfo=timezone.utc)),
        ("2024-03-05t10:11:12z", datetime(2024, 3, 5, 10, 11, 12, tzinfo=timezone.utc)),
        ("2024-03-05 10:11:12Z", datetime(2024, 3, 5, 10, 11, 12, tzinfo=timezone.utc)),
        ("2024-03-05T10:11:12+00:00", datetime(2024, 3, 5, 10, 11, 12, tzinfo=timezone.utc)),
        ("2024-03-05T10:11:12-00:00", datetime(2024, 3, 5, 10, 11, 12, tzinfo=timezone.utc)),
        ("2024-03-05T10:11:12.25+05:30", datetime(2024, 3, 5, 4, 41, 12, 250000, tzinfo=timezone.utc)),
        ("2024-03-04T23:30:00-08:00", datetime(2024, 3, 5, 7, 30, tzinfo=timezone.utc)),
        ("2024-02-29T23:59:59.999999Z", datetime(2024, 2, 29, 23, 59, 59, 999999, tzinfo=timezone.utc)),
        ("1969-12-31T23:59:59.5Z", datetime(1969, 12, 31, 23, 59, 59, 500000, tzinfo=timezone.utc)),
        ("1970-01-01T00:00:00Z", EPOCH),
        ("9999-12-31T23:59:59.999999Z", datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=timezone.utc)),
        ("0001-01-01T00:00:00.000001Z", datetime(1, 1, 1, 0, 0, 0, 1, tzinfo=timezone.utc)),
    ],
)
def test_parse_time(text: str, expected: datetime) -> None:
    wire_times._MINUTES.clear()
    assert parse_time(text) == us_of(expected)  # slow path
    assert parse_time(text) == us_of(expected)  # fast path when the minute is cached


@pytest.mark.parametrize(
    "text",
    [UNSET_TIME, "0001-01-01T00:00:00.000Z", "0001-01-01T00:00:00+00:00", "0001-01-01 00:00:00z"],
)
def test_unset_time_is_none(text: str) -> None:
    assert parse_time(text) is None
    assert parse_time(text) is None  # the sentinel's minute is never cached as a plain minute


@pytest.mark.parametrize(
    "text",
    [
        "",
        "Z",
        "2024-03-05",
        "2024-03-05T10:11Z",  # no seconds
        "2024-03-05T10:11:12",  # no offset
        "2024-03-05T10:11:12.Z",  # empty fraction
        "2024-03-05T10:11:12.1234567890Z",  # ten digits
        "2024-03-05T10:11:60Z",
        "2024-03-05T24:00:00Z",
        "2024-03-05T10:60:00Z",
        "2024-13-05T10:11:12Z",
        "2024-00-05T10:11:12Z",
        "2023-02-29T10:11:12Z",
        "2024-03-00T10:11:12Z",
        "2024-03-05T10:11:12+24:00",
        "2024-03-05T10:11:12+0100",
        "2024-03-05T10:11:12 Z",
        "20240305T101112Z",
        "2024-W10-2T10:11:12Z",
        "2024-03-05T10:11:1\u0663Z",  # Arabic-Indic digit
        " 2024-03-05T10:11:12Z",
        "2024-03-05T10:11:12Z ",
    ],
)
def test_parse_time_rejects(text: str) -> None:
    parse_time("2024-03-05T10:11:00Z")  # prime the minute cache: the fast path must agree
    with pytest.raises(WireError):
        parse_time(text)


def test_format_time() -> None:
    assert format_time(0) == "1970-01-01T00:00:00.000000Z"
    assert format_time(us_of(datetime(2024, 3, 5, 10, 11, 12, 5, tzinfo=timezone.utc))) == (
        "2024-03-05T10:11:12.000005Z"
    )
    assert format_time(-1) == "1969-12-31T23:59:59.999999Z"
    with pytest.raises(ValueError):
        format_time(us_of(datetime(9999, 12, 31, tzinfo=timezone.utc)) + 10**12)


@given(st.datetimes(min_value=datetime(1, 1, 1, 0, 0, 1), timezones=st.just(timezone.utc)))
def test_format_parse_round_trip(moment: datetime) -> None:
    us = us_of(moment)
    assert format_time(us) == moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ").rjust(27, "0")
    assert parse_time(format_time(us)) == us


@given(
    st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30)),
    st.integers(min_value=0, max_value=9),
    st.integers(min_value=-23 * 60 - 59, max_value=23 * 60 + 59),
    st.booleans(),
)
def test_parse_time_matches_datetime(
    naive: datetime, digits: int, offset_minutes: int, zulu: bool
) -> None:
    nanos = naive.microsecond * 1000 + naive.second % 7 * 111  # some sub-µs digits too
    fraction = f".{nanos:09d}"[: digits + 1] if digits else ""
    if zulu:
        offset_minutes, suffix = 0, "Z"
    else:
        sign = "+" if offset_minutes >= 0 else "-"
        suffix = f"{sign}{abs(offset_minutes) // 60:02d}:{abs(offset_minutes) % 60:02d}"
    text = naive.strftime("%Y-%m-%dT%H:%M:%S").rjust(19, "0") + fraction + suffix
    kept = int(f"{nanos:09d}"[:digits].ljust(9, "0")) // 1000  # truncation below µs
    local = naive.replace(microsecond=kept, tzinfo=timezone(timedelta(minutes=offset_minutes)))
    expected = us_of(local)
    assert parse_time(text) == expected
    assert parse_time(text) == expected


def test_minute_cache_stays_bounded() -> None:
    wire_times._MINUTES.clear()
    for minute in range(wire_times._MINUTES_MAX + 10):
        parse_time(format_time(minute * 60_000_000))
    assert len(wire_times._MINUTES) <= wire_times._MINUTES_MAX


# --------------------------------------------------------------------------------------------
# Responses split into exact byte slices

STATE_GENERAL = (
    b'{ "channel" : {"id":"general","type":"messaging","cid":"messaging:general",'
    b'"last_message_at":"2024-03-05T10:11:12.123456789Z","member_count":12,"name":"General",'
    b'"config":{"name":"messaging","typing_events":true,"commands":[{"name":"giphy"}]},'
    b'"own_capabilities":["send-message","send-reaction"]},\n'
    b'  "messages" : [ {"id":"m1","text":"caf\xc3\xa9","type":"regular","priority":"low"},'
    b'{"id":"m2","text":"\\"quoted\\" \\u2603","attachments":[]} ],'
    b'"pinned_messages":[],"members":[{"user_id":"alice","user":{"id":"alice"},"channel_role":"channel_member"}],'
    b'"read":[{"user":{"id":"alice"},"last_read":"2024-03-05T10:11:12Z","unread_messages":0,'
    b'"last_read_message_id":"m2"}],"membership":{"user_id":"alice"},"watcher_count":2,'
    b'"draft":null,"threads":[]}'
)
STATE_TRAVEL = b'{"channel":{"id":"travel","type":"team"},"messages":null}'


def query_channels_body() -> bytes:
    return (
        b'{\n  "channels": [\n    ' + STATE_GENERAL + b' ,\n    ' + STATE_TRAVEL
        + b'\n  ],\n  "duration": "12.34ms", "unknown": {"a": [1]}\n}'
    )


def test_query_channels_keeps_exact_slices() -> None:
    body = query_channels_body()
    response = decode_query_channels(body)
    assert [bytes(c) for c in response.channels] == [STATE_GENERAL, STATE_TRAVEL]
    assert b"".join(response.channels) == STATE_GENERAL + STATE_TRAVEL
    assert response.duration == "12.34ms"
    originals = json.loads(body)["channels"]
    assert [msgspec.json.decode(c) for c in response.channels] == originals
    # the slices are views of the response buffer, found where they were
    for chunk in response.channels:
        assert bytes(chunk) in body


@pytest.mark.parametrize("kind", [bytearray, memoryview, "str"])
def test_query_channels_other_buffers(kind: Any) -> None:
    body = query_channels_body()
    raw = body.decode() if kind == "str" else kind(body)
    assert [bytes(c) for c in decode_query_channels(raw).channels] == [STATE_GENERAL, STATE_TRAVEL]


@pytest.mark.parametrize(
    ("body", "channels"),
    [(b'{"channels":[]}', []), (b'{"channels":null,"duration":"1ms"}', [])],
)
def test_query_channels_empty(body: bytes, channels: list[bytes]) -> None:
    assert decode_query_channels(body).channels == channels


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"[]", "not a JSON object"),
        (b"{", "not JSON: input data was truncated"),
        (b"{}", "missing 'channels'"),
        (b'{"channels":{}}', "'channels' must be an array, got object"),
        (b'{"channels":[{}, 3]}', "'channels[1]' must be an object, got number"),
        (b'{"channels":[[]]}', "'channels[0]' must be an object, got array"),
        (b'{"channels":[null]}', "'channels[0]' must be an object, got null"),
        (b'{"channels":[{},"x"]}', "'channels[1]' must be an object, got str"),
        (b'{"channels":[],"duration":5}', "'duration' must be a string, got int"),
    ],
)
def test_query_channels_errors(body: bytes, reason: str) -> None:
    with pytest.raises(WireError) as caught:
        decode_query_channels(body)
    assert caught.value.reason == reason


def test_sync_split() -> None:
    events = [MESSAGE_NEW, REACTION_NEW, UNKNOWN_TYPE]
    body = (
        b'{"events": [' + b" ,\n".join(events) + b'], "inaccessible_cids": ["messaging:gone"],'
        b' "duration": "3ms"}'
    )
    response = decode_sync(body)
    assert [bytes(e) for e in response.events] == events
    assert b"".join(response.events) == b"".join(events)
    assert response.inaccessible_cids == ["messaging:gone"]
    assert response.duration == "3ms"
    assert [decode_event(e) for e in response.events] == [decode_event(e) for e in events]
    assert [msgspec.json.decode(e) for e in response.events] == json.loads(body)["events"]


def test_sync_lenient_and_errors() -> None:
    assert decode_sync(b'{"events":null,"inaccessible_cids":null}') == wire.SyncResponse([], [], None)
    assert decode_sync(b'{"events":[]}').inaccessible_cids == []
    with pytest.raises(WireError, match="'events\\[0\\]' must be an object, got array"):
        decode_sync(b'{"events":[[]]}')
    with pytest.raises(WireError, match="missing 'events'"):
        decode_sync(b'{"inaccessible_cids":[]}')
    with pytest.raises(WireError, match=r"'inaccessible_cids\[0\]' must be a string, got int"):
        decode_sync(b'{"events":[],"inaccessible_cids":[1]}')


def test_channel_state_head() -> None:
    head = decode_channel_state(STATE_GENERAL)
    assert head == wire.ChannelStateHead(
        "messaging:general", "messaging", "general", "2024-03-05T10:11:12.123456789Z", 2
    )
    head = decode_channel_state(STATE_TRAVEL)
    assert (head.cid, head.channel_type, head.channel_id, head.message_count) == (
        "team:travel", "team", "travel", 0,
    )
    head = decode_channel_state(b'{"channel":{"cid":"a:b:c"}}')
    assert (head.cid, head.channel_type, head.channel_id) == ("a:b:c", "a", "b:c")


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"{}", "channel state without 'channel'"),
        (b'{"channel":null}', "channel state without 'channel'"),
        (b'{"channel":{"id":"x"}}', "channel without 'cid' or 'type' and 'id'"),
        (b'{"channel":{"cid":""}}', "channel without 'cid' or 'type' and 'id'"),
        (b'{"channel":[]}', "'channel' must be an object, got array"),
        (b'{"channel":{"cid":1}}', "'channel.cid' must be a string, got int"),
        (b'{"channel":{"cid":"a:b"},"messages":{}}', "'messages' must be an array, got object"),
        (b"7", "not a JSON object"),
    ],
)
def test_channel_state_errors(body: bytes, reason: str) -> None:
    with pytest.raises(WireError) as caught:
        decode_channel_state(body)
    assert caught.value.reason == reason


# --------------------------------------------------------------------------------------------
# Error bodies


def test_decode_error_full() -> None:
    body = (
        b'{"code":4,"message":"SendMessage failed with error: \\"a message with ID m-1 already exists\\"",'
        b'"exception_fields":{"message.id":"already exists"},"StatusCode":400,"duration":"0.51ms",'
        b'"more_info":"https://getstream.io/chat/docs/api_errors_response","details":[]}'
    )
    error = decode_error(body)
    assert error is not None
    assert (error.code, error.StatusCode, error.status_code) == (4, 400, 400)
    assert "already exists" in error.message
    assert error.duration == "0.51ms"
    assert error.more_info == "https://getstream.io/chat/docs/api_errors_response"
    assert error.exception_fields == {"message.id": "already exists"}


def test_decode_error_lenient() -> None:
    error = decode_error(b'{"code":9,"message":null,"StatusCode":"429","duration":1,"more_info":[]}')
    assert error == wire.ErrorBody(code=9, message="")
    assert decode_error('{"code":-1}') == wire.ErrorBody(code=-1)


@pytest.mark.parametrize(
    "body",
    [
        b'{"message":{"id":"m-1","text":"hi"}}',  # a success body
        b'{"code":"4","message":"x"}',
        b'{"code":true,"message":"x"}',
        b'{"code":4,"message":{"id":"m"}}',
        b"[]",
        b"<html>502 Bad Gateway</html>",
        b"",
        b'{"code":4,"message":"\xff"}',
    ],
)
def test_decode_error_not_an_error(body: bytes) -> None:
    assert decode_error(body) is None


# --------------------------------------------------------------------------------------------
# Full models


def test_full_message_new() -> None:
    event = decode_full_event(MESSAGE_NEW)
    assert isinstance(event, Event)
    assert event.type == "message.new" and event.cid == "messaging:general"
    assert event.created_at == "2024-03-05T10:11:12.123456789Z"  # raw text in full models
    assert event.channel_custom == {"name": "General", "image": None}
    assert (event.total_unread_count, event.unread_channels, event.watcher_count) == (4, 2, 3)
    message = event.message
    assert message is not None
    assert message.text == "Lunch at noon? été 🍕 午餐"
    assert message.user is not None and message.user.name == "Alice Liddell"
    assert message.reaction_counts == {"like": 2, "love": 1}
    assert message.reaction_groups is not None
    assert message.reaction_groups["like"].last_reaction_at == "2024-03-05T10:11:13.5Z"
    assert message.latest_reactions is not None and message.latest_reactions[0].user_id == "bob"
    assert message.pinned_at is None and message.pinned_by is None and message.parent_id is None
    assert message.i18n == {"fr_text": "Déjeuner à midi ?", "language": "en"}
    # attachments stay as their exact bytes
    assert message.attachments is not None
    originals = json.loads(MESSAGE_NEW)["message"]["attachments"]
    assert [msgspec.json.decode(a) for a in message.attachments] == originals
    file = decode_model(message.attachments[1], wire.Attachment)
    assert (file.type, file.file_size, file.mime_type) == ("file", 1234, "application/pdf")
    assert not event.thread and not event.poll_vote  # absent Raw fields are empty


def test_custom_fields_survive() -> None:
    parts = decode_event_parts(MESSAGE_NEW)
    assert custom_fields(parts.message, MESSAGE_FIELDS) == {"priority": "high"}
    assert custom_fields(parts.user, USER_FIELDS) == {"team_color": "teal"}
    assert custom_fields(MESSAGE_NEW, frozenset({"type"}))["future_key"] == {"kept": [1, 2, 3]}
    parts = decode_event_parts(NOTIFICATION_MESSAGE_NEW)
    assert custom_fields(parts.channel, CHANNEL_FIELDS) == {"name": "Travel plans"}
    assert not parts.member and not parts.draft
    me = decode_event_parts(HEALTH_CHECK).me
    assert custom_fields(me, USER_FIELDS) == {"team_color": "teal"}
    with pytest.raises(WireError, match="not a JSON object"):
        custom_fields(b"[1]", USER_FIELDS)
    with pytest.raises(WireError, match="not JSON"):
        custom_fields(b"{", USER_FIELDS)


def test_known_field_sets() -> None:
    for name in ("id", "name", "image", "role", "created_at", "last_active", "online", "banned"):
        assert name in USER_FIELDS
    for name in ("id", "type", "cid", "created_by", "frozen", "config", "own_capabilities"):
        assert name in CHANNEL_FIELDS
    for name in ("id", "text", "attachments", "reaction_groups", "poll_id", "quoted_message"):
        assert name in MESSAGE_FIELDS
    assert "priority" not in MESSAGE_FIELDS and "team_color" not in USER_FIELDS


def test_full_other_events() -> None:
    reaction = decode_full_event(REACTION_NEW)
    assert reaction.reaction is not None
    assert (reaction.reaction.message_id, reaction.reaction.user_id, reaction.reaction.type) == (
        "c0ffee00-0001", "bob", "love",
    )
    assert reaction.message is not None and reaction.message.reaction_counts == {"like": 2, "love": 2}

    health = decode_full_event(HEALTH_CHECK)
    assert health.me is not None and health.me.total_unread_count == 4
    assert health.me.devices is not None and len(health.me.devices) == 1

    notification = decode_full_event(NOTIFICATION_MESSAGE_NEW)
    assert notification.channel is not None and notification.channel.cid == "team:travel"
    assert notification.channel.config is not None
    assert notification.channel.config.max_message_length == 5000
    assert notification.message is not None and notification.message.text == "¡Hola! 😀"

    draft = decode_full_event(DRAFT_UPDATED)
    assert draft.draft is not None and draft.draft.channel_cid == "messaging:general"
    assert draft.draft.message is not None and draft.draft.message.text == "half a thought"

    member = decode_full_event(MEMBER_ADDED)
    assert member.member is not None
    assert (member.member.user_id, member.member.channel_role, member.member.invited) == (
        "carol", "channel_member", True,
    )

    unknown = decode_full_event(UNKNOWN_TYPE)
    assert unknown.type == "spaceship.launched"


def test_full_deletes_and_reads() -> None:
    event = decode_full_event(
        b'{"type":"message.deleted","cid":"m:1","hard_delete":true,"deleted_for_me":false,'
        b'"message":{"id":"x","type":"deleted","deleted_at":"2024-03-05T10:11:12Z"},"created_at":null}'
    )
    assert event.hard_delete is True and event.deleted_for_me is False
    assert event.message is not None and event.message.deleted_at == "2024-03-05T10:11:12Z"
    event = decode_full_event(
        b'{"type":"notification.mark_unread","cid":"m:1","last_read_at":"2024-03-05T10:00:00Z",'
        b'"unread_messages":3,"last_read_message_id":"a","first_unread_message_id":"b",'
        b'"last_delivered_at":"2024-03-05T10:01:00Z","last_delivered_message_id":"c"}'
    )
    assert (event.unread_messages, event.first_unread_message_id, event.last_delivered_message_id) == (
        3, "b", "c",
    )
    event = decode_full_event(b'{"type":"channel.hidden","cid":"m:1","clear_history":true}')
    assert event.clear_history is True


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b'{"type":"x","message":{"text":"no id"}}', "missing 'message.id'"),
        (b'{"type":"x","message":{"id":"m","user":{"id":1}}}', "'message.user.id' must be a string, got int"),
        (b'{"type":"x","message":{"id":"m","latest_reactions":[{"type":"l"},{"type":3}]}}',
         "'message.latest_reactions[1].type' must be a string, got int"),
        (b'{"type":"x","message":{"id":"m","attachments":{}}}',
         "'message.attachments' must be an array, got object"),
        (b'{"type":"x","channel":{"id":"c"}}', "missing 'channel.type'"),
        (b'{"type":"x","member":"carol"}', "'member' must be an object, got str"),
        (b'{"type":"x","hard_delete":"yes"}', "'hard_delete' must be a boolean, got str"),
        (b'{"type":""}', "'type' must not be empty"),
        (b"{}", "missing 'type'"),
        (b"[]", "not a JSON object"),
        (b"{]", "not JSON: object keys must be strings (byte 1)"),
    ],
)
def test_full_event_errors(payload: bytes, reason: str) -> None:
    with pytest.raises(WireError) as caught:
        decode_full_event(payload)
    assert caught.value.reason == reason


def test_full_channel_state_and_parts() -> None:
    state = decode_model(STATE_GENERAL, ChannelState)
    assert state.channel is not None and state.channel.cid == "messaging:general"
    assert state.channel.own_capabilities == ["send-message", "send-reaction"]
    assert state.channel.config is not None and state.channel.config.typing_events is True
    assert state.messages is not None and [m.id for m in state.messages] == ["m1", "m2"]
    assert state.messages[1].text == '"quoted" ☃'
    assert state.read is not None and state.read[0].last_read_message_id == "m2"
    assert state.membership is not None and state.membership.user_id == "alice"
    assert state.draft is None and state.watcher_count == 2
    parts = decode_channel_state_parts(STATE_GENERAL)
    assert custom_fields(parts.channel, CHANNEL_FIELDS) == {"name": "General"}
    assert parts.messages is not None
    assert custom_fields(parts.messages[0], MESSAGE_FIELDS) == {"priority": "low"}
    assert parts.draft and bytes(parts.draft) == b"null"


def test_models_omit_defaults_and_tolerate_nulls() -> None:
    message = decode_model(
        b'{"id":"m","text":null,"reaction_counts":null,"attachments":null,"pinned":null,'
        b'"quoted_message":{"id":"q","quoted_message":null},"custom":{"x":1}}',
        Message,
    )
    assert message.reaction_counts is None and message.attachments is None
    assert message.quoted_message is not None and message.quoted_message.id == "q"
    assert msgspec.json.encode(message) == b'{"id":"m","quoted_message":{"id":"q"}}'


# --------------------------------------------------------------------------------------------
# Properties: decode_event fails only with WireError

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)
time_like = st.one_of(
    st.text(max_size=40),
    st.from_regex(
        r"\A[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}"
        r"(\.[0-9]{0,11})?([Zz]|[+-][0-9]{2}:?[0-9]{2})?\Z"
    ),
)
event_like = st.fixed_dictionaries(
    {},
    optional={
        "type": st.text(max_size=12) | json_values,
        "created_at": time_like | json_values,
        "cid": st.text(max_size=12) | json_values,
        "channel_type": st.text(max_size=6) | json_values,
        "channel_id": st.text(max_size=6) | json_values,
        "connection_id": st.text(max_size=6) | json_values,
        "channel": st.fixed_dictionaries(
            {}, optional={"cid": json_values, "type": json_values, "id": json_values}
        ) | json_values,
        "draft": st.fixed_dictionaries({}, optional={"channel_cid": json_values}) | json_values,
        "message": json_values,
    },
)


def _decode_or_wire_error(raw: bytes | str) -> EventHead | None:
    try:
        head = decode_event(raw)
    except WireError as exc:
        assert exc.reason
        return None
    assert isinstance(head, EventHead) and head.type
    return head


@settings(max_examples=300)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_only_wire_error(raw: bytes) -> None:
    _decode_or_wire_error(raw)


@settings(max_examples=300)
@given(st.text(max_size=100))
def test_arbitrary_text_only_wire_error(raw: str) -> None:
    _decode_or_wire_error(raw)


@settings(max_examples=300)
@given(json_values)
def test_arbitrary_json_only_wire_error(value: Any) -> None:
    _decode_or_wire_error(json.dumps(value).encode())


@settings(max_examples=500)
@given(event_like)
def test_event_like_objects(value: dict[str, Any]) -> None:
    raw = json.dumps(value, ensure_ascii=False).encode()
    head = _decode_or_wire_error(raw)
    if head is not None:
        assert head.type == value["type"]
        created = value.get("created_at")
        assert head.created_at == (parse_time(created) if created else None)  # "": no time
        if isinstance(value.get("cid"), str) and value["cid"]:
            assert head.cid == value["cid"]
    try:
        decode_full_event(raw)
    except WireError:
        pass


@settings(max_examples=200)
@given(json_values)
def test_other_decoders_only_wire_error(value: Any) -> None:
    raw = json.dumps(value).encode()
    for decode in (decode_query_channels, decode_sync, decode_channel_state, decode_full_event):
        try:
            decode(raw)
        except WireError:
            pass
    assert decode_error(raw) is None or isinstance(value, dict)


@pytest.mark.parametrize(
    ("message", "payload", "reason"),
    [
        # Whatever a future msgspec says, the reason is ours.
        ("Some new wording", b'{"type":"\xff"}', "not JSON: invalid UTF-8 text"),
        ("Some new wording (byte 3)", b'{"t', "not JSON: malformed (byte 3)"),
        ("Data ended TRUNCATED here", b'{"type":"x"', "not JSON: input data was truncated"),
        ("anything", b"  ", "not JSON: input data was truncated"),
        ("Invalid character here (byte 0)", b"<html>", "not JSON: invalid character (byte 0)"),
    ],
)
def test_not_json_reasons_do_not_repeat_the_decoders_wording(
    message: str, payload: bytes, reason: str
) -> None:
    from chatledger.eventstore.wire.errors import not_json_reason

    assert not_json_reason(msgspec.DecodeError(message), payload) == reason
