"""Importing files: JSON lines of events, or one JSON document (a query-channels response, a sync
response, one channel state, one event, or an array of events).

JSON lines are read a line at a time and appended in batches (one transaction each), so a file of
any size imports in constant memory. A line that is not a valid event is quarantined with its
line number in the reason; the import carries on. Each batch's transaction also records how far
the input has been imported (`ImportLedger`): an import that stops part-way (a full disk, a
kill, Ctrl-C) says how far it got, and running it again on the same input continues after that
line. A finished import stays in the ledger, so the same input imported again stores nothing
unless asked to (`again=True`); a response document is recorded by the hash of its bytes.
"""

from __future__ import annotations

import hashlib
import itertools
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, BinaryIO, Literal

import apsw
import msgspec
from eventsourcing.persistence import PersistenceError

from chatledger.errors import AlreadyImported, ImportInterrupted, ImportStopped, NothingToResume
from chatledger.eventstore.ingest import MAX_RESPONSE_BYTES, Entry, Rejection, event_entry
from chatledger.eventstore.log import (
    AppendedEntry,
    AppendResult,
    EventLog,
    StoreError,
    no_room,
)

Kind = Literal["auto", "events", "query", "sync", "channel"]


KINDS: tuple[str, ...] = ("auto", "events", "query", "sync", "channel")

ProgressCallback = Callable[[int], None]  # called with the number of bytes read so far

_LEDGER_KEY_PREFIX = "import.resume."
_DOCUMENT_KEY_PREFIX = "import.document."
_SAVE_POINTS = ("INSERT INTO chatledger_meta (key, value) VALUES (?, ?) "
               "ON CONFLICT (key) DO UPDATE SET value = excluded.value")
_FORGET_POINTS = "DELETE FROM chatledger_meta WHERE key = ?"
# A resumed input's already-imported lines are read back and compared before they are skipped;
# up to this many bytes of them are held in memory, the rest in a temporary file.
_SPOOL_IN_MEMORY = 16 * 1024 * 1024


@dataclass(slots=True)
class ImportReport:
    """What an import did."""

    kind: str = "events"
    items: int = 0
    stored: int = 0
    quarantined: int = 0
    first_position: int | None = None
    last_position: int | None = None
    reasons: list[str] = field(default_factory=list)  # the first few quarantine reasons
    # Lines an earlier run of the same input had imported before it stopped: not read again.
    resumed_after_line: int = 0

    def add(self, result: AppendResult, *, keep_reasons: int = 10) -> None:
        self.items += len(result.positions)
        self.stored += result.stored
        self.quarantined += len(result.quarantined)
        positions = [p for p in result.positions if p is not None]
        if positions:
            if self.first_position is None:
                self.first_position = min(positions)
            self.last_position = max(positions)
        for item in result.quarantined[: max(0, keep_reasons - len(self.reasons))]:
            self.reasons.append(item.reason)


@dataclass(frozen=True, slots=True)
class ResumePoint:
    """How far an import of JSON lines got: lines and bytes from its first line, and the
    SHA-256 of those bytes (an input that does not start with them is another input).
    `finished`: the import read the input to its end (at `at`, RFC 3339)."""

    lines: int
    bytes: int
    sha256: str
    finished: bool = False
    at: str | None = None


