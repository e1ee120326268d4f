"""Bundles: a copy of a store to attach to a bug report, optionally cut down and redacted.

A bundle starts as an online backup (`backup.backup_database`: one consistent snapshot, the
store in use meanwhile). On that copy, never on the store:

- `since` and `cids` leave out the backend entries received before `since` or filed under
  other channels, the local commands of other channels or finished before `since` (a command
  is kept or left out whole), and quarantined input received before `since`. Log positions
  stay what they were in the store, so a bundle's positions match the original's;
- `redact` replaces, in every payload (backend events, the local commands' requests and the
  answers they got, quarantined input), the values that say something about people: texts,
  attachment URLs and titles, user names and images, channel names, custom field values. A
  placeholder has the length and shape of the original (letters stay letters of the same case,
  digits digits, spaces and punctuation stay), and the same original gives the same placeholder
  throughout one bundle, so a filter, a mention or a repeated value still lines up. Ids, types,
  times, counts, the outbox and the errors are kept. The payloads are re-encoded; the zstd
  dictionaries (trained on the original payloads, so holding pieces of them) are dropped and a
  new one is trained on the redacted payloads.

The copy is written with a rollback journal and `secure_delete` (a replaced payload leaves no
bytes behind in the file), and ends with a `VACUUM` in rollback-journal mode: no free page, no
`-wal` file holds anything the bundle does not. The read tables are left out of the copy: the
caller (`ChatStore.bundle`) rebuilds them from the copied log, checks them, and then calls
`finish_bundle`, which repacks the file and gives it its name.

The bundle records how it was made in the meta table (`bundle`): the versions that made it,
whether it is redacted, what it was cut down to.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import string
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, cast

import apsw
import zstandard

from chatledger.eventstore import links
from chatledger.eventstore.backup import backup_database
from chatledger.eventstore.codec import RAW, ZSTD_PLAIN, PayloadCodec
from chatledger.eventstore.datastore import APSWDatastore
from chatledger.eventstore.log import LOG_TABLES, StoreError
from chatledger.eventstore.userfiles import companion_files, user_db_path

BUNDLE_META_KEY = "bundle"
_ROWS_PER_STEP = 2_000

# -- statements, each built once -------------------------------------------------------------------
_EVENTS = "stored_events"
_SELECT_LOCAL_HEADS = (f"SELECT originator_id, max(received_at) FROM {_EVENTS} "
                       "WHERE source = 0 GROUP BY originator_id")
_SELECT_REQUESTED = (f"SELECT codec, state FROM {_EVENTS} WHERE source = 0 "
                     "AND originator_id = ? AND originator_version = 1")
_DELETE_AGGREGATE = f"DELETE FROM {_EVENTS} WHERE source = 0 AND originator_id = ?"
_DELETE_BACKEND_BEFORE = f"DELETE FROM {_EVENTS} WHERE source != 0 AND received_at < ?"
_SELECT_BACKEND_STREAMS = f"SELECT DISTINCT originator_id FROM {_EVENTS} WHERE source != 0"
_DELETE_BACKEND_STREAM = f"DELETE FROM {_EVENTS} WHERE source != 0 AND originator_id = ?"
_DELETE_QUARANTINE_BEFORE = "DELETE FROM quarantine WHERE received_at < ?"
_CLEAR_STREAMS = "DELETE FROM streams"
_FILL_STREAMS = (f"INSERT INTO streams (name, head) SELECT originator_id, max(originator_version) "
                 f"FROM {_EVENTS} WHERE source != 0 GROUP BY originator_id")
_SET_META = ("INSERT INTO chatledger_meta (key, value) VALUES (?, ?) "
             "ON CONFLICT(key) DO UPDATE SET value = excluded.value")
_STREAMS_POSITION = "streams_position"
_COUNT_EVENTS = f"SELECT count(*) FROM {_EVENTS}"
_MAX_POSITION = f"SELECT coalesce(max(rowid), 0) FROM {_EVENTS}"
_SELECT_EVENTS_FROM = (f"SELECT rowid, codec, state FROM {_EVENTS} WHERE rowid > ? "
                       "ORDER BY rowid LIMIT ?")
_UPDATE_EVENT = f"UPDATE {_EVENTS} SET codec = ?, state = ? WHERE rowid = ?"
_SELECT_QUARANTINE = "SELECT id, codec, raw, reason FROM quarantine"
_UPDATE_QUARANTINE = ("UPDATE quarantine SET codec = ?, raw = ?, size = ?, reason = ? "
                      "WHERE id = ?")
_DROP_DICTIONARIES = "DELETE FROM zstd_dictionaries"
_SELECT_TABLES = "SELECT name FROM sqlite_schema WHERE type='table' AND name NOT LIKE 'sqlite_%'"
_DROP_TABLE = 'DROP TABLE "{}"'  # a read table, by the name the schema gives
_SELECT_META = "SELECT value FROM chatledger_meta WHERE key=?"
_JOURNAL_DELETE = "PRAGMA journal_mode=DELETE"
_SECURE_DELETE = "PRAGMA secure_delete=ON"
_VACUUM = "VACUUM"
_QUICK_CHECK = "PRAGMA quick_check"


# -- redaction -------------------------------------------------------------------------------------

# String values under these keys are kept: ids, types, times, roles, states, errors. Everything
# else a payload holds as a string (texts, names, images, URLs, titles, custom fields) is
# replaced. Keys of objects are kept (they are field names, not values).
_KEPT_KEYS = frozenset({
    "id", "cid", "cids", "type", "channel_type", "channel_id", "role", "channel_role", "kind",
    "status", "connection_id", "duration", "field", "direction", "reason", "error",
    "last_error", "message", "more_info", "code", "StatusCode", "members", "mentioned_users",
    "own_capabilities", "channel_cids", "inaccessible_cids", "requeried", "depends_on",
    "unset", "split_after", "team", "last_read", "expires", "pin_expires",
    "last_active", "exp", "language",
})
_KEPT_SUFFIXES = ("_id", "_ids", "_cid", "_cids", "_at", "_type")
# Under these keys every value is kept, whatever it holds: the errors a command met and the
# reasons it was refused (they are what a bug report is about).
_KEPT_WHOLE = frozenset({"error", "last_error"})
_ERROR_KEYS = frozenset({"reason", "message"})
# The start of an answer an error message quotes: `starting '<!DOCTYPE html>...'` (a repr).
_SNIPPET = re.compile(r"""starting (?:'((?:[^'\\]|\\.)*)'|"((?:[^"\\]|\\.)*)")""")
_LOWER, _UPPER, _DIGITS = string.ascii_lowercase, string.ascii_uppercase, string.digits


