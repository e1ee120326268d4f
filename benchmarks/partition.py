"""The floor of a rebuild split by channel over two processes: `rebuild --partition-floor`.

Issue 18 asks a rebuild to use the second core. A thread cannot (the projector holds the
interpreter lock for all but its SQLite calls, and handing it over costs more than it frees), and
a process that only reads, decompresses or decodes ships bytes or objects that cost the receiver
as much as decoding them itself (see docs/performance.md). What can move to a second process is
the projection itself, by channel: nearly every entry of a log is in its channel's stream
(`eventstore.ingest.stream_of`), and most read tables are keyed by channel.

This measures that design on a rebuilt store, in the same run as the reps:

- the channels' streams are split in two halves of about the same number of entries (largest
  first, each to the lighter half);
- two fresh processes replay, each into a scratch file of its own, its half's channel streams
  and every entry of no channel (the user's stream, local commands), through the projector as a
  rebuild does (`Projector.apply` in chunks of the log's order, one transaction);
- this process merges the second half's rows into the first's: for every table with a `cid`
  column, the rows of the second half's channels replace the first's; `reactions` and
  `deleted_reactions` (keyed by message) follow their message's channel, and of a message
  neither half has on file each half's rows are kept; the first half's lookup indexes are
  dropped before and every index is built after;
- the merged tables are compared with the rebuilt store's, row by row.

`partition_rows_differing` counts, by table, the rows the merge gets wrong: the tables whose rule
orders objects across channels (`users`: an object equal to the row on file keeps the row's
position, a user object without times replaces any) need the two halves' observations replayed
in log order at the merge, which this floor does not do; it is the work the design has left. The
rate is a floor: that work and the checks a real split needs (an entry naming a channel of the
other half) come on top.
"""

from __future__ import annotations

import multiprocessing
import time
from pathlib import Path
from typing import Any

from benchmarks.common import remove_db

# Tables keyed by message whose rows follow their message's channel at the merge.
_BY_MESSAGE = ("reactions", "deleted_reactions")
_CHUNK = 5_000
# The log's table in a store file (`EventLog.recorder.events_table_name`).
_LOG = "stored_events"


def split_streams(path: Path) -> tuple[list[set[str]], list[int], int]:
    """The channel streams of the log at `path` in two halves of about equal entries (largest
    stream first, each to the half with fewer entries so far), the halves' entry counts, and the
    entries of the whole log."""
    import apsw

    from chatledger.eventstore.ingest import USER_STREAM
    from chatledger.eventstore.schema import Source

    conn = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        # Local commands' streams (named by command id) are no channel's: both halves replay them.
        counts = conn.execute(
            f"SELECT originator_id, COUNT(*) FROM {_LOG} WHERE source != ? "
            "GROUP BY originator_id ORDER BY 2 DESC, 1", (int(Source.LOCAL),)).fetchall()
        total = int(conn.execute(f"SELECT COUNT(*) FROM {_LOG}").fetchone()[0])
    finally:
        conn.close()
    halves: list[set[str]] = [set(), set()]
    loads = [0, 0]
    for stream, count in counts:
        if stream == USER_STREAM:
            continue
        lighter = 0 if loads[0] <= loads[1] else 1
        halves[lighter].add(stream)
        loads[lighter] += count
    return halves, loads, total


def replay_half(path: str, user_id: str, skipped: set[str], target: str) -> dict[str, float]:
    """Replay every entry of the log at `path` but those of the `skipped` streams into fresh
    read tables at `target` (run in a child process). Returns its own seconds."""
    import apsw

    from chatledger.eventstore.datastore import STATEMENT_CACHE_SIZE
    from chatledger.eventstore.log import EventLog
    from chatledger.projections.engine import collector_paused, create_tables
    from chatledger.projections.item import Item
    from chatledger.projections.projector import Projector

    started = time.perf_counter()
    remove_db(Path(target))
    with EventLog.open(Path(path)) as log:
        codec = log.datastore.codec
        scratch = apsw.Connection(target, statementcachesize=STATEMENT_CACHE_SIZE)
        try:
            for pragma in ("PRAGMA journal_mode=OFF", "PRAGMA synchronous=OFF",
                           "PRAGMA cache_size=-65536"):
                scratch.execute(pragma).fetchall()
            cursor = scratch.cursor()
            create_tables(cursor, with_indexes=False)
            projector = Projector(user_id)
            with collector_paused(), log.datastore.transaction(commit=False) as reading:
                cursor.execute("BEGIN")
                chunk: list[Item] = []
                for position, topic, stream, codec_id, state, received_at in reading.execute(
                        "SELECT rowid, topic, originator_id, codec, state, received_at "
                        f"FROM {log.recorder.events_table_name} ORDER BY rowid"):
                    if stream in skipped:
                        continue
                    chunk.append(Item(position, topic, stream,
                                      codec.decode(codec_id, state, position), received_at))
                    if len(chunk) == _CHUNK:
                        projector.apply(cursor, chunk)
                        chunk = []
                if chunk:
                    projector.apply(cursor, chunk)
                cursor.execute("COMMIT")
        finally:
            scratch.close()
    return {"seconds": time.perf_counter() - started}


