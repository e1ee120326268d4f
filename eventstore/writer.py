"""`BackgroundWriter`: one thread that owns every write to one `EventLog`.

Callers (typically an asyncio event loop) hand work to the writer and get a
`concurrent.futures.Future` back at once; they never wait for SQLite, for the write lock of the
file, or for the decoding of what they submitted. The thread takes everything queued (up to a
bound), merges consecutive event appends with the same envelope into one append (one
transaction: many small events that arrive together cost one commit), and splits the result back
to each caller. The append is `EventLog.append_events` done in two steps (decode with
`ingest.event_entry`, then `EventLog.append`), so that the writer can pause inside the decoding
and hand the GIL to the event loop (see `GilCourtesy`).

Contract:
- Work runs in submission order; positions increase in submission order, per caller and overall.
- An accepted item is written even if nobody waits for it: its future is marked running when it
  is accepted, so `Future.cancel()` returns False and cancelling an awaiting task only stops the
  wait. `close()` drains the queue before the thread stops.
- A failure reaches exactly the futures of the work it concerns. When a merged append fails for
  a reason that may lie in one item (a listener that raises, say), the transaction rolled back,
  and each caller's events are appended again on their own, so one bad submission does not fail
  the others. A failure of the file itself (locked, closed, I/O) fails the whole merged batch
  at once: retrying it item by item would only wait out the lock once per item.
- Submitting after `close()` raises `WriterClosed`.
"""

from __future__ import annotations

import atexit
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, TypeVar

import apsw
from eventsourcing.persistence import InterfaceError, OperationalError

from chatledger.errors import WriteLockTimeout, WriterClosed
from chatledger.eventstore import ingest, schema
from chatledger.eventstore.ingest import Entry, Payload, Rejection
from chatledger.eventstore.log import AppendResult, EventLog, Quarantined


T = TypeVar("T")

# One merged append at most this many events or payload bytes: large enough that a burst costs
# one commit, small enough that the first caller of a burst is answered within tens of ms and a
# batch's rows stay a few MB of memory.
DEFAULT_MAX_BATCH_EVENTS = 5_000
DEFAULT_MAX_BATCH_BYTES = 8 * 1024 * 1024
# What a payload that is not bytes or text (a dict) counts for in the byte bound.
_NON_BYTES_SIZE = 1_024
# Every this many seconds of work, the writer looks at the event loop's thread and, when it wants
# the GIL, leaves the GIL free (DEFAULT_YIELD_PAUSE at a time, up to DEFAULT_HANDOVER_BOUND) until
# it has had it (see GilCourtesy). 50 us (about 100 us with the kernel's timer slack) is one
# step of that wait; where the loop's thread cannot be seen, the writer pauses that long blindly.
DEFAULT_YIELD_EVERY = 0.001
DEFAULT_YIELD_PAUSE = 0.00005
DEFAULT_HANDOVER_BOUND = 0.003
# After a hand-over that ran out its bound (the loop's thread was blocked on something else than
# the GIL: a lock, a join at exit), blind pauses for this long before looking again.
_HANDOVER_BACKOFF = 0.1


@dataclass(slots=True)
class _Append:
    """Events to append with one envelope; `finish` turns the caller's AppendResult into its answer."""

    events: list[Payload | Any]
    source: schema.Source | str
    connection_id: str | None
    received_at: int | None
    finish: Callable[[AppendResult], Any] | None
    future: Future[Any] = field(default_factory=Future)

    def merge_key(self) -> tuple[Any, ...]:
        return (self.source, self.connection_id, self.received_at)

    def size(self) -> int:
        return sum(
            len(e) if isinstance(e, (bytes, bytearray, memoryview, str)) else _NON_BYTES_SIZE
            for e in self.events
        )


@dataclass(slots=True)
class _Call:
    """Any other write: a callable run on the writer thread; alone, unless it is `joinable`."""

    fn: Callable[[], Any]
    future: Future[Any] = field(default_factory=Future)
    joinable: bool = False


_Work = _Append | _Call


