"""`python -m benchmarks sync`: replaying queued actions against the development server.

`--actions` actions (default 5,000; the same mix as `outbox`) are queued offline, then replayed
over HTTP on loopback against `chatledger devserver`'s server, which runs in a child process (so
that its work does not share this process's interpreter lock) with its rate limits off. The
figure that matters is the share of the replay's wall time spent in the store (reading the retry
stream and recording each attempt and outcome) rather than in HTTP and the server: at most 10 %.

What the store's time includes: the replayer's read of the retry stream, every batch of outcomes
it records (the log rows, the read tables, the commits), a read of the retry stream after the
replay (what the next pass reads), and the checkpoint that moves the pages the replay wrote from
the WAL into the database file: SQLite does that once the WAL is long enough, and a replay
causes it for its own pages. The queueing's pages are checkpointed before the clock starts:
otherwise the automatic checkpoint of the 5,000 queueing transactions' pages lands inside the
replay (or not, by the WAL's length) and is charged to it. The final checkpoint is added to the
wall time too.

Last stdout line: `store_share`, `commands`, `commands_per_s`, `store_us_per_command`.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from typing import Any

import click

from benchmarks.common import emit_json, environment, fmt_rate, gc_paused, progress, scratch_dir
from benchmarks.outbox import queue_actions

CHANNELS = 50


def serve(channels: int = CHANNELS) -> None:
    """Run a development server for the benchmark until stdin closes; print its URL first."""
    from chatledger.sync.devserver import DevServer
    from chatledger.sync.devserver.ratelimit import DEFAULT_LIMITS

    async def main() -> None:
        seed = {"users": ["alice", "bob"],
                "channels": [{"type": "messaging", "id": f"bench-{i}", "members": ["alice", "bob"]}
                             for i in range(channels)]}
        server = DevServer(seed=seed, rate_limits={name: None for name in DEFAULT_LIMITS})
        await server.start()
        print(server.url, flush=True)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, sys.stdin.read)  # the parent closes stdin to stop us
        await server.stop()

    asyncio.run(main())


def _wal_pages(store: Any) -> int:
    """Pages in the WAL: since the checkpoint before the replay, the pages the replay wrote."""
    wal = f"{store.path}-wal"
    with store.log.datastore.transaction(commit=False) as c:
        page = c.execute("PRAGMA page_size").fetchone()[0]
    return os.path.getsize(wal) // (page + 24) if os.path.exists(wal) else 0


def replay_against(url: str, store: Any, concurrency: int, background: bool,
                   wal_pages: list[int]) -> tuple[float, Any, float, float]:
    """Replay everything; returns (wall seconds, report, store seconds, loop-blocked seconds).

    The store's time is the time spent executing store work: on the event loop for a
    `ChatStore` (the replayer's own count: its read of the retry stream and the batches it
    recorded), on the writer thread and read pool for an `AsyncChatStore` (its writer's busy
    time, plus the reads). The loop-blocked time is how long store calls held the event loop.
    Both include checkpointing the pages the replay wrote (see the module doc).
    """
    from chatledger import AsyncChatStore
    from chatledger.sync.devserver import make_token
    from chatledger.sync.replayer import Replayer
    from chatledger.sync.stream import StreamBackend

    async def main() -> tuple[float, Any, float, float]:
        target = AsyncChatStore.wrap(store) if background else store
        async with StreamBackend(url, "devkey", make_token("alice"), "alice") as backend:
            replayer = Replayer(target, backend, concurrency=concurrency)
            t0 = time.perf_counter()
            report = await replayer.replay()
            wall = time.perf_counter() - t0
        t1 = time.perf_counter()
        store.outbox.pending()  # what a next pass reads: part of the store's cost
        read = time.perf_counter() - t1
        if background:
            busy = target.writer.busy_seconds
            target.writer.close()  # the ChatStore stays open for the caller
        wal_pages[0] = _wal_pages(store)
        t2 = time.perf_counter()
        store.log.datastore.checkpoint()  # the replay's own pages into the database file
        checkpoint = time.perf_counter() - t2
        wall += checkpoint
        if background:
            return wall, report, busy + read + checkpoint, 0.0
        store_seconds = report.store_seconds + read + checkpoint
        return wall, report, store_seconds, report.store_seconds + checkpoint

    return asyncio.run(main())


@click.command()
@click.option("--actions", type=click.IntRange(min=100), default=5_000, show_default=True)
@click.option("--concurrency", type=click.IntRange(min=1), default=8, show_default=True,
              help="Channels replayed at once.")
@click.option("--seed", type=int, default=7, show_default=True)
@click.option("--background/--foreground", default=False, show_default=True,
              help="Replay through an AsyncChatStore (writer thread) or a ChatStore (on the loop).")
@click.option("--dir", "directory", type=click.Path(file_okay=False), default=None,
              help="Where the scratch files go (default: the system temp dir).")
def command(actions: int, concurrency: int, seed: int, background: bool,
            directory: str | None) -> None:
    """Replay queued actions against the development server on loopback."""
    from chatledger import ChatStore

    server = subprocess.Popen(
        [sys.executable, "-c", "from benchmarks.sync import serve; serve()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    )
    try:
        assert server.stdout is not None
        url = server.stdout.readline().strip()
        if not url.startswith("http://127.0.0.1:"):
            raise click.ClickException(f"the development server did not start (said {url!r})")
        progress(f"development server at {url}")
        with scratch_dir(directory) as scratch:
            store = ChatStore.open(scratch, "alice")
            try:
                progress(f"queueing {actions:,} actions offline")
                queue_actions(store, actions, CHANNELS, seed)
                commands = len(store.outbox.pending())
                # The queueing's pages are its own cost, not the replay's (see the module doc).
                store.log.datastore.checkpoint()
                progress(f"replaying {commands:,} commands over HTTP"
                         + (" (background mode)" if background else ""))
                with gc_paused():
                    wal_pages = [0]
                    wall, report, store_seconds, blocked = replay_against(
                        url, store, concurrency, background, wal_pages)
                left = len(store.outbox.pending())
            finally:
                store.close()
    finally:
        if server.stdin:
            server.stdin.close()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()

    share = store_seconds / wall if wall else 0.0
    result = {
        "benchmark": "sync",
        "actions": actions,
        "commands": commands,
        "delivered": report.delivered,
        "rejected": report.rejected,
        "left_pending": left,
        "seconds": round(wall, 3),
        "commands_per_s": round(commands / wall) if wall else None,
        "store_seconds": round(store_seconds, 3),
        "store_us_per_command": round(store_seconds / commands * 1e6, 1) if commands else None,
        "store_share": round(share, 4),
        "wal_pages_per_command": round(wal_pages[0] / commands, 2) if commands else None,
        "loop_blocked_share": round(blocked / wall, 4) if wall else None,
        "mode": "background" if background else "foreground",
        "target_store_share": 0.10,
        "environment": environment(),
    }
    click.echo(f"replayed {commands:,} commands against the development server in {wall:.2f} s "
               f"({fmt_rate(result['commands_per_s'])} commands/s): {report.delivered:,} "
               f"delivered, {report.rejected:,} rejected, {left:,} left")
    click.echo(f"  in the store: {store_seconds:.3f} s = {share:.1%} of the wall time "
               f"({result['store_us_per_command']} µs per command; target <= 10 %)")
    click.echo(f"  event loop blocked by the store: {blocked:.3f} s "
               f"({result['loop_blocked_share']:.1%}); mode: {result['mode']}")
    emit_json(result)
