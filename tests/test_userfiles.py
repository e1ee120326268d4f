"""Per-user files: safe, collision-free names; mode 0600; flush leaves nothing behind."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chatledger import ChatStore
from chatledger.eventstore.log import StoreError
from chatledger.eventstore.userfiles import (
    UserIdError,
    decode_user_id,
    encode_user_id,
    user_db_path,
)

HOSTILE_IDS = ["../x", "a/b", ".", "..", "CON", "con", "nul", "Alice", "alice", "a\\b", "~41",
               "x" * 10_000, "名前", "a b", "-rf", "COM1", "lpt9", "a:b", "   "]


@pytest.mark.parametrize("user_id", HOSTILE_IDS)
def test_hostile_ids_stay_inside_the_data_directory(tmp_path: Path, user_id: str) -> None:
    path = user_db_path(tmp_path, user_id)
    assert path.parent == tmp_path
    assert len(path.name) < 255
    assert set(path.name) <= set("abcdefghijklmnopqrstuvwxyz0123456789-_~ABCDEF.")
    assert path.stem.lower() not in {"con", "prn", "aux", "nul", "com1", "lpt9"}


def test_distinct_ids_get_distinct_names_even_ignoring_case() -> None:
    names = [encode_user_id(u).lower() for u in HOSTILE_IDS]
    assert len(set(names)) == len(HOSTILE_IDS)


@given(st.text(min_size=1).filter(lambda s: "\x00" not in s))
def test_encoding_is_reversible_or_hashed(user_id: str) -> None:
    stem = encode_user_id(user_id)
    decoded = decode_user_id(stem)
    assert decoded is None or decoded == user_id
    assert "/" not in stem and stem not in (".", "..")


@given(st.text(min_size=1, max_size=30), st.text(min_size=1, max_size=30))
def test_encoding_is_injective_and_case_stable(a: str, b: str) -> None:
    if a != b and "\x00" not in a + b:
        assert encode_user_id(a).lower() != encode_user_id(b).lower()


@pytest.mark.parametrize("bad", ["", "a\x00b"])
def test_unusable_ids_are_refused_with_a_reason(tmp_path: Path, bad: str) -> None:
    with pytest.raises(UserIdError):
        user_db_path(tmp_path, bad)


def test_store_files_are_private(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        store = ChatStore.open(tmp_path / "data", "alice")
        store.ingest({"type": "health.check", "connection_id": "c1", "cid": "*",
                      "created_at": "2026-11-25T10:00:00Z"})
        path = store.path
        assert path is not None
        for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
            assert p.exists()
            assert stat.S_IMODE(p.stat().st_mode) == 0o600, p
        assert stat.S_IMODE((tmp_path / "data").stat().st_mode) == 0o700
        store.close()
    finally:
        os.umask(old)


def test_flush_leaves_nothing_behind(tmp_path: Path) -> None:
    store = ChatStore.open(tmp_path, "bob")
    store.ingest({"type": "health.check", "connection_id": "c1", "cid": "*",
                  "created_at": "2026-11-25T10:00:00Z"})
    removed = store.flush()
    assert removed
    assert list(tmp_path.iterdir()) == []


def test_flush_user_without_opening(tmp_path: Path) -> None:
    ChatStore.open(tmp_path, "carol").close()
    assert ChatStore.flush_user(tmp_path, "carol")
    assert list(tmp_path.iterdir()) == []


def test_a_file_remembers_its_user(tmp_path: Path) -> None:
    ChatStore.open(tmp_path, "x" * 10_000).close()
    store = ChatStore.open(tmp_path, "x" * 10_000)
    assert store.user_id == "x" * 10_000
    store.close()
    # A renamed file is caught: its recorded owner differs.
    other = user_db_path(tmp_path, "mallory")
    user_db_path(tmp_path, "x" * 10_000).rename(other)
    with pytest.raises(StoreError, match="belongs to user"):
        ChatStore.open(tmp_path, "mallory")


def test_open_without_create_refuses_missing_store(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="no store"):
        ChatStore.open(tmp_path, "nobody", create=False)
