"""The benchmark workload generator: deterministic, in the intended mix, shaped like the wire format."""

from __future__ import annotations

import json
import re
from collections import Counter

import pytest

from benchmarks.workload import (
    MIX,
    generate_events,
    generate_query_channels_response,
    generate_sync_response,
)

N = 20_000
RFC3339_6 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")
RFC3339_ANY = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?Z$")
UUID4 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
MESSAGE_REFERRING = {"message.updated", "message.deleted", "reaction.new", "reaction.deleted"}
USER_KEYS = {"id", "name", "role", "created_at", "updated_at", "last_active", "online"}


@pytest.fixture(scope="module")
def raw_events() -> list[bytes]:
    return list(generate_events(N, seed=7))


@pytest.fixture(scope="module")
def events(raw_events: list[bytes]) -> list[dict]:
    return [json.loads(b) for b in raw_events]


def test_mix_sums_to_one() -> None:
    assert sum(MIX.values()) == pytest.approx(1.0)
    assert MIX["message.new"] == pytest.approx(0.70)


def test_deterministic_per_seed() -> None:
    a = list(generate_events(2_000, seed=3))
    b = list(generate_events(2_000, seed=3))
    c = list(generate_events(2_000, seed=4))
    assert a == b
    assert a != c
    assert all(isinstance(x, bytes) for x in a)
    # A prefix of a longer run is the shorter run.
    assert list(generate_events(500, seed=3)) == a[:500]


def test_mix_is_close_to_intended(events: list[dict]) -> None:
    counts = Counter(e["type"] for e in events)
    assert set(counts) <= set(MIX)
    for kind, share in MIX.items():
        assert counts[kind] / N == pytest.approx(share, abs=0.02), kind
    groups = {
        "reads": ("message.read", "notification.mark_read"),
        "member_user": ("member.added", "member.updated", "member.removed", "user.updated",
                        "user.presence.changed"),
    }
    for kinds in groups.values():
        assert sum(counts[k] for k in kinds) / N == pytest.approx(sum(MIX[k] for k in kinds), abs=0.01)


def test_events_are_compact_json_with_type_and_increasing_created_at(
    raw_events: list[bytes], events: list[dict]
) -> None:
    previous = ""
    for raw, event in zip(raw_events, events):
        assert isinstance(event, dict)
        assert isinstance(event["type"], str)
        created = event["created_at"]
        assert RFC3339_6.match(created), created
        assert created > previous  # fixed width, so string order is time order
        previous = created
        assert b'": ' not in raw[:40] and not raw.startswith(b"{ ")  # compact, as the server sends


def test_channel_events_are_consistent(events: list[dict]) -> None:
    with_cid = 0
    for event in events:
        if "cid" not in event:
            assert event["type"].startswith("user.") or event["type"] == "notification.mark_read"
            continue
        with_cid += 1
        channel_type, channel_id = event["cid"].split(":", 1)
        assert channel_type == event["channel_type"] == "messaging"
        assert channel_id == event["channel_id"]
        assert isinstance(event["channel_member_count"], int)
        if "message" in event:
            assert event["message"]["cid"] == event["cid"]
        if "channel" in event:
            assert event["channel"]["cid"] == event["cid"]
    assert with_cid > 0.95 * len(events)


def test_channel_traffic_is_skewed(events: list[dict]) -> None:
    per_channel = Counter(e["cid"] for e in events if e["type"] == "message.new")
    top = sum(n for _, n in per_channel.most_common(10))
    assert top > 0.4 * sum(per_channel.values())
    assert len(per_channel) > 50


def test_message_new_shape(events: list[dict]) -> None:
    news = [e for e in events if e["type"] == "message.new"]
    texts, replies, attachments, unicode_texts = set(), 0, 0, 0
    for e in news:
        for key in ("cid", "channel_type", "channel_id", "channel_member_count", "channel_message_count"):
            assert key in e
        assert USER_KEYS <= set(e["user"])
        m = e["message"]
        assert UUID4.match(m["id"]) and m["id"] == e["message_id"]
        assert m["user"]["id"] == e["user"]["id"]
        for key in ("text", "attachments", "mentioned_users", "latest_reactions", "own_reactions",
                    "reaction_counts", "reaction_scores", "reply_count", "pinned_at", "pinned_by",
                    "pin_expires"):
            assert key in m, key
        assert m["pinned_at"] is None
        assert RFC3339_ANY.match(m["user"]["created_at"])
        texts.add(m["text"])
        replies += "parent_id" in m
        attachments += bool(m["attachments"])
        unicode_texts += not m["text"].isascii()
    assert len(texts) > 0.5 * len(news)  # varied
    assert 0.05 < replies / len(news) < 0.15
    assert 0.02 < attachments / len(news) < 0.15
    assert unicode_texts > 0.05 * len(news)


