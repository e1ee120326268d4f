"""`python -m benchmarks read`: what a client waits for when it starts: reads in a fresh process.

The N-event store is built once through `ChatStore.ingest_many` (the slow part, progress on
stderr), closed, checkpointed (TRUNCATE: the WAL is empty, as after a clean shutdown) and read
through once so the file is in the OS cache (dropping that cache needs root: cold-cache figures are
not measured here). Then, `--procs` times, one fresh Python process per query:

- `first_screen`: imports chatledger, `ChatStore.open(...)` (which warms a reader up), then times
  the first `store.channels(limit=30)` (30 channels with their last message, unread count and own
  membership), then `--calls` more.
- `page50`: the same with `store.messages(cid, limit=50)` (the newest page of the busiest channel),
  then `--calls` pages walking back through its history (`before=` the oldest message of the page
  before; a different page each time, so SQLite's page cache helps less).

Figures: the first call's milliseconds (median over the processes: `*_first_call`) and the median
and p95 of the repeated calls (pooled over the processes). Targets: first screen <= 5 ms, a page of
50 <= 1 ms. The collector is paused while timing, as in the other benchmarks.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import click

from benchmarks.common import emit_json, environment, median, progress, scratch_dir
from benchmarks.project import (
    MachineLoad,
    build_store_file,
    common_options,
    file_figures,
    fmt_bytes,
    prepare_workload,
    run_child,
)

TARGET_FIRST_SCREEN_MS = 5.0
TARGET_PAGE50_MS = 1.0
MODES = ("first_screen", "page50")


# --- the child process ---------------------------------------------------------------------------


def child_main(argv: list[str]) -> None:
    """In a fresh process: open the store in `argv[0]` as `argv[1]`, time `argv[3]` (a mode) on
    channel `argv[2]`, `argv[4]` repeated calls; print one JSON object."""
    import gc

    t_start = time.perf_counter()
    data_dir, user_id, cid, mode, calls = argv[0], argv[1], argv[2], argv[3], int(argv[4])
    from chatledger import ChatStore

    t_imported = time.perf_counter()
    store = ChatStore.open(data_dir, user_id, create=False)
    t_opened = time.perf_counter()
    clock = time.perf_counter_ns
    out: dict[str, Any] = {
        "mode": mode,
        "import_ms": (t_imported - t_start) * 1e3,
        "open_ms": (t_opened - t_imported) * 1e3,
    }
    try:
        if mode == "first_screen":
            def call() -> Any:
                return store.channels(limit=30)
        else:
            def call() -> Any:
                return store.messages(cid, limit=50)
        gc.collect()
        gc.disable()
        try:
            t0 = clock()
            rows = call()
            out["first_call_ms"] = (clock() - t0) / 1e6
            out["rows"] = len(rows)
            repeated = []
            for _ in range(calls):
                t0 = clock()
                call()
                repeated.append((clock() - t0) / 1e6)
            out["repeated_ms"] = repeated
            if mode == "page50":
                back = []
                page = rows
                for _ in range(calls):
                    if not page:
                        break
                    cursor = (page[0].created_at, page[0].id)
                    t0 = clock()
                    page = store.messages(cid, before=cursor, limit=50)
                    back.append((clock() - t0) / 1e6)
                out["back_ms"] = back
        finally:
            gc.enable()
    finally:
        store.close()
    print(json.dumps(out), flush=True)


# --- the subcommand ------------------------------------------------------------------------------


def _quantile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def _r(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def _warm_os_cache(path: Path) -> int:
    """Read the database file through once (it was just written, so this mostly confirms it)."""
    total = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            total += len(chunk)
    return total


def _kept_path(store_dir: str) -> Path:
    return Path(store_dir) / "read-benchmark.json"


def _kept_store(store_dir: str | None, *key: int) -> dict[str, Any] | None:
    """What an earlier run with the same options recorded of the store it kept, or None."""
    if store_dir is None or not _kept_path(store_dir).exists():
        return None
    kept = json.loads(_kept_path(store_dir).read_text())
    if kept.get("key") != list(key) or not Path(kept["path"]).exists():
        raise click.UsageError(f"{store_dir} holds a store built with other options: "
                               "give another --store directory")
    return kept  # type: ignore[no-any-return]


def _reopen(data_dir: Path, user_id: str) -> None:
    """Open a kept store once before measuring: read tables of an older version are rebuilt
    here, not in the first measured process."""
    from chatledger import ChatStore

    store = ChatStore.open(data_dir, user_id, create=False)
    if store.opened_as == "rebuilt":
        progress("  its read tables were rebuilt (another version)")
    store.close()


@click.command(name="read")
@common_options(200_000)
@click.option("--procs", type=click.IntRange(min=1), default=5, show_default=True,
              help="Fresh processes per query (the first call's figure is their median).")
@click.option("--calls", type=click.IntRange(min=1), default=200, show_default=True,
              help="Repeated calls per process after the first (and pages walked back).")
@click.option("--store", "store_dir", type=click.Path(file_okay=False), default=None,
              help="Keep the built store in this directory and, on later runs with the same "
                   "--events/--seed/--channels/--users/--batch, read it instead of building it "
                   "again (the build takes minutes at 1,000,000 events).")
def command(n_events: int, seed: int, directory: str | None, keep: bool, batch: int,
            channels: int, users: int, procs: int, calls: int, store_dir: str | None) -> None:
    """Reads in a fresh process: the first screen (30 channels) and pages of 50 messages."""
    runs: dict[str, list[dict[str, Any]]] = {m: [] for m in MODES}
    with scratch_dir(directory, keep=keep) as scratch:
        kept = _kept_store(store_dir, n_events, seed, channels, users, batch)
        if kept is None:
            workload = prepare_workload(n_events, seed, channels, users)
            data_dir, path, build_s = build_store_file(
                Path(store_dir) if store_dir else scratch, workload, batch)
            built = {"user_id": workload.user_id, "busy_cid": workload.busy_cid,
                     "payload_bytes": workload.payload_bytes, "build_s": build_s}
            if store_dir:
                _kept_path(store_dir).write_text(json.dumps(
                    {**built, "key": [n_events, seed, channels, users, batch], "path": str(path)}))
        else:
            built, data_dir, path = kept, Path(store_dir) / "store", Path(kept["path"])
            progress(f"reading the store kept in {store_dir} (built by an earlier run)")
            _reopen(data_dir, built["user_id"])
        user_id, busy_cid, build_s = built["user_id"], built["busy_cid"], built["build_s"]
        files = file_figures(path, built["payload_bytes"])  # checkpoints (TRUNCATE) first
        _warm_os_cache(path)
        load = MachineLoad()
        for proc in range(procs):
            for mode in MODES:
                run = run_child("benchmarks.read",
                                [str(data_dir), user_id, busy_cid, mode, str(calls)])
                runs[mode].append(run)
                progress(f"process {proc + 1}/{procs}, {mode}: open {run['open_ms']:.1f} ms, "
                         f"first call {run['first_call_ms']:.2f} ms, "
                         f"then median {median(run['repeated_ms']):.3f} ms")
        cores_busy_other = load.stop()
        if keep:
            progress(f"scratch files kept in {scratch} (store: {path})")

    def pooled(mode: str, key: str) -> list[float]:
        return [x for run in runs[mode] for x in run.get(key, [])]

    fs, pg = runs["first_screen"], runs["page50"]
    result: dict[str, Any] = {
        "benchmark": "read",
        "events": n_events,
        "seed": seed,
        "procs": procs,
        "calls": calls,
        "user_id": user_id,
        "cid": busy_cid,
        "first_screen_rows": fs[0]["rows"],
        "page50_rows": pg[0]["rows"],
        "first_screen_ms_first_call": _r(median([r["first_call_ms"] for r in fs])),
        "first_screen_ms_first_call_max": _r(max(r["first_call_ms"] for r in fs)),
        "first_screen_ms_median": _r(median(pooled("first_screen", "repeated_ms"))),
        "first_screen_ms_p95": _r(_quantile(pooled("first_screen", "repeated_ms"), 0.95)),
        "target_first_screen_ms": TARGET_FIRST_SCREEN_MS,
        "page50_ms_first_call": _r(median([r["first_call_ms"] for r in pg])),
        "page50_ms_first_call_max": _r(max(r["first_call_ms"] for r in pg)),
        "page50_ms_median": _r(median(pooled("page50", "repeated_ms"))),
        "page50_ms_p95": _r(_quantile(pooled("page50", "repeated_ms"), 0.95)),
        "page50_back_ms_median": _r(median(pooled("page50", "back_ms")) if pooled("page50", "back_ms") else None),
        "page50_back_ms_p95": _r(_quantile(pooled("page50", "back_ms"), 0.95)),
        "page50_back_pages": len(pg[0].get("back_ms", [])),
        "target_page50_ms": TARGET_PAGE50_MS,
        "open_ms_median": _r(median([r["open_ms"] for r in fs + pg])),
        "import_ms_median": _r(median([r["import_ms"] for r in fs + pg])),
        **files,
        "build_events_per_s": round(n_events / build_s, 1),
        "cores_busy_other": cores_busy_other,
        "env": environment(),
    }
    _print_human(result)
    emit_json(result)


def _print_human(r: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(highlight=False, soft_wrap=True, width=120)
    console.print(f"read: {r['events']:,}-event store ({fmt_bytes(r['file_bytes'])}, in the OS cache), "
                  f"{r['procs']} fresh processes per query, {r['calls']} repeated calls each, "
                  f"user {r['user_id']}, busiest channel {r['cid']}")
    table = Table()
    for name, justify in (("query", "left"), ("rows", "right"), ("first call ms", "right"),
                          ("median ms", "right"), ("p95 ms", "right"), ("target ms", "right"),
                          ("", "left")):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]

    def verdict(first: float | None, med: float | None, target: float) -> str:
        if first is None or med is None:
            return "-"
        if first <= target and med <= target:
            return "ok"
        return "ok when warm" if med <= target else "MISSES"

    table.add_row("channels(limit=30)", str(r["first_screen_rows"]),
                  f"{r['first_screen_ms_first_call']:.3f}", f"{r['first_screen_ms_median']:.3f}",
                  f"{r['first_screen_ms_p95']:.3f}", f"<= {TARGET_FIRST_SCREEN_MS:g}",
                  verdict(r["first_screen_ms_first_call"], r["first_screen_ms_median"],
                          TARGET_FIRST_SCREEN_MS))
    table.add_row("messages(cid, limit=50)", str(r["page50_rows"]),
                  f"{r['page50_ms_first_call']:.3f}", f"{r['page50_ms_median']:.3f}",
                  f"{r['page50_ms_p95']:.3f}", f"<= {TARGET_PAGE50_MS:g}",
                  verdict(r["page50_ms_first_call"], r["page50_ms_median"], TARGET_PAGE50_MS))
    if r["page50_back_ms_median"] is not None:
        table.add_row(f"  walking back ({r['page50_back_pages']} pages)", "50", "",
                      f"{r['page50_back_ms_median']:.3f}", f"{r['page50_back_ms_p95']:.3f}",
                      f"<= {TARGET_PAGE50_MS:g}",
                      "ok" if r["page50_back_ms_median"] <= TARGET_PAGE50_MS else "MISSES")
    console.print(table)
    console.print(f"first call: median over the processes (worst {r['first_screen_ms_first_call_max']:.2f} / "
                  f"{r['page50_ms_first_call_max']:.2f} ms); before it, importing chatledger took "
                  f"{r['import_ms_median']:.0f} ms and ChatStore.open {r['open_ms_median']:.1f} ms (median).")
    if r["cores_busy_other"] is not None:
        console.print(f"other processes kept {r['cores_busy_other']:.2f} of {r['env']['cpus']} cores "
                      f"busy during the reads.")
