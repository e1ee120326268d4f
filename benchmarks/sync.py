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

`--sql-profile` adds a second, separate run (a fresh server and store, the same actions) with
SQLite's time per statement recorded during the replay (`benchmarks.sqlprofile`; the hooks cost
Python time, so the main figures come from the first run, untouched): `sql_us_per_command` and
`sql_floor_store_share`, the store's share if its Python cost nothing.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import click

from benchmarks.common import emit_json, environment, fmt_rate, gc_paused, progress, scratch_dir
from benchmarks.outbox import queue_actions

if TYPE_CHECKING:
    from benchmarks.sqlprofile import SqlProfile

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
                   wal_pages: list[int], checkpoint_s: list[float] | None = None
                   ) -> tuple[float, Any, float, float]:
    """Replay everything; returns (wall seconds, report, store seconds, loop-blocked seconds).

    The store's time is the time spent executing store work: on the event loop for a
    `ChatStore` (the replayer's own count: its read of the retry stream and the batches it
    recorded), on the writer thread and read pool for an `AsyncChatStore` (its writer's busy
    time, plus the reads). The loop-blocked time is how long store calls held the event loop.
    Both include checkpointing the pages the replay wrote (see the module doc); that
    checkpoint's own seconds go into `checkpoint_s[0]` when given (it is no SQL statement, so
    an SQL profile cannot see it).
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
        if checkpoint_s is not None:
            checkpoint_s[0] = checkpoint
        wall += checkpoint
        if background:
            return wall, report, busy + read + checkpoint, 0.0
        store_seconds = report.store_seconds + read + checkpoint
        return wall, report, store_seconds, report.store_seconds + checkpoint

    return asyncio.run(main())


@dataclass
class Run:
    """One queue-and-replay against a fresh server and store."""

    commands: int
    report: Any
    left: int
    wall: float
    store_seconds: float
    blocked: float
    wal_pages: int


def run_once(actions: int, concurrency: int, seed: int, background: bool,
             directory: str | None, profile: SqlProfile | None = None) -> Run:
    """Start a development server, queue `actions` offline into a new store, replay them. With
    `profile`, SQLite's time is recorded on the store's connections during the replay (the
    final checkpoint, made through the C API, is added to it as timed here)."""
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
                         + (" (background mode)" if background else "")
                         + (" with an SQL profile" if profile is not None else ""))
                with gc_paused():
                    wal_pages = [0]
                    checkpoint_s = [0.0]
                    with profile.recording() if profile is not None else nullcontext():
                        wall, report, store_seconds, blocked = replay_against(
                            url, store, concurrency, background, wal_pages, checkpoint_s)
                    if profile is not None:
                        profile.add_checkpoint(checkpoint_s[0])
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
    return Run(commands, report, left, wall, store_seconds, blocked, wal_pages[0])


def sql_profile_figures(actions: int, concurrency: int, seed: int, background: bool,
                        directory: str | None) -> dict[str, Any]:
    """The second run, recorded: the sql_* keys. The floor takes the store's Python out of the
    recorded run's own wall time: SQLite time / (wall - store time + SQLite time)."""
    from benchmarks.sqlprofile import SqlProfile

    profile = SqlProfile()
    run = run_once(actions, concurrency, seed, background, directory, profile)
    figures = profile.figures(run.commands, "command")
    sql_s = figures["sql_s"]
    rest = run.wall - run.store_seconds  # HTTP, the server, the replayer's own Python
    return {
        **figures,
        "profiled_seconds": round(run.wall, 3),
        "profiled_store_seconds": round(run.store_seconds, 3),
        "profiled_commands": run.commands,
        "sql_share_of_store": round(sql_s / run.store_seconds, 4) if run.store_seconds else None,
        "sql_floor_store_share": round(sql_s / (rest + sql_s), 4) if rest + sql_s > 0 else None,
    }


@click.command()
@click.option("--actions", type=click.IntRange(min=100), default=5_000, show_default=True)
@click.option("--concurrency", type=click.IntRange(min=1), default=8, show_default=True,
              help="Channels replayed at once.")
@click.option("--seed", type=int, default=7, show_default=True)
@click.option("--background/--foreground", default=False, show_default=True,
              help="Replay through an AsyncChatStore (writer thread) or a ChatStore (on the loop).")
@click.option("--dir", "directory", type=click.Path(file_okay=False), default=None,
              help="Where the scratch files go (default: the system temp dir).")
@click.option("--sql-profile", is_flag=True,
              help="Then a second run with SQLite's per-statement times recorded during the "
                   "replay: the sql_* keys (the store's share if its Python cost nothing).")
def command(actions: int, concurrency: int, seed: int, background: bool,
            directory: str | None, sql_profile: bool) -> None:
    """Replay queued actions against the development server on loopback."""
    run = run_once(actions, concurrency, seed, background, directory)
    commands, report, left, wall = run.commands, run.report, run.left, run.wall
    store_seconds, blocked = run.store_seconds, run.blocked
    sql = (sql_profile_figures(actions, concurrency, seed, background, directory)
           if sql_profile else {})
    if sql:
        # The same floor on this run's time outside the store: HTTP and the server vary from
        # run to run by about as much as the floor's distance to the target.
        rest = run.wall - run.store_seconds
        sql["sql_floor_store_share_main_run"] = round(sql["sql_s"] / (rest + sql["sql_s"]), 4)

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
        "wal_pages_per_command": round(run.wal_pages / commands, 2) if commands else None,
        "loop_blocked_share": round(blocked / wall, 4) if wall else None,
        "mode": "background" if background else "foreground",
        "target_store_share": 0.10,
        **sql,
        "environment": environment(),
    }
    click.echo(f"replayed {commands:,} commands against the development server in {wall:.2f} s "
               f"({fmt_rate(result['commands_per_s'])} commands/s): {report.delivered:,} "
               f"delivered, {report.rejected:,} rejected, {left:,} left")
    click.echo(f"  in the store: {store_seconds:.3f} s = {share:.1%} of the wall time "
               f"({result['store_us_per_command']} µs per command; target <= 10 %)")
    click.echo(f"  event loop blocked by the store: {blocked:.3f} s "
               f"({result['loop_blocked_share']:.1%}); mode: {result['mode']}")
    if sql:
        _print_sql(sql)
    emit_json(result)


def _print_sql(sql: dict[str, Any]) -> None:
    from benchmarks.sqlprofile import print_figures

    print_figures(sql, sql["profiled_commands"], "command", sql["profiled_seconds"])
    click.echo(f"  SQL profile run: {sql['profiled_seconds']:.2f} s, store "
               f"{sql['profiled_store_seconds']:.3f} s, of it SQLite {sql['sql_s']:.3f} s "
               f"({sql['sql_us_per_command']} µs per command): with the store's Python free its "
               f"share would be {sql['sql_floor_store_share']:.1%} (target <= 10 %)")
