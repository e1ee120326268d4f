"""The replayer: sends the retry stream to the backend and records every outcome.

Commands of one channel go strictly in the order the user made them (a failing head blocks its
channel: a reply must not overtake the message it answers); channels run in parallel, up to
`concurrency` at once. Whenever a slot is free it takes the oldest command at the head of a
channel not already on the wire, so across channels too the oldest actions go first, and a
channel with a long queue does not hold the others back. Each answer becomes an outcome from
`sync.outcomes.classify`, and each outcome an event of the command's lifecycle, so no command
ends without a recorded outcome.

The store is written in batches: lanes queue their "attempt started" and outcome records in a
`Journal`, which writes everything queued during one turn of the event loop in one transaction.
A crash between a call and the write that records its answer leaves the command unfinished, and
it is sent again after the restart: the client-chosen ids make that resend harmless.
"""

from __future__ import annotations

import asyncio
import heapq
import inspect
import logging
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from chatledger.eventstore.commands import Delivered, Failed, Refused
from chatledger.sync.answers import (
    UNCONFIRMED,
    confirmation_problem,
    kept_answer,
    refusal_in,
)
from chatledger.sync.backend import Backend, BackendError, UnusableAnswer
from chatledger.sync.outcomes import Backoff, Outcome, classify
from chatledger.sync.stores import AnyStore, done

logger = logging.getLogger("chatledger.sync")

TokenProvider = Callable[[], str | Awaitable[str]]

# A 2xx answer that does not confirm a command is retried until this many came in a row; the
# command is then a conflict (the answers kept for `explain`).
MAX_UNCONFIRMED = 3
# How often a running replayer looks for commands queued by another process (seconds).
POLL_INTERVAL = 0.25
Settlement = Delivered | Failed | Refused


@dataclass
class ReplayReport:
    """What one pass over the retry stream did."""

    delivered: int = 0
    retrying: int = 0      # failed this pass, will be tried again after a backoff
    rejected: int = 0
    waiting: int = 0       # not tried: their next try is later, or their channel is blocked
    stopped: str | None = None  # the reason replay stopped (the app is suspended)
    left: int | None = None  # unfinished commands after the pass (known to `run()` only)
    store_seconds: float = 0.0  # in the store: reading the retry stream, recording outcomes
    seconds: float = 0.0

    @property
    def attempted(self) -> int:
        return self.delivered + self.retrying + self.rejected

    def merge(self, other: ReplayReport) -> None:
        self.delivered += other.delivered
        self.retrying += other.retrying
        self.rejected += other.rejected
        self.waiting = other.waiting
        self.stopped = other.stopped or self.stopped
        self.store_seconds += other.store_seconds
        self.seconds += other.seconds


class Journal:
    """Collects lifecycle records from the lanes and writes them in batches.

    Records are written in the order they happened, one transaction per batch. While calls are
    on the wire, a batch waits up to `interval` seconds for their answers (or until `max_batch`
    records): a commit costs far more than the records in it, and a batch lost in a crash only
    means its commands are sent again after the restart, which their client-chosen ids make
    harmless. When nothing is on the wire, what is queued is written at once.

    Why a quarter of a second: whatever a batch holds, its commit rewrites the same index pages
    (the outbox, the log's index of command streams, messages by id), which SQLite writes to the
    WAL and later into the database file. Replaying 3,881 commands against the development
    server, 0.1 s batches wrote 2.35 pages per command, 0.25 s batches 1.5.
    """

    def __init__(self, store: AnyStore, *, max_batch: int = 1_000,
                 interval: float = 0.25) -> None:
        self.store = store
        self.max_batch = max_batch
        self.interval = interval
        self._records: list[str | Settlement] = []
        self._on_the_wire = 0
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._error: BaseException | None = None
        self._closing = False
        self.seconds = 0.0
        self.batches = 0

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="chatledger-journal")

    def started(self, command_id: str) -> None:
        # Until its start is written (with this batch), the store must know it is on its way.
        self.store.outbox.sending(command_id)
        self._on_the_wire += 1
        self._idle.clear()
        self._add(command_id)

    def settled(self, settlement: Settlement) -> None:
        self._on_the_wire -= 1
        if self._on_the_wire <= 0:
            self._idle.set()
        self._add(settlement)

    def _add(self, record: str | Settlement) -> None:
        if self._error is not None:
            raise self._error
        self._records.append(record)
        if len(self._records) >= self.max_batch:
            self._idle.set()  # full: write now, whatever is still on the wire
        self._wake.set()

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            # One turn of the loop lets every lane that is ready add its record; then, while
            # answers are still due, wait for them (up to `interval`).
            await asyncio.sleep(0)
            if (self._on_the_wire > 0 and not self._closing
                    and len(self._records) < self.max_batch):
                idle = asyncio.ensure_future(self._idle.wait())
                try:
                    await asyncio.wait([idle], timeout=self.interval)
                finally:
                    idle.cancel()
            self._wake.clear()
            if self._on_the_wire > 0:
                self._idle.clear()
            try:
                await self.flush()
            except Exception as error:  # reaches the lanes on their next record, and close()
                self._error = error
                return
            if self._closing:
                return

    async def flush(self) -> None:
        records = self._records
        if not records:
            return
        self._records = []
        begin = time.perf_counter()
        try:
            await done(self.store.outbox.record(records))
            self.batches += 1
        finally:
            self.seconds += time.perf_counter() - begin

    async def close(self) -> None:
        """Write what is queued and stop. (Not by cancelling the task: a cancellation that
        lands while it waits can be lost, and the close would wait forever.)"""
        self._closing = True
        self._wake.set()
        self._idle.set()
        if self._task is not None:
            await self._task
            self._task = None
        if self._error is not None:
            raise self._error
        await self.flush()


