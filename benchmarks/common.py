"""Helpers shared by the benchmark subcommands: timing, scratch files, event heads, output."""

from __future__ import annotations

import gc
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import msgspec


@contextmanager
def gc_paused() -> Iterator[None]:
    """Collect, then keep the garbage collector off for the timed section (see PERF-NOTES: kept
    objects make collections dominate bulk work, and a collection landing in one run but not the
    next makes figures noisy)."""
    gc.collect()
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    """Run `fn` with the collector paused; returns (seconds, result)."""
    with gc_paused():
        t0 = time.perf_counter()
        result = fn()
        elapsed = time.perf_counter() - t0
    return elapsed, result


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def default_reps(events: int) -> int:
    """Median of 3 for runs up to 200,000 events (machines are noisy); one run above."""
    return 3 if events <= 200_000 else 1


@contextmanager
def scratch_dir(parent: str | os.PathLike[str] | None, keep: bool = False) -> Iterator[Path]:
    """A fresh directory for database files, under `parent` (default: the system temp dir)."""
    if parent is not None:
        Path(parent).mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix="chatledger-bench-", dir=parent))
    try:
        yield path
    finally:
        if not keep:
            shutil.rmtree(path, ignore_errors=True)


def sqlite_files(path: Path) -> list[Path]:
    return [path, Path(f"{path}-wal"), Path(f"{path}-shm"), Path(f"{path}-journal")]


def remove_db(path: Path) -> None:
    for p in sqlite_files(path):
        try:
            p.unlink()
        except FileNotFoundError:
            pass


def checkpointed_size(path: Path) -> int:
    """Bytes of the database and its -wal file after a TRUNCATE checkpoint (no writer open)."""
    import apsw

    if path.exists():
        conn = apsw.Connection(str(path))
        try:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        finally:
            conn.close()
    return sum(p.stat().st_size for p in (path, Path(f"{path}-wal")) if p.exists())


# --- event heads -----------------------------------------------------------------------------------


class _UserRef(msgspec.Struct):
    id: str = ""


class _Head(msgspec.Struct):
    type: str = ""
    cid: str | None = None
    user: _UserRef | None = None
    user_id: str | None = None


_head_decoder = msgspec.json.Decoder(_Head)


def stream_of(head: _Head) -> str:
    """The stream an event belongs to: its channel, else its user, else the global stream."""
    if head.cid:
        return head.cid
    uid = head.user.id if head.user is not None else head.user_id
    return f"user:{uid}" if uid else "global"


def event_records(payloads: Sequence[bytes]) -> list[tuple[str, str, bytes]]:
    """(stream, type, payload) per event, decoded ahead of any timed section for the baselines."""
    decode = _head_decoder.decode
    out = []
    for p in payloads:
        h = decode(p)
        out.append((stream_of(h), h.type, p))
    return out


def batches(items: Sequence[Any], size: int) -> list[Sequence[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


# --- output ----------------------------------------------------------------------------------------


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def environment() -> dict[str, Any]:
    import sqlite3

    import apsw

    return {
        "python": platform.python_version(),
        "apsw": apsw.apswversion(),
        "apsw_sqlite": apsw.sqlite_lib_version(),
        "stdlib_sqlite": sqlite3.sqlite_version,
        "msgspec": msgspec.__version__,
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
    }


def emit_json(result: dict[str, Any]) -> None:
    """The machine-readable result: one JSON object, the last line of stdout."""
    sys.stdout.flush()
    print(json.dumps(result, separators=(",", ":"), sort_keys=False), flush=True)


def fmt_rate(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def fmt_ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"