class ImportLedger:
    """Where imports of JSON lines got to, kept in the store's meta table under the SHA-256 of
    the input's first line (a list: inputs may share a first line): the points of interrupted
    imports, and of finished ones (`finished`, with when).

    It is an append listener: the resume point of a batch (`pending`) is written inside the
    batch's own transaction, so the log and the ledger never disagree: after a full disk or
    a kill, the ledger names exactly the lines whose items are in the log. A batch whose items
    are all quarantined writes no log row and so no resume point: a new run quarantines those
    lines again (the log itself never holds an item twice). A finished import replaces its
    point with the whole input's, marked finished: importing the same bytes again is then
    noticed (`AlreadyImported`), and an input that grew since continues after them."""

    def __init__(self, log: EventLog, first_line: bytes) -> None:
        self.log = log
        self.key = _LEDGER_KEY_PREFIX + hashlib.sha256(first_line).hexdigest()
        self.pending: ResumePoint | None = None
        self.resuming: ResumePoint | None = None  # the point this run continues from
        self._others: list[ResumePoint] | None = None

    def resume_points(self) -> list[ResumePoint]:
        value = self.log.get_meta(self.key)
        try:
            return msgspec.json.decode(value, type=list[ResumePoint]) if value else []
        except (msgspec.DecodeError, msgspec.ValidationError, UnicodeError):
            return []  # not ours to trust: import from the start

    def _other_points(self) -> list[ResumePoint]:
        """The points of other interrupted imports (this run's own replaces the one it
        resumes from)."""
        if self._others is None:
            self._others = [p for p in self.resume_points() if p != self.resuming]
        return self._others

    def appended(self, cursor: apsw.Cursor, entries: Sequence[AppendedEntry]) -> None:
        if self.pending is not None:
            points = [*self._other_points(), self.pending]
            cursor.execute(_SAVE_POINTS, (self.key, msgspec.json.encode(points).decode()))

    def finish(self, point: ResumePoint | None = None) -> None:
        """The import read its input to the end: its resume point goes, and `point` (the
        whole input, finished) is kept so that importing the same bytes again is noticed."""
        others = [other for other in self._other_points()
                  if point is None or (other.lines, other.sha256) != (point.lines, point.sha256)]
        if point is not None:
            others.append(point)
        with self.log.datastore.transaction(commit=True) as cursor:
            if others:
                cursor.execute(_SAVE_POINTS, (self.key, msgspec.json.encode(others).decode()))
            else:
                cursor.execute(_FORGET_POINTS, (self.key,))


# A UTF-8 byte order mark, which some editors and shells (Notepad, Windows PowerShell's
# `Out-File`) write at the start of a text file: it says how the file is encoded and belongs to
# no line, so an import leaves it out (each run alike: resume points agree).
UTF8_BOM = b"\xef\xbb\xbf"


def _document_kind(document: object) -> str:
    if isinstance(document, list):
        return "events"
    if isinstance(document, dict):
        if "channels" in document:
            return "query"
        if "events" in document:
            return "sync"
        if "type" in document:
            return "events"
        if "channel" in document:
            return "channel"
    return "events"  # appended as an event, and quarantined with the reason if it is not one


def import_stream(
    log: EventLog,
    stream: BinaryIO,
    *,
    kind: Kind = "auto",
    source: str = "import",
    batch_size: int = 1_000,
    on_progress: ProgressCallback | None = None,
    again: bool = False,
    resume: bool = False,
) -> ImportReport:
    """Append the contents of a binary stream to the log; see the module docstring for formats.

    With `kind="auto"`, a stream whose first line is a JSON object followed by more lines is read
    as JSON lines; otherwise the content is read as one document when it parses as one, and as
    JSON lines (each bad line quarantined) when it does not.

    The import ledger: JSON lines an earlier run stored are not stored again. An input that
    an earlier import read whole raises `AlreadyImported` (nothing stored) unless `again`;
    one that an earlier run stopped in (or that has grown since) continues after the lines
    stored. `resume=True` insists on continuing: `NothingToResume` when there is nothing to
    continue. Ctrl-C raises `ImportStopped` (a KeyboardInterrupt) saying what was committed.
    """
    options = _LedgerOptions(again, resume)
    skipped = 0  # blank lines before the first line with content
    first = stream.readline()
    first = first.removeprefix(UTF8_BOM)  # the file's encoding mark, not part of its first item
    while first and not first.strip():
        skipped += 1
        first = stream.readline()
    if not first:
        return ImportReport(kind="events" if kind == "auto" else kind)
    if kind in ("query", "sync", "channel"):
        body = first + stream.read(MAX_RESPONSE_BYTES + 1 - len(first))
        if on_progress:
            on_progress(len(body))
        return _import_document(log, body, kind, source, options)
    if kind == "events":
        return _import_lines(log, _chain([first], stream), skipped, source, batch_size,
                             on_progress, options)
    second = stream.readline()
    if _decodes(first) and second.strip():
        return _import_lines(
            log, _chain([first, second], stream), skipped, source, batch_size, on_progress,
            options)
    # One document (perhaps pretty-printed), or JSON lines whose first line is broken.
    body = first + second + stream.read(MAX_RESPONSE_BYTES + 1 - len(first) - len(second))
    if _decodes(body) or len(body) > MAX_RESPONSE_BYTES:
        if on_progress:
            on_progress(len(body))
        return _import_document(log, body, kind, source, options)
    lines = body.splitlines(keepends=True)
    return _import_lines(log, _chain(lines, stream), skipped, source, batch_size, on_progress,
                         options)