def _kept_key(key: str | None) -> bool:
    return key is not None and (key in _KEPT_KEYS or key.endswith(_KEPT_SUFFIXES))


class Redactor:
    """Replaces values with same-shape placeholders, the same one for the same original.

    The placeholder of a string is drawn from a keyed hash of it (`shake_256` over a secret of
    this redactor and the string): consistent within one redactor (one bundle), and not
    reversible by hashing guesses without the secret, which is never stored."""

    def __init__(self, secret: bytes | None = None) -> None:
        self._secret = secret if secret is not None else secrets.token_bytes(32)
        self._memo: dict[str, str] = {}
        self.replaced = 0  # strings replaced (each occurrence)

    def text(self, original: str) -> str:
        """The placeholder of `original`: same length, letters for letters (same case, any
        letter outside ASCII as a lower-case one), digits for digits, the rest kept."""
        if not original:
            return original
        self.replaced += 1
        placeholder = self._memo.get(original)
        if placeholder is None:
            draws = hashlib.shake_256(
                self._secret + original.encode("utf-8", "surrogatepass")).digest(len(original))
            placeholder = "".join(_shaped(char, draw)
                                  for char, draw in zip(original, draws, strict=True))
            self._memo[original] = placeholder
        return placeholder

    def error_text(self, text: str) -> str:
        """An error or a refusal reason, kept, except for the piece of an answer it may quote
        (`... starting '<the first bytes of the body>'`, see `sync.answers`)."""
        def replaced(found: re.Match[str]) -> str:
            quote = "'" if found.group(1) is not None else '"'
            quoted = found.group(1) if found.group(1) is not None else found.group(2)
            return f"starting {quote}{self.text(quoted)}{quote}"

        return _SNIPPET.sub(replaced, text)

    def value(self, value: Any, key: str | None = None) -> Any:
        """A decoded JSON value with every string that is not kept (see `_KEPT_KEYS`) replaced.
        An operator key (`$in`, `$eq`, ...) takes the rule of the field it applies to."""
        if isinstance(value, str):
            if key in _ERROR_KEYS:
                return self.error_text(value)
            return value if _kept_key(key) else self.text(value)
        if isinstance(value, list):
            return [self.value(item, key) for item in value]
        if isinstance(value, dict):
            if key in _KEPT_WHOLE:
                return {name: self.error_text(item) if isinstance(item, str) else item
                        for name, item in value.items()}
            return {name: self.value(item, key if name.startswith("$") else name)
                    for name, item in value.items()}
        return value  # numbers, booleans, null: counts, flags and times stay

    def payload(self, raw: bytes) -> bytes:
        """A stored payload redacted: JSON decoded, redacted and encoded again compactly;
        anything that is not JSON has its letters and digits replaced byte by byte."""
        try:
            decoded = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            return self.bytes_shape(raw)
        redacted = self.value(decoded)
        try:
            return json.dumps(redacted, ensure_ascii=False, separators=(",", ":")).encode()
        except UnicodeEncodeError:  # a lone surrogate in a kept id: keep it escaped
            return json.dumps(redacted, separators=(",", ":")).encode()

    def bytes_shape(self, raw: bytes) -> bytes:
        """Bytes that are not JSON (an HTML page, a truncated answer): every byte that is not
        ASCII punctuation or space becomes a letter or digit of the same kind, consistently."""
        text = raw.decode("latin-1")
        return self.text(text).encode("latin-1", "replace")


