"""Per-user database files: `<data dir>/<encoded user id>.chatledger`.

A user id is the backend's string and may hold anything: `../x`, `a/b`, `.`, `CON`, upper and
lower case, ten thousand characters. The file name must never leave the data directory, never be a
name the operating system reserves, and never collide with another user's file, including on
case-insensitive file systems. So the encoding keeps only lower-case ASCII letters, digits, `-`
and `_` as they are and writes every other byte of the UTF-8 id as `~XX` (upper-case hex): the
name is injective, case-stable and made of safe characters. Names too long for a file system end
in a hash of the whole id; the id itself is stored in the file and checked on open.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

import apsw

from chatledger.errors import UserIdError


SUFFIX = ".chatledger"
# The files SQLite keeps beside the database in WAL mode.
COMPANION_SUFFIXES = ("", "-wal", "-shm", "-journal")
# The order `flush` deletes them in: the database last, so that a flush killed half-way leaves
# the database file, by which the next `flush` (and `store_files`) still finds the rest.
_FLUSH_ORDER = ("-journal", "-wal", "-shm", "")

_SAFE = frozenset(b"abcdefghijklmnopqrstuvwxyz0123456789-_")
# Windows device names are reserved with any extension and in any case.
_RESERVED = re.compile(r"^(con|prn|aux|nul|com[0-9]|lpt[0-9])$")
# Most file systems allow 255 bytes per name; leave room for the suffix and "-wal".
_MAX_STEM = 200
_HASHED_PREFIX = 120


def encode_user_id(user_id: str) -> str:
    """The file-name stem for `user_id`: safe, reversible for short ids, collision-free."""
    if not isinstance(user_id, str):
        raise UserIdError(f"a user id must be a string, not {type(user_id).__name__}")
    if not user_id:
        raise UserIdError("the user id is empty: every store belongs to one user")
    if "\x00" in user_id:
        raise UserIdError("the user id contains a NUL character")
    try:
        # A backend's user id is JSON text; a lone surrogate (what a shell passes for bytes
        # that are not UTF-8) could name a file but never be stored in it.
        user_id.encode("utf-8")
    except UnicodeEncodeError:
        raise UserIdError("the user id is not valid text (it holds a lone surrogate)") from None
    stem = "".join(
        chr(b) if b in _SAFE else f"~{b:02X}" for b in user_id.encode("utf-8", "surrogatepass")
    )
    if _RESERVED.match(stem):
        # Escape the first letter: "con" -> "~63on".
        stem = f"~{ord(stem[0]):02X}{stem[1:]}"
    if len(stem) > _MAX_STEM:
        digest = hashlib.sha256(user_id.encode("utf-8", "surrogatepass")).hexdigest()
        stem = f"{stem[:_HASHED_PREFIX].rstrip('~0123456789ABCDEF')}~~{digest}"
    return stem


def decode_user_id(stem: str) -> str | None:
    """The user id a stem was made from, or None when the stem ends in a hash (ask the file) or
    is no stem `encode_user_id` makes (a stray file's name: `é`, `a~zz`, bytes no text)."""
    if "~~" in stem:
        return None
    out = bytearray()
    index = 0
    try:
        while index < len(stem):
            if stem[index] == "~":
                escaped = stem[index + 1 : index + 3]
                if len(escaped) != 2:
                    return None
                out.append(int(escaped, 16))
                index += 3
            else:
                out.append(ord(stem[index]))  # ValueError past one byte: no encoder's output
                index += 1
        return out.decode("utf-8", "surrogatepass")
    except ValueError:  # UnicodeDecodeError included
        return None


def user_db_path(data_dir: str | os.PathLike[str], user_id: str) -> Path:
    """Where the store of `user_id` lives inside `data_dir`."""
    path = Path(data_dir) / f"{encode_user_id(user_id)}{SUFFIX}"
    # The encoding already guarantees this; the check keeps it true if the encoding changes.
    if path.parent != Path(data_dir):
        raise UserIdError(f"user id {user_id!r} would leave the data directory")
    return path


def companion_files(db_path: Path) -> list[Path]:
    """The database file and the files SQLite keeps beside it."""
    return [db_path.with_name(db_path.name + suffix) for suffix in COMPANION_SUFFIXES]


def store_files(db_path: Path) -> list[Path]:
    """The files of a store that are there (symbolic links included, dangling or not)."""
    return [path for path in companion_files(db_path) if os.path.lexists(path)]


def symlinked_files(db_path: Path) -> list[Path]:
    """The store's files that are symbolic links. A link planted at one of these names would
    make SQLite write the user's data wherever it points, outside the data directory and with
    that file's mode, and `flush` would remove only the link."""
    return [path for path in companion_files(db_path) if path.is_symlink()]


def flush_files(db_path: Path) -> list[Path]:
    """Delete a store's database and its companions; returns what was removed.

    Symbolic links are removed, never followed. The database goes last: killed at any step,
    a second call finds the store and removes the rest."""
    removed = []
    for path in (db_path.with_name(db_path.name + suffix) for suffix in _FLUSH_ORDER):
        try:
            path.unlink()
        except FileNotFoundError:
            continue
        removed.append(path)
    return removed


# What `list_stores` reads from each file, without opening it for writing (no migration, no
# rebuild, no lock held): whose store it is, how many entries it holds, when the last arrived.
_STORE_OWNER = "SELECT value FROM chatledger_meta WHERE key = 'user_id'"
_STORE_LAST_ENTRY = "SELECT rowid, received_at FROM stored_events ORDER BY rowid DESC LIMIT 1"


@dataclass(frozen=True, slots=True)
class StoreFile:
    """One user's store in a data directory, as `chatledger users` lists it. `events` and
    `last_activity_at` (epoch microseconds of the newest entry's arrival) are None when the
    file could not be read (`problem` says why)."""

    user_id: str | None
    path: Path
    bytes: int
    events: int | None
    last_activity_at: int | None
    problem: str | None = None


def list_stores(data_dir: str | os.PathLike[str]) -> list[StoreFile]:
    """The stores in `data_dir`, by user id; an empty list when the directory is missing."""
    directory = Path(data_dir)
    if not directory.is_dir():
        return []
    found = [_describe_store(path) for path in sorted(directory.glob(f"*{SUFFIX}"))
             if path.is_file() and not path.is_symlink()]
    return sorted(found, key=lambda store: (store.user_id is None, store.user_id or ""))


def _describe_store(path: Path) -> StoreFile:
    size = sum(part.stat().st_size for part in companion_files(path) if part.is_file())
    named = decode_user_id(path.name[: -len(SUFFIX)])
    try:
        connection = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READONLY)
    except apsw.Error as error:
        return StoreFile(named, path, size, None, None, str(error))
    except UnicodeEncodeError:
        # A name of bytes that are no text (a stray file): SQLite takes UTF-8 paths only.
        return StoreFile(named, path, size, None, None, "the file's name is not UTF-8")
    try:
        connection.set_busy_timeout(1000)
        owner = connection.execute(_STORE_OWNER).fetchone()
        last = connection.execute(_STORE_LAST_ENTRY).fetchone()
    except apsw.Error as error:
        return StoreFile(named, path, size, None, None, str(error))
    finally:
        connection.close()
    user_id = owner[0] if owner and isinstance(owner[0], str) else named
    return StoreFile(user_id, path, size, last[0] if last else 0, last[1] if last else None)
