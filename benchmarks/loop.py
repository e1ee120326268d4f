"""`python -m benchmarks loop`: does background mode keep the asyncio event loop responsive?

Generated events (made before any clock starts) are ingested through `AsyncChatStore` the way a
chat client receives them: bursts of 1 to `--max-burst` events, each burst one `ingest_many` that
the receiving task awaits before it takes its next burst, with `--producers` such tasks at once
(several connections, or a WebSocket reader beside a sync and a query). Meanwhile a monitor task
sleeps 1 ms at a time and records how late it wakes up: a stall is the time the loop could not run
a callback that was due. The same monitor runs for a second with the store idle first, so the
figures can be told apart from the loop's own timer granularity; and then (`--process-baseline`)
while the same ingest runs in another process, sharing no GIL with this one: what the machine's
scheduler alone does to a loop beside that much work, the best any design of the store could do.

Last stdout line: `events`, `events_per_s`, `max_stall_ms`, `p99_stall_ms`, `mean_stall_ms`,
where the longest stall fell (`max_stall_at_s`, and the longest while ingesting and while
closing), the idle baseline, the process baseline (`process_baseline_max_stall_ms`, ...), how
the writer batched (`transactions`, `mean_batch`,
`largest_batch`), and how busy the machine was (`cores_busy_other`).
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import random
import resource
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from benchmarks.common import emit_json, environment, fmt_rate, progress, scratch_dir
from benchmarks.workload import generate_events

TICK_S = 0.001


class StallMonitor:
    """Sleeps `TICK_S` in a loop and records each oversleep, in seconds, and when it woke."""

    def __init__(self) -> None:
        self.stalls: list[float] = []
        self.woke: list[float] = []  # perf_counter() at the end of each stall: to tell phases apart
        self._stop = asyncio.Event()

    async def run(self) -> None:
        clock = time.perf_counter
        stalls, woke = self.stalls, self.woke
        while not self._stop.is_set():
            t0 = clock()
            await asyncio.sleep(TICK_S)
            t1 = clock()
            stalls.append(max(0.0, t1 - t0 - TICK_S))
            woke.append(t1)

    def longest_between(self, start: float, end: float) -> float | None:
        """The longest stall that ended within [start, end), in ms."""
        inside = [s for s, t in zip(self.stalls, self.woke) if start <= t < end]
        return round(max(inside) * 1e3, 3) if inside else None

    def stop(self) -> None:
        self._stop.set()


class CpuMeter:
    """Cores kept busy during a run: by this process, and by everything else on the machine.

    Stalls depend on the scheduler as much as on this process: with other work on the cores, a
    woken event loop may wait for a CPU. The figure says how quiet the machine was (Linux only).
    """

    def __init__(self) -> None:
        self._start = (time.perf_counter(), _own_cpu_s(), _machine_busy_s())

    def stop(self) -> dict[str, float | None]:
        wall0, own0, machine0 = self._start
        wall = time.perf_counter() - wall0
        own = (_own_cpu_s() - own0) / wall
        machine1 = _machine_busy_s()
        if machine0 is None or machine1 is None:
            return {"cores_busy_self": round(own, 2), "cores_busy_other": None}
        other = (machine1 - machine0) / wall - own
        return {"cores_busy_self": round(own, 2), "cores_busy_other": round(max(0.0, other), 2)}


def _own_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _machine_busy_s() -> float | None:
    """CPU seconds all cores spent busy since boot (/proc/stat), or None elsewhere."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def summarize(stalls: Sequence[float]) -> dict[str, float | None]:
    if not stalls:
        return {"max": None, "p99": None, "mean": None}
    ordered = sorted(stalls)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return {
        "max": round(ordered[-1] * 1e3, 3),
        "p99": round(p99 * 1e3, 3),
        "mean": round(statistics.fmean(ordered) * 1e3, 3),
    }


def child_main(argv: list[str]) -> None:
    """In a fresh process: the ingest of `command`, made from the same seed (directory, events,
    seed, max burst, producers). Prints "go" once its events are made, then one JSON object."""
    directory, events, seed, max_burst, producers = argv[0], *map(int, argv[1:5])
    chunks = bursts(list(generate_events(events, seed=seed)), max_burst, seed)
    gc.collect()
    gc.freeze()
    print("go", flush=True)
    run = asyncio.run(run_ingest(directory, chunks, producers, {}))
    print(json.dumps({"stored": run["stored"], "ingest_s": run["ingest_s"],
                      "close_s": run["close_s"]}), flush=True)


