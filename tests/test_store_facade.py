"""`ChatStore`'s own doors: the methods the CLI uses instead of the store's parts, the same
methods on `AsyncChatStore`, and the parts kept private."""

from __future__ import annotations

import asyncio
from pathlib import Path

import apsw
import pytest

from chatledger import AsyncChatStore, ChatStore, Damage, StoreError
from chatledger.eventstore.log import EventLog
from chatledger.eventstore.userfiles import user_db_path
from chatledger.projections.outbox import Outbox
from chatledger.projections.queries import ReadModel
from fixtures import message_new

USER = "alice"
CID = "messaging:general"


def filled(tmp_path: Path, count: int = 3) -> Path:
    with ChatStore.open(tmp_path, USER) as store:
        store.ingest_many([message_new(CID, f"m{index}", f"text {index}")
                           for index in range(count)])
        return store.path  # type: ignore[return-value]


def test_the_parts_are_private_and_three_are_documented_properties(tmp_path: Path) -> None:
    with ChatStore.open(tmp_path, USER) as store:
        assert isinstance(store.log, EventLog) and isinstance(store.outbox, Outbox)
        assert isinstance(store.read, ReadModel)
        assert not hasattr(store, "projections")
        for name in ("log", "outbox", "read"):
            with pytest.raises(AttributeError):
                setattr(store, name, None)


def test_notes_are_kept_apart_from_the_stores_own_keys(tmp_path: Path) -> None:
    with ChatStore.open(tmp_path, USER) as store:
        assert store.note("made_by") is None
        store.set_note("made_by", "a test")
        store.set_note("user_id", "mallory")  # a note, not the store's owner
        assert store.note("made_by") == "a test" and store.note("user_id") == "mallory"
        store.set_note("made_by", None)
        assert store.note("made_by") is None
    with ChatStore.open(tmp_path, USER, create=False) as store:  # still alice's store
        assert store.user_id == USER and store.note("user_id") == "mallory"


def test_the_projected_position_follows_the_log(tmp_path: Path) -> None:
    with ChatStore.open(tmp_path, USER) as store:
        assert store.projected_position() == 0
        store.ingest(message_new(CID, "m1", "hi"))
        assert store.projected_position() == store.last_position() == 1


def test_where_a_users_store_lives(tmp_path: Path) -> None:
    assert ChatStore.store_file(tmp_path, USER) == user_db_path(tmp_path, USER)
    assert ChatStore.store_files(tmp_path, USER) == []
    path = filled(tmp_path)
    assert path == ChatStore.store_file(tmp_path, USER)
    assert path in ChatStore.store_files(tmp_path, USER)
    ChatStore.flush_user(tmp_path, USER)
    assert ChatStore.store_files(tmp_path, USER) == []


def test_a_file_is_checked_and_its_read_tables_forgotten_without_opening_it(
        tmp_path: Path) -> None:
    path = filled(tmp_path)
    assert ChatStore.check_file(path) is None
    ChatStore.forget_read_tables(path)
    db = apsw.Connection(str(path))
    tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    db.close()
    assert "messages" not in tables and "stored_events" in tables
    with ChatStore.open(tmp_path, USER, create=False) as store:
        assert store.opened_as == "rebuilt"
        assert sorted(m.id for m in store.messages(CID)) == ["m0", "m1", "m2"]
        assert store.verify() == []
    not_a_store = tmp_path / "notes.txt"
    not_a_store.write_bytes(b"just text, no database" * 100)
    with pytest.raises((StoreError, apsw.Error)):
        ChatStore.check_file(not_a_store)


def test_as_of_reports_its_replay(tmp_path: Path) -> None:
    filled(tmp_path, count=5)
    seen: list[tuple[int, int]] = []
    with ChatStore.open(tmp_path, USER) as store:
        with store.as_of(position=3, on_progress=lambda done, total: seen.append((done, total))) \
                as past:
            assert past.position == 3
    assert seen and seen[-1][0] == seen[-1][1]


def test_the_async_store_has_the_same_doors(tmp_path: Path) -> None:
    path = filled(tmp_path)

    async def main() -> None:
        assert AsyncChatStore.store_file(tmp_path, USER) == path
        assert path in await AsyncChatStore.store_files(tmp_path, USER)
        assert await AsyncChatStore.check_file(path) is None
        await AsyncChatStore.forget_read_tables(path)
        async with AsyncChatStore.open(tmp_path, USER, create=False) as store:
            await store.set_note("made_by", "async")
            assert await store.note("made_by") == "async"
            assert await store.projected_position() == 3
            with await store.as_of(position=2) as past:
                assert past.position == 2

    asyncio.run(main())


def test_damage_is_exported_with_its_advice() -> None:
    assert "backup" in Damage(["page 3"], log_hit=True).advice()
