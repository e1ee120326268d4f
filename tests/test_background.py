"""Background mode: `AsyncChatStore` over a `BackgroundWriter` (one writer thread, pooled readers).

Plain test functions running `asyncio.run(...)`; no timing assertions. Where a test needs the
writer to merge work, it holds the writer thread on a gate first, so that what follows is queued
together whatever the machine's speed.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import apsw
import msgspec
import pytest
from eventsourcing.persistence import OperationalError

from chatledger import ChatStore
from chatledger.eventstore.commands import send_command_id
from chatledger.eventstore.log import AppendedEntry, StoreError
from chatledger.eventstore.writer import BackgroundWriter, WriteLockTimeout, WriterClosed
from chatledger.projections.aio_store import AsyncChatStore, is_write_method
from chatledger.projections.store import RejectedInput
from fixtures import message_new, query_channels_response, reaction_new, sync_response

USER = "alice"


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def events(prefix: str, n: int, cid: str = "messaging:general") -> list[bytes]:
    return [message_new(cid, f"{prefix}-{i}") for i in range(n)]


def stored_ids(data_dir: Path) -> list[str]:
    with ChatStore.open(data_dir, USER, create=False) as store:
        return [e.json()["message"]["id"] for e in store.history() if e.type == "message.new"]


class Gate:
    """Holds the writer thread inside a queued call until `open()`; queue work meanwhile."""

    def __init__(self, writer: BackgroundWriter) -> None:
        self._entered = threading.Event()
        self._release = threading.Event()
        self.future = writer.call(self._hold)
        assert self._entered.wait(10), "the writer thread never ran the gate"

    def _hold(self) -> None:
        self._entered.set()
        self._release.wait(10)

    def open(self) -> None:
        self._release.set()


class FailOn:
    """A listener that aborts any append containing `marker` (inside the transaction)."""

    def __init__(self, marker: bytes) -> None:
        self.marker = marker

    def appended(self, cursor: apsw.Cursor, entries: Sequence[AppendedEntry]) -> None:
        if any(self.marker in e.entry.payload for e in entries):
            raise ValueError(f"listener refuses {self.marker!r}")


# -- ordering and batching ------------------------------------------------------------------------


def test_positions_follow_submission_order_per_caller_and_overall(tmp_path: Path) -> None:
    async def main() -> None:
        async with AsyncChatStore.open(tmp_path, USER) as store:
            submitted: list[tuple[int, asyncio.Future[Any]]] = []

            async def client(k: int) -> None:
                for burst in range(15):
                    fut = store.ingest_many(events(f"c{k}-b{burst}", 1 + (k + burst) % 5))
                    submitted.append((k, fut))  # the call queued it: this is submission order
                    await fut

            await asyncio.gather(*(client(k) for k in range(6)))
            positions = [p for _, fut in submitted for p in fut.result().positions]
            assert positions == sorted(positions) and len(set(positions)) == len(positions)
            for k in range(6):
                mine = [p for c, fut in submitted if c == k for p in fut.result().positions]
                assert mine == sorted(mine)
            history = await store.history()
            assert [e.position for e in history] == positions

    run(main())


def test_appends_queued_together_share_one_transaction(tmp_path: Path) -> None:
    async def main() -> None:
        async with AsyncChatStore.open(tmp_path, USER) as store:
            writer = store.writer
            gate = Gate(writer)
            before = writer.batches
            futures = [store.ingest_many(events(f"b{i}", 3)) for i in range(20)]
            single = store.ingest(message_new(mid="single"))
            gate.open()
            results = await asyncio.gather(*futures)
            assert writer.batches - before == 1  # 61 events, one commit
            assert [r.positions for r in results] == [
                [1 + 3 * i, 2 + 3 * i, 3 + 3 * i] for i in range(20)]
            assert await single == 61

    run(main())


def test_the_batch_bound_splits_a_backlog_into_several_transactions(tmp_path: Path) -> None:
    async def main() -> None:
        async with AsyncChatStore.open(tmp_path, USER, max_batch_events=10) as store:
            gate = Gate(store.writer)
            futures = [store.ingest_many(events(f"b{i}", 4)) for i in range(10)]
            big = store.ingest_many(events("big", 25))  # over the bound: taken alone, not split
            gate.open()
            await asyncio.gather(*futures, big)
            assert store.writer.largest_batch == 25
            assert store.writer.batches >= 5
            assert len(await store.history()) == 65

    run(main())


def test_quarantined_items_are_reported_to_their_own_caller(tmp_path: Path) -> None:
    async def main() -> None:
        async with AsyncChatStore.open(tmp_path, USER) as store:
            gate = Gate(store.writer)
            first = store.ingest_many([message_new(mid="a1"), b"{bad", message_new(mid="a2")])
            bad_single = store.ingest(b"not json at all")
            good_single = store.ingest(message_new(mid="s"))
            last = store.ingest_many([b"[1]", message_new(mid="c1")])
            gate.open()
            r1 = await first
            assert [q.index for q in r1.quarantined] == [1] and r1.stored == 2
            with pytest.raises(RejectedInput, match="JSON") as caught:
                await bad_single
            assert isinstance(await good_single, int)
            r4 = await last
            assert [q.index for q in r4.quarantined] == [0] and r4.positions[0] is None
            quarantine = await store.quarantine()
            assert [q.raw for q in quarantine] == [b"[1]", b"not json at all", b"{bad"]
            assert caught.value.quarantine_id == quarantine[1].id

    run(main())


def test_other_writes_run_on_the_writer_in_queue_order(tmp_path: Path) -> None:
    async def main() -> None:
        async with AsyncChatStore.open(tmp_path, USER) as store:
            a = store.ingest(message_new(mid="before"))
            q = store.ingest_query_channels(query_channels_response(["messaging:x"]),
                                            filter={"type": "messaging"})
            s = store.ingest_sync(sync_response([reaction_new(mid="before")]))
            b = store.ingest(message_new(mid="after"))
            r_q, r_s = await q, await s
            assert await a < r_q.positions[0] and r_q.last_position < r_s.positions[0]
            assert r_s.last_position < await b
            sources = [e.source for e in await store.history()]
            assert sources == ["websocket", "query", "query", "sync", "sync", "websocket"]

    run(main())


def test_local_actions_queued_together_share_one_transaction(tmp_path: Path) -> None:
    from chatledger.projections.actions import UnknownMessage

    async def main() -> None:
        async with AsyncChatStore.open(tmp_path, USER) as store:
            log = store.store.log
            gate = Gate(store.writer)
            joined = store.writer.call(lambda: log._local_cursor is not None, joinable=True)
            first = store.send_message("messaging:general", "one", id="m1")
            bad = store.update_message("nowhere", text="no such message")
            last = store.send_message("messaging:general", "two", id="m2")
            alone = store.writer.call(lambda: log._local_cursor is not None)
            gate.open()
            assert await asyncio.wrap_future(joined)  # inside the run's transaction
            assert not await asyncio.wrap_future(alone)  # an ordinary call runs by itself
            assert (await first, await last) == (send_command_id("m1"), send_command_id("m2"))
            with pytest.raises(UnknownMessage):
                await bad  # undone alone: the others are on file
            assert [m.id for m in await store.messages("messaging:general")] == ["m1", "m2"]
            assert len(await store.outbox.pending()) == 2

    run(main())


def test_a_batch_runs_its_actions_together_when_the_block_ends(tmp_path: Path) -> None:
    from chatledger.projections.actions import UnknownMessage

    async def main() -> None:
        async with AsyncChatStore.open(tmp_path, USER) as store:
            async with store.batch():
                sends = [store.send_message("messaging:general", f"m{i}", id=f"m{i}")
                         for i in range(3)]
                bad = store.update_message("nowhere", text="no such message")
                with pytest.raises(RuntimeError, match="after the block"):
                    await sends[0]  # nothing has run yet
                with pytest.raises(StoreError, match="cannot be part of a batch"):
                    store.ingest(message_new(mid="x"))
            assert [await s for s in sends] == [send_command_id(f"m{i}") for i in range(3)]
            with pytest.raises(UnknownMessage):
                await bad
            assert len(await store.outbox.pending()) == 3

            with pytest.raises(ValueError, match="changed my mind"):
                async with store.batch():
                    dropped = store.send_message("messaging:general", "never", id="never")
                    raise ValueError("changed my mind")
            assert dropped.cancelled()
            assert len(await store.outbox.pending()) == 3  # nothing of that block was written
            assert await store.message("never") is None

    run(main())


# -- durability and closing -----------------------------------------------------------------------


def test_everything_awaited_is_there_after_reopening(tmp_path: Path) -> None:
    async def main() -> list[str]:
        ids: list[str] = []
        async with AsyncChatStore.open(tmp_path, USER) as store:
            for i in range(30):
                batch = events(f"d{i}", 1 + i % 4)
                await store.ingest_many(batch, connection_id="conn-1")
                ids += [msgspec.json.decode(e)["message"]["id"] for e in batch]
        return ids

    awaited = run(main())
    assert stored_ids(tmp_path) == awaited


def test_close_while_busy_loses_nothing(tmp_path: Path) -> None:
    async def main() -> list[asyncio.Future[Any]]:
        store = await AsyncChatStore.open(tmp_path, USER)
        futures: list[asyncio.Future[Any]] = []
        for i in range(300):  # nothing awaited before close()
            futures.append(store.ingest_many(events(f"x{i}", 1 + i % 7)))
            futures.append(store.ingest(reaction_new(mid=f"x{i}-0")))
        await store.close()
        assert all(f.done() and f.exception() is None for f in futures)
        with pytest.raises(WriterClosed):
            store.ingest(message_new(mid="late"))
        with pytest.raises(StoreError):
            await store.history()
        return futures

    run(main())
    expected = sum(1 + i % 7 for i in range(300))
    assert len(stored_ids(tmp_path)) == expected
    with ChatStore.open(tmp_path, USER, create=False) as store:
        assert store.stats().events == expected + 300


def test_closing_gives_back_the_page_cache_before_the_connection_closes(tmp_path: Path) -> None:
    # APSW's Connection.close frees the page cache holding the GIL (a frozen event loop); close()
    # must have freed it already, with the GIL released.
    async def main() -> tuple[int, list[int]]:
        store = await AsyncChatStore.open(tmp_path, USER)
        await store.ingest_many(events("m", 3000))
        datastore = store.store.log.datastore
        cache_used = lambda: datastore.writer.status(apsw.SQLITE_DBSTATUS_CACHE_USED)[0]  # noqa: E731
        at_close: list[int] = []
        close = datastore.close

        def spying_close() -> None:
            at_close.append(cache_used())
            close()

        datastore.close = spying_close  # type: ignore[method-assign]
        before = await asyncio.to_thread(cache_used)
        await store.close()
        return before, at_close

    before, at_close = run(main())
    assert before > 1_000_000, "the test needs a well-filled cache to mean anything"
    assert len(at_close) == 1 and at_close[0] < before // 10


def test_cancelling_the_wait_does_not_withdraw_the_write(tmp_path: Path) -> None:
    async def main() -> None:
        async with AsyncChatStore.open(tmp_path, USER) as store:
            gate = Gate(store.writer)
            waiting = store.ingest_many(events("kept", 3))
            waiting.cancel()  # the caller gave up waiting; the events were already accepted
            gate.open()

    run(main())
    assert stored_ids(tmp_path) == ["kept-0", "kept-1", "kept-2"]


CHILD = """
import asyncio, sys
import msgspec
from chatledger.projections.aio_store import AsyncChatStore