def _shaped(char: str, draw: int) -> str:
    if char in _LOWER:
        return _LOWER[draw % 26]
    if char in _UPPER:
        return _UPPER[draw % 26]
    if char in _DIGITS:
        return _DIGITS[draw % 10]
    if char.isascii() and (char.isspace() or not char.isalnum()):
        return char  # spaces and punctuation keep the shape (an URL stays an URL)
    return _LOWER[draw % 26]


# -- the bundle ------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class BundleCopy:
    """A bundle on its way: the copy (`partial`, hidden beside the target) and its name to be."""

    partial: Path
    target: Path
    events: int
    left_out: int
    replaced: int
    started: float

    def discard(self) -> None:
        for path in companion_files(self.partial):
            path.unlink(missing_ok=True)


@dataclass(frozen=True, slots=True)
class BundleReport:
    """What a bundle holds and where it is."""

    path: str
    bytes: int
    events: int
    left_out: int          # log entries of the store left out by `since` and `cids`
    redacted: bool
    replaced: int          # strings replaced by placeholders (each occurrence)
    seconds: float
    info: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def bundle_target(dest: str | os.PathLike[str], user_id: str) -> Path:
    """Where the bundle of `user_id` goes: its store file's name in the directory `dest`
    (created when missing), so that `--data-dir DEST --user USER` opens it."""
    directory = Path(dest).expanduser()
    if directory.exists() and not directory.is_dir():
        raise StoreError(f"{directory} is not a directory: a bundle is a directory to open "
                         "with --data-dir")
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as error:
        raise StoreError(f"cannot create {directory}: {error.strerror}") from error
    target = user_db_path(directory, user_id)
    if any(path.exists() for path in (target, *companion_files(target))):
        raise StoreError(f"{target} already exists: choose another directory")
    return target


