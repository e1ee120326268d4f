"""`rebuild --partition-floor`: a rebuild split by channel over two processes, merged.

No timing is asserted. What is checked is the design's premise, on a generated workload: the
channels split into halves that cover every channel entry once, and the merge makes exactly the
tables a sequential rebuild makes: every table keyed by channel (and the reactions that follow
their message's channel) by taking each channel's rows from its half, and `users`, whose rule
orders one user's objects across channels, by making both halves' calls to its writer again in
log order (40 users seen in 12 channels: without that step, 80 rows differ).
"""

from __future__ import annotations

import json
from pathlib import Path

import apsw
import pytest

from benchmarks.partition import describe, partition_floor_figures, partition_ratios, split_streams
from benchmarks.workload import generate_events
from chatledger import ChatStore
from chatledger.eventstore.ingest import USER_STREAM

USER = "mia"


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


def test_the_merge_makes_the_rebuilds_tables(tmp_path: Path) -> None:
    path = _store(tmp_path, 1_500)
    figures = partition_floor_figures(path, USER)
    conn = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        total = conn.execute("SELECT COUNT(*) FROM stored_events").fetchone()[0]
    finally:
        conn.close()
    assert sum(figures["partition_entries"]) + figures["partition_shared_entries"] == total
    assert min(figures["partition_entries"]) > 0
    assert figures["partition_rows_differing"] == {}
    assert figures["partition_crossing_keys"] == 0  # the generator keeps to its channels
    assert figures["partition_floor_events_per_s"] > 0
    assert not list(tmp_path.glob("partition-*.db*"))  # the scratch files are removed
    ratios = partition_ratios(figures, raw_rate=1.0, rebuild_rate=2.0)
    assert ratios["partition_floor_ratio_raw"] == pytest.approx(
        2 * ratios["partition_floor_ratio_rebuild"], abs=1e-3)
    line = describe({**figures, **ratios})
    assert line.startswith("split by channel") and "replayed by both" in line


def test_an_entry_naming_the_other_halfs_message_is_counted(tmp_path: Path) -> None:
    """A reply filed in one channel to a message of another: whichever way the channels split,
    some reply's half lacks its parent, and the guard's evidence names it."""
    path = _store(tmp_path, 1_500)
    conn = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        parent_cid, parent_id = conn.execute(
            "SELECT cid, id FROM messages WHERE parent_id IS NULL ORDER BY id LIMIT 1").fetchone()
        others = [cid for (cid,) in conn.execute(
            "SELECT cid FROM channels WHERE cid != ? ORDER BY cid", (parent_cid,))]
    finally:
        conn.close()
    assert len(others) > 1
    with ChatStore.open(tmp_path, USER) as store:
        store.ingest_many([json.dumps({
            "type": "message.new", "cid": cid, "channel_type": cid.partition(":")[0],
            "channel_id": cid.partition(":")[2], "created_at": "2030-01-01T00:00:00Z",
            "message": {"id": f"crossing-{number}", "cid": cid, "parent_id": parent_id,
                        "type": "reply", "user": {"id": "someone"},
                        "created_at": "2030-01-01T00:00:00Z"},
        }).encode() for number, cid in enumerate(others)])
    assert partition_floor_figures(path, USER)["partition_crossing_keys"] > 0
