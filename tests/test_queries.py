"""Reading pages of messages and the first screen: decoding a page at once, statements planned once."""

from __future__ import annotations

from pathlib import Path

import apsw
import msgspec
import pytest
import zstandard

from chatledger import ChatStore
from chatledger.eventstore.codec import RAW
from fixtures import event, message, query_channels_response


def at(n: int) -> str:
    return f"2026-11-25T{10 + n // 3600:02d}:{n // 60 % 60:02d}:{n % 60:02d}.000000Z"


@pytest.fixture(scope="module")
def big_store(tmp_path_factory: pytest.TempPathFactory) -> ChatStore:
    """Enough messages for a trained dictionary (their entries compressed), in two channels, and
    a channel state whose messages live inside one entry."""
    s = ChatStore.open(tmp_path_factory.mktemp("queries"), "alice")
    s.ingest_query_channels(query_channels_response(["messaging:state"]))
    events = [event("message.new", cid, at(n), message=message(f"{cid}-{n}", cid, at(n), text=f"t{n}"))
              for n in range(2_400) for cid in (["messaging:general"] if n % 3 else ["messaging:other"])]
    for i in range(0, len(events), 500):
        s.ingest_many(events[i:i + 500])
    yield s
    s.close()


def expected_texts(cid: str, numbers: range) -> list[str]:
    return [f"t{n}" for n in numbers if (cid == "messaging:other") == (n % 3 == 0)]


def test_pages_across_raw_and_compressed_entries_hold_each_message(big_store: ChatStore) -> None:
    with big_store.read.datastore.transaction(commit=False) as c:
        codecs = dict(c.execute("SELECT codec, count(*) FROM stored_events GROUP BY codec"))
    assert set(codecs) - {RAW}  # compressed with the trained dictionary (raw: the last test)

    seen: list[str] = []
    page = big_store.messages("messaging:general", limit=50)
    while page:
        seen = [m.json()["text"] for m in page] + seen
        assert all(m.json()["id"] == m.id for m in page)
        page = big_store.messages("messaging:general", before=(page[0].created_at, page[0].id),
                                  limit=50)
    assert seen == expected_texts("messaging:general", range(2_400))
    state = big_store.messages("messaging:state")
    assert [m.json()["id"] for m in state] == [m.id for m in state] and len(state) == 2


def test_the_first_screen_holds_each_channels_newest_message(big_store: ChatStore) -> None:
    screen = {s.cid: s for s in big_store.channels(limit=30)}
    assert screen["messaging:general"].last_message.json()["text"] == "t2399"
    assert screen["messaging:other"].last_message.json()["text"] == "t2397"
    assert screen["messaging:state"].last_message.json()["id"] == "messaging:state-m1"


def test_pages_and_the_first_screen_are_planned_once(big_store: ChatStore) -> None:
    """SQLite plans a statement again whenever a parameter it looked at while planning is bound
    anew; the page and first-screen statements must not be such statements (tests/_BOUND)."""
    prepared: list[int] = []

    def authorizer(*_: object) -> int:  # SQLite calls it only while preparing a statement
        prepared.append(1)
        return apsw.SQLITE_OK

    readers = big_store.read.datastore._readers
    assert readers
    for connection in readers:
        connection.authorizer = authorizer
    try:
        calls = [
            lambda: big_store.messages("messaging:general", limit=50),
            lambda: big_store.messages("messaging:other", limit=20),
            lambda: big_store.messages("messaging:general", before=(1, "x"), limit=10),
            lambda: big_store.thread("nothing", limit=5),
            lambda: big_store.channels(limit=30),
            lambda: big_store.channels(limit=2),
        ]
        for call in calls:  # each statement once (setting an authorizer discards the plans)
            call()
        prepared.clear()
        for call in calls:
            call()
        assert prepared == []
    finally:
        for connection in readers:
            connection.authorizer = None


def test_decode_many_matches_decode_and_refuses_a_broken_frame(big_store: ChatStore) -> None:
    codec = big_store.read.datastore.codec
    with big_store.read.datastore.transaction(commit=False) as c:
        rows = c.execute("SELECT codec, state FROM stored_events WHERE codec > 0 LIMIT 20").fetchall()
    assert rows
    dictionary = rows[0][0]
    frames = [state for _, state in rows]
    assert codec.decode_many(dictionary, frames) == [codec.decode(dictionary, f) for f in frames]
    assert codec.decode_many(RAW, [b"a", b"b"]) == [b"a", b"b"]
    assert codec.decode_many(dictionary, []) == []
    with pytest.raises(zstandard.ZstdError):
        codec.decode_many(dictionary, [frames[0], frames[1][:-3]])


def test_a_page_of_a_store_without_a_dictionary(tmp_path: Path) -> None:
    s = ChatStore.open(tmp_path, "alice")
    try:
        s.ingest(event("message.new", message=message("m1", text="hello")))
        assert [m.json()["text"] for m in s.messages("messaging:general")] == ["hello"]
        assert msgspec.json.decode(s.channels()[0].last_message.raw)["id"] == "m1"
    finally:
        s.close()