def copy_for_bundle(
    datastore: APSWDatastore, dest: str | os.PathLike[str], user_id: str, *,
    redact: bool = False, since: int | None = None, cids: Sequence[str] | None = None,
    info: dict[str, Any] | None = None,
) -> BundleCopy:
    """Back the store up beside the bundle's target, cut the copy down (`since`, in epoch µs;
    `cids`), redact it, drop its read tables. The caller rebuilds those, then calls
    `finish_bundle`; or `discard()` on failure."""
    started = time.monotonic()
    target = bundle_target(dest, user_id)
    partial = target.with_name(f".{target.name}.bundle-{secrets.token_hex(4)}")
    backup_database(datastore, partial)
    try:
        connection = apsw.Connection(str(partial))
        try:
            connection.set_busy_timeout(5_000)
            cursor = connection.cursor()
            # A rollback journal, so no -wal file keeps old pages; every freed or rewritten
            # cell is zeroed, so no original byte stays in the file's free space.
            cursor.execute(_JOURNAL_DELETE)
            cursor.execute(_SECURE_DELETE)
            with connection:
                left_out = _cut_down(cursor, since, cids)
                replaced = _redact(cursor) if redact else 0
                record = {**(info or {}), "redacted": redact, "since": since,
                          "cids": list(cids) if cids else None, "made_at": time.time_ns() // 1000}
                cursor.execute(_SET_META, (BUNDLE_META_KEY, json.dumps(record)))
                events = _count(cursor)
            _forget_read_tables(connection)
        finally:
            connection.close()
    except BaseException:
        for path in companion_files(partial):
            path.unlink(missing_ok=True)
        raise
    return BundleCopy(partial=partial, target=target, events=events, left_out=left_out,
                      replaced=replaced, started=started)


def finish_bundle(copy: BundleCopy, *, redacted: bool) -> BundleReport:
    """Repack the rebuilt copy (rollback journal, VACUUM: no free page, no -wal), check it and
    give it its name."""
    connection = apsw.Connection(str(copy.partial))
    try:
        connection.set_busy_timeout(5_000)
        cursor = connection.cursor()
        cursor.execute(_JOURNAL_DELETE)
        cursor.execute(_SECURE_DELETE)
        cursor.execute(_VACUUM)
        problems = [problem for (problem,) in cursor.execute(_QUICK_CHECK)]
        if problems != ["ok"]:
            raise StoreError(f"the bundle failed its check: {'; '.join(map(str, problems[:3]))}")
        records = cast("list[tuple[str]]",
                       cursor.execute(_SELECT_META, (BUNDLE_META_KEY,)).fetchall())
        info = json.loads(records[0][0]) if records else {}
    finally:
        connection.close()
    if copy.target.exists():
        raise StoreError(f"{copy.target} already exists: choose another directory")
    os.replace(copy.partial, copy.target)
    return BundleReport(path=str(copy.target), bytes=copy.target.stat().st_size,
                        events=copy.events, left_out=copy.left_out, redacted=redacted,
                        replaced=copy.replaced, seconds=round(time.monotonic() - copy.started, 3),
                        info=info)


def _cut_down(cursor: apsw.Cursor, since: int | None, cids: Sequence[str] | None) -> int:
    """Leave out what `since` and `cids` do not cover; returns how many log entries went."""
    if since is None and not cids:
        return 0
    before = _count(cursor)
    wanted = set(cids or ())
    codec = _codec(cursor)
    heads = cast("list[tuple[str, int]]", cursor.execute(_SELECT_LOCAL_HEADS).fetchall())
    for command_id, last_received in heads:
        keep = since is None or last_received >= since
        if keep and wanted:
            requested = cast("list[tuple[int, bytes]]",
                             cursor.execute(_SELECT_REQUESTED, (command_id,)).fetchall())
            command_cid = None
            if requested:
                stored_codec, state = requested[0]
                command_cid = _cid_of(codec.decode(stored_codec, state))
            keep = command_cid is None or command_cid in wanted
        if not keep:
            cursor.execute(_DELETE_AGGREGATE, (command_id,))
    if since is not None:
        cursor.execute(_DELETE_BACKEND_BEFORE, (since,))
        cursor.execute(_DELETE_QUARANTINE_BEFORE, (since,))
    if wanted:
        streams = cast("list[tuple[str]]", cursor.execute(_SELECT_BACKEND_STREAMS).fetchall())
        for (stream,) in streams:
            # A channel's stream (`type:id`) of another channel goes; the user's own streams
            # (`@user`, ...) stay.
            if ":" in stream and stream not in wanted:
                cursor.execute(_DELETE_BACKEND_STREAM, (stream,))
    # The heads of the streams left, valid up to the end of the copied log.
    cursor.execute(_CLEAR_STREAMS)
    cursor.execute(_FILL_STREAMS)
    # The streams' back-pointers skip what was left out.
    links.relink(cursor, _EVENTS)
    ((last_position,),) = cursor.execute(_MAX_POSITION).fetchall()
    cursor.execute(_SET_META, (_STREAMS_POSITION, last_position))
    return before - _count(cursor)


def _count(cursor: apsw.Cursor) -> int:
    # fetchall: a statement left unfinished would keep its table locked for DROP TABLE.
    ((count,),) = cast("list[tuple[int]]", cursor.execute(_COUNT_EVENTS).fetchall())
    return count


def _cid_of(state: bytes) -> str | None:
    try:
        decoded = json.loads(state)
    except ValueError:
        return None
    cid = decoded.get("cid") if isinstance(decoded, dict) else None
    return cid if isinstance(cid, str) else None


def _codec(cursor: apsw.Cursor) -> PayloadCodec:
    codec = PayloadCodec()
    codec.load(cursor)
    return codec


def _redact(cursor: apsw.Cursor) -> int:
    """Redact every payload and quarantined item in place, stored raw; drop the dictionaries.
    Returns how many strings were replaced."""
    codec = _codec(cursor)
    redactor = Redactor()
    last = 0
    while True:
        rows = cast("list[tuple[int, int, bytes]]",
                    cursor.execute(_SELECT_EVENTS_FROM, (last, _ROWS_PER_STEP)).fetchall())
        if not rows:
            break
        cursor.executemany(_UPDATE_EVENT, [
            (RAW, redactor.payload(codec.decode(stored_codec, state)), rowid)
            for rowid, stored_codec, state in rows])
        last, _, _ = rows[-1]
    updates = []
    quarantined = cast("list[tuple[int, int, bytes, str]]",
                       cursor.execute(_SELECT_QUARANTINE).fetchall())
    for item_id, stored_codec, raw, reason in quarantined:
        original = (zstandard.ZstdDecompressor().decompress(raw) if stored_codec == ZSTD_PLAIN
                    else codec.decode(stored_codec, raw) if stored_codec != RAW else raw)
        redacted = redactor.payload(original)
        updates.append((RAW, redacted, len(redacted), redactor.error_text(reason), item_id))
    cursor.executemany(_UPDATE_QUARANTINE, updates)
    cursor.execute(_DROP_DICTIONARIES)
    return redactor.replaced


def _forget_read_tables(connection: apsw.Connection) -> None:
    """Drop every table that is not the log's: the caller rebuilds them from the copied log."""
    cursor = connection.cursor()
    keep = {_EVENTS, *LOG_TABLES}
    tables = [name for (name,) in cursor.execute(_SELECT_TABLES)]
    with connection:
        for name in tables:
            if name not in keep:
                cursor.execute(_DROP_TABLE.format(name.replace('"', '""')))


__all__ = ["BUNDLE_META_KEY", "BundleCopy", "BundleReport", "Redactor", "bundle_target",
           "copy_for_bundle", "finish_bundle"]
