"""`rebuild --partition-floor`: a rebuild split by channel over two processes, merged.

No timing is asserted. What is checked is the design's premise, on a generated workload: the
channels split into halves that cover every channel entry once, and every table keyed by channel
(and the reactions that follow their message's channel) merges into exactly the tables a
sequential rebuild makes; only the tables whose rule orders objects across channels (`users`)
are left to the merge step the design still needs.
"""

from __future__ import annotations

from pathlib import Path

import apsw
import pytest

from benchmarks.partition import describe, partition_floor_figures, partition_ratios, split_streams
from benchmarks.workload import generate_events
from chatledger import ChatStore
from chatledger.eventstore.ingest import USER_STREAM

USER = "mia"
# The table whose rule orders objects across the halves, which the floor's merge leaves as the
# first half made it (see benchmarks/partition.py).
UNMERGED = {"users"}


def _store(folder: Path, events: int) -> Path:
    with ChatStore.open(folder, USER) as store:
        payloads = list(generate_events(events, seed=7, channels=12, users=40))
        for start in range(0, len(payloads), 500):
            store.ingest_many(payloads[start:start + 500])
        store.rebuild()
        path = store.log.datastore.path
    assert path is not None
    return Path(path)


def test_halves_cover_every_channel_entry_once(tmp_path: Path) -> None:
    path = _store(tmp_path, 1_500)
    halves, loads, total = split_streams(path)
    assert not halves[0] & halves[1]
    conn = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        counts = dict(conn.execute("SELECT originator_id, COUNT(*) FROM stored_events "
                                   "WHERE source != 0 GROUP BY originator_id").fetchall())
        assert total == conn.execute("SELECT COUNT(*) FROM stored_events").fetchone()[0]
    finally:
        conn.close()
    channels = {stream for stream in counts if stream != USER_STREAM}
    assert halves[0] | halves[1] == channels
    assert loads == [sum(counts[s] for s in half) for half in halves]
    assert abs(loads[0] - loads[1]) <= max(counts[s] for s in channels)


def test_tables_keyed_by_channel_merge_exactly(tmp_path: Path) -> None:
    path = _store(tmp_path, 1_500)
    figures = partition_floor_figures(path, USER)
    conn = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        total = conn.execute("SELECT COUNT(*) FROM stored_events").fetchone()[0]
    finally:
        conn.close()
    assert sum(figures["partition_entries"]) + figures["partition_shared_entries"] == total
    assert min(figures["partition_entries"]) > 0
    assert set(figures["partition_rows_differing"]) <= UNMERGED
    assert figures["partition_floor_events_per_s"] > 0
    assert not list(tmp_path.glob("partition-*.db*"))  # the scratch files are removed
    ratios = partition_ratios(figures, raw_rate=1.0, rebuild_rate=2.0)
    assert ratios["partition_floor_ratio_raw"] == pytest.approx(
        2 * ratios["partition_floor_ratio_rebuild"], abs=1e-3)
    line = describe({**figures, **ratios})
    assert line.startswith("split by channel") and "replayed by both" in line