class _Heads:
    """The channels waiting for a slot, oldest head first. A channel being sent is out of the
    queue until its command has an outcome, so no two of its commands are ever on the wire.

    Why oldest first, beyond fairness: the outbox rows and the retry stream are in request
    order, so the outcomes of one batch of the `Journal` fall on neighbouring pages. Running
    channels one after another instead spread every batch over the whole outbox: replaying
    3,881 commands on 50 channels, each commit rewrote nearly all of its pages (1,660 WAL pages
    of outbox in all; 242 now).
    """

    def __init__(self, lanes: list[deque[tuple[int, Any]]]) -> None:
        self._lanes = lanes
        self._heap = [(lane[0][0], n) for n, lane in enumerate(lanes) if lane]
        heapq.heapify(self._heap)

    def __len__(self) -> int:
        return len(self._heap)

    def take(self) -> int:
        """The channel (its number) whose head is oldest; it leaves the queue."""
        return heapq.heappop(self._heap)[1]

    def head(self, lane: int) -> Any:
        """Remove and return the channel's next command."""
        return self._lanes[lane].popleft()[1]

    def left(self, lane: int) -> int:
        return len(self._lanes[lane])

    def give_back(self, lane: int) -> None:
        """The channel's head has an outcome: its next command (if any) queues again."""
        if self._lanes[lane]:
            heapq.heappush(self._heap, (self._lanes[lane][0][0], lane))


@dataclass
class _Pass:
    report: ReplayReport = field(default_factory=ReplayReport)
    rejected: set[str] = field(default_factory=set)
    stop: asyncio.Event = field(default_factory=asyncio.Event)


