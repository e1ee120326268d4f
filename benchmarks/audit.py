"""`python -m benchmarks audit`: audit questions in a fresh process, and what answering them
cheaply costs the ingest.

The N-event store (default 1,000,000 events of the benchmark mix) is built through
`ChatStore.ingest_many`, or reused from `--store` (as `read` does). The subjects come from the
store itself: the median channel (by entries in its stream, from `streams.head`) and, in it, the
median message (by creation time). Then, `--procs` times, one fresh Python process per question
(import and `ChatStore.open` outside the clock, the collector paused):

- `explain`: `explain(store, message_id)` of the median message (target < 100 ms);
- `log50`: `store.history(cid=cid, limit=50)`, the first 50 entries of the channel's log, what
  `log --cid CID --limit 50` prints (target < 100 ms); `log_newest` is what a bare
  `log --cid CID` reads (the newest 101);
- `asof`: `as_of(store, position=<end>, cids=[cid])` then `.channel(cid)`, what
  `as-of --position N channel CID` does (target < 300 ms);
- `asof_message`: `as_of(store, position=<end>, message_id=...)` of the median message then
  `.message(...)`, what `as-of --position N message MESSAGE_ID` does (no target of its own).

The cost: the log alone (`EventLog.append_events`, `--batch` per call) ingests `--ingest-events`
of the same events into a new file with the streams' back-pointers (`stream_links`) and without
them, alternating, `--reps` times: the ratio of the two rates and the file / payload ratio of
each, in the same run. Then the file written without them is opened again, which links it as an
upgrade links an older store: that rate too.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path
from typing import Any

import click

from benchmarks.common import (
    checkpointed_size, emit_json, environment, median, progress, remove_db, scratch_dir,
)
from benchmarks.project import (
    MachineLoad, build_store_file, common_options, file_figures, fmt_bytes, log_append,
    prepare_workload, run_child, space_by_table,
)

TARGETS_MS = {"explain": 100.0, "log50": 100.0, "asof": 300.0}
MODES = ("explain", "log50", "log_newest", "asof", "asof_message")
_KEPT = "audit-benchmark.json"
_CHANNEL_STREAMS = "SELECT name, head FROM streams WHERE name LIKE '%:%' ORDER BY head, name"
_MEDIAN_MESSAGE = ("SELECT id FROM messages WHERE cid=? ORDER BY created_at, id LIMIT 1 OFFSET "
                   "(SELECT count(*) / 2 FROM messages WHERE cid=?)")
_END = "SELECT MAX(rowid) FROM stored_events"


# --- the child process ---------------------------------------------------------------------------


def child_main(argv: list[str]) -> None:
    """In a fresh process: open the store in `argv[0]` as `argv[1]` and time `argv[2]` (a mode)
    on channel `argv[3]` / message `argv[4]`; print one JSON object."""
    import gc

    data_dir, user_id, mode, cid, message_id = argv
    t_start = time.perf_counter()
    from chatledger import ChatStore
    from chatledger.projections.history import as_of, explain

    t_imported = time.perf_counter()
    store = ChatStore.open(data_dir, user_id, create=False)
    t_opened = time.perf_counter()
    out: dict[str, Any] = {"mode": mode, "import_ms": (t_imported - t_start) * 1e3,
                           "open_ms": (t_opened - t_imported) * 1e3}
    try:
        gc.collect()
        gc.disable()
        t0 = time.perf_counter_ns()
        if mode == "explain":
            out["rows"] = len(explain(store, message_id))
        elif mode == "log50":
            out["rows"] = len(store.history(cid=cid, limit=50))
        elif mode == "log_newest":
            out["rows"] = len(store.history(cid=cid, limit=101, newest_first=True))
        elif mode == "asof_message":
            with as_of(store, position=store.log.max_position(), message_id=message_id) as past:
                out["rows"] = int(past.message(message_id) is not None)
        else:
            with as_of(store, position=store.log.max_position(), cids=[cid]) as past:
                state = past.channel(cid)
                out["rows"] = 0 if state is None else len(state.messages)
        out["ms"] = (time.perf_counter_ns() - t0) / 1e6
        gc.enable()
    finally:
        store.close()
    print(json.dumps(out), flush=True)


# --- the subjects --------------------------------------------------------------------------------


def subjects(path: Path) -> dict[str, Any]:
    """The median channel (by entries), its entries, and its median message (by creation time)."""
    import apsw

    connection = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        streams = connection.execute(_CHANNEL_STREAMS).fetchall()
        cid, entries = streams[len(streams) // 2]
        rows = connection.execute(_MEDIAN_MESSAGE, (cid, cid)).fetchall()
        end = connection.execute(_END).fetchall()[0][0]
    finally:
        connection.close()
    return {"cid": cid, "channel_entries": entries, "message_id": rows[0][0] if rows else "",
            "channels": len(streams), "log_entries": end}


# --- what the links cost the ingest ----------------------------------------------------------------


def _relink_seconds(path: Path) -> float:
    """Open a log appended without links: the open links it, as it links an upgraded store."""
    from chatledger.eventstore.log import EventLog

    t0 = time.perf_counter()
    EventLog.open(path).close()
    return time.perf_counter() - t0


def ingest_cost(scratch: Path, payloads: list[bytes], batch: int, reps: int) -> dict[str, Any]:
    payload_bytes = sum(len(p) for p in payloads)
    seconds: dict[str, list[float]] = {"with": [], "without": []}
    sizes: dict[str, int] = {}
    relink: list[float] = []
    for rep in range(reps):
        for subject in (("with", "without") if rep % 2 == 0 else ("without", "with")):
            path = scratch / f"log-{subject}.chatledger"
            remove_db(path)
            seconds[subject].append(log_append(path, payloads, batch,
                                                     stream_links=subject == "with"))
            sizes[subject] = checkpointed_size(path)
            if subject == "without":
                relink.append(_relink_seconds(path))
            remove_db(path)
            progress(f"  log alone {subject} links, rep {rep + 1}/{reps}: "
                     f"{len(payloads) / seconds[subject][-1]:,.0f} events/s")
    rate = {s: len(payloads) / median(v) for s, v in seconds.items()}
    return {
        "ingest_events": len(payloads),
        "log_events_per_s_with_links": round(rate["with"], 1),
        "log_events_per_s_without_links": round(rate["without"], 1),
        "log_ingest_ratio": round(rate["with"] / rate["without"], 4),
        "log_file_ratio_with_links": round(sizes["with"] / payload_bytes, 4),
        "log_file_ratio_without_links": round(sizes["without"] / payload_bytes, 4),
        "relink_events_per_s": round(len(payloads) / median(relink), 1),
    }


# --- the subcommand ------------------------------------------------------------------------------


def _kept(store_dir: str | None, key: list[int]) -> dict[str, Any] | None:
    if store_dir is None or not (Path(store_dir) / _KEPT).exists():
        return None
    kept = json.loads((Path(store_dir) / _KEPT).read_text())
    if kept.get("key") != key or not Path(kept["path"]).exists():
        raise click.UsageError(f"{store_dir} holds a store built with other options: "
                               "give another --store directory")
    return kept  # type: ignore[no-any-return]


@click.command(name="audit")
@common_options(1_000_000)
@click.option("--procs", type=click.IntRange(min=1), default=3, show_default=True,
              help="Fresh processes per question (the median counts).")
@click.option("--ingest-events", type=click.IntRange(min=1), default=100_000, show_default=True,
              help="Events the log alone ingests with and without links (the cost).")
@click.option("--reps", type=click.IntRange(min=1), default=3, show_default=True,
              help="Repetitions of the ingest comparison, alternating; the median counts.")
@click.option("--store", "store_dir", type=click.Path(file_okay=False), default=None,
              help="Keep the built store in this directory and reuse it on later runs with the "
                   "same --events/--seed/--channels/--users/--batch.")
def command(n_events: int, seed: int, directory: str | None, keep: bool, batch: int,
            channels: int, users: int, procs: int, ingest_events: int, reps: int,
            store_dir: str | None) -> None:
    """Audit questions in a fresh process (explain, log --cid, as-of channel) on a large store,
    and what the streams' back-pointers cost the log's ingest."""
    key = [n_events, seed, channels, users, batch]
    runs: dict[str, list[dict[str, Any]]] = {m: [] for m in MODES}
    with scratch_dir(directory, keep=keep) as scratch:
        kept = _kept(store_dir, key)
        workload = None
        if kept is None:
            workload = prepare_workload(n_events, seed, channels, users)
            data_dir, path, build_s = build_store_file(
                Path(store_dir) if store_dir else scratch, workload, batch)
            built = {"user_id": workload.user_id, "payload_bytes": workload.payload_bytes,
                     "build_s": build_s}
            if store_dir:
                (Path(store_dir) / _KEPT).write_text(json.dumps(
                    {**built, "key": key, "path": str(path)}))
        else:
            built, data_dir, path = kept, Path(store_dir) / "store", Path(kept["path"])  # type: ignore[arg-type]
            progress(f"reading the store kept in {store_dir} (built by an earlier run)")
            from chatledger import ChatStore
            ChatStore.open(data_dir, built["user_id"], create=False).close()  # upgrades here
        files = file_figures(path, built["payload_bytes"])
        links_bytes = space_by_table(path).get("stream_links", ("", 0))[1]
        chosen = subjects(path)
        progress(f"median channel {chosen['cid']} ({chosen['channel_entries']:,} entries of "
                 f"{chosen['log_entries']:,}), its median message {chosen['message_id']}")
        load = MachineLoad()
        for proc in range(procs):
            for mode in MODES:
                run = run_child("benchmarks.audit", [str(data_dir), built["user_id"], mode,
                                                     chosen["cid"], chosen["message_id"]])
                runs[mode].append(run)
                progress(f"process {proc + 1}/{procs}, {mode}: {run['ms']:.1f} ms "
                         f"({run['rows']} rows; open {run['open_ms']:.0f} ms)")
        reads_load = load.stop()
        if workload is None:
            workload = prepare_workload(ingest_events, seed, channels, users)
        payloads = workload.payloads[:ingest_events]
        progress(f"the log alone, {len(payloads):,} events, with and without links ...")
        load = MachineLoad()
        cost = ingest_cost(scratch, payloads, batch, reps)
        ingest_load = load.stop()

    result: dict[str, Any] = {
        "benchmark": "audit",
        "events": n_events,
        "seed": seed,
        "procs": procs,
        **chosen,
        **{f"{mode}_ms": round(median([r["ms"] for r in runs[mode]]), 2) for mode in MODES},
        **{f"{mode}_ms_max": round(max(r["ms"] for r in runs[mode]), 2) for mode in MODES},
        **{f"{mode}_rows": runs[mode][0]["rows"] for mode in MODES},
        **{f"target_{mode}_ms": target for mode, target in TARGETS_MS.items()},
        "open_ms_median": round(statistics.median(
            r["open_ms"] for mode in MODES for r in runs[mode]), 1),
        **files,
        "stream_links_bytes": links_bytes,
        **cost,
        "cores_busy_other_reads": reads_load,
        "cores_busy_other_ingest": ingest_load,
        "env": environment(),
    }
    _print_human(result)
    emit_json(result)


def _print_human(r: dict[str, Any]) -> None:
    print(f"audit: {r['events']:,}-event store ({fmt_bytes(r['file_bytes'])}, file / payload "
          f"{r['file_ratio']:.3f}; stream_links {fmt_bytes(r['stream_links_bytes'])}), "
          f"{r['procs']} fresh processes per question")
    print(f"median channel {r['cid']}: {r['channel_entries']:,} entries; "
          f"median message {r['message_id']}")
    labels = {"explain": "explain MESSAGE", "log50": "log --cid CID --limit 50",
              "log_newest": "log --cid CID (newest 100)",
              "asof": "as-of --position END channel CID",
              "asof_message": "as-of --position END message MESSAGE"}
    print(f"{'question':<36}{'rows':>6}{'median ms':>11}{'worst ms':>10}{'target':>9}")
    for mode in MODES:
        target = TARGETS_MS.get(mode)
        verdict = "" if target is None else ("ok" if r[f"{mode}_ms"] < target else "MISSES")
        print(f"{labels[mode]:<36}{r[f'{mode}_rows']:>6}{r[f'{mode}_ms']:>11.1f}"
              f"{r[f'{mode}_ms_max']:>10.1f}{'' if target is None else f'< {target:g}':>9}  {verdict}")
    print(f"the log alone, {r['ingest_events']:,} events: {r['log_events_per_s_with_links']:,.0f} "
          f"events/s with links, {r['log_events_per_s_without_links']:,.0f} without "
          f"(ratio {r['log_ingest_ratio']:.3f}); file / payload {r['log_file_ratio_with_links']:.4f} "
          f"with, {r['log_file_ratio_without_links']:.4f} without; linking a log that has none: "
          f"{r['relink_events_per_s']:,.0f} events/s")
    print(f"other processes kept {r['cores_busy_other_reads']} cores busy during the reads, "
          f"{r['cores_busy_other_ingest']} during the ingest comparison "
          f"(of {r['env']['cpus']}).")
