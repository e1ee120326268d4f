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
