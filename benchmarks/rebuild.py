"""`python -m benchmarks rebuild`: replaying the whole log into fresh read tables.

The N-event store is built once, by ingesting the generated events through `ChatStore.ingest_many`
(batches of `--batch`; the slow part, progress on stderr). Then each of `--reps` runs is a fresh
Python process that imports chatledger, opens the store and calls `ChatStore.rebuild()` once, and
reports:

- the rebuild's wall-clock and CPU seconds (events/s = entries in the log / wall seconds);
- the process's RSS high-water mark after the imports, after opening the store and after the
  rebuild. SQLite's page caches are allocated outside Python, so tracemalloc would miss them; a
  process that does nothing else gives a clean figure. On Linux it is `VmHWM` from
  /proc/self/status, not `getrusage(RUSAGE_SELF).ru_maxrss`: the latter survives `execve`, so a
  child starts at its parent's RSS (this parent holds all the payloads). `peak_rss_bytes` is the
  whole process's high-water mark (interpreter and imports included: what the target < 200 MB is
  checked against), `rebuild_rss_growth_bytes` what the rebuild added to it.

The median run counts for the speed, the largest for the memory. The file is measured before and
after (after a TRUNCATE checkpoint): a rebuild drops and refills the tables in one transaction, so
the freed pages of the old tables are reused or left as free pages.

`--profile` adds one run under cProfile (not counted) and prints its top functions by own time.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from benchmarks.baselines import plain_event_store_ingest, plain_event_store_rebuild, raw_apsw_append
from benchmarks.common import (
    default_reps,
    emit_json,
    environment,
    fmt_rate,
    median,
    progress,
    remove_db,
    scratch_dir,
)
from benchmarks.partition import describe as describe_partition
from benchmarks.partition import partition_floor_figures, partition_ratios
from benchmarks.project import (
    MachineLoad,
    build_store_file,
    common_options,
    file_figures,
    fmt_bytes,
    prepare_workload,
    run_child,
)

TARGET_EVENTS_PER_S = 150_000
# Issue 18: a rebuild at least as fast as raw APSW appending the same events, in the same run.
TARGET_RATIO_RAW = 1.0
TARGET_PEAK_RSS_BYTES = 200 * 1024 * 1024


# --- the child process ---------------------------------------------------------------------------


def _maxrss_bytes() -> int:
    """`getrusage(RUSAGE_SELF).ru_maxrss` in bytes. Careful: on Linux this high-water mark survives
    `execve`, so a child spawned by a big parent starts at the parent's RSS at fork time (a parent
    holding 1,000,000 payloads makes every child look that big); see `_peak_rss_bytes`."""
    import resource

    value = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return value if sys.platform == "darwin" else value * 1024  # Linux reports KiB


def _peak_rss_bytes() -> int:
    """This process image's RSS high-water mark: `VmHWM` of /proc/self/status on Linux (kept per
    address space, so it starts afresh at exec), else `ru_maxrss`."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return _maxrss_bytes()


def _current_rss_bytes() -> int | None:
    try:
        with open("/proc/self/statm") as f:
            import os

            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def _cpu_s() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


SEALED_KEY_ENV = "CHATLEDGER_BENCH_SEALED_KEY"
BENCH_KEY = bytes(range(32))


def sealed_copies(data_dir: Any, user_id: str, scratch: Any) -> tuple[Any, Any]:
    """Two copies of the built store: one encrypted in place (`ChatStore.rekey`, which repacks
    the file), and one only repacked (VACUUM), its fair plain counterpart. Returns their data
    directories (sealed, packed)."""
    from chatledger import ChatStore

    sealed, packed = scratch / "sealed-store", scratch / "packed-store"
    shutil.copytree(data_dir, sealed)
    shutil.copytree(data_dir, packed)
    with ChatStore.open(sealed, user_id, create=False) as store:
        store.rekey(BENCH_KEY)
    with ChatStore.open(packed, user_id, create=False) as store:
        store.log.datastore.vacuum()
        store.log.checkpoint()
    return sealed, packed


def _sealed_child(data_dir: Any, user_id: str) -> dict[str, Any]:
    os.environ[SEALED_KEY_ENV] = BENCH_KEY.hex()
    try:
        return run_child("benchmarks.rebuild", [str(data_dir), user_id])
    finally:
        del os.environ[SEALED_KEY_ENV]


