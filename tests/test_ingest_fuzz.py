"""Malformed input never crashes the store and never loses what it already holds."""

from __future__ import annotations

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chatledger import ChatStore
from fixtures import message_new, query_channels_response, sync_response

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4),
    max_leaves=12,
)
event_like = st.fixed_dictionaries(
    {"type": st.one_of(st.text(), st.integers(), st.none())},
    optional={
        "cid": st.one_of(st.text(), st.integers(), st.none()),
        "created_at": st.one_of(st.text(), st.integers(), st.none(),
                                st.just("2026-11-25T10:00:00.123456789Z"),
                                st.just("0001-01-01T00:00:00Z")),
        "connection_id": st.one_of(st.text(), st.none()),
        "message": json_values,
        "channel": json_values,
    },
)


def mutate(raw: bytes, data: st.DataObject) -> bytes:
    if not raw:
        return raw
    cut = data.draw(st.integers(0, len(raw) - 1))
    action = data.draw(st.sampled_from(["truncate", "flip", "insert"]))
    if action == "truncate":
        return raw[:cut]
    if action == "flip":
        return raw[:cut] + bytes([raw[cut] ^ data.draw(st.integers(1, 255))]) + raw[cut + 1:]
    return raw[:cut] + data.draw(st.binary(max_size=8)) + raw[cut:]


def check_consistent(store: ChatStore, before: list[bytes]) -> None:
    payloads = [e.payload for e in store.history()]
    assert payloads[: len(before)] == before


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_any_batch_is_stored_or_quarantined(data: st.DataObject) -> None:
    store = ChatStore.open_file(":memory:")
    store.ingest(message_new(mid="anchor"))
    before = [e.payload for e in store.history()]
    items = data.draw(st.lists(
        st.one_of(
            st.binary(max_size=64),
            event_like.map(msgspec.json.encode),
            json_values.map(msgspec.json.encode),
            st.builds(lambda d: mutate(message_new(), d), st.data()),
        ),
        max_size=12,
    ))
    result = store.ingest_many(items)
    assert len(result.positions) == len(items)
    quarantined = {q.index for q in result.quarantined}
    for index, (item, position) in enumerate(zip(items, result.positions)):
        assert (position is None) == (index in quarantined)
    stored = [i for i, p in zip(items, result.positions) if p is not None]
    check_consistent(store, before + stored)
    assert len(store.quarantine()) == len(quarantined)
    assert store.ingest(message_new(mid="after")) > 0
    assert store.verify() == []  # the read tables equal a fresh rebuild
    store.close()


@settings(max_examples=80, deadline=None)
@given(st.data())
def test_mutated_responses_never_crash(data: st.DataObject) -> None:
    store = ChatStore.open_file(":memory:")
    store.ingest(message_new(mid="anchor"))
    before = [e.payload for e in store.history()]
    query = mutate(query_channels_response(["messaging:a", "messaging:b"]), data)
    sync = mutate(sync_response([message_new(mid="s")]), data)
    for result in (store.ingest_query_channels(query), store.ingest_sync(sync),
                   store.ingest_channel_state(mutate(b'{"channel":{"cid":"a:b"}}', data))):
        assert result.stored + len(result.quarantined) >= 1
    check_consistent(store, before)
    assert store.verify() == []
    store.close()
