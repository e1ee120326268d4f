"""Importing files: JSON lines of events, or one JSON document (a query-channels response, a sync
response, one channel state, one event, or an array of events).

JSON lines are read a line at a time and appended in batches (one transaction each), so a file of
any size imports in constant memory. A line that is not a valid event is quarantined with its
line number in the reason; the import carries on.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import BinaryIO, Literal

import msgspec

from chatledger.eventstore.ingest import MAX_RESPONSE_BYTES, Entry, Rejection, event_entry
from chatledger.eventstore.log import AppendResult, EventLog

Kind = Literal["auto", "events", "query", "sync", "channel"]
KINDS: tuple[str, ...] = ("auto", "events", "query", "sync", "channel")

ProgressCallback = Callable[[int], None]  # called with the number of bytes read so far


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

    def add(self, result: AppendResult, *, keep_reasons: int = 10) -> None:
        self.items += len(result.positions)
        self.stored += result.stored
        self.quarantined += len(result.quarantined)
        positions = [p for p in result.positions if p is not None]
        if positions:
            if self.first_position is None:
                self.first_position = min(positions)
            self.last_position = max(positions)
        for q in result.quarantined[: max(0, keep_reasons - len(self.reasons))]:
            self.reasons.append(q.reason)


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
) -> ImportReport:
    """Append the contents of a binary stream to the log; see the module docstring for formats.

    With `kind="auto"`, a stream whose first line is a JSON object followed by more lines is read
    as JSON lines; otherwise the content is read as one document when it parses as one, and as
    JSON lines (each bad line quarantined) when it does not.
    """
    skipped = 0  # blank lines before the first line with content
    first = stream.readline()
    while first and not first.strip():
        skipped += 1
        first = stream.readline()
    if not first:
        return ImportReport(kind="events" if kind == "auto" else kind)
    if kind in ("query", "sync", "channel"):
        body = first + stream.read(MAX_RESPONSE_BYTES + 1 - len(first))
        if on_progress:
            on_progress(len(body))
        return _import_document(log, body, kind, source)
    if kind == "events":
        return _import_lines(log, _chain([first], stream), skipped, source, batch_size, on_progress)
    second = stream.readline()
    if _decodes(first) and second.strip():
        return _import_lines(
            log, _chain([first, second], stream), skipped, source, batch_size, on_progress
        )
    # One document (perhaps pretty-printed), or JSON lines whose first line is broken.
    body = first + second + stream.read(MAX_RESPONSE_BYTES + 1 - len(first) - len(second))
    if _decodes(body) or len(body) > MAX_RESPONSE_BYTES:
        if on_progress:
            on_progress(len(body))
        return _import_document(log, body, kind, source)
    lines = body.splitlines(keepends=True)
    return _import_lines(log, _chain(lines, stream), skipped, source, batch_size, on_progress)


def _chain(lines: list[bytes], stream: BinaryIO) -> Iterator[bytes]:
    yield from lines
    yield from stream


def _import_lines(
    log: EventLog,
    lines: Iterable[bytes],
    skipped: int,
    source: str,
    batch_size: int,
    on_progress: ProgressCallback | None,
) -> ImportReport:
    report = ImportReport(kind="events")
    batch: list[Entry | Rejection] = []
    read = skipped
    for line_number, line in enumerate(lines, start=skipped + 1):
        read += len(line)
        if not line.strip():
            continue
        entry = event_entry(line.rstrip(b"\r\n"))
        if isinstance(entry, Rejection):
            entry.reason = f"line {line_number}: {entry.reason}"
        batch.append(entry)
        if len(batch) >= batch_size:
            report.add(log.append(batch, source=source))
            batch = []
            if on_progress:
                on_progress(read)
    if batch:
        report.add(log.append(batch, source=source))
    if on_progress:
        on_progress(read)
    return report


def _decodes(data: bytes) -> bool:
    try:
        msgspec.json.decode(data)
    except (msgspec.DecodeError, ValueError, RecursionError):  # RecursionError: nested too deep
        return False
    return True


def _import_document(log: EventLog, body: bytes, kind: str, source: str) -> ImportReport:
    body = body.strip()  # the file's surrounding whitespace is not part of the document
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