def event(i):
    return msgspec.json.encode({{"type": "message.new", "cid": "messaging:k", "created_at":
        "2026-11-25T10:00:00Z", "message": {{"id": f"k{{i}}", "text": "x" * (i % 300)}}}})

async def main():
    store = await AsyncChatStore.open({data_dir!r}, {user!r})
    n = 0
    for burst in range(60):
        size = 1 + burst % 9
        await asyncio.gather(*(store.ingest_many([event(n + j)]) for j in range(size)))
        n += size
    print(n, flush=True)            # everything up to here was awaited
    for i in range(10**9):          # keep writing until killed, never closing
        await store.ingest(event(n + i))

asyncio.run(main())
"""


def test_what_was_awaited_survives_sigkill(tmp_path: Path) -> None:
    script = tmp_path / "child.py"
    script.write_text(CHILD.format(data_dir=str(tmp_path), user=USER))
    child = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        line = child.stdout.readline() if child.stdout else ""
        assert line.strip().isdigit(), f"the child wrote {line!r}"
        awaited = int(line)
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.kill()
        child.wait(10)
        if child.stdout:
            child.stdout.close()
    ids = stored_ids(tmp_path)
    assert ids[:awaited] == [f"k{i}" for i in range(awaited)]
    assert ids == [f"k{i}" for i in range(len(ids))]  # and whatever came after, in order


# -- errors ---------------------------------------------------------------------------------------


def test_an_exception_in_the_writer_reaches_exactly_its_caller(tmp_path: Path) -> None:
    async def main() -> None:
        async with AsyncChatStore.open(tmp_path, USER) as store:
            # First, so that it fails before the projections run (they are not told of a
            # rollback caused by a later listener).
            store.store.log.listeners.insert(0, FailOn(b"boom"))
            gate = Gate(store.writer)
            good1 = store.ingest_many(events("g1", 2))
            bad = store.ingest_many([message_new(mid="ok-but-with"), message_new(mid="boom")])
            good2 = store.ingest(message_new(mid="g2"))
            gate.open()
            with pytest.raises(ValueError, match="listener refuses"):
                await bad
            assert (await good1).stored == 2 and isinstance(await good2, int)
            with pytest.raises(ValueError):
                await store.ingest(message_new(mid="boom-alone"))
            failing_call = store.writer.call(lambda: 1 / 0)
            with pytest.raises(ZeroDivisionError):
                await asyncio.wrap_future(failing_call)
            assert await store.ingest(message_new(mid="after")) > 0  # still working

    run(main())
    assert stored_ids(tmp_path) == ["g1-0", "g1-1", "g2", "after"]


def test_a_second_writer_waits_for_the_lock_when_it_is_released_in_time(tmp_path: Path) -> None:
    async def main() -> None:
        async with AsyncChatStore.open(tmp_path, USER, lock_timeout=10) as store:
            other = apsw.Connection(str(store.path))
            other.execute("BEGIN IMMEDIATE")  # another writer holds the file's write lock
            pending = store.ingest(message_new(mid="waited"))
            await asyncio.sleep(0.3)
            assert not pending.done()
            other.execute("COMMIT")
            other.close()
            assert await pending > 0

    run(main())
    assert stored_ids(tmp_path) == ["waited"]


def test_a_second_writer_gets_a_clear_error_past_lock_timeout(tmp_path: Path) -> None:
    async def main() -> None:
        async with AsyncChatStore.open(tmp_path, USER, lock_timeout=0.2) as store:
            other = apsw.Connection(str(store.path))
            other.execute("BEGIN IMMEDIATE")
            gate = Gate(store.writer)
            first = store.ingest_many(events("a", 2))
            second = store.ingest(message_new(mid="b"))
            gate.open()
            for pending in (first, second):  # one merged batch: both fail, neither retried alone
                with pytest.raises(WriteLockTimeout, match="lock_timeout=0.2") as caught:
                    await pending
                assert isinstance(caught.value, OperationalError)
                assert "database is locked" in str(caught.value)
            other.execute("ROLLBACK")
            other.close()
            assert await store.ingest(message_new(mid="later")) > 0

    run(main())
    assert stored_ids(tmp_path) == ["later"]


# -- reading --------------------------------------------------------------------------------------


def test_reads_see_whole_batches_only(tmp_path: Path) -> None:
    batch = 7

    async def main() -> None:
        async with AsyncChatStore.open(tmp_path, USER) as store:
            writes = [store.ingest_many(events(f"s{i}", batch)) for i in range(120)]
            seen: list[int] = []
            while not all(w.done() for w in writes):
                history, stats = await asyncio.gather(store.history(), store.stats())
                seen += [len(history), stats.events]
            await asyncio.gather(*writes)
            seen.append(len(await store.history()))
            assert all(n % batch == 0 for n in seen), seen
            assert seen[-1] == 120 * batch

    run(main())


def test_quarantine_and_stats_through_the_async_api(tmp_path: Path) -> None:
    async def main() -> None:
        async with AsyncChatStore.open(tmp_path, USER) as store:
            with pytest.raises(RejectedInput):
                await store.ingest(b'{"type": 5}')
            [item] = await store.quarantine(limit=5)
            assert item.raw == b'{"type": 5}' and "type" in item.reason
            stats = await store.stats()
            assert stats.quarantined == 1 and stats.user_id == USER

    run(main())


def _public_methods(cls: type) -> dict[str, inspect.Signature]:
    methods = {}
    for name in dir(cls):
        attr = inspect.getattr_static(cls, name)
        if name.startswith("_") or isinstance(attr, property) or not callable(attr):
            continue
        function = attr.__func__ if isinstance(attr, (staticmethod, classmethod)) else attr
        methods[name] = inspect.signature(function)
    return methods


def test_every_chatstore_method_is_written_out_on_the_async_store() -> None:
    sync_methods = _public_methods(ChatStore)
    async_methods = _public_methods(AsyncChatStore)
    missing = sorted(set(sync_methods) - set(async_methods))
    assert not missing, f"AsyncChatStore lacks {missing}"
    for name, signature in sync_methods.items():
        if name in ("open", "open_file"):  # take the background tuning as well
            continue
        sync_params = [(p.name, p.kind) for p in signature.parameters.values()]
        async_params = [(p.name, p.kind) for p in async_methods[name].parameters.values()]
        assert async_params == sync_params, name


def test_each_async_method_promises_what_its_chatstore_method_returns() -> None:
    """The annotations are written out too: `AsyncChatStore.members` is a future of what
    `ChatStore.members` returns (the typed result structs), for every method that returns a
    future."""
    sync_methods = _public_methods(ChatStore)
    futures = {name: signature.return_annotation
               for name, signature in _public_methods(AsyncChatStore).items()
               if str(signature.return_annotation).startswith("asyncio.Future[")}
    assert "members" in futures and "stats" in futures and "channel" in futures
    for name, promised in futures.items():
        assert promised == f"asyncio.Future[{sync_methods[name].return_annotation}]", name


def test_each_method_runs_where_its_kind_belongs(tmp_path: Path) -> None:
    assert is_write_method("send_note") and is_write_method("ingest_many")
    assert not is_write_method("thread_of_count") and not is_write_method("pinned_messages")

    async def main() -> None:
        chat = ChatStore.open(tmp_path, USER)
        threads: dict[str, str] = {}

        def spy(name: str) -> Any:
            def record(*args: Any, **kwargs: Any) -> None:
                threads[name] = threading.current_thread().name
            return record

        for name in ("last_sync_at", "rebuild", "mark_read"):
            setattr(chat, name, spy(name))
        async with AsyncChatStore.wrap(chat) as store:
            await store.last_sync_at()
            await store.rebuild()
            await store.mark_read("messaging:general")
            assert store.user_id == USER and store.path == chat.path
            with pytest.raises(AttributeError):
                store._private  # noqa: B018
            with pytest.raises(AttributeError):
                store.no_such_method  # type: ignore[attr-defined]  # noqa: B018
        assert threads["last_sync_at"].startswith("chatledger-read")
        assert threads["rebuild"] == threads["mark_read"] == "chatledger-writer"

    run(main())


def test_an_in_memory_store_works_in_background_mode() -> None:
    async def main() -> None:
        async with AsyncChatStore.open_file(":memory:") as store:
            await asyncio.gather(*(store.ingest(m) for m in events("mem", 50)))
            assert len(await store.history(limit=100)) == 50
            assert store.path is None

    run(main())


# -- several processes ----------------------------------------------------------------------------

READER = """
import sys, time
from chatledger import ChatStore
errors, reads = [], 0
deadline = time.monotonic() + 60
while time.monotonic() < deadline and reads < 40:
    try:
        with ChatStore.open({data_dir!r}, {user!r}, create=False) as store:
            store.stats()
            for _ in range(5):
                store.history(newest_first=True, limit=20)
                reads += 1
    except Exception as e:
        errors.append(f"{{type(e).__name__}}: {{e}}")