def partition_floor_figures(path: Path, user_id: str) -> dict[str, Any]:
    """The partition_* keys (see the module's docstring), for the rebuilt store at `path`."""
    import apsw

    from chatledger.projections.schema import INDEXES, LOOKUP_INDEXES, TABLES

    halves, loads, total = split_streams(path)
    targets = [path.parent / f"partition-{half}.db" for half in (0, 1)]
    context = multiprocessing.get_context("spawn")
    started = time.perf_counter()
    with context.Pool(2) as pool:
        pending = [pool.apply_async(replay_half, (str(path), user_id, halves[1 - half],
                                                  str(targets[half])))
                   for half in (0, 1)]
        own = [result.get() for result in pending]
    replay_s = time.perf_counter() - started
    second = halves[1]
    merged = apsw.Connection(str(targets[0]), flags=apsw.SQLITE_OPEN_READWRITE
                             | apsw.SQLITE_OPEN_CREATE | apsw.SQLITE_OPEN_URI)
    try:
        merged.create_scalar_function(
            "second_half", lambda cid: cid in second, 1, deterministic=True)
        merged.execute("ATTACH DATABASE ? AS second", (str(targets[1]),))
        started = time.perf_counter()
        merged.execute("BEGIN")
        # The merged tables are indexed once, after: the first half's lookup indexes go first.
        for (index,) in merged.execute("SELECT name FROM main.sqlite_schema "
                                       "WHERE type = 'index' AND sql IS NOT NULL").fetchall():
            merged.execute(f"DROP INDEX main.{index}")
        for name in TABLES:
            columns = {row[1] for row in merged.execute(f"PRAGMA main.table_info({name})")}
            if "cid" in columns:
                where = "second_half(cid)"
            elif name in _BY_MESSAGE:
                where = "message_id IN (SELECT id FROM second.messages WHERE second_half(cid))"
            else:
                continue
            merged.execute(f"DELETE FROM main.{name} WHERE {where}")
            merged.execute(f"INSERT INTO main.{name} SELECT * FROM second.{name} WHERE {where}")
            if name in _BY_MESSAGE:
                # Of a message neither half has on file, each half holds what its own entries
                # said: both are kept (the same key in both would be a conflict, and counted).
                merged.execute(
                    f"INSERT OR IGNORE INTO main.{name} SELECT * FROM second.{name} "
                    "WHERE message_id NOT IN (SELECT id FROM second.messages) "
                    "AND message_id NOT IN (SELECT id FROM main.messages)")
        for ddl in LOOKUP_INDEXES + INDEXES:
            merged.execute(ddl)
        merged.execute("COMMIT")
        merge_s = time.perf_counter() - started
        merged.execute("DETACH DATABASE second")
        merged.execute("ATTACH DATABASE ? AS rebuilt", (f"{path.resolve().as_uri()}?mode=ro",))
        differing: dict[str, int] = {}
        for name in TABLES:
            count = sum(merged.execute(
                f"SELECT COUNT(*) FROM (SELECT * FROM {first}.{name} "
                f"EXCEPT SELECT * FROM {other}.{name})").fetchone()[0]
                for first, other in (("main", "rebuilt"), ("rebuilt", "main")))
            if count:
                differing[name] = count
    finally:
        merged.close()
    for target in targets:
        remove_db(target)
    return {
        "partition_entries": [loads[0], loads[1]],
        # Entries of no channel, replayed by both halves.
        "partition_shared_entries": total - sum(loads),
        "partition_half_s": [round(run["seconds"], 4) for run in own],
        "partition_replay_s": round(replay_s, 4),
        "partition_merge_s": round(merge_s, 4),
        "partition_floor_events_per_s": round(total / (replay_s + merge_s), 1),
        "partition_rows_differing": differing,
    }


def partition_ratios(figures: dict[str, Any], raw_rate: float,
                     rebuild_rate: float) -> dict[str, float]:
    """The floor against raw APSW's append and against the rebuild, of the same run."""
    floor = figures["partition_floor_events_per_s"]
    return {"partition_floor_ratio_raw": round(floor / raw_rate, 4),
            "partition_floor_ratio_rebuild": round(floor / rebuild_rate, 4)}


def describe(result: dict[str, Any]) -> str:
    """One line for people, from the partition_* keys of a benchmark's result."""
    halves = result["partition_entries"]
    wrong = ", ".join(f"{name} {count:,}"
                      for name, count in result["partition_rows_differing"].items()) or "none"
    return (f"split by channel over two processes: halves of {halves[0]:,} and {halves[1]:,} "
            f"entries (+{result['partition_shared_entries']:,} replayed by both) in "
            f"{result['partition_replay_s']:.2f} s, merged in {result['partition_merge_s']:.2f} s"
            f" = {result['partition_floor_events_per_s']:,.0f} events/s, "
            f"{result['partition_floor_ratio_raw']:.2f} x raw APSW append, "
            f"{result['partition_floor_ratio_rebuild']:.2f} x this rebuild; rows the merge gets "
            f"wrong: {wrong}.")
