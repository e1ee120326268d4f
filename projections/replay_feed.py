"""The log's entries for a replay, in position order, read and decompressed on a second core.

A replay (rebuild, verify, as-of, catch-up) applies entries in chunks. Reading a chunk from the
log and decompressing its payloads (zstd with the store's dictionaries) does not depend on what
the projector does with it, so for a long replay of a file store a second process does that part
while this one applies the previous chunk: it opens the file read-only, reads the entries in
order and sends each chunk, decompressed, through a pipe. The pipe's buffer is the only queue,
so the reader is at most about one chunk ahead and memory stays bounded.

The reader is a fresh interpreter (`subprocess`, not `multiprocessing`: that would import the
application's main module again), so it starts slowly (~0.4 s of imports). While it starts, this
process replays the first `HEAD_START` entries itself; the reader begins after them.

It is used only when it can pay and is safe: a file store (not an in-memory one), not sealed (the
key stays in this process), at least `SECOND_PROCESS_MIN` entries to apply, and more than one
core. The reader's view of the file must match the replay's: before any of its chunks is applied,
it reports how many entries it sees in its range and the last position, and a reader that sees
otherwise (entries not committed yet, appended in the caller's own transaction) is dropped and
this process reads the rest itself. A reader that fails or dies later raises `StoreError` (or
the reader's own exception): the replay's transaction rolls back, and the store is as it was.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import subprocess
import sys
from collections.abc import Iterator
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import apsw

from chatledger.errors import StoreError
from chatledger.eventstore.codec import PayloadCodec
from chatledger.projections.apply import Item

logger = logging.getLogger("chatledger.projections")

CHUNK = 5_000  # entries applied at a time
SECOND_PROCESS_MIN = 40_000  # below this, the reader's start-up costs more than it saves
HEAD_START = 20_000  # entries this process replays itself while the reader starts

_READ_CHUNK = ("SELECT rowid, topic, originator_id, codec, state, received_at FROM {table} "
               "WHERE rowid>? AND rowid<=? ORDER BY rowid LIMIT ?")
_RANGE = "SELECT COUNT(*), MAX(rowid) FROM {table} WHERE rowid>? AND rowid<=?"
_NTH_POSITION = "SELECT rowid FROM {table} WHERE rowid>? AND rowid<=? ORDER BY rowid LIMIT 1 OFFSET ?"
_EXIT_WAIT_S = 5.0  # a reader that sent its last chunk only closes the file and exits
_READER_CODE = "from chatledger.projections.replay_feed import reader_main; reader_main()"


def read_in_process(source: apsw.Cursor, events_table: str, codec: PayloadCodec,
                    after: int, stop: int) -> Iterator[list[Item]]:
    """The entries in (`after`, `stop`] as Items, read through `source`, by chunks."""
    reader = source.connection.cursor()
    statement = _READ_CHUNK.format(table=events_table)
    decode = codec.decode
    position = after
    while position < stop:
        rows = reader.execute(statement, (position, stop, CHUNK)).fetchall()
        if not rows:
            return
        yield [Item(r[0], r[1], r[2], decode(r[3], r[4], r[0]), r[5]) for r in rows]
        position = rows[-1][0]


def read_entries(source: apsw.Cursor, events_table: str, codec: PayloadCodec, after: int,
                 stop: int, count: int, *, log_file: Path | None) -> Iterator[list[Item]]:
    """The entries in (`after`, `stop`] (`count` of them) as Items, by chunks of at most `CHUNK`:
    from a reader process on `log_file` when that pays (see the module), else read here."""
    if (log_file is None or codec.cipher is not None or count < SECOND_PROCESS_MIN
            or _cores() < 2):
        yield from read_in_process(source, events_table, codec, after, stop)
        return
    split = source.execute(_NTH_POSITION.format(table=events_table),
                           (after, stop, HEAD_START - 1)).fetchone()[0]
    expected = source.execute(_RANGE.format(table=events_table), (split, stop)).fetchone()
    reader = ReaderProcess.start(log_file, events_table.rpartition(".")[2], split, stop)
    try:
        yield from read_in_process(source, events_table, codec, after, split)
        if reader is None or not reader.agrees(tuple(expected)):
            yield from read_in_process(source, events_table, codec, split, stop)
            return
        yield from reader.chunks()
    finally:
        if reader is not None:
            reader.close()


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


class ReaderProcess:
    """A second process reading and decompressing the entries of a range (see the module)."""

    def __init__(self, process: subprocess.Popen[bytes], channel: Connection) -> None:
        self.process = process
        self.channel = channel
        self.finished = False  # it sent its last message

    @classmethod
    def start(cls, log_file: Path, table: str, after: int, stop: int) -> ReaderProcess | None:
        """The reader of (`after`, `stop`] of `table` in `log_file`; None if none could start."""
        read_end, write_end = os.pipe()
        request = json.dumps({"file": str(Path(log_file).resolve()), "table": table,
                              "after": after, "stop": stop, "chunk": CHUNK,
                              "fd": write_end})
        # The reader imports chatledger from where this process found it.
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        try:
            process = subprocess.Popen([sys.executable, "-c", _READER_CODE, request],
                                       stdin=subprocess.DEVNULL, pass_fds=(write_end,), env=env)
        except OSError:
            logger.warning("no second process for the replay: reading in this one", exc_info=True)
            os.close(read_end)
            return None
        finally:
            os.close(write_end)
        return cls(process, Connection(read_end, writable=False))

    def agrees(self, expected: tuple[int, int | None]) -> bool:
        """Whether the reader sees the range as the replay does (its first message)."""
        try:
            seen = self.channel.recv()
        except (EOFError, OSError):
            logger.warning("the replay's second process did not start: reading in this one")
            return False
        if isinstance(seen, _Failure):
            logger.warning("the replay's second process failed to start (%s): reading in this one",
                           seen.describe())
            return False
        if tuple(seen) != expected:
            logger.info("the replay's second process sees other entries (%s, not %s): "
                        "reading in this one", seen, expected)
            return False
        return True

    def chunks(self) -> Iterator[list[Item]]:
        make = Item._make
        while True:
            try:
                message = self.channel.recv()
            except (EOFError, OSError) as error:
                raise StoreError("the replay's second process ended before the last entry "
                                 f"(exit status {self.process.poll()})") from error
            if message is None:
                self.finished = True
                return
            if isinstance(message, _Failure):
                self.finished = True  # it sends nothing after its failure
                raise message.error()
            yield list(map(make, message))

    def close(self) -> None:
        self.channel.close()  # a reader still sending gets a broken pipe and ends
        if self.finished:
            try:
                self.process.wait(timeout=_EXIT_WAIT_S)
                return
            except subprocess.TimeoutExpired:
                pass
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()


class _Failure:
    """What went wrong in the reader, sent to the replaying process."""

    def __init__(self, error: BaseException) -> None:
        try:
            self.pickled: bytes | None = pickle.dumps(error)
        except Exception:  # noqa: BLE001 - an exception that cannot travel: its text does
            self.pickled = None
        self.text = f"{type(error).__name__}: {error}"

    def describe(self) -> str:
        return self.text

    def error(self) -> BaseException:
        if self.pickled is not None:
            try:
                error = pickle.loads(self.pickled)
            except Exception:  # noqa: BLE001 - a class this side cannot rebuild
                error = None
            if isinstance(error, BaseException):
                return error
        return StoreError(f"the replay's second process failed: {self.text}")


# -- the reader's side -------------------------------------------------------------------------


def reader_main() -> None:
    """Entry point of the reader process: the request is `sys.argv[1]` (JSON)."""
    request: dict[str, Any] = json.loads(sys.argv[1])
    channel = Connection(request["fd"], readable=False)
    try:
        serve(channel, Path(request["file"]), request["table"], request["after"], request["stop"],
              request["chunk"])
    except (BrokenPipeError, ConnectionResetError):
        pass  # the replay ended (or failed) first: nothing is waiting for the rest
    finally:
        channel.close()


def serve(channel: Connection, log_file: Path, table: str, after: int, stop: int,
          chunk: int) -> None:
    """Send (count, last position) of (`after`, `stop`], then its entries by `chunk` (lists of
    Item-shaped tuples, payloads decompressed), then None; or a `_Failure`."""
    try:
        connection = apsw.Connection(f"{log_file.as_uri()}?mode=ro",
                                     flags=apsw.SQLITE_OPEN_READONLY | apsw.SQLITE_OPEN_URI)
    except apsw.Error as error:
        channel.send(_Failure(error))
        return
    try:
        cursor = connection.cursor()
        cursor.execute("BEGIN")  # one snapshot for the count and every chunk
        codec = PayloadCodec()
        codec.load(cursor)
        channel.send(cursor.execute(_RANGE.format(table=table), (after, stop)).fetchone())
        statement = _READ_CHUNK.format(table=table)
        decode = codec.decode
        position = after
        while position < stop:
            rows = cursor.execute(statement, (position, stop, chunk)).fetchall()
            if not rows:
                break
            # Plain tuples: a named tuple would be pickled with its class, entry by entry.
            channel.send([(r[0], r[1], r[2], decode(r[3], r[4], r[0]), r[5]) for r in rows])
            position = rows[-1][0]
        channel.send(None)
    except (BrokenPipeError, ConnectionResetError):
        raise
    except Exception as error:  # noqa: BLE001 - sent to the replay, which raises it
        channel.send(_Failure(error))
    finally:
        connection.close()