print(reads, len(errors), errors[:3], flush=True)
"""


def test_another_process_reads_while_the_writer_runs(tmp_path: Path) -> None:
    script = tmp_path / "reader.py"
    script.write_text(READER.format(data_dir=str(tmp_path), user=USER))

    async def main() -> str:
        async with AsyncChatStore.open(tmp_path, USER) as store:
            await store.ingest(message_new(mid="first"))
            reader = await asyncio.create_subprocess_exec(
                sys.executable, str(script), stdout=asyncio.subprocess.PIPE)
            communicate = asyncio.ensure_future(reader.communicate())
            i = 0
            while not communicate.done():  # write continuously until the reader is done
                await asyncio.gather(*(store.ingest_many(events(f"w{i}-{j}", 20))
                                       for j in range(4)))
                await asyncio.sleep(0.002)  # busy, but not a file that grows by 100 MB
                i += 1
            out, _ = await communicate
            return out.decode()

    reads, failures, errors = run(main()).split(" ", 2)
    assert int(failures) == 0, errors
    assert int(reads) >= 40


def test_the_gil_courtesy_chains_an_existing_tracer_and_can_be_removed() -> None:
    from chatledger.eventstore.writer import GilCourtesy

    connection = apsw.Connection(":memory:")
    seen: list[str] = []

    def tracer(cursor: apsw.Cursor, sql: str, bindings: Any) -> bool:
        seen.append(sql)
        return True

    connection.exec_trace = tracer
    courtesy = GilCourtesy(every=0.0, pause=0.0)  # due at every statement
    courtesy.install(connection)
    connection.execute("CREATE TABLE t (x)")
    connection.cursor().executemany("INSERT INTO t VALUES (?)", [(1,), (2,)])
    assert courtesy.pauses == 3 and len(seen) == 3
    courtesy.uninstall(connection)
    assert connection.exec_trace is tracer
    off = GilCourtesy(every=None, pause=0.0)
    off.install(connection)
    assert connection.exec_trace is tracer


def _blocked_thread(block: Any) -> tuple[threading.Thread, int]:
    """A thread running `block()`, and its native id once it has started."""
    started: list[int] = []
    ready = threading.Event()

    def body() -> None:
        started.append(threading.get_native_id())
        ready.set()
        block()

    thread = threading.Thread(target=body, daemon=True)
    thread.start()
    assert ready.wait(10)
    return thread, started[0]


def _wait_until_seen(courtesy: Any, wanted: bool | None) -> None:
    """Until the kernel shows the watched thread blocked as expected (it starts running)."""
    from chatledger.eventstore.writer import _ThreadView

    assert courtesy.watching is not None
    view = _ThreadView.open(courtesy.watching)
    assert view is not None
    try:
        for _ in range(10_000):
            if view.wants_gil() is wanted:
                return
            threading.Event().wait(0.001)
        raise AssertionError(f"the thread never looked {wanted}")
    finally:
        view.close()


linux_threads = pytest.mark.skipif(
    not os.path.exists(f"/proc/self/task/{threading.get_native_id()}/wchan"),
    reason="the writer sees the event loop's thread through Linux's /proc only")


@linux_threads
def test_the_writer_does_not_pause_while_the_event_loop_waits_for_io() -> None:
    import select

    from chatledger.eventstore.writer import GilCourtesy

    poller, (r, w) = select.epoll(), os.pipe()
    poller.register(r, select.EPOLLIN)
    thread, native_id = _blocked_thread(lambda: poller.poll(30))
    courtesy = GilCourtesy(every=0.0, pause=0.0)
    courtesy.watch(native_id)
    try:
        _wait_until_seen(courtesy, False)
        for _ in range(5):
            courtesy.maybe_pause()
        assert courtesy.pauses == 0  # an idle loop does not need the GIL: no pause
    finally:
        os.write(w, b"x")
        thread.join(10)
        courtesy.close()
        poller.close()
        os.close(r)
        os.close(w)


@linux_threads
def test_the_writer_hands_the_gil_to_an_event_loop_blocked_on_a_lock_then_gives_up() -> None:
    from chatledger.eventstore.writer import GilCourtesy

    lock = threading.Lock()
    lock.acquire()
    thread, native_id = _blocked_thread(lambda: lock.acquire(timeout=30))
    courtesy = GilCourtesy(every=0.0, pause=0.0, bound=0.01)
    courtesy.watch(native_id)
    try:
        _wait_until_seen(courtesy, True)
        courtesy.maybe_pause()  # waits for the lock's holder in vain, for `bound` at most
        courtesy.maybe_pause()  # then pauses blindly for a while
        assert courtesy.pauses == 2
    finally:
        lock.release()
        thread.join(10)
        courtesy.close()


def test_the_writer_pauses_blindly_for_a_thread_it_cannot_see() -> None:
    from chatledger.eventstore.writer import GilCourtesy

    courtesy = GilCourtesy(every=0.0, pause=0.0)
    courtesy.maybe_pause()  # nobody watched
    courtesy.watch(2**31 - 1)  # no such thread
    courtesy.maybe_pause()
    courtesy.maybe_pause()
    assert courtesy.pauses == 3


def test_the_writer_watches_the_thread_that_submits_work(tmp_path: Path) -> None:
    store = ChatStore.open(tmp_path, USER)
    writer = BackgroundWriter(store.log)
    try:
        submitted: list[int] = []

        def submit() -> None:
            submitted.append(threading.get_native_id())
            writer.append_events(events("w", 1)).result(10)

        thread = threading.Thread(target=submit)
        thread.start()
        thread.join(10)
        assert writer.courtesy.watching == submitted[0]
    finally:
        writer.close()
        store.close()
