"""The event log: verbatim storage, envelopes, streams, positions, quarantine, compression."""

from __future__ import annotations

import random
from pathlib import Path

import msgspec
import pytest

from chatledger import ChatStore
from chatledger.eventstore import ingest
from chatledger.eventstore.log import EventLog, StoreError
from chatledger.projections.store import RejectedInput
from fixtures import (
    channel_state,
    health_check,
    message_new,
    query_channels_response,
    reaction_new,
    sync_response,
)


@pytest.fixture()
def store(tmp_path: Path) -> ChatStore:
    s = ChatStore.open(tmp_path, "alice")
    yield s
    s.close()


def test_events_are_stored_verbatim_with_their_envelope(store: ChatStore) -> None:
    raw = message_new(text="héllo \u2603 \U0001F600")
    position = store.ingest(raw, source="websocket", connection_id="conn-9")
    [entry] = store.history()
    assert entry.position == position
    assert entry.payload == raw
    assert entry.stream == "messaging:general"
    assert entry.type == "message.new"
    assert entry.source == "websocket"
    assert entry.connection_id == "conn-9"
    assert entry.event_at == 1_795_600_800_000_000
    assert entry.received_at > entry.event_at


def test_each_channel_is_a_stream_and_the_rest_is_the_users(store: ChatStore) -> None:
    store.ingest_many([message_new("messaging:a", "m1"), message_new("messaging:b", "m2"),
                       message_new("messaging:a", "m3"), health_check()])
    entries = store.history()
    assert [(e.stream, e.version) for e in entries] == [
        ("messaging:a", 1), ("messaging:b", 1), ("messaging:a", 2), (ingest.USER_STREAM, 1)]
    assert entries[-1].connection_id == "conn-1"


def test_positions_are_returned_in_input_order(store: ChatStore) -> None:
    result = store.ingest_many([message_new(mid=f"m{i}") for i in range(5)])
    assert result.positions == [1, 2, 3, 4, 5]
    assert store.log.max_position() == 5


def test_dicts_and_text_are_accepted(store: ChatStore) -> None:
    as_dict = msgspec.json.decode(message_new(mid="d1"))
    store.ingest(as_dict)
    store.ingest(message_new(mid="s1").decode())
    assert [e.json()["message"]["id"] for e in store.history()] == ["d1", "s1"]


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"not json", "JSON"),
        (b"[1, 2]", "object"),
        (b'{"created_at": "2026-11-25T10:00:00Z"}', "type"),
        (b'{"type": 5}', "type"),
        (b'{"type": "message.new", "created_at": 12}', "created_at"),
        (b'{"type": "message.new", "created_at": "yesterday"}', "created_at"),
        (b'{"type": "message.new", "cid": ["a"]}', "cid"),
    ],
)
def test_malformed_events_are_quarantined_with_a_reason(
    store: ChatStore, payload: bytes, reason: str
) -> None:
    store.ingest(message_new(mid="kept"))
    with pytest.raises(RejectedInput) as caught:
        store.ingest(payload)
    assert reason in caught.value.reason
    [item] = store.quarantine()
    assert item.raw == payload
    assert item.reason == caught.value.reason
    assert [e.json()["message"]["id"] for e in store.history()] == ["kept"]


def test_a_huge_payload_is_refused_and_the_store_stays_usable(store: ChatStore) -> None:
    huge = b'{"type":"message.new","text":"' + b"x" * (50 * 1024 * 1024) + b'"}'
    with pytest.raises(RejectedInput, match="exceeds"):
        store.ingest(huge)
    [item] = store.quarantine()
    assert item.size == len(huge) and item.raw == huge
    assert store.ingest(message_new()) == 1


def test_a_batch_with_bad_items_keeps_the_good_ones(store: ChatStore) -> None:
    result = store.ingest_many([message_new(mid="a"), b"{oops", message_new(mid="b")])
    assert result.positions[0] is not None and result.positions[1] is None
    assert result.positions[2] is not None
    assert [q.index for q in result.quarantined] == [1]
    assert result.stored == 2