class GilCourtesy:
    """Hands the GIL to the event loop's thread, every `every` seconds of writing, if it wants it.

    Why: in CPython a thread waiting for the GIL (an event loop back from `epoll`) may force a
    switch only after a whole switch interval in which no other thread released the GIL; every
    release restarts its clock. The writer releases and retakes the GIL around each SQLite call,
    microseconds apart, so the waiter gets the GIL only when it wins a race it mostly loses.
    Measured on the 2-core benchmark machine: a thread alternating 50 us of Python with one
    SQLite statement delayed 1 ms asyncio timers by up to 17 ms (500 us of Python: 480 ms),
    whatever `sys.setswitchinterval` said.

    A blind pause (sleep `pause` every `every`) loses too: waking the loop's thread on an idle
    CPU of a VM took 0.2-1.3 ms, longer than any pause, so the writer took the GIL back first,
    two or three times in a row (3-4 ms stalls). So the writer looks at the loop's thread
    (`watch`, Linux: /proc): blocked in epoll/poll/select, it does not need the GIL and the writer
    goes on without pausing; running, or blocked on a lock (the GIL), it wants the GIL, and the
    writer sleeps `pause` at a time until the thread is back in epoll (it had the GIL and ran),
    at most `bound` seconds. Where the thread cannot be seen, it pauses blindly as before.

    Called as the write connection's exec tracer (before each statement; it chains to a tracer
    that was there before) and by the writer between batches. `every=None` turns it off.
    """

    def __init__(self, every: float | None, pause: float, bound: float = DEFAULT_HANDOVER_BOUND) -> None:
        self.every = every
        self.pause = pause
        self.bound = bound
        self.pauses = 0  # hand-overs and blind pauses made
        self._due = time.perf_counter() + (every or 0.0)
        self._chained: Callable[[apsw.Cursor, str, Any], bool] | None = None
        self._watched: int | None = None  # native id of the thread to hand over to (any thread sets it)
        self._viewed: int | None = None  # whose view `_peer` is: used by the pausing thread only
        self._peer: _ThreadView | None = None
        self._blind_until = 0.0

    def watch(self, native_id: int) -> None:
        """Hand the GIL to this thread (the event loop's) when it wants it."""
        self._watched = native_id

    @property
    def watching(self) -> int | None:
        """The native id of the thread the GIL is handed to, or None (blind pauses)."""
        return self._watched

    def maybe_pause(self) -> None:
        if self.every is None:
            return
        now = time.perf_counter()
        if now < self._due:
            return
        peer = None if now < self._blind_until else self._view()
        wants = None if peer is None else peer.wants_gil()
        if peer is not None and wants is not None:
            if wants:
                self._hand_over(peer, now + self.bound)
                self.pauses += 1
        else:  # cannot tell
            time.sleep(self.pause)
            self.pauses += 1
        self._due = time.perf_counter() + self.every

    def _hand_over(self, peer: _ThreadView, deadline: float) -> None:
        time.sleep(self.pause)
        while peer.wants_gil():
            if time.perf_counter() >= deadline:
                self._blind_until = time.perf_counter() + _HANDOVER_BACKOFF
                return
            time.sleep(self.pause)

    def _view(self) -> _ThreadView | None:
        watched = self._watched
        if watched != self._viewed:
            self.close()
            self._viewed = watched
            self._peer = None if watched is None else _ThreadView.open(watched)  # None: not Linux
        return self._peer

    def restart(self) -> None:
        """The writer was idle: its next `every` seconds of work start now."""
        if self.every is not None:
            self._due = time.perf_counter() + self.every

    def close(self) -> None:
        """Let go of the watched thread's /proc files (the pausing thread calls this at its end)."""
        if self._peer is not None:
            self._peer.close()
            self._peer = None

    def __call__(self, cursor: apsw.Cursor, sql: str, bindings: Any) -> bool:
        self.maybe_pause()
        return True if self._chained is None else self._chained(cursor, sql, bindings)

    def install(self, connection: apsw.Connection) -> None:
        if self.every is None:
            return
        self._chained = connection.exec_trace
        connection.exec_trace = self

    def uninstall(self, connection: apsw.Connection) -> None:
        chained = self._chained  # read first: `is self` below narrows `self` for the checker
        if self.every is not None and connection.exec_trace is self:
            connection.exec_trace = chained


class _ThreadView:
    """What the kernel says one thread of this process is doing (Linux /proc; None elsewhere)."""

    __slots__ = ("native_id", "_stat", "_wchan")

    def __init__(self, native_id: int, stat: int, wchan: int) -> None:
        self.native_id = native_id
        self._stat = stat
        self._wchan = wchan

    @classmethod
    def open(cls, native_id: int) -> _ThreadView | None:
        try:
            stat = os.open(f"/proc/self/task/{native_id}/stat", os.O_RDONLY)
        except OSError:
            return None
        try:
            wchan = os.open(f"/proc/self/task/{native_id}/wchan", os.O_RDONLY)
        except OSError:
            os.close(stat)
            return None
        return cls(native_id, stat, wchan)

    def wants_gil(self) -> bool | None:
        """False: blocked waiting for I/O or timers (an idle event loop). True: running or about
        to run (it needs the GIL for Python), or blocked on anything else (mostly the GIL).
        None: cannot tell (the thread is gone, or the kernel hides where it waits)."""
        try:
            stat = os.pread(self._stat, 512, 0)
            if stat[stat.rindex(b")") + 2] == ord("R"):  # the state follows the thread's name
                return True
            wchan = os.pread(self._wchan, 64, 0)
        except (OSError, ValueError, IndexError):
            return None
        if not wchan or wchan == b"0":
            return None
        return not (b"poll" in wchan or b"select" in wchan)  # do_epoll_wait, do_sys_poll, ...

    def close(self) -> None:
        os.close(self._stat)
        os.close(self._wchan)