def test_mean_size(raw_events: list[bytes]) -> None:
    mean = sum(len(b) for b in raw_events) / len(raw_events)
    assert 800 <= mean <= 1600


def test_references_point_to_earlier_messages_of_the_same_channel(events: list[dict]) -> None:
    created: dict[str, str] = {}  # message id -> cid
    deleted: set[str] = set()
    reactions: set[tuple[str, str, str]] = set()
    for e in events:
        kind = e["type"]
        if kind == "message.new":
            m = e["message"]
            assert m["id"] not in created
            for ref in (m.get("parent_id"), m.get("quoted_message_id")):
                if ref is not None:
                    assert created.get(ref) == e["cid"]
            created[m["id"]] = e["cid"]
        elif kind in MESSAGE_REFERRING:
            mid = e["message"]["id"]
            assert created.get(mid) == e["cid"], (kind, mid)
            assert mid not in deleted, (kind, mid)
            if kind == "message.deleted":
                assert e["message"]["type"] == "deleted" and e["message"]["deleted_at"]
                assert isinstance(e["hard_delete"], bool)
                deleted.add(mid)
            elif kind == "message.updated":
                assert e["message"]["updated_at"] == e["created_at"]
            else:
                r = e["reaction"]
                assert r["message_id"] == mid
                assert r["user_id"] == r["user"]["id"]
                key = (mid, r["user_id"], r["type"])
                counts = e["message"]["reaction_counts"] or {}
                if kind == "reaction.new":
                    reactions.add(key)
                    assert counts.get(r["type"], 0) >= 1
                else:
                    assert key in reactions
                    reactions.discard(key)
        elif kind in ("message.read", "notification.mark_read") and "cid" in e:
            assert created.get(e["last_read_message_id"]) == e["cid"]


def test_query_channels_response() -> None:
    raw = generate_query_channels_response(4, 15, seed=2)
    assert raw == generate_query_channels_response(4, 15, seed=2)
    body = json.loads(raw)
    assert set(body) == {"channels", "duration"}
    assert len(body["channels"]) == 4
    last = [s["channel"]["last_message_at"] for s in body["channels"]]
    assert last == sorted(last, reverse=True)
    for state in body["channels"]:
        for key in ("channel", "messages", "members", "read", "membership", "pinned_messages"):
            assert key in state
        channel = state["channel"]
        assert channel["cid"] == f"{channel['type']}:{channel['id']}"
        assert len(state["messages"]) == 15
        ids = {m["id"] for m in state["messages"]}
        times = [m["created_at"] for m in state["messages"]]
        assert times == sorted(times)
        for m in state["messages"]:
            assert m["cid"] == channel["cid"]
            if "parent_id" in m:
                assert m["parent_id"] in ids
        assert 0 < len(state["members"]) <= 100
        assert all(USER_KEYS <= set(member["user"]) for member in state["members"])


def test_sync_response() -> None:
    raw = generate_sync_response(300, seed=5)
    body = json.loads(raw)
    assert set(body) == {"events", "inaccessible_cids", "duration"}
    assert body["inaccessible_cids"] == []
    assert isinstance(body["duration"], str)
    assert len(body["events"]) == 300
    for e in body["events"]:
        assert e["type"] and e["created_at"] and e["cid"] == f"{e['channel_type']}:{e['channel_id']}"


def test_small_worlds() -> None:
    events = [json.loads(b) for b in generate_events(3_000, seed=1, channels=1, users=2)]
    assert {e["cid"] for e in events if "cid" in e} == {events[0]["cid"]}
    with pytest.raises(ValueError):
        list(generate_events(1, channels=0))
