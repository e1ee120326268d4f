"""A rebuild leaves the file's schema as it found it (every index back), and its statements stay
prepared: they do not push each other out of the connection's statement cache."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import apsw
import pytest

from benchmarks.workload import generate_events, generate_query_channels_response
from chatledger import ChatStore
from chatledger.eventstore import datastore


def _schema(store: ChatStore) -> list[tuple[Any, ...]]:
    with store.log.datastore.transaction(commit=False) as cursor:
        return sorted(cursor.execute("SELECT type, name, tbl_name, sql FROM sqlite_master"),
                      key=repr)


@pytest.fixture()
def store(tmp_path: Path) -> Any:
    opened = ChatStore.open(tmp_path, "user-0")
    try:
        opened.ingest_query_channels(generate_query_channels_response(3, 5, seed=5))
        payloads = list(generate_events(3_000, seed=5, channels=12, users=40))
        for start in range(0, len(payloads), 100):
            opened.ingest_many(payloads[start:start + 100])
        yield opened
    finally:
        opened.close()


def test_a_rebuild_puts_every_table_and_index_back(store: ChatStore) -> None:
    schema = _schema(store)
    assert any(kind == "index" for kind, *_ in schema)
    store.rebuild()
    assert _schema(store) == schema


def test_a_rebuild_does_not_prepare_its_statements_over_and_over(store: ChatStore) -> None:
    # A replay runs ~100 distinct statements. Each is prepared when first run after the tables
    # are made anew, and again only while its cached copy is busy on another cursor; with APSW's
    # default cache of 100 they pushed each other out: 479 prepares here, 16,000 per 100,000
    # events in the benchmark.
    writer = store.log.datastore.writer
    assert writer.cache_stats()["size"] == datastore.STATEMENT_CACHE_SIZE
    texts: set[str] = set()

    def seen(cursor: Any, sql: str, bindings: Any) -> bool:
        texts.add(sql)
        return True

    writer.exec_trace = seen
    misses = writer.cache_stats()["misses"]
    try:
        store.rebuild()
    finally:
        writer.exec_trace = None
    assert writer.cache_stats()["misses"] - misses <= 2 * len(texts)


def test_verify_and_the_past_replay_with_the_stores_statement_cache(
        store: ChatStore, monkeypatch: pytest.MonkeyPatch) -> None:
    # They replay into scratch connections of their own: those keep as many statements.
    sizes: list[int] = []
    monkeypatch.setattr(apsw, "connection_hooks",
                        [*apsw.connection_hooks,
                         lambda connection: sizes.append(connection.cache_stats()["size"])])
    assert store.verify() == []
    with store.as_of(position=store.log.max_position() // 2):
        pass
    assert len(sizes) >= 2
    assert set(sizes) == {datastore.STATEMENT_CACHE_SIZE}
