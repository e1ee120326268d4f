"""A rebuild (and `verify`, and the past) replays the log into exactly the tables that live
ingest built, whatever the batches and the delivery order: generated workloads of the
benchmarks' mix (replies, edits, soft and hard deletes, reactions, reads, members, users),
delivered with events swapped inside a window, a channel state and a sync answer among them."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from benchmarks.workload import generate_events, generate_query_channels_response
from chatledger import ChatStore
from chatledger.projections.schema import TABLES


def _tables(store: ChatStore) -> dict[str, list[tuple[Any, ...]]]:
    with store.log.datastore.transaction(commit=False) as cursor:
        return {name: sorted(cursor.execute(f"SELECT * FROM {name}"), key=repr)
                for name in TABLES}


def _delivered(payloads: list[bytes], window: int, seed: int) -> list[bytes]:
    """`payloads` with each event moved up to `window` places (late or early delivery)."""
    shuffled = list(payloads)
    rng = random.Random(seed)
    for index in range(len(shuffled) - 1):
        other = min(len(shuffled) - 1, index + rng.randrange(window + 1))
        shuffled[index], shuffled[other] = shuffled[other], shuffled[index]
    return shuffled


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(1, 10_000), window=st.integers(0, 40), batch=st.sampled_from([1, 7, 250]))
def test_rebuild_gives_the_tables_live_ingest_built(tmp_path_factory: Any, seed: int, window: int,
                                                    batch: int) -> None:
    directory: Path = tmp_path_factory.mktemp("store")
    payloads = list(generate_events(1_200, seed=seed, channels=12, users=40))
    events = _delivered(payloads, window, seed)
    store = ChatStore.open(directory, "user-0")
    try:
        store.ingest_query_channels(generate_query_channels_response(3, 5, seed=seed))
        for start in range(0, len(events), batch):
            store.ingest_many(events[start:start + batch])
        live = _tables(store)
        assert store.verify() == []
        store.rebuild()
        assert _tables(store) == live
    finally:
        store.close()