@dataclass(frozen=True, slots=True)
class _LedgerOptions:
    again: bool = False  # import even what the ledger says is in already
    resume: bool = False  # insist on continuing an earlier run


def _now_text() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def _chain(lines: list[bytes], stream: Iterable[bytes]) -> Iterator[bytes]:
    yield from lines
    yield from stream


def _import_lines(
    log: EventLog,
    lines: Iterable[bytes],
    skipped: int,
    source: str,
    batch_size: int,
    on_progress: ProgressCallback | None,
    options: _LedgerOptions = _LedgerOptions(),
) -> ImportReport:
    report = ImportReport(kind="events")
    pending = iter(lines)
    first = next(pending, None)
    if first is None:
        return report
    pending = _chain([first], pending)
    ledger = ImportLedger(log, first)
    digest = hashlib.sha256()
    committed = ResumePoint(0, 0, digest.hexdigest())
    points = [] if options.again else ledger.resume_points()
    point: ResumePoint | None = None
    if points:
        pending, point, matched = _skip_committed(pending, points)
        if point is not None and point.finished:
            pending, at_end = _peek_end(pending)
            if at_end:
                raise AlreadyImported(point)
        if point is not None:  # this input starts with what an earlier run committed
            digest, committed = matched, point
            ledger.resuming = point
            report.resumed_after_line = skipped + point.lines
    if options.resume and point is None:
        raise NothingToResume("no earlier import of this input stopped part-way: "
                              "there is nothing to resume")
    line_number = skipped + committed.lines
    read = skipped + committed.bytes
    batch: list[Entry | Rejection] = []
    log.listeners.append(ledger)
    try:
        for line in pending:
            line_number += 1
            read += len(line)
            digest.update(line)
            if not line.strip():
                continue
            entry = event_entry(line.rstrip(b"\r\n"))
            if isinstance(entry, Rejection):
                entry.reason = f"line {line_number}: {entry.reason}"
            batch.append(entry)
            if len(batch) >= batch_size:
                here = ResumePoint(line_number - skipped, read - skipped, digest.hexdigest())
                committed = _append_batch(log, ledger, batch, source, report, committed, here,
                                          skipped)
                batch = []
                if on_progress:
                    on_progress(read)
        if batch:
            here = ResumePoint(line_number - skipped, read - skipped, digest.hexdigest())
            committed = _append_batch(log, ledger, batch, source, report, committed, here,
                                      skipped)
    except KeyboardInterrupt:
        # Ctrl-C: the batches committed so far stay, and their resume point with them.
        raise ImportStopped(report, skipped + committed.lines) from None
    finally:
        log.listeners.remove(ledger)
    ledger.finish(ResumePoint(line_number - skipped, read - skipped, digest.hexdigest(),
                              finished=True, at=_now_text()))
    if on_progress:
        on_progress(read)
    return report


def _peek_end(lines: Iterator[bytes]) -> tuple[Iterator[bytes], bool]:
    """Whether nothing but blank lines is left, and the lines to go on with (those read to
    find out included)."""
    looked: list[bytes] = []
    for line in lines:
        looked.append(line)
        if line.strip():
            return itertools.chain(looked, lines), False
    return iter(looked), True


def _append_batch(
    log: EventLog, ledger: ImportLedger, batch: list[Entry | Rejection], source: str,
    report: ImportReport, committed: ResumePoint, here: ResumePoint, skipped: int,
) -> ResumePoint:
    """Append one batch in one transaction, which also records `here` as the point to resume
    from; returns it. A batch that cannot be written ends the import with what the earlier
    batches committed (ImportInterrupted)."""
    ledger.pending = here
    try:
        result = log.append(batch, source=source)
    except (PersistenceError, apsw.Error, StoreError, OSError) as error:
        cause = ("the disk is full" if no_room(error) else str(error)) or type(error).__name__
        raise ImportInterrupted(report, skipped + committed.lines, error, cause) from error
    report.add(result)
    return here


