"""Helpers shared by the reliability suites (crash, faults, fuzzing, hostile input)."""

from __future__ import annotations

import os
from typing import Any

LONG = os.environ.get("CHATLEDGER_TEST_LONG") == "1"


def scaled(short: int, long: int) -> int:
    """`short` in CI mode, `long` with `pytest --long`."""
    return long if LONG else short


def no_rate_limits() -> dict[str, Any]:
    from chatledger.sync.devserver.ratelimit import DEFAULT_LIMITS

    return {name: None for name in DEFAULT_LIMITS}


def integrity(path: Any) -> str:
    """`PRAGMA integrity_check` of a database file, through a separate connection (which
    recovers a WAL left by a killed process, as any opener would)."""
    import apsw

    db = apsw.Connection(str(path))
    try:
        return "\n".join(str(row[0]) for row in db.execute("PRAGMA integrity_check"))
    finally:
        db.close()


def run_async(coro: Any, timeout: float) -> Any:
    """`asyncio.run(coro)`, but a hang fails the test (with every task's stack) instead of
    blocking the suite."""
    import asyncio
    import io

    async def guarded() -> Any:
        task = asyncio.ensure_future(coro)
        done, _ = await asyncio.wait([task], timeout=timeout)
        if done:
            return task.result()
        out = io.StringIO()
        for other in asyncio.all_tasks():
            if other is not asyncio.current_task():
                other.print_stack(limit=15, file=out)
        task.cancel()
        try:
            await asyncio.wait_for(task, 10)
        except BaseException:
            pass
        raise AssertionError(f"no progress in {timeout} s; tasks:\n{out.getvalue()}")

    return asyncio.run(guarded())


def fast_backoff() -> Any:
    """Retries in hundredths of a second, for tests."""
    from chatledger.sync.outcomes import Backoff

    return Backoff(base=0.01, cap=0.05)


def connected(directory: Any, *, background: bool = False, timeout: float = 2.0,
              health_interval: float = 0.2, dead_after: float = 1.5,
              **server_options: Any) -> Any:
    """`async with connected(dir) as (server, store, client)`: a development server with the
    demo seed, Alice's store in `directory` (an AsyncChatStore when `background`), and a sync
    client over the Stream adapter with fast retries; all closed on the way out."""
    import contextlib

    from chatledger import AsyncChatStore, ChatStore
    from chatledger.sync.client import SyncClient
    from chatledger.sync.devserver import DevServer
    from chatledger.sync.stream import StreamBackend

    @contextlib.asynccontextmanager
    async def opened() -> Any:
        async with DevServer(seed="demo", health_interval=health_interval,
                             **server_options) as server:
            store = (await AsyncChatStore.open(directory, "alice") if background
                     else ChatStore.open(directory, "alice"))
            backend = StreamBackend(server.url, server.api_key, server.make_token("alice"),
                                    "alice", timeout=timeout, health_interval=health_interval,
                                    dead_after=dead_after)
            client = SyncClient(store, backend, backoff=fast_backoff(),
                                reconnect_backoff=fast_backoff())
            try:
                yield server, store, client
            finally:
                await backend.close()
                if background:
                    await store.close()
                else:
                    store.close()

    return opened()