async def stalls_beside_process(directory: Path, argv: Sequence[str]) -> tuple[list[float], dict[str, Any]]:
    """This loop's stalls, idle but for the monitor, while `child_main(argv)` ingests in another
    process: counted from the child's "go" (its events made) to its exit."""
    monitor = StallMonitor()
    task = asyncio.create_task(monitor.run())
    root = Path(__file__).resolve().parent.parent  # where the `benchmarks` folder lives
    code = "import sys; from benchmarks.loop import child_main; child_main(sys.argv[1:])"
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, str(directory), *argv, cwd=root,
        stdout=asyncio.subprocess.PIPE)
    assert child.stdout is not None
    try:
        if (await child.stdout.readline()).strip() != b"go":
            raise RuntimeError("the baseline's child process failed before ingesting")
        monitor.stalls.clear()
        monitor.woke.clear()
        out = await child.stdout.read()
        if await child.wait() != 0:
            raise RuntimeError(f"the baseline's child process exited with {child.returncode}")
    finally:
        if child.returncode is None:
            child.kill()
            await child.wait()
        monitor.stop()
        await task
    return monitor.stalls, json.loads(out.decode().strip().splitlines()[-1])


def bursts(events: list[bytes], max_burst: int, seed: int) -> list[list[bytes]]:
    """The events cut into consecutive bursts of 1 to `max_burst` (as they would arrive)."""
    rng = random.Random(seed)
    out: list[list[bytes]] = []
    i = 0
    while i < len(events):
        n = rng.randint(1, max_burst)
        out.append(events[i : i + n])
        i += n
    return out


async def idle_baseline(seconds: float) -> list[float]:
    monitor = StallMonitor()
    task = asyncio.create_task(monitor.run())
    await asyncio.sleep(seconds)
    monitor.stop()
    await task
    return monitor.stalls


async def run_ingest(
    directory: Any, chunks: list[list[bytes]], producers: int, tuning: dict[str, Any]
) -> dict[str, Any]:
    from chatledger.projections.aio_store import AsyncChatStore

    store = await AsyncChatStore.open(directory, "bench", **tuning)
    monitor = StallMonitor()
    monitor_task = asyncio.create_task(monitor.run())
    await asyncio.sleep(0.05)  # the monitor is ticking before the first event

    async def producer(mine: list[list[bytes]]) -> int:
        stored = 0
        for chunk in mine:
            result = await store.ingest_many(chunk, source="websocket", connection_id="conn-1")
            stored += result.stored
        return stored

    # Producer k takes bursts k, k+n, k+2n, ...: all of them are busy until the end.
    t0 = time.perf_counter()
    counts = await asyncio.gather(*(producer(chunks[k::producers]) for k in range(producers)))
    ingest_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    await store.close()
    close_s = time.perf_counter() - t1
    monitor.stop()
    await monitor_task
    writer = store.writer
    longest = max(range(len(monitor.stalls)), key=monitor.stalls.__getitem__, default=None)
    return {
        # Where the longest stall fell (seconds after the first ingest), and the longest stall of
        # each phase: closing (checkpoint, closing the file) stalls for its own reasons.
        "max_stall_at_s": None if longest is None else round(monitor.woke[longest] - t0, 2),
        "ingest_max_stall_ms": monitor.longest_between(float("-inf"), t1),  # all before close()
        "close_max_stall_ms": monitor.longest_between(t1, float("inf")),
        "stored": sum(counts),
        "ingest_s": ingest_s,
        "close_s": close_s,
        "stalls": monitor.stalls,
        "transactions": writer.batches,
        "largest_batch": writer.largest_batch,
        "batched_events": writer.batched_events,
        "gil_pauses": writer.courtesy.pauses,
        "yield_every_ms": None if writer.courtesy.every is None else writer.courtesy.every * 1e3,
    }


@click.command(name="loop")
@click.option("--events", default=100_000, show_default=True, help="Events to ingest.")
@click.option("--max-burst", default=50, show_default=True, help="Largest burst (one ingest_many).")
@click.option("--producers", default=8, show_default=True, help="Tasks receiving bursts at once.")
@click.option("--seed", default=1, show_default=True)
@click.option("--max-batch-events", default=None, type=int, help="Writer bound per transaction.")
@click.option("--yield-every", default=None, type=float,
              help="Writer works this many ms between GIL pauses (0: never; default: the store's).")
@click.option("--switch-interval", default=None, type=float,
              help="sys.setswitchinterval for the run, in ms (default: leave it at Python's 5 ms).")
@click.option("--idle-seconds", default=1.0, show_default=True, help="Idle baseline duration.")
@click.option("--process-baseline/--no-process-baseline", default=True, show_default=True,
              help="Also measure this loop, idle, while the same ingest runs in another process.")
