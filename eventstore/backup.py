"""Online backups of a store's file: SQLite's backup API through APSW, checked before it counts.

The copy is taken in steps of a few thousand pages, each in a short read transaction of a
connection of its own, so the store's writer goes on appending meanwhile (in WAL mode a reader
never blocks a writer, and between steps checkpoints can move the WAL into the database). When
another connection changes the store between two steps, SQLite starts the copy over: the result
is always one consistent snapshot. A store that changes faster than it can be copied would
restart forever, so after a few restarts the rest is copied in one step from one snapshot.

The copy is written to a temporary file beside the destination, checked (`PRAGMA quick_check`,
the owner's user id, the number of log entries of the snapshot it was taken from), and only
then renamed into place: a failed backup never leaves a half file under the final name.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import cast

import apsw

from chatledger.errors import DestinationExists
from chatledger.eventstore.datastore import APSWDatastore
from chatledger.eventstore.log import StoreError, no_room
from chatledger.eventstore.userfiles import companion_files

# 4,096 pages of 4 KiB: 16 MiB per step, a few milliseconds of reading each.


PAGES_PER_STEP = 4_096
# Restarts tolerated before the rest is copied in one step (which a writer cannot restart).
MAX_RESTARTS = 3

EVENTS_TABLE = "stored_events"

# A read of the schema: what starts a step's read transaction (and notices a changed source).
_TOUCH_SCHEMA = "SELECT count(*) FROM sqlite_schema"
_COUNT_EVENTS = f"SELECT count(*) FROM {EVENTS_TABLE}"
_SELECT_OWNER = "SELECT value FROM chatledger_meta WHERE key='user_id'"
_QUICK_CHECK = "PRAGMA quick_check"
_BEGIN_READ = "BEGIN"
_COMMIT = "COMMIT"

ProgressCallback = Callable[[int, int], None]  # (pages copied, pages in all)


@dataclass(frozen=True, slots=True)
class BackupReport:
    """What a backup made: where, how big, and the snapshot it holds."""

    path: str
    bytes: int
    pages: int
    events: int
    seconds: float
    user_id: str | None
    restarts: int  # times a change to the store made SQLite start the copy over

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass(slots=True)
class _Snapshot:
    """What the source held in the read transaction that finished the copy."""

    pages: int = 0
    events: int = 0
    user_id: str | None = None
    restarts: int = 0


def backup_target(source: Path | None, dest: str | os.PathLike[str], *, overwrite: bool) -> Path:
    """The file a backup of `source` to `dest` goes to, or a `StoreError` saying why not.

    `dest` may name an existing directory: the backup then takes the source's file name there.
    """
    target = Path(dest).expanduser()
    if target.is_dir():
        if source is None:
            raise StoreError(f"{target} is a directory: give the backup a file name")
        target = target / source.name
    if not target.parent.is_dir():
        raise StoreError(
            f"cannot back up to {target}: the directory {target.parent} does not exist")
    if source is not None and _same_file(source, target):
        raise StoreError(f"{target} is the store itself: choose another destination")
    if target.exists():
        if not overwrite:
            raise DestinationExists(f"{target} already exists")
        if not target.is_file():
            raise StoreError(f"{target} exists and is not a regular file")
    # A -wal file there holds another database's latest commits: SQLite would replay them onto
    # the copy when it is opened, and a program may still have the old file open.
    if Path(f"{target}-wal").exists():
        raise StoreError(f"{target}-wal exists: a program may have {target} open; "
                         "close it, or choose another destination")
    return target


def _same_file(source: Path, target: Path) -> bool:
    """The target is the source, or one of the files SQLite keeps beside it."""
    resolved = target.resolve()
    if any(resolved == companion.resolve() for companion in companion_files(source)):
        return True
    try:
        return target.exists() and os.path.samefile(source, target)
    except OSError:
        return False


def backup_database(
    datastore: APSWDatastore,
    dest: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    pages_per_step: int = PAGES_PER_STEP,
    on_progress: ProgressCallback | None = None,
) -> BackupReport:
    """Copy the store behind `datastore` to `dest` (mode 0600), check the copy, report on it."""
    if pages_per_step < 1:
        raise ValueError("pages_per_step must be 1 or more")
    started = time.monotonic()
    target = backup_target(datastore.path, dest, overwrite=overwrite)
    # mkstemp creates the file with mode 0600; SQLite keeps the mode of a file that exists.
    fd, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    os.close(fd)
    partial = Path(name)
    try:
        snapshot = _copy(datastore, partial, pages_per_step, on_progress)
        events = _check(partial, snapshot)
        _fsync(partial)
        _move_into_place(partial, target, overwrite=overwrite)
    except BaseException:
        for path in companion_files(partial):
            path.unlink(missing_ok=True)
        raise
    _fsync_directory(target.parent)
    return BackupReport(
        path=str(target), bytes=target.stat().st_size, pages=snapshot.pages, events=events,
        seconds=round(time.monotonic() - started, 3), user_id=snapshot.user_id,
        restarts=snapshot.restarts,
    )


def _copy(
    datastore: APSWDatastore, partial: Path, pages_per_step: int,
    on_progress: ProgressCallback | None,
) -> _Snapshot:
    target = apsw.Connection(str(partial))
    try:
        if datastore.is_memory or datastore.path is None:
            # An in-memory store exists only in its own connection: copy it whole, in a read
            # transaction on that connection (which holds the store's write lock meanwhile).
            with datastore.transaction(commit=False) as cursor:
                return _run_backup(target, cursor.connection, pages_per_step=-1,
                                   on_progress=on_progress, in_transaction=True)
        source = apsw.Connection(str(datastore.path), flags=apsw.SQLITE_OPEN_READWRITE)
        try:
            source.set_busy_timeout(int(datastore.lock_timeout * 1000))
            return _run_backup(target, source, pages_per_step=pages_per_step,
                               on_progress=on_progress)
        finally:
            source.close()
    except apsw.Error as error:
        raise StoreError(f"the backup failed: {_why_failed(error, partial.parent)}") from error
    finally:
        target.close()


def _why_failed(error: apsw.Error, directory: Path) -> str:
    """What went wrong, in words. A failed backup step reports the destination's last message,
    which is "not an error" when the failure was the copy's file (a write that found no room),
    so the error's class and code are what tell."""
    if no_room(error):
        return (f"no room for the copy in {directory} (the disk is full); nothing was left "
                "there, and the store is unchanged")
    text = str(error)
    if not text or text == "not an error":
        return f"{type(error).__name__} (SQLite code {getattr(error, 'extendedresult', '?')})"
    return text