class BackgroundWriter:
    """A daemon thread applying queued writes to `log`, in order, in merged transactions.

    The thread runs from construction until `close()`. Nothing else should write to `log`
    meanwhile (reads are fine: they use the datastore's reader connections).
    """

    def __init__(
        self,
        log: EventLog,
        *,
        max_batch_events: int = DEFAULT_MAX_BATCH_EVENTS,
        max_batch_bytes: int = DEFAULT_MAX_BATCH_BYTES,
        yield_every: float | None = DEFAULT_YIELD_EVERY,
        yield_pause: float = DEFAULT_YIELD_PAUSE,
        name: str = "chatledger-writer",
    ) -> None:
        """`yield_every`/`yield_pause`: see `GilCourtesy` (None: never pause for other threads)."""
        if max_batch_events < 1 or max_batch_bytes < 1:
            raise ValueError("max_batch_events and max_batch_bytes must be positive")
        self.log = log
        self.max_batch_events = max_batch_events
        self.max_batch_bytes = max_batch_bytes
        self._queue: deque[_Work] = deque()
        self._wakeup = threading.Condition(threading.Lock())
        self._backlog: deque[_Work] = deque()  # taken off the queue, owned by the thread
        self._closing = False
        # Counters for tests and benchmarks: transactions run, events in them, the largest.
        self.batches = 0
        self.batched_events = 0
        self.largest_batch = 0
        self.busy_seconds = 0.0  # time spent applying work (not waiting for it)
        self.courtesy = GilCourtesy(yield_every, yield_pause)
        # Nothing else runs statements on the write connection yet: the thread is not started.
        self.courtesy.install(log.datastore.writer)
        # A daemon thread, so a forgotten close() cannot hang the interpreter's exit; the atexit
        # hook drains it instead (daemon threads still run while atexit hooks do).
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()
        atexit.register(self._drain_at_exit)

    # -- submitting (any thread) -----------------------------------------------------------------

    def append_events(
        self,
        events: Iterable[Payload | Any],
        *,
        source: schema.Source | str = "websocket",
        connection_id: str | None = None,
        received_at: int | None = None,
        finish: Callable[[AppendResult], T] | None = None,
    ) -> Future[AppendResult] | Future[T]:
        """Queue events for `EventLog.append_events`; the future gets the caller's AppendResult.

        `events` is copied into a list here (cheap: references only), so the caller may reuse
        its buffer at once; decoding happens on the writer thread. `finish`, when given, runs on
        the writer thread on this caller's AppendResult, and its return value (or exception)
        becomes the future's outcome.
        """
        return self._submit(_Append(list(events), source, connection_id, received_at, finish))

    def call(self, fn: Callable[[], T], *, joinable: bool = False) -> Future[T]:
        """Queue any other write: `fn()` runs on the writer thread, in queue order.

        `joinable`: `fn` does all its writing inside `EventLog.write_transaction()` (a local
        action, an outbox call). Joinable calls queued one after another then share one
        transaction, each in a savepoint of its own: one that raises is undone alone and fails
        only its own future; the futures are settled once the transaction has committed. Any
        other call runs alone.
        """
        return self._submit(_Call(fn, joinable=joinable))

    def _submit(self, work: _Work) -> Future[Any]:
        # Running from acceptance on: an accepted item cannot be withdrawn (see the module doc).
        work.future.set_running_or_notify_cancel()
        # The thread that hands out work (the event loop's) is the one to give the GIL to.
        self.courtesy.watch(threading.get_native_id())
        with self._wakeup:
            if self._closing:
                raise WriterClosed("the background writer is closed; open the store again")
            self._queue.append(work)
            self._wakeup.notify()
        return work.future

    # -- lifecycle -------------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._closing

    @property
    def queued(self) -> int:
        """About how many accepted items wait for the thread (a snapshot, for monitoring)."""
        return len(self._queue) + len(self._backlog)

    def close(self, timeout: float | None = None) -> None:
        """Refuse new work, apply everything accepted, then stop the thread.

        Blocks until the queue is drained (or `timeout` seconds pass: then the thread keeps
        draining in the background and `TimeoutError` is raised). Safe to call twice.
        """
        with self._wakeup:
            self._closing = True
            self._wakeup.notify()
        atexit.unregister(self._drain_at_exit)
        if self._thread is threading.current_thread():
            return  # called from a queued write: the loop drains and stops on its own
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise TimeoutError(f"the background writer did not drain within {timeout} s")
        if not self.log.datastore.closed:
            try:
                self.courtesy.uninstall(self.log.datastore.writer)
            except apsw.ThreadingViolationError:
                pass  # another thread is using the connection: the tracer stays, harmlessly
        # The loop only ends with an empty queue; anything left means the thread died of a bug.
        # Fail those futures loudly rather than leave their callers waiting forever.
        with self._wakeup:
            leftovers = [*self._backlog, *self._queue]
            self._backlog.clear()
            self._queue.clear()
        for work in leftovers:
            _settle(work.future, error=WriterClosed("the background writer stopped unexpectedly"))

    def _drain_at_exit(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - nothing to report to at exit; callers got their errors
            pass

    # -- the thread ------------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._serve()
        finally:
            self.courtesy.close()

    def _serve(self) -> None:
        backlog = self._backlog
        while True:
            with self._wakeup:
                if not self._queue and not backlog and not self._closing:
                    while not self._queue and not self._closing:
                        self._wakeup.wait()
                    self.courtesy.restart()
                # Move what is queued to the thread's own backlog (one C-level copy): the bounds
                # are then worked out without the lock, so submitters never wait on them.
                backlog.extend(self._queue)
                self._queue.clear()
                if not backlog:
                    return  # closing, and drained
            self.courtesy.maybe_pause()
            batch = self._take(backlog)
            try:
                self._apply(batch)
            except BaseException as error:  # noqa: BLE001 - a bug here must not kill the thread
                for work in batch:
                    if not work.future.done():
                        work.future.set_exception(error)

    def _take(self, backlog: deque[_Work]) -> list[_Work]:
        """Pop work up to the bounds (the first item always, however large)."""
        first = backlog.popleft()
        taken: list[_Work] = [first]
        events = bytes_ = 0
        if type(first) is _Append:
            events, bytes_ = len(first.events), first.size()
        while backlog:
            work = backlog[0]
            if type(work) is _Append:
                count, size = len(work.events), work.size()
                if events + count > self.max_batch_events or bytes_ + size > self.max_batch_bytes:
                    break
                events += count
                bytes_ += size
            taken.append(backlog.popleft())
        return taken

    def _apply(self, batch: list[_Work]) -> None:
        """Run a taken batch: runs of mergeable appends as one transaction each, calls alone."""
        began = time.perf_counter()
        try:
            self._apply_runs(batch)
        finally:
            self.busy_seconds += time.perf_counter() - began

    def _apply_runs(self, batch: list[_Work]) -> None:
        start = 0
        while start < len(batch):
            work = batch[start]
            if _joins(work):
                end = start + 1
                while end < len(batch) and _joins(batch[end]):
                    end += 1
                self._run_joined(batch[start:end])  # type: ignore[arg-type]
                start = end
                continue
            if isinstance(work, _Call):
                self._run_call(work)
                start += 1
                continue
            end = start + 1
            key = work.merge_key()
            while end < len(batch):
                following = batch[end]
                if not isinstance(following, _Append) or following.merge_key() != key:
                    break
                end += 1
            self._run_appends(batch[start:end])  # type: ignore[arg-type]
            start = end

    def _run_call(self, work: _Call) -> None:
        try:
            result = work.fn()
        except BaseException as error:  # noqa: BLE001 - every failure belongs to the caller
            _settle(work.future, error=self._explain(error))
        else:
            _settle(work.future, result=result)

    def _run_joined(self, calls: list[_Call]) -> None:
        """Joinable calls in one transaction (see `call`); alone, a call simply runs."""
        if len(calls) == 1:
            self._run_call(calls[0])
            return
        try:
            outcomes = run_together(self.log, [call.fn for call in calls])
        except BaseException as raised:  # noqa: BLE001 - not committed: none is on file
            error = self._explain(raised)
            for call in calls:
                _settle(call.future, error=error)
            return
        for call, (result, failure) in zip(calls, outcomes):
            _settle(call.future, result=result, error=self._explain(failure) if failure else None)

    def _run_appends(self, group: list[_Append]) -> None:
        # Decoded here, a caller at a time, so a retry after a failed merge need not decode again.
        self._append_decoded(group, [self._decode(work.events) for work in group])

    def _decode(self, events: list[Payload | Any]) -> list[Entry | Rejection]:
        """`EventLog.append_events`'s decoding, done here so the writer can pause inside it.

        Decoding is the writer's longest stretch of pure Python (a few us per event); pausing
        every 32 events keeps it from holding the GIL for a whole batch. The log then gets
        prepared entries (`EventLog.append`), compressed in one native call without the GIL,
        on this thread: no third thread contends for the GIL with the event loop.
        """
        pause = self.courtesy.maybe_pause
        entries: list[Entry | Rejection] = []
        for start in range(0, len(events), 32):
            entries += [ingest.event_entry(e) for e in events[start : start + 32]]
            pause()
        return entries

    def _append_decoded(self, group: list[_Append], parts: list[list[Entry | Rejection]]) -> None:
        first = group[0]
        items = parts[0] if len(parts) == 1 else [item for part in parts for item in part]
        try:
            result = self.log.append(
                items, source=first.source, connection_id=first.connection_id,
                received_at=first.received_at,
            )
        except BaseException as raised:  # noqa: BLE001
            if len(group) == 1 or _concerns_the_file(raised):
                error = self._explain(raised)
                for work in group:
                    _settle(work.future, error=error)
                return
            # The transaction rolled back; find out whose events were the trouble.
            for work, part in zip(group, parts):
                self._append_decoded([work], [part])
            return
        self.batches += 1
        self.batched_events += len(items)
        self.largest_batch = max(self.largest_batch, len(items))
        if len(group) == 1:
            _finish(first, result)
            return
        for work, share in zip(group, _split(result, [len(part) for part in parts])):
            _finish(work, share)

    def _explain(self, error: BaseException) -> BaseException:
        """A lock timeout says what it is; other errors reach the caller as they are."""
        if isinstance(error, OperationalError) and isinstance(error.__cause__, apsw.BusyError):
            datastore = self.log.datastore
            clear = WriteLockTimeout(
                f"{datastore.path or datastore.db_name} is being written by another connection "
                f"or process, which held its write lock for more than lock_timeout="
                f"{datastore.lock_timeout:g} s ({error})"
            )
            clear.__cause__ = error
            return clear
        return error


def _concerns_the_file(error: BaseException) -> bool:
    """Failures of the database itself rather than of any one item (no point retrying items)."""
    return isinstance(error, (OperationalError, InterfaceError)) or not isinstance(error, Exception)


def _split(result: AppendResult, sizes: list[int]) -> list[AppendResult]:
    """Cut a merged AppendResult into one per caller, quarantine indexes re-based per caller."""
    parts: list[AppendResult] = []
    quarantined = result.quarantined  # in input order
    next_quarantined = 0
    start = 0
    for size in sizes:
        end = start + size
        mine: list[Quarantined] = []
        while next_quarantined < len(quarantined) and quarantined[next_quarantined].index < end:
            item = quarantined[next_quarantined]
            mine.append(Quarantined(item.index - start, item.reason, item.quarantine_id))
            next_quarantined += 1
        parts.append(AppendResult(result.positions[start:end], mine))
        start = end
    return parts


def _finish(work: _Append, result: AppendResult) -> None:
    if work.finish is None:
        _settle(work.future, result=result)
        return
    try:
        answer = work.finish(result)
    except BaseException as error:  # noqa: BLE001
        _settle(work.future, error=error)
    else:
        _settle(work.future, result=answer)


def _joins(work: _Work) -> bool:
    return type(work) is _Call and work.joinable


def run_together(log: EventLog, fns: Sequence[Callable[[], Any]]) -> list[tuple[Any, Exception | None]]:
    """Run calls that write through `log.write_transaction()` in one transaction of theirs,
    each in a savepoint: one that raises is undone alone. Returns (result, error) per call, once
    the transaction committed; if it did not, raises what stopped it (then none is on file)."""
    outcomes: list[tuple[Any, Exception | None]] = []
    with log.write_transaction():
        for fn in fns:
            try:
                outcomes.append((fn(), None))
            except Exception as error:  # noqa: BLE001 - undone by its savepoint; the caller's to see
                outcomes.append((None, error))
    return outcomes


def _settle(future: Future[Any], *, result: Any = None, error: BaseException | None = None) -> None:
    # Futures are running from acceptance and settled exactly once, by the writer thread.
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


__all__ = [
    "DEFAULT_MAX_BATCH_BYTES",
    "DEFAULT_MAX_BATCH_EVENTS",
    "BackgroundWriter",
    "GilCourtesy",
    "WriteLockTimeout",
    "WriterClosed",
]