def child_main(argv: list[str]) -> None:
    """In a fresh process: open the store in `argv[0]` as user `argv[1]`, rebuild, report JSON.
    With `argv[2] == "profile"`, the rebuild runs under cProfile and the top functions go to
    stderr (and the stats to `argv[3]` when given); with `argv[2] == "sql"`, SQLite's time per
    statement is recorded (`benchmarks.sqlprofile`) and reported under "sql"."""
    data_dir, user_id = argv[0], argv[1]
    profile = len(argv) > 2 and argv[2] == "profile"
    sql_profile = len(argv) > 2 and argv[2] == "sql"
    sql: dict[str, Any] | None = None
    rss_start = _peak_rss_bytes()
    from chatledger import ChatStore

    rss_imported = _peak_rss_bytes()
    # The sealed copy's key, when the parent measures encryption (see `command`).
    key_hex = os.environ.get(SEALED_KEY_ENV)
    store = ChatStore.open(data_dir, user_id, create=False,
                           key=bytes.fromhex(key_hex) if key_hex else None)
    try:
        with store.log.datastore.transaction(commit=False) as c:
            entries = c.execute(
                f"SELECT COUNT(*) FROM {store.log.recorder.events_table_name}").fetchone()[0]
            mmap_size = c.execute("PRAGMA mmap_size").fetchone()
        rss_opened = _peak_rss_bytes()
        rss_opened_now = _current_rss_bytes()
        step = max(1, entries // 10)
        last = [0]

        def on_progress(done: int, total: int) -> None:
            if done - last[0] >= step and done < total:
                last[0] = done
                print(f"  rebuild: {done:,}/{total:,} entries ({done / (time.perf_counter() - t0):,.0f}/s)",
                      file=sys.stderr, flush=True)

        cpu0 = _cpu_s()
        t0 = time.perf_counter()
        if profile:
            import cProfile
            import pstats

            profiler = cProfile.Profile()
            profiler.runcall(store.rebuild, on_progress)
            seconds = time.perf_counter() - t0
            stats = pstats.Stats(profiler, stream=sys.stderr)
            stats.sort_stats("tottime").print_stats(30)
            if len(argv) > 3:
                stats.dump_stats(argv[3])
        elif sql_profile:
            from benchmarks.sqlprofile import SqlProfile

            with SqlProfile().recording() as recorder:
                store.rebuild(on_progress)
            seconds = time.perf_counter() - t0
            sql = recorder.figures(entries, "event")
        else:
            store.rebuild(on_progress)
            seconds = time.perf_counter() - t0
        cpu = _cpu_s() - cpu0
        rss_peak = _peak_rss_bytes()
        rss_now = _current_rss_bytes()
        verify_s = None
        if not (profile or sql_profile):
            # After the memory figures: verify's scratch tables live in memory.
            t1 = time.perf_counter()
            differences = store.verify()
            verify_s = time.perf_counter() - t1
            if differences:
                raise SystemExit(f"verify found {len(differences)} differences after a rebuild")
    finally:
        store.close()
    print(json.dumps({
        "entries": entries,
        "seconds": seconds,
        "verify_s": verify_s,
        "cpu_s": cpu,
        "rss_start_bytes": rss_start,
        "rss_imported_bytes": rss_imported,
        "rss_opened_bytes": rss_opened,
        "rss_opened_now_bytes": rss_opened_now,
        "peak_rss_bytes": rss_peak,
        "rss_after_bytes": rss_now,
        "ru_maxrss_bytes": _maxrss_bytes(),
        "mmap_size": mmap_size[0] if mmap_size else None,
        "profiled": profile,
        "sql": sql,
    }), flush=True)


# --- the floor of a fold-in-memory rebuild ------------------------------------------------------


def fold_floor_figures(path: Path, user_id: str) -> dict[str, Any]:
    """What a rebuild that folded every event in memory and wrote each row once, in key order,
    could not go below, measured on the rebuilt store at `path` (in this process, after the reps):

    - `fold_scan_s`: reading the log in order, decompressing each payload, screening it and
      decoding it into the projector's structs (`payloads.EVENT`): the per-event work any replay
      does before it decides anything;
    - `fold_write_s`: SQLite writing the read tables' final rows once, in key order, into a fresh
      file in one transaction, then building their indexes (`INSERT ... SELECT` from the rebuilt
      file: no Python per row).

    Their sum is the fold design's floor: its own logic (folding) comes on top of it.
    """
    import apsw
    import msgspec

    from benchmarks.common import timed
    from chatledger import ChatStore
    from chatledger.projections import payloads
    from chatledger.projections.schema import INDEXES, LOOKUP_INDEXES, TABLES
    from chatledger.projections.screen import has_long_digits

    store = ChatStore.open(path.parent, user_id, create=False)
    try:
        log = store.log
        decode_event = payloads.EVENT.decode
        codec = log.datastore.codec

        def scan() -> int:
            count = 0
            with log.datastore.transaction(commit=False) as cursor:
                for codec_id, state in cursor.execute(
                        f"SELECT codec, state FROM {log.recorder.events_table_name} ORDER BY rowid"):
                    payload = codec.decode(codec_id, state)
                    has_long_digits(payload)
                    try:
                        decode_event(payload)
                    except (msgspec.MsgspecError, ValueError):
                        pass
                    count += 1
            return count

        scan_s, entries = timed(scan)
    finally:
        store.close()
    target = path.parent / "fold-floor.db"
    remove_db(target)  # left by an interrupted run
    conn = apsw.Connection(str(target), flags=apsw.SQLITE_OPEN_READWRITE
                           | apsw.SQLITE_OPEN_CREATE | apsw.SQLITE_OPEN_URI)
    try:
        for pragma in ("PRAGMA journal_mode=WAL", "PRAGMA synchronous=NORMAL",
                       "PRAGMA wal_autocheckpoint=16000", "PRAGMA cache_size=-65536"):
            conn.execute(pragma).fetchall()
        for ddl in TABLES.values():
            conn.execute(ddl)
        conn.execute("ATTACH DATABASE ? AS src", (f"{path.resolve().as_uri()}?mode=ro",))

        def write() -> None:
            conn.execute("BEGIN IMMEDIATE")
            for name in TABLES:
                conn.execute(f"INSERT INTO main.{name} SELECT * FROM src.{name}")
            for ddl in LOOKUP_INDEXES + INDEXES:
                conn.execute(ddl)
            conn.execute("COMMIT")

        write_s, _ = timed(write)
        conn.execute("DETACH DATABASE src")
    finally:
        conn.close()
    remove_db(target)
    return {"fold_scan_s": round(scan_s, 4), "fold_write_s": round(write_s, 4),
            "fold_floor_events_per_s": round(entries / (scan_s + write_s), 1)}


def _floor(design: str, prefix: str, measure: Callable[[Path, str], dict[str, Any]],
           path: Path, user_id: str) -> dict[str, Any]:
    """A design's floor measured on the rebuilt store (not counted in the reps), with the share
    of the cores other processes kept busy meanwhile as `<prefix>_cores_busy_other`."""
    progress(f"the floor of {design} (not counted) ...")
    load = MachineLoad()
    figures = measure(path, user_id)
    figures[f"{prefix}_cores_busy_other"] = load.stop()
    return figures


# --- the subcommand ------------------------------------------------------------------------------


@click.command(name="rebuild")
@common_options(200_000)
@click.option("--reps", type=click.IntRange(min=1), default=None,
              help="Rebuilds, each in a fresh process; the median counts. "
                   "Default: 3 up to 200,000 events, else 1.")
@click.option("--profile", is_flag=True,
              help="One more rebuild under cProfile (not counted): top 30 functions by own time "
                   "on stderr; the stats file is kept with --keep.")
@click.option("--sql-profile", is_flag=True,
              help="One more rebuild (not counted) with SQLite's per-statement times recorded: "
                   "the sql_* keys (how fast a rebuild could be if its Python cost nothing).")
@click.option("--fold-floor", is_flag=True,
              help="After the reps: the floor of a fold-in-memory rebuild (decode every entry, "
                   "write each final row once in key order, index after): the fold_* keys.")
@click.option("--partition-floor", is_flag=True,
              help="After the reps: the floor of a rebuild split by channel over two processes "
                   "(each replays half the channels, then a merge): the partition_* keys, with "
                   "the rows the merge still gets wrong.")
def command(n_events: int, seed: int, directory: str | None, keep: bool, batch: int,
            channels: int, users: int, reps: int | None, profile: bool, sql_profile: bool,
            fold_floor: bool, partition_floor: bool) -> None:
    """Rebuild of the read tables by replaying the log: events/s and peak memory (fresh process)."""
    reps = reps or default_reps(n_events)
    workload = prepare_workload(n_events, seed, channels, users)
    runs: list[dict[str, Any]] = []
    with scratch_dir(directory, keep=keep) as scratch:
        data_dir, path, build_s = build_store_file(scratch, workload, batch)
        before = file_figures(path, workload.payload_bytes)
        plain_path = scratch / "plain-es.db"
        progress(f"building the plain event-sourced store ({workload.events:,} events) ...")
        plain_event_store_ingest(plain_path, workload.records, batch)
        progress("encrypting a copy of the store, repacking another (the sealed runs) ...")
        sealed_dir, packed_dir = sealed_copies(data_dir, workload.user_id, scratch)
        sealed_runs: list[dict[str, Any]] = []
        packed_runs: list[dict[str, Any]] = []
        raw_s: list[float] = []
        plain_s: list[float] = []
        load_before = os.getloadavg()
        load = MachineLoad()
        for rep in range(reps):
            # The baselines alternate with the rebuilds, so that all see the same minutes.
            progress(f"rep {rep + 1}/{reps}: raw APSW append of the same events ...")
            raw_path = scratch / f"raw-{rep}.db"
            raw_s.append(raw_apsw_append(raw_path, workload.records, batch))
            remove_db(raw_path)
            progress(f"  {raw_s[-1]:.2f} s; plain event-sourced rebuild ...")
            plain_s.append(plain_event_store_rebuild(plain_path))
            progress(f"  {plain_s[-1]:.2f} s")
            # Plain and sealed alternate, the first of each pair rotating: neither always runs
            # first or after the other.
            kinds = ("plain", "packed", "sealed")
            order = kinds[rep % 3:] + kinds[:rep % 3]
            for kind in order:
                progress(f"rep {rep + 1}/{reps}: rebuild of the {kind} store in a fresh process ...")
                if kind == "plain":
                    run = run_child("benchmarks.rebuild", [str(data_dir), workload.user_id])
                    runs.append(run)
                elif kind == "packed":
                    run = run_child("benchmarks.rebuild", [str(packed_dir), workload.user_id])
                    packed_runs.append(run)
                else:
                    run = _sealed_child(sealed_dir, workload.user_id)
                    sealed_runs.append(run)
                progress(f"  {run['seconds']:.2f} s, {run['entries'] / run['seconds']:,.0f} events/s, "
                         f"peak RSS {run['peak_rss_bytes'] / 2**20:,.0f} MiB")
        cores_busy_other = load.stop()
        load_after = os.getloadavg()
        remove_db(plain_path)
        fold = (_floor("a fold-in-memory rebuild", "fold", fold_floor_figures, path,
                       workload.user_id) if fold_floor else {})
        partition = (_floor("a rebuild split by channel over 2 processes", "partition",
                            partition_floor_figures, path, workload.user_id)
                     if partition_floor else {})
        after = file_figures(path, workload.payload_bytes)
        if profile:
            progress("profiled rebuild (not counted) ...")
            run_child("benchmarks.rebuild", [str(data_dir), workload.user_id, "profile",
                                              str(scratch / "rebuild.prof")])
        sql: dict[str, Any] = {}
        if sql_profile:
            progress("rebuild with SQLite's time recorded (not counted) ...")
            recorded = run_child("benchmarks.rebuild", [str(data_dir), workload.user_id, "sql"])
            sql = {**recorded["sql"], "profiled_wall_s": round(recorded["seconds"], 3),
                   "sql_share": round(recorded["sql"]["sql_s"] / recorded["seconds"], 4),
                   # The rebuild's rate if everything but SQLite (Python, decompression,
                   # decoding) cost nothing.
                   "sql_floor_events_per_s": (round(recorded["entries"] / recorded["sql"]["sql_s"], 1)
                                              if recorded["sql"]["sql_s"] > 0 else None)}
        if keep:
            progress(f"scratch files kept in {scratch} (store: {path})")

    entries = runs[0]["entries"]
    seconds = median([r["seconds"] for r in runs])
    rate = entries / seconds
    sealed_seconds = median([r["seconds"] for r in sealed_runs])
    sealed_rate = entries / sealed_seconds
    # Against the repacked plain copy: rekey repacks the sealed one, which alone speeds it up.
    packed_seconds = median([r["seconds"] for r in packed_runs])
    peak = max(r["peak_rss_bytes"] for r in runs)
    growth = max(r["peak_rss_bytes"] - r["rss_opened_bytes"] for r in runs)
    raw_rate = n_events / median(raw_s)
    plain_rate = n_events / median(plain_s)
    result: dict[str, Any] = {
        "benchmark": "rebuild",
        "events": n_events,
        "entries": entries,
        "batch": batch,
        "seed": seed,
        "reps": reps,
        "user_id": workload.user_id,
        "events_per_s": round(rate, 1),
        "mb_per_s": round(rate * workload.payload_bytes / n_events / 1e6, 2),
        "rebuild_s": round(seconds, 4),
        "verify_s": round(median([r["verify_s"] for r in runs]), 4),
        # issue 18: verify within 1.25 x of rebuild's time
        "verify_ratio_rebuild": round(median([r["verify_s"] for r in runs]) / seconds, 4),
        "raw_apsw_events_per_s": round(raw_rate, 1),
        "plain_rebuild_events_per_s": round(plain_rate, 1),
        # entries (events plus the few the store adds) per second against events per second
        "ratio_raw": round(rate / raw_rate, 4),
        "target_ratio_raw": TARGET_RATIO_RAW,
        "ratio_plain_rebuild": round(rate / plain_rate, 4),
        "raw_runs_s": [round(x, 4) for x in raw_s],
        "plain_rebuild_runs_s": [round(x, 4) for x in plain_s],
        "cpu_share": round(median([r["cpu_s"] / r["seconds"] for r in runs]), 3),
        "target_events_per_s": TARGET_EVENTS_PER_S,
        "peak_rss_bytes": peak,
        "peak_rss_mb": round(peak / 2**20, 1),
        "rss_before_rebuild_bytes": max(r["rss_opened_bytes"] for r in runs),
        "rebuild_rss_growth_bytes": growth,
        "rss_after_rebuild_bytes": max((r["rss_after_bytes"] or 0) for r in runs) or None,
        "target_peak_rss_mb": TARGET_PEAK_RSS_BYTES // 2**20,
        "mmap_size": runs[0]["mmap_size"],
        **after,
        "file_bytes_before_rebuild": before["file_bytes"],
        "file_by_table_before_rebuild": before["file_by_table"],
        "build_events_per_s": round(n_events / build_s, 1),
        "runs_s": [round(r["seconds"], 4) for r in runs],
        "cores_busy_other": cores_busy_other,
        # The same store encrypted (a sealed copy), rebuilt in the same run.
        "sealed_events_per_s": round(sealed_rate, 1),
        "sealed_rebuild_s": round(sealed_seconds, 4),
        "sealed_runs_s": [round(r["seconds"], 4) for r in sealed_runs],
        "sealed_peak_rss_mb": round(max(r["peak_rss_bytes"] for r in sealed_runs) / 2**20, 1),
        "packed_events_per_s": round(entries / packed_seconds, 1),
        "packed_runs_s": [round(r["seconds"], 4) for r in packed_runs],
        "sealed_cost": round(sealed_seconds / packed_seconds - 1, 4),
        # The same from the children's CPU time, which other processes on a busy machine
        # disturb less than the wall clock.
        "runs_cpu_s": [round(r["cpu_s"], 4) for r in runs],
        "packed_runs_cpu_s": [round(r["cpu_s"], 4) for r in packed_runs],
        "sealed_runs_cpu_s": [round(r["cpu_s"], 4) for r in sealed_runs],
        "sealed_cost_cpu": round(median([r["cpu_s"] for r in sealed_runs])
                                 / median([r["cpu_s"] for r in packed_runs]) - 1, 4),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in load_after],
        **sql,
        **fold,
        **({"fold_floor_ratio_raw": round(fold["fold_floor_events_per_s"] / raw_rate, 4)}
           if fold else {}),
        **partition,
        **(partition_ratios(partition, raw_rate, rate) if partition else {}),
        **({"sql_floor_ratio_raw": round(sql["sql_floor_events_per_s"] / raw_rate, 4)}
           if sql.get("sql_floor_events_per_s") else {}),
        "env": environment(),
    }
    _print_human(result)
    if fold:
        print(f"fold-in-memory floor: decoding every entry {fold['fold_scan_s']:.2f} s + writing "
              f"each final row once in key order and indexing {fold['fold_write_s']:.2f} s = "
              f"{fmt_rate(fold['fold_floor_events_per_s'])} events/s, "
              f"{result['fold_floor_ratio_raw']:.2f} x raw APSW append.", flush=True)
    if partition:
        print(describe_partition(result), flush=True)
    if sql:
        from benchmarks.sqlprofile import print_figures

        print_figures(sql, entries, "event", sql["profiled_wall_s"])
        print(f"SQLite alone took {sql['sql_s']:.2f} s of {sql['profiled_wall_s']:.2f} s "
              f"({sql['sql_share']:.1%}): with everything else free, a rebuild would run at "
              f"{fmt_rate(sql['sql_floor_events_per_s'])} events/s at most "
              f"(target >= {TARGET_EVENTS_PER_S:,}).", flush=True)
    emit_json(result)