def _run_backup(
    target: apsw.Connection, source: apsw.Connection, *, pages_per_step: int,
    on_progress: ProgressCallback | None, in_transaction: bool = False,
) -> _Snapshot:
    """Step the backup to its end; returns the snapshot of the step that finished it.

    `in_transaction`: the caller holds a read transaction on `source` for the whole copy.
    """
    snapshot = _Snapshot()
    cursor = source.cursor()
    copied = 0
    with target.backup("main", source, "main") as backup:
        while True:
            step = pages_per_step if snapshot.restarts < MAX_RESTARTS else -1
            # Each step runs in a read transaction of ours, so that the step that finishes the
            # copy and the counts read after it see the same snapshot. Starting it is also
            # where SQLite notices that another connection changed the store, and restarts.
            if not in_transaction:
                cursor.execute(_BEGIN_READ)
            try:
                cursor.execute(_TOUCH_SCHEMA).fetchall()
                done = backup.step(step)
                if done:
                    counted = cast("tuple[int]", cursor.execute(_COUNT_EVENTS).fetchone())
                    (snapshot.events,) = counted
                    owner = cast("tuple[str] | None", cursor.execute(_SELECT_OWNER).fetchone())
                    (snapshot.user_id,) = owner or (None,)
            finally:
                if not in_transaction:
                    cursor.execute(_COMMIT)
            snapshot.pages = backup.pagecount
            now = backup.pagecount - backup.remaining
            if not done and now <= copied:
                snapshot.restarts += 1  # started over from the first page
            copied = now
            if on_progress is not None:
                on_progress(now, backup.pagecount)
            if done:
                break
    return snapshot


def _check(partial: Path, snapshot: _Snapshot) -> int:
    """Open the copy and check it; returns its number of log entries."""
    try:
        copy = apsw.Connection(str(partial), flags=apsw.SQLITE_OPEN_READWRITE)
    except apsw.Error as error:
        raise StoreError(f"the backup cannot be opened: {error}") from error
    try:
        problems = [problem for (problem,) in copy.execute(_QUICK_CHECK)]
        if problems != ["ok"]:
            raise StoreError(f"the backup failed its check: {'; '.join(map(str, problems[:3]))}")
        (events,) = cast("tuple[int]", copy.execute(_COUNT_EVENTS).fetchone())
        owner_row = cast("tuple[str] | None", copy.execute(_SELECT_OWNER).fetchone())
    except apsw.Error as error:
        raise StoreError(f"the backup failed its check: {error}") from error
    finally:
        # The last connection to close folds the copy's -wal file in and removes it.
        copy.close()
    (owner,) = owner_row or (None,)
    if owner != snapshot.user_id:
        raise StoreError(f"the backup belongs to {owner!r}, the store to {snapshot.user_id!r}")
    if events != snapshot.events:
        raise StoreError(f"the backup holds {events:,} log entries, its snapshot of the store "
                         f"{snapshot.events:,}")
    return events


def _move_into_place(partial: Path, target: Path, *, overwrite: bool) -> None:
    if overwrite:
        os.replace(partial, target)
        return
    try:
        # A hard link fails when the name was taken meanwhile: never replaces a file.
        os.link(partial, target)
    except FileExistsError:
        raise DestinationExists(f"{target} already exists") from None
    except OSError:
        # A file system without hard links: check, then rename.
        if target.exists():
            raise DestinationExists(f"{target} already exists") from None
        os.replace(partial, target)
        return
    partial.unlink()


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_directory(directory: Path) -> None:
    """Make the rename durable; some platforms cannot open a directory, which is fine."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


__all__ = ["BackupReport", "DestinationExists", "MAX_RESTARTS", "PAGES_PER_STEP",
           "backup_database", "backup_target"]