def test_unknown_types_and_keys_survive_untouched(store: ChatStore) -> None:
    raw = b'{"type":"ai_indicator.future","cid":"messaging:x","created_at":null,"zz":{"deep":[1,2.50,"\\u00e9"]}}'
    store.ingest(raw)
    [entry] = store.history()
    assert entry.payload == raw and entry.type == "ai_indicator.future"


def test_query_channels_response_is_split_into_exact_slices(store: ChatStore) -> None:
    response = query_channels_response(["messaging:a", "messaging:b"])
    result = store.ingest_query_channels(response, filter={"members": {"$in": ["alice"]}},
                                         sort=[{"field": "last_message_at", "direction": -1}])
    assert result.stored == 3
    a, b, summary = store.history()
    assert (a.stream, a.type, a.source) == ("messaging:a", ingest.CHANNEL_STATE, "query")
    assert a.payload in response and b.payload in response
    assert msgspec.json.decode(a.payload) == channel_state("messaging:a")
    assert summary.stream == ingest.USER_STREAM and summary.type == ingest.QUERY_RESULT
    assert summary.json()["cids"] == ["messaging:a", "messaging:b"]
    assert summary.json()["filter"] == {"members": {"$in": ["alice"]}}


def test_a_channel_query_answer_goes_to_its_stream(store: ChatStore) -> None:
    store.ingest_channel_state(msgspec.json.encode(channel_state("team:core")))
    [entry] = store.history()
    assert entry.stream == "team:core" and entry.type == ingest.CHANNEL_STATE


def test_sync_response_appends_each_event_in_order(store: ChatStore) -> None:
    events = [message_new(mid="s1"), reaction_new(mid="s1"), message_new(mid="s2")]
    store.ingest_sync(sync_response(events, ["messaging:gone"]), last_sync_at="2026-11-24T00:00:00Z")
    entries = store.history()
    assert [e.payload for e in entries[:3]] == events
    assert all(e.source == "sync" for e in entries)
    assert entries[3].json()["inaccessible_cids"] == ["messaging:gone"]


@pytest.mark.parametrize("bad", [b"[]", b'{"channels": 3}', b"nope"])
def test_malformed_responses_are_quarantined(store: ChatStore, bad: bytes) -> None:
    result = store.ingest_query_channels(bad)
    assert result.stored == 0 and len(result.quarantined) == 1


def test_history_filters(store: ChatStore) -> None:
    store.ingest_many([
        message_new("messaging:a", "m1", at="2026-11-01T00:00:00Z"),
        reaction_new("messaging:a", "m1", at="2026-11-02T00:00:00Z"),
        message_new("messaging:b", "m2", at="2026-11-03T00:00:00Z"),
    ])
    assert [e.type for e in store.history(cid="messaging:a")] == ["message.new", "reaction.new"]
    assert len(store.history(types=["message.new"])) == 2
    since = 1_793_577_600_000_000  # 2026-11-02T00:00:00Z
    assert [e.stream for e in store.history(since=since)] == ["messaging:a", "messaging:b"]
    assert len(store.history(until=since)) == 2
    assert [e.position for e in store.history(newest_first=True, limit=2)] == [3, 2]


def test_reopen_continues_streams_and_positions(tmp_path: Path) -> None:
    with ChatStore.open(tmp_path, "alice") as s:
        s.ingest(message_new(mid="1"))
    with ChatStore.open(tmp_path, "alice") as s:
        s.ingest(message_new(mid="2"))
        assert [(e.position, e.version) for e in s.history()] == [(1, 1), (2, 2)]