class Replayer:
    """Replays a store's retry stream against a `Backend`.

    >>> replayer = Replayer(store, backend)            # doctest: +SKIP
    >>> report = await replayer.replay()               # doctest: +SKIP

    `token_provider` is the application's callback for a fresh token when the backend says the
    token expired (it may be a coroutine function); without one, such commands wait and retry.
    """

    def __init__(
        self,
        store: AnyStore,
        backend: Backend,
        *,
        concurrency: int = 8,
        backoff: Backoff | None = None,
        token_provider: TokenProvider | None = None,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        max_unconfirmed: int = MAX_UNCONFIRMED,
        poll_interval: float = POLL_INTERVAL,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if max_unconfirmed < 1:
            raise ValueError("max_unconfirmed must be at least 1")
        self.store = store
        self.backend = backend
        self.concurrency = concurrency
        self.backoff = backoff or Backoff()
        self.token_provider = token_provider
        self.clock = clock
        self.rng = rng or random.Random()
        self.max_unconfirmed = max_unconfirmed
        self.poll_interval = poll_interval
        self._wake = asyncio.Event()
        # The retry stream as the last look saw it: a command not in it was queued since
        # (by this process without `notify()`, or by another process).
        self._known: set[str] = set()
        self._token_lock = asyncio.Lock()
        self._token_generation = 0

    # -- running -------------------------------------------------------------------------------

    async def replay(self) -> ReplayReport:
        """One pass: try every command that is due now, channel by channel, and record the
        outcomes. Commands waiting for a later retry are counted in `waiting`."""
        started = time.perf_counter()
        state = _Pass()
        journal = Journal(self.store)
        journal.start()
        try:
            begin = time.perf_counter()
            pending = await done(self.store.outbox.pending())
            read = time.perf_counter() - begin
            queue = _Heads(self._lanes(pending))
            await asyncio.gather(*(self._send_heads(queue, journal, state)
                                   for _ in range(min(self.concurrency, len(queue)))))
        finally:
            await journal.close()
        report = state.report
        report.store_seconds = read + journal.seconds
        report.seconds = time.perf_counter() - started
        return report

    async def run(
        self, stop: asyncio.Event, on_pass: Callable[[ReplayReport], None] | None = None,
    ) -> ReplayReport:
        """Replay until `stop` is set: a pass, then sleep until the next retry is due, or
        `notify()` says a new action was queued, or the retry stream holds a command it did
        not hold before (queued by another process on the same file: it is looked at every
        `poll_interval` seconds, a cheap read of the retry stream's ids). `on_pass` sees the
        report of each pass that attempted something or left another number of commands
        unfinished (`left`)."""
        total = ReplayReport()
        while not stop.is_set():
            self._wake.clear()
            report = await self.replay()
            total.merge(report)
            delay = await self._until_next_try()
            report.left = len(self._known)
            changed = report.left != total.left
            total.left = report.left
            if on_pass is not None and (report.attempted or changed):
                on_pass(report)
            if report.stopped:
                break
            await self._wait(stop, delay)
        return total

    async def _wait(self, stop: asyncio.Event, delay: float | None) -> None:
        """Until `delay` seconds passed (None: no retry is due), `stop` or `notify()`, or a
        command appears in the retry stream that was not there at the last look."""
        deadline = None if delay is None else time.monotonic() + delay
        while not stop.is_set() and not self._wake.is_set():
            timeout = self.poll_interval
            if deadline is not None:
                timeout = min(timeout, max(0.0, deadline - time.monotonic()))
            waiters = [asyncio.ensure_future(self._wake.wait()), asyncio.ensure_future(stop.wait())]
            try:
                await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiter in waiters:
                    waiter.cancel()
            if deadline is not None and time.monotonic() >= deadline:
                return
            if await self._queued_since_last_look():
                return

    async def _queued_since_last_look(self) -> bool:
        ids = set(await done(self.store.outbox.retry_stream_ids()))
        new = bool(ids - self._known)
        self._known = ids
        return new

    def notify(self) -> None:
        """A new action was queued: wake `run()` for another pass."""
        self._wake.set()

    async def _until_next_try(self) -> float | None:
        pending = await done(self.store.outbox.pending())
        self._known = {command.id for command in pending}
        if not pending:
            return None
        now = self.clock()
        times = [c.next_try_at or now for c in pending]
        return max(0.0, min(times) - now)

    # -- one channel ---------------------------------------------------------------------------

    @staticmethod
    def _lanes(pending: Sequence[Any]) -> list[deque[tuple[int, Any]]]:
        """Commands grouped by channel, each group in request order, with their place in it."""
        lanes: dict[str, deque[tuple[int, Any]]] = {}
        for order, command in enumerate(pending):
            key = command.cid or command.message_id or command.id
            lanes.setdefault(key, deque()).append((order, command))
        return list(lanes.values())

    async def _send_heads(self, queue: _Heads, journal: Journal, state: _Pass) -> None:
        """One slot: send the oldest head of a channel nobody is sending, until none is left.
        (A slot ends only when every channel left is on the wire, each in a slot of its own.)"""
        report = state.report
        while queue:
            lane = queue.take()
            command = queue.head(lane)
            if state.stop.is_set():
                report.waiting += 1 + queue.left(lane)
                continue
            if command.depends_on in state.rejected:
                # The store rejected it with the command it depended on.
                state.rejected.add(command.id)
                queue.give_back(lane)
                continue
            if command.next_try_at is not None and command.next_try_at > self.clock():
                report.waiting += 1 + queue.left(lane)  # the head waits: its channel with it
                continue
            if not await self._attempt(command, journal, state):
                report.waiting += queue.left(lane)
                continue
            queue.give_back(lane)

    async def _attempt(self, command: Any, journal: Journal, state: _Pass) -> bool:
        """Send one command until it has an outcome for this pass; False blocks the channel."""
        report = state.report
        refreshed = False
        attempt = command.attempts
        while True:
            attempt += 1
            journal.started(command.id)
            generation = self._token_generation
            try:
                response = await self._call(command)
            except UnusableAnswer as unusable:
                return self._unconfirmed(command, attempt, unusable.message,
                                         unusable.status, unusable.body or b"", journal, state)
            except BackendError as raised:
                error = raised
                outcome = classify(command.kind, error)
            else:
                problem = confirmation_problem(command.kind, command.request, response)
                if problem is not None:
                    return self._unconfirmed(command, attempt, problem, None, response,
                                             journal, state)
                refusal = refusal_in(command.kind, response)
                if refusal is not None:
                    # A 2xx about our message that says no (moderation blocked it): a conflict
                    # at once, the answer kept; sending it again would be refused again.
                    journal.settled(Refused(command.id, refusal, {
                        "status": None, "code": None, "message": refusal, "retry_at": None,
                        "answer": kept_answer(response)}))
                    state.rejected.add(command.id)
                    report.rejected += 1
                    return True
                journal.settled(Delivered(command.id, response))
                report.delivered += 1
                return True
            if outcome is Outcome.DELIVERED:
                journal.settled(Delivered(command.id, error.body or b""))
                report.delivered += 1
                return True
            if outcome is Outcome.REJECT:
                journal.settled(Refused(command.id, _reason(error), error.as_dict()))
                state.rejected.add(command.id)
                report.rejected += 1
                return True
            if outcome is Outcome.REFRESH_TOKEN and not refreshed and self.token_provider:
                refreshed = await self._refresh_token(generation)
                if refreshed:
                    continue  # the same attempt again, with the fresh token
            if outcome is Outcome.STOP:
                state.stop.set()
                report.stopped = _reason(error)
            journal.settled(Failed(
                command.id, error.as_dict(),
                self.backoff.next_try(attempt, self.clock(), error, self.rng),
            ))
            report.retrying += 1
            return False

    def _unconfirmed(self, command: Any, attempt: int, problem: str, http_status: int | None,
                     answer: bytes, journal: Journal, state: _Pass) -> bool:
        """A 2xx answer that does not confirm the command: not delivered. Retried with backoff
        up to `max_unconfirmed` answers in a row, then a conflict. Either way the answer is kept
        in the command's record (for `explain`), and the error has no `status`: the action may
        have reached the backend (a gateway may have mangled the answer), so nothing may treat
        it as surely unsent."""
        report = state.report
        last = command.last_error if isinstance(command.last_error, dict) else {}
        in_a_row = (last.get("unconfirmed") or 0) + 1
        error = {"status": None, "code": None, "message": f"{UNCONFIRMED}: {problem}",
                 "retry_at": None, "http_status": http_status, "unconfirmed": in_a_row,
                 "answer": kept_answer(answer)}
        if in_a_row >= self.max_unconfirmed:
            journal.settled(Refused(
                command.id, f"{UNCONFIRMED} ({in_a_row} answers in a row): {problem}", error))
            state.rejected.add(command.id)
            report.rejected += 1
            return True
        journal.settled(Failed(command.id, error,
                               self.backoff.next_try(attempt, self.clock(), None, self.rng)))
        report.retrying += 1
        return False

    async def _call(self, command: Any) -> bytes:
        method = getattr(self.backend, command.kind)
        return await method(**command.request)

    async def _refresh_token(self, generation: int) -> bool:
        """Ask the application for a fresh token once, however many lanes hit the expiry."""
        async with self._token_lock:
            if self._token_generation != generation:
                return True  # another lane refreshed it meanwhile
            assert self.token_provider is not None
            try:
                token = self.token_provider()
                if inspect.isawaitable(token):
                    token = await token
            except Exception:
                logger.warning("the token provider failed", exc_info=True)
                return False
            self.backend.set_token(str(token))
            self._token_generation += 1
            return True


def _reason(error: BackendError) -> str:
    parts = [error.message or "rejected"]
    if error.status is not None:
        parts.append(f"(HTTP {error.status}" + (f", code {error.code})" if error.code is not None else ")"))
    return " ".join(parts)