@click.option("--dir", "directory", default=None, help="Where to put the scratch database.")
@click.option("--keep", is_flag=True, help="Keep the scratch database.")
def command(
    events: int, max_burst: int, producers: int, seed: int, max_batch_events: int | None,
    yield_every: float | None, switch_interval: float | None, idle_seconds: float,
    process_baseline: bool, directory: str | None, keep: bool,
) -> None:
    """Event-loop stalls while events are ingested in background mode (AsyncChatStore)."""
    if switch_interval is not None:
        sys.setswitchinterval(switch_interval / 1e3)
    progress(f"generating {events:,} events ...")
    payloads = list(generate_events(events, seed=seed))
    chunks = bursts(payloads, max_burst, seed)
    # The generated events stand for data a client would not hold: 140 MB of them made each full
    # collection of the garbage collector walk them (20 ms, measured), whichever thread ran it.
    # Freezing them is what an application does with its own start-up heap (docs/background.md).
    gc.collect()
    gc.freeze()
    tuning: dict[str, Any] = {}
    if max_batch_events is not None:
        tuning["max_batch_events"] = max_batch_events
    if yield_every is not None:
        tuning["yield_every"] = yield_every / 1e3 if yield_every > 0 else None

    progress(f"idle baseline ({idle_seconds:g} s) ...")
    idle = summarize(asyncio.run(idle_baseline(idle_seconds)))
    progress(f"ingesting {len(chunks):,} bursts with {producers} producers ...")
    with scratch_dir(directory, keep) as scratch:
        meter = CpuMeter()
        run = asyncio.run(run_ingest(scratch / "store", chunks, producers, tuning))
        cpu = meter.stop()
        beside: dict[str, Any] = {"max": None, "p99": None, "mean": None}
        beside_run: dict[str, Any] = {}
        if process_baseline:
            progress("process baseline: the same ingest in another process ...")
            beside_stalls, beside_run = asyncio.run(stalls_beside_process(
                scratch / "baseline", [str(events), str(seed), str(max_burst), str(producers)]))
            beside = summarize(beside_stalls)
        if keep:
            progress(f"kept {scratch}")
    stalls = summarize(run["stalls"])
    total_s = run["ingest_s"] + run["close_s"]
    rate = run["stored"] / total_s if total_s else None
    mean_batch = run["batched_events"] / run["transactions"] if run["transactions"] else None

    print(f"events            {run['stored']:,} in {len(chunks):,} bursts of 1-{max_burst}, "
          f"{producers} producers")
    print(f"throughput        {fmt_rate(rate)} events/s ({total_s:.2f} s, close {run['close_s']*1e3:.0f} ms)")
    print(f"transactions      {run['transactions']:,} (mean {mean_batch or 0:,.0f} events, "
          f"largest {run['largest_batch']:,})")
    print(f"writer hand-overs {run['gil_pauses']:,} (looked every {run['yield_every_ms']} ms of work)")
    print(f"loop stalls       max {stalls['max']} ms, p99 {stalls['p99']} ms, mean {stalls['mean']} ms "
          f"over {len(run['stalls']):,} ticks of {TICK_S * 1e3:g} ms")
    print(f"longest stall     at {run['max_stall_at_s']} s; while ingesting {run['ingest_max_stall_ms']} ms, "
          f"while closing {run['close_max_stall_ms']} ms")
    print(f"idle baseline     max {idle['max']} ms, p99 {idle['p99']} ms, mean {idle['mean']} ms")
    if process_baseline:
        print(f"process baseline  max {beside['max']} ms, p99 {beside['p99']} ms, mean {beside['mean']} ms "
              f"(this loop idle; the same ingest in another process, "
              f"{beside_run['ingest_s'] + beside_run['close_s']:.2f} s)")
    print(f"cpu               {cpu['cores_busy_self']} cores busy in this process, "
          f"{cpu['cores_busy_other']} elsewhere, of {os.cpu_count()}")
    emit_json({
        "benchmark": "loop",
        "events": run["stored"],
        "bursts": len(chunks),
        "producers": producers,
        "events_per_s": round(rate) if rate else None,
        "max_stall_ms": stalls["max"],
        "p99_stall_ms": stalls["p99"],
        "mean_stall_ms": stalls["mean"],
        "ticks": len(run["stalls"]),
        "max_stall_at_s": run["max_stall_at_s"],
        "ingest_max_stall_ms": run["ingest_max_stall_ms"],
        "close_max_stall_ms": run["close_max_stall_ms"],
        "idle_max_stall_ms": idle["max"],
        "idle_p99_stall_ms": idle["p99"],
        "process_baseline_max_stall_ms": beside["max"],
        "process_baseline_p99_stall_ms": beside["p99"],
        "process_baseline_mean_stall_ms": beside["mean"],
        "process_baseline_s": (round(beside_run["ingest_s"] + beside_run["close_s"], 2)
                               if beside_run else None),
        "transactions": run["transactions"],
        "mean_batch": round(mean_batch, 1) if mean_batch else None,
        "largest_batch": run["largest_batch"],
        "close_ms": round(run["close_s"] * 1e3, 1),
        "yield_every_ms": run["yield_every_ms"],
        "gil_pauses": run["gil_pauses"],
        **cpu,
        "switch_interval_ms": sys.getswitchinterval() * 1e3,
        "environment": environment(),
    })
