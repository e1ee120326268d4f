"""A replay's entries read by a second process (`projections.replay_feed`): the same tables as a
replay read in-process, and a reader that fails, dies or sees other entries never leaves the
store half rebuilt."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import apsw
import pytest

from benchmarks.workload import generate_events
from chatledger import ChatStore
from chatledger.errors import StoreError
from chatledger.eventstore.codec import ZSTD_PLAIN
from chatledger.projections import replay_feed
from chatledger.projections.apply import Item, Projector
from chatledger.projections.engine import create_tables, replay
from chatledger.projections.schema import TABLES


def _tables(store: ChatStore) -> dict[str, list[tuple[Any, ...]]]:
    with store.log.datastore.transaction(commit=False) as cursor:
        return {name: sorted(cursor.execute(f"SELECT * FROM {name}"), key=repr)
                for name in TABLES}


def _schema(store: ChatStore) -> list[tuple[Any, ...]]:
    with store.log.datastore.transaction(commit=False) as cursor:
        return sorted(cursor.execute("SELECT type, name, tbl_name, sql FROM sqlite_master"),
                      key=repr)


@pytest.fixture()
def small_reader_range(monkeypatch: pytest.MonkeyPatch) -> list[replay_feed.ReaderProcess]:
    """The reader process for any replay of more than a few entries, in small chunks; the list
    collects the readers that started."""
    monkeypatch.setattr(replay_feed, "SECOND_PROCESS_MIN", 10)
    monkeypatch.setattr(replay_feed, "HEAD_START", 25)
    monkeypatch.setattr(replay_feed, "CHUNK", 40)
    started: list[replay_feed.ReaderProcess] = []
    start = replay_feed.ReaderProcess.start

    def recording(*args: Any) -> replay_feed.ReaderProcess | None:
        reader = start(*args)
        if reader is not None:
            started.append(reader)
        return reader

    monkeypatch.setattr(replay_feed.ReaderProcess, "start", recording)
    return started


@pytest.fixture()
def store(tmp_path: Path) -> Iterator[ChatStore]:
    opened = ChatStore.open(tmp_path, "user-0")
    try:
        payloads = list(generate_events(600, seed=7, channels=6, users=20))
        for start in range(0, len(payloads), 50):
            opened.ingest_many(payloads[start:start + 50])
        yield opened
    finally:
        opened.close()


def test_a_rebuild_read_by_a_second_process_gives_the_tables_live_ingest_built(
        store: ChatStore, small_reader_range: list[replay_feed.ReaderProcess]) -> None:
    live, schema = _tables(store), _schema(store)
    store.rebuild()
    assert len(small_reader_range) == 1  # the second process did read
    assert small_reader_range[0].process.returncode == 0
    assert _tables(store) == live
    assert _schema(store) == schema  # every index is back
    assert store.verify() == []
    assert len(small_reader_range) == 2  # verify replays through it too


def _shown(reader: Any) -> dict[str, Any]:
    """What the read API shows: a ChatStore or a PastStore."""
    channels = reader.channels(limit=100)
    cids = [channel.cid for channel in channels]
    return {"channels": channels, "unread": reader.unread_counts(),
            "messages": {cid: reader.messages(cid, limit=200) for cid in cids}}


def test_the_past_read_by_a_second_process_is_the_past_read_here(
        store: ChatStore, small_reader_range: list[replay_feed.ReaderProcess],
        monkeypatch: pytest.MonkeyPatch) -> None:
    with store.as_of(position=store.log.max_position()) as now:
        assert _shown(now) == _shown(store)
    assert len(small_reader_range) == 1
    position = store.log.max_position() - 150
    with store.as_of(position=position) as past:
        with_reader = _shown(past)
    assert len(small_reader_range) == 2
    monkeypatch.setattr(replay_feed, "SECOND_PROCESS_MIN", 10**9)
    with store.as_of(position=position) as past:
        assert _shown(past) == with_reader
    assert len(small_reader_range) == 2


def test_a_reader_killed_mid_rebuild_fails_it_and_leaves_the_store_as_it_was(
        store: ChatStore, small_reader_range: list[replay_feed.ReaderProcess],
        monkeypatch: pytest.MonkeyPatch) -> None:
    live, schema = _tables(store), _schema(store)
    chunks = replay_feed.ReaderProcess.chunks

    def killed_after_one(self: replay_feed.ReaderProcess) -> Iterator[list[Item]]:
        for number, items in enumerate(chunks(self)):
            if number == 0:
                os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait()
            yield items

    monkeypatch.setattr(replay_feed.ReaderProcess, "chunks", killed_after_one)
    with pytest.raises(StoreError, match="second process ended"):
        store.rebuild()
    assert _tables(store) == live
    assert _schema(store) == schema
    monkeypatch.setattr(replay_feed.ReaderProcess, "chunks", chunks)
    store.rebuild()  # and it can be rebuilt
    assert _tables(store) == live


def test_a_reader_that_fails_raises_its_error_and_leaves_the_store_as_it_was(
        store: ChatStore, small_reader_range: list[replay_feed.ReaderProcess],
        monkeypatch: pytest.MonkeyPatch) -> None:
    # An entry past the head start that cannot be decompressed: the reader's error, as a
    # replay read here would raise it.
    position = store.log.max_position()
    live = _tables(store)
    connection = apsw.Connection(str(store.log.datastore.path))
    connection.execute(
        f"UPDATE {store.log.recorder.events_table_name} SET codec=?, state=? WHERE rowid=?",
        (ZSTD_PLAIN, b"\x28\xb5\x2f\xfd broken", position))
    connection.close()
    with pytest.raises(Exception) as read_there:
        store.rebuild()
    assert len(small_reader_range) == 1
    assert _tables(store) == live
    assert small_reader_range[0].process.returncode == 0  # it reported and ended
    monkeypatch.setattr(replay_feed, "SECOND_PROCESS_MIN", 10**9)
    with pytest.raises(Exception) as read_here:
        store.rebuild()
    assert type(read_there.value) is type(read_here.value)
    assert str(read_there.value) == str(read_here.value)
    assert _tables(store) == live


def test_a_reader_that_cannot_start_leaves_the_replay_to_this_process(
        store: ChatStore, small_reader_range: list[replay_feed.ReaderProcess],
        monkeypatch: pytest.MonkeyPatch) -> None:
    live = _tables(store)
    monkeypatch.setattr(replay_feed, "_READER_CODE", "raise SystemExit(3)")
    store.rebuild()
    assert len(small_reader_range) == 1
    assert small_reader_range[0].process.returncode == 3
    assert _tables(store) == live


def _replayed(store: ChatStore, cursor: apsw.Cursor) -> dict[str, list[tuple[Any, ...]]]:
    """The tables a replay of the whole log, read through `cursor`, builds in a scratch file."""
    scratch = apsw.Connection(":memory:")
    try:
        target = scratch.cursor()
        create_tables(target)
        replay(cursor, target, store.log.recorder.events_table_name, store.log.datastore.codec,
               Projector(store.user_id), log_file=store.log.datastore.path)
        return {name: sorted(target.execute(f"SELECT * FROM {name}"), key=repr)
                for name in TABLES}
    finally:
        scratch.close()


def test_entries_the_reader_cannot_see_are_read_here(
        store: ChatStore, small_reader_range: list[replay_feed.ReaderProcess],
        monkeypatch: pytest.MonkeyPatch) -> None:
    # Appended in the replay's own transaction, not committed: the reader sees fewer entries,
    # so this process reads the rest itself.
    cid = store.channels()[0].cid
    with store.batch():
        for number in range(3):
            store.send_message(cid, f"not committed yet {number}")
        with store.log.datastore.transaction(commit=False) as cursor:
            with_reader = _replayed(store, cursor)
            assert len(small_reader_range) == 1
            monkeypatch.setattr(replay_feed, "SECOND_PROCESS_MIN", 10**9)
            assert _replayed(store, cursor) == with_reader
    assert len(small_reader_range) == 1
    assert _tables(store) == with_reader  # what live ingest built, the new entries included


def test_a_sealed_store_is_read_in_this_process(
        tmp_path: Path, small_reader_range: list[replay_feed.ReaderProcess]) -> None:
    sealed = ChatStore.open(tmp_path, "user-0", key=bytes(range(32)))
    try:
        sealed.ingest_many(list(generate_events(200, seed=3, channels=3, users=10)))
        live = _tables(sealed)
        sealed.rebuild()
        assert _tables(sealed) == live
    finally:
        sealed.close()
    assert small_reader_range == []