def test_two_connections_appending_to_one_stream_never_conflict(tmp_path: Path) -> None:
    path = tmp_path / "shared.chatledger"
    one, two = EventLog.open(path), EventLog.open(path)
    try:
        for i in range(5):
            one.append_event(message_new(mid=f"a{i}"))
            two.append_event(message_new(mid=f"b{i}"))
        versions = [e.version for e in one.entries(stream="messaging:general")]
        assert versions == list(range(1, 11))
    finally:
        one.close()
        two.close()


def test_compression_switches_on_and_is_lossless(tmp_path: Path) -> None:
    rng = random.Random(7)
    events = [
        message_new(f"messaging:c{rng.randrange(20)}", f"m{i}",
                    text=" ".join(rng.choice(["hi", "ok", "lunch?", "ship it", "😀"])
                                  for _ in range(rng.randrange(1, 30))))
        for i in range(6_000)
    ]
    log = EventLog.open(tmp_path / "c.chatledger")
    for start in range(0, len(events), 500):
        log.append_events(events[start:start + 500])
    stats = log.stats()
    assert stats["dictionaries"] == 1
    assert stats["payload_bytes"] == sum(map(len, events))
    assert stats["stored_payload_bytes"] * 3 < stats["payload_bytes"]
    assert [e.payload for e in log.entries()] == events
    log.close()
    reopened = EventLog.open(tmp_path / "c.chatledger")
    assert [e.payload for e in reopened.iter_entries(batch=700)] == events
    reopened.close()


def test_compression_can_be_switched_off(tmp_path: Path) -> None:
    log = EventLog.open(tmp_path / "plain.chatledger", compression=False)
    log.append_events([message_new(mid=f"m{i}") for i in range(5_000)])
    assert log.stats()["dictionaries"] == 0
    log.close()


def test_a_file_that_is_not_sqlite_is_refused_and_untouched(tmp_path: Path) -> None:
    path = tmp_path / "junk.chatledger"
    path.write_bytes(b"this is not a database" * 100)
    before = path.read_bytes()
    with pytest.raises(StoreError):
        EventLog.open(path)
    assert path.read_bytes() == before


def test_a_file_from_a_newer_version_is_refused_and_untouched(tmp_path: Path) -> None:
    path = tmp_path / "new.chatledger"
    log = EventLog.open(path)
    log.append_event(message_new())
    log.set_meta("schema_version", 999)
    log.close()
    before = path.read_bytes()
    with pytest.raises(StoreError, match="newer chatledger"):
        EventLog.open(path)
    assert path.read_bytes() == before


def test_a_listener_sees_appends_in_the_transaction_and_can_abort_them(store: ChatStore) -> None:
    seen = []

    class Listener:
        def appended(self, cursor, entries):  # noqa: ANN001
            seen.extend((e.position, e.entry.type) for e in entries)
            if any(e.entry.type == "reaction.new" for e in entries):
                raise RuntimeError("projection failed")

    store.log.listeners.append(Listener())
    store.ingest(message_new())
    with pytest.raises(RuntimeError):
        store.ingest(reaction_new())
    assert seen == [(1, "message.new"), (2, "reaction.new")]
    assert len(store.history()) == 1
    # The aborted append did not advance the stream: the next event takes version 2.
    store.log.listeners.clear()
    store.ingest(message_new(mid="m2"))
    assert [e.version for e in store.history()] == [1, 2]


def _varied_events(n: int, seed: int = 3) -> list[bytes]:
    rng = random.Random(seed)
    return [
        message_new(f"messaging:c{rng.randrange(30)}", f"m{seed}-{i}",
                    text=" ".join(rng.choice(["hi", "ok", "lunch?", "ship it", "😀", "fine"])
                                  for _ in range(rng.randrange(1, 30))))
        for i in range(n)
    ]