def _print_human(r: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(highlight=False, soft_wrap=True, width=120)
    console.print(f"rebuild: {r['entries']:,} log entries, seed {r['seed']}, median of {r['reps']} "
                  f"fresh processes, user {r['user_id']}")
    table = Table()
    table.add_column("figure")
    table.add_column("value", justify="right")
    table.add_column("target", justify="right")
    table.add_column("")
    ok_rate = r["events_per_s"] >= TARGET_EVENTS_PER_S
    ok_rss = r["peak_rss_bytes"] < TARGET_PEAK_RSS_BYTES
    ok_file = r["file_ratio"] is not None and r["file_ratio"] <= 0.5
    table.add_row("events/s", fmt_rate(r["events_per_s"]), f">= {TARGET_EVENTS_PER_S:,}",
                  "ok" if ok_rate else "MISSES")
    table.add_row("raw APSW append, same events", fmt_rate(r["raw_apsw_events_per_s"]), "", "")
    table.add_row("plain event-sourced rebuild", fmt_rate(r["plain_rebuild_events_per_s"]), "", "")
    table.add_row("rebuild / raw APSW append", f"{r['ratio_raw']:.2f}", f">= {TARGET_RATIO_RAW}",
                  "ok" if r["ratio_raw"] >= TARGET_RATIO_RAW else "MISSES")
    table.add_row("rebuild / plain rebuild", f"{r['ratio_plain_rebuild']:.2f}", "", "")
    table.add_row("rebuild seconds", f"{r['rebuild_s']:.2f}", "", "")
    table.add_row("verify / rebuild (time)", f"{r['verify_ratio_rebuild']:.2f}", "<= 1.25",
                  "ok" if r["verify_ratio_rebuild"] <= 1.25 else "MISSES")
    table.add_row("CPU / wall", f"{r['cpu_share']:.2f}", "", "")
    table.add_row("peak RSS (whole process)", f"{r['peak_rss_mb']:,.1f} MiB",
                  f"< {r['target_peak_rss_mb']} MiB", "ok" if ok_rss else "MISSES")
    table.add_row("  of which before the rebuild", f"{r['rss_before_rebuild_bytes'] / 2**20:,.1f} MiB", "", "")
    table.add_row("  added by the rebuild", f"{r['rebuild_rss_growth_bytes'] / 2**20:,.1f} MiB", "", "")
    table.add_row("file after rebuild", fmt_bytes(r["file_bytes"]), "", "")
    table.add_row("file / payload", f"{r['file_ratio']:.3f}", "<= 0.5", "ok" if ok_file else "MISSES")
    table.add_row("file before rebuild", fmt_bytes(r["file_bytes_before_rebuild"]), "", "")
    console.print(table)
    console.print(f"encrypted: {r['sealed_events_per_s']:,.0f} events/s "
                  f"({r['sealed_rebuild_s']:.2f} s, {r['sealed_cost']:+.1%} of the repacked plain "
                  f"copy's rebuild time ({r['packed_events_per_s']:,.0f} events/s), "
                  f"{r['sealed_cost_cpu']:+.1%} of its CPU time, same run); load average before {r['load_average_before']}, after "
                  f"{r['load_average_after']}")
    console.print(f"after the rebuild: log {fmt_bytes(r['file_log_bytes'])}, read tables "
                  f"{fmt_bytes(r['file_tables_bytes'])}, free pages {fmt_bytes(r['file_free_bytes'])}; "
                  f"payload {fmt_bytes(r['payload_bytes'])}. Store built at "
                  f"{r['build_events_per_s']:,.0f} events/s; SQLite mmap_size {r['mmap_size']}.")
    if r["cores_busy_other"] is not None:
        console.print(f"other processes kept {r['cores_busy_other']:.2f} of "
                      f"{r['env']['cpus']} cores busy during the rebuilds.")