def _skip_committed(
    lines: Iterator[bytes], points: list[ResumePoint],
) -> tuple[Iterator[bytes], ResumePoint | None, Any]:
    """Read as many lines as the longest interrupted run committed, and find the furthest
    resume point this input matches (same line count, same bytes by SHA-256): its lines are
    skipped, and it is returned with the digest of them to go on from. Every other line read
    is given back to be imported. They are held in a spooled file meanwhile: memory stays
    bounded whatever their size."""
    by_lines: dict[int, list[ResumePoint]] = {}
    for point in points:
        by_lines.setdefault(point.lines, []).append(point)
    longest = max(by_lines)
    spool = tempfile.SpooledTemporaryFile(max_size=_SPOOL_IN_MEMORY)
    prefix = hashlib.sha256()
    size = count = 0
    best: ResumePoint | None = None
    best_digest: Any = None
    best_offset = 0
    for line in lines:
        spool.write(line)
        prefix.update(line)
        size += len(line)
        count += 1
        for point in by_lines.get(count, ()):
            if point.bytes == size and point.sha256 == prefix.hexdigest():
                best, best_digest, best_offset = point, prefix.copy(), size
        if count >= longest:
            break
    spool.seek(best_offset)
    return itertools.chain(_spooled_lines(spool), lines), best, best_digest


def _spooled_lines(spool: Any) -> Iterator[bytes]:
    with spool:
        yield from spool


def _decodes(data: bytes) -> bool:
    try:
        msgspec.json.decode(data)
    except (msgspec.DecodeError, ValueError, RecursionError):  # RecursionError: nested too deep
        return False
    return True


class _DocumentLedger:
    """An append listener that records, in the import's own transaction, that a document
    (one response file) is in the store: under the SHA-256 of its bytes."""

    def __init__(self, log: EventLog, body: bytes) -> None:
        self.log = log
        self.key = _DOCUMENT_KEY_PREFIX + hashlib.sha256(body).hexdigest()
        self.point = ResumePoint(1, len(body), self.key[len(_DOCUMENT_KEY_PREFIX):],
                                 finished=True, at=_now_text())

    def recorded(self) -> ResumePoint | None:
        value = self.log.get_meta(self.key)
        try:
            return msgspec.json.decode(value, type=ResumePoint) if value else None
        except (msgspec.DecodeError, msgspec.ValidationError, UnicodeError):
            return None

    def appended(self, cursor: apsw.Cursor, entries: Sequence[AppendedEntry]) -> None:
        cursor.execute(_SAVE_POINTS, (self.key, msgspec.json.encode(self.point).decode()))


def _import_document(log: EventLog, body: bytes, kind: str, source: str,
                     options: _LedgerOptions = _LedgerOptions()) -> ImportReport:
    body = body.strip()  # the file's surrounding whitespace is not part of the document
    if options.resume:
        raise NothingToResume("the input is one document, imported whole or not at all: "
                              "there is nothing to resume")
    ledger = _DocumentLedger(log, body)
    if not options.again and (earlier := ledger.recorded()) is not None:
        raise AlreadyImported(earlier)
    log.listeners.append(ledger)
    try:
        return _append_document(log, body, kind, source)
    finally:
        log.listeners.remove(ledger)


def _append_document(log: EventLog, body: bytes, kind: str, source: str) -> ImportReport:
    if kind == "auto":
        try:
            kind = _document_kind(msgspec.json.decode(body))
        except (msgspec.DecodeError, ValueError, RecursionError):
            kind = "events"
    report = ImportReport(kind=kind)
    if kind == "query":
        report.add(log.append_query_channels(body, source=source))
    elif kind == "sync":
        report.add(log.append_sync(body, source=source))
    elif kind == "channel":
        report.add(log.append_channel_state(body, source=source))
    else:
        try:
            document = msgspec.json.decode(body, type=list[msgspec.Raw])
        except (msgspec.DecodeError, msgspec.ValidationError, ValueError, RecursionError):
            report.add(log.append_events([body], source=source))
        else:
            report.add(log.append_events([bytes(raw) for raw in document], source=source))
    return report