def test_one_store_shared_by_threads_stays_consistent(tmp_path: Path) -> None:
    import threading

    store = ChatStore.open(tmp_path, "alice")
    store.ingest_many(_varied_events(4_500, seed=1))  # enough to train a dictionary
    errors: list[BaseException] = []
    batches = [_varied_events(300, seed=10 + t) for t in range(4)]

    def write(batch: list[bytes]) -> None:
        try:
            for start in range(0, len(batch), 50):
                store.ingest_many(batch[start:start + 50])
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    def read() -> None:
        try:
            for _ in range(20):
                for entry in store.history(limit=200, newest_first=True):
                    entry.json()
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=write, args=(b,)) for b in batches]
    threads += [threading.Thread(target=read) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    payloads = {e.payload for e in store.history()}
    assert all(p in payloads for b in batches for p in b)
    assert store.stats().dictionaries == 1
    store.close()


def test_a_dictionary_trained_by_another_connection_is_found(tmp_path: Path) -> None:
    path = tmp_path / "two.chatledger"
    reader, writer = EventLog.open(path), EventLog.open(path)
    events = _varied_events(5_000)
    writer.append_events(events[:4_500])
    writer.append_events(events[4_500:])  # trains, and re-encodes what the reader knew raw
    assert writer.stats()["dictionaries"] == 1
    assert [e.payload for e in reader.entries()] == events
    reader.append_events(_varied_events(200, seed=9))  # and it compresses with it too
    assert reader.entries(newest_first=True, limit=1)[0].payload == _varied_events(200, seed=9)[-1]
    reader.close()
    writer.close()


def test_stream_heads_survive_a_crash(tmp_path: Path) -> None:
    import subprocess
    import sys

    path = tmp_path / "crash.chatledger"
    script = (
        "import sys, os\n"
        "sys.path.insert(0, sys.argv[2])\n"
        "from chatledger.eventstore.log import EventLog\n"
        "from fixtures import message_new\n"
        "log = EventLog.open(sys.argv[1])\n"
        "for i in range(7):\n"
        "    log.append_events([message_new('messaging:a', f'a{i}') for _ in range(1000)])\n"
        "os._exit(0)  # no close: the heads of the last 2,000 rows were never written down\n"
    )
    subprocess.run([sys.executable, "-c", script, str(path), str(Path(__file__).parent)],
                   check=True, timeout=120)
    log = EventLog.open(path)
    log.append_event(message_new("messaging:a", "after"))
    versions = [e.version for e in log.entries(stream="messaging:a")]
    assert versions == list(range(1, 7_002))
    log.close()


def test_several_writers_still_train_a_dictionary(tmp_path: Path) -> None:
    path = tmp_path / "many.chatledger"
    logs = [EventLog.open(path) for _ in range(4)]
    events = _varied_events(6_000)
    for n, start in enumerate(range(0, len(events), 250)):
        logs[n % 4].append_events(events[start:start + 250])
    assert logs[0].stats()["dictionaries"] == 1
    assert [e.payload for e in logs[3].entries()] == events
    for log in logs:
        log.close()


def test_another_programs_database_is_refused_and_untouched(tmp_path: Path) -> None:
    import apsw

    path = tmp_path / "other.db"
    other = apsw.Connection(str(path))
    other.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY, total REAL)")
    other.close()
    before = path.read_bytes()
    with pytest.raises(StoreError, match="something else"):
        EventLog.open(path)
    assert path.read_bytes() == before


def test_a_truncated_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "t.chatledger"
    log = EventLog.open(path)
    log.append_events([message_new(mid=f"m{i}") for i in range(500)])
    log.close()
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])
    with pytest.raises(StoreError):
        reopened = EventLog.open(path)
        reopened.entries()  # a damaged page may only show when read
        reopened.close()


def test_opening_an_existing_store_does_not_wait_for_a_writer(tmp_path: Path) -> None:
    import apsw

    path = tmp_path / "busy.chatledger"
    EventLog.open(path).close()
    writer = apsw.Connection(str(path))
    writer.execute("BEGIN IMMEDIATE")  # another process is in the middle of a write
    try:
        log = EventLog.open(path, lock_timeout=0.1)
        assert log.entries() == []
        log.close()
    finally:
        writer.execute("ROLLBACK")
        writer.close()
