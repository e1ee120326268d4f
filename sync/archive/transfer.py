"""Moving logs between a data directory and an archive: `push` and `pull`."""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from chatledger.eventstore.log import EventLog, StoredDictionary
from chatledger.eventstore.userfiles import SUFFIX, flush_files, user_db_path
from chatledger.projections.store import ChatStore, default_data_dir
from chatledger.sync.archive.connection import ArchiveError, redact
from chatledger.sync.archive.remote import PUSH_BATCH, Archive, PushProgress, UserPush
from chatledger.sync.archive.tables import DEFAULT_SCHEMA

# (user id, entries done, entries to do)
TransferProgress = PushProgress


@dataclass(frozen=True, slots=True)
class PushReport:
    """What `push` did: per user, and in all."""

    archive: str  # the URL without its password
    schema: str
    users: list[UserPush] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def pushed(self) -> int:
        return sum(u.pushed for u in self.users)

    def as_dict(self) -> dict[str, Any]:
        return {"archive": self.archive, "schema": self.schema, "pushed": self.pushed,
                "users": [asdict(u) for u in self.users], "seconds": self.seconds}


@dataclass(frozen=True, slots=True)
class PullReport:
    """What `pull` made: the restored store, up to which position, and its check."""

    user_id: str
    path: str
    entries: int
    position: int
    differences: int | None  # what `verify` found afterwards (None: not checked)
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def store_files(data_dir: Path) -> list[Path]:
    """The store files of a data directory, by name."""
    if not data_dir.is_dir():
        raise ArchiveError(f"no data directory {data_dir}")
    return sorted(p for p in data_dir.iterdir()
                  if p.name.endswith(SUFFIX) and not p.name.startswith(".") and p.is_file())


def push(
    url: str, *, data_dir: str | os.PathLike[str] | None = None,
    users: Iterable[str] | None = None, schema: str = DEFAULT_SCHEMA,
    batch: int = PUSH_BATCH, on_progress: TransferProgress | None = None,
    partitions: int | None = None,
) -> PushReport:
    """Push to the archive at `url` what it lacks of the stores of `users` (default: every
    store in `data_dir`). Incremental and idempotent: run it again after an interruption and
    each entry is stored once. Creates the archive's tables on first use, the events table
    split by user into `partitions` hash partitions if given (an archive that exists keeps its
    layout)."""
    started = time.monotonic()
    directory = Path(data_dir).expanduser() if data_dir is not None else default_data_dir()
    if users is None:
        paths = store_files(directory)
    else:
        paths = [user_db_path(directory, u) for u in users]
        for user_id, path in zip(users, paths):
            if not path.exists():
                raise ArchiveError(f"no store for user {user_id!r} in {directory}")
    with Archive(url, schema=schema, create=True, partitions=partitions) as archive:
        done = archive.push_stores(paths, batch=batch, on_progress=on_progress)
    return PushReport(redact(url), schema, done, round(time.monotonic() - started, 3))


def pull(
    url: str, user_id: str, *, data_dir: str | os.PathLike[str] | None = None,
    upto_position: int | None = None, upto_time: int | None = None,
    schema: str = DEFAULT_SCHEMA, verify: bool = True,
    on_progress: TransferProgress | None = None,
) -> PullReport:
    """Restore the store of `user_id` in `data_dir` from the archive: the log as pushed (the
    same entries, envelopes and payload bytes at the same positions), then the read tables
    rebuilt from it and, with `verify`, checked. `upto_position` or `upto_time` (epoch µs, by
    arrival as `ChatStore.as_of` reads a time) restores the store as it was then. Refuses to
    replace a store that exists."""
    started = time.monotonic()
    directory = Path(data_dir).expanduser() if data_dir is not None else default_data_dir()
    target = user_db_path(directory, user_id)
    if target.exists():
        raise ArchiveError(f"a store of {user_id!r} exists at {target}: move it away, or pull "
                           "into another --data-dir")
    with Archive(url, schema=schema) as archive:
        end = archive.high_water(user_id)
        if end == 0:
            raise ArchiveError(f"the archive holds no entries of user {user_id!r}")
        if upto_position is not None:
            end = min(end, upto_position)
        if upto_time is not None:
            end = min(end, archive.position_at(user_id, upto_time))
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        partial = target.with_name(f".{target.name}.pull-{os.getpid()}")
        flush_files(partial)
        try:
            entries = _restore(archive, user_id, partial, end, on_progress)
            if target.exists():
                raise ArchiveError(f"a store of {user_id!r} appeared at {target} meanwhile")
            os.replace(partial, target)
        except BaseException:
            flush_files(partial)
            raise
    # Opening builds the read tables from the restored log (a store without them is rebuilt).
    with ChatStore.open(directory, user_id, create=False) as store:
        differences = len(store.verify()) if verify else None
        position = store.log.max_position()
    return PullReport(user_id, str(target), entries, position, differences,
                      round(time.monotonic() - started, 3))


def _restore(archive: Archive, user_id: str, path: Path, end: int,
             on_progress: TransferProgress | None) -> int:
    """Write the user's entries up to `end` into a new log at `path`; returns how many."""
    dictionaries = archive.stored_dictionaries(user_id)
    with EventLog.open(path) as log:
        log.set_meta("user_id", user_id)
        if end <= 0:
            return 0
        last = archive.stored_rows(user_id, after=end - 1, upto=end, limit=1)
        until = last[0].received_at if last else 0
        first = True
        after = count = 0
        while after < end:
            rows = archive.stored_rows(user_id, after=after, upto=end)
            if not rows:
                break
            used = {r.codec for r in rows}
            needed: list[StoredDictionary] = [
                d for d in dictionaries if d.created_at <= until or d.id in used] if first else [
                d for d in dictionaries if d.id in used]
            log.restore(needed, rows)
            first = False
            count += len(rows)
            after = rows[-1].position
            if on_progress is not None:
                on_progress(user_id, after, end)
    return count


__all__ = ["PullReport", "PushReport", "TransferProgress", "pull", "push", "store_files"]
