"""The benchmarks' SQL profiler: statements counted, classified, and their parts adding up.

No timing is asserted: SQLite's statement clock ticks in milliseconds, so most of these read 0.
"""

from __future__ import annotations

from pathlib import Path

import apsw
import pytest

from benchmarks.sqlprofile import (
    AUTOCHECKPOINT_SQL,
    EXPLICIT_CHECKPOINT_SQL,
    KINDS,
    SqlProfile,
    classify,
)

SCHEMA = [
    "CREATE TABLE stored_events (originator_id TEXT, state BLOB)",
    "CREATE TABLE streams (name TEXT PRIMARY KEY, head INTEGER) WITHOUT ROWID",
    "CREATE TABLE messages (id TEXT PRIMARY KEY, cid TEXT, position INTEGER)",
]
EVENTS = 50
INSERT_EVENT = "INSERT INTO stored_events (originator_id, state) VALUES (?, ?)"
UPSERT_STREAM = ("INSERT INTO streams (name, head) VALUES (?, ?) "
                 "ON CONFLICT (name) DO UPDATE SET head = excluded.head")
INSERT_MESSAGE = "INSERT OR IGNORE INTO messages (id, cid, position) VALUES (?, ?, ?)"
LOOKUP = "SELECT position FROM messages WHERE id = ?"
JOINED = "SELECT m.id, e.state FROM messages m JOIN stored_events e ON e.rowid = m.position"


def _workload(conn: apsw.Connection) -> None:
    """Two transactions of appends plus projections, some reads left open by fetchone()."""
    cursor = conn.cursor()
    for half in range(2):
        cursor.execute("BEGIN IMMEDIATE")
        for i in range(half * EVENTS // 2, (half + 1) * EVENTS // 2):
            cursor.execute(INSERT_EVENT, (f"c{i % 3}", b"x" * 100))
            cursor.execute(UPSERT_STREAM, (f"c{i % 3}", i))
            cursor.execute(INSERT_MESSAGE, (f"m{i}", f"c{i % 3}", i + 1))
            assert cursor.execute(LOOKUP, (f"m{i}",)).fetchone() == (i + 1,)  # held open
        cursor.execute("COMMIT")
    assert len(conn.execute(JOINED).fetchall()) == EVENTS


@pytest.fixture
def memory_db() -> apsw.Connection:
    conn = apsw.Connection(":memory:")
    for sql in SCHEMA:
        conn.execute(sql)
    yield conn
    conn.close()


@pytest.mark.parametrize(("sql", "kind"), [
    (INSERT_EVENT, "log"),
    (UPSERT_STREAM, "log"),  # DO UPDATE SET names no table
    ("UPDATE OR IGNORE tracking SET notification_id = ?", "log"),
    ("SELECT COUNT(*) FROM stored_events WHERE codec = ?", "log"),
    ("VACUUM", "log"),
    (INSERT_MESSAGE, "tables"),
    (LOOKUP, "tables"),
    (JOINED, "tables"),  # a read table joined to the log is the table's
    ("PRAGMA data_version", "tables"),
    ("BEGIN IMMEDIATE", "commit"),
    ("COMMIT", "commit"),
    ("ROLLBACK", "commit"),
])
def test_classify(sql: str, kind: str) -> None:
    assert classify(sql) == kind


def test_counts_and_parts_add_up(memory_db: apsw.Connection) -> None:
    profile = SqlProfile()
    with profile.recording([memory_db]):
        _workload(memory_db)
    memory_db.execute("SELECT 1").fetchall()  # after recording: not counted

    stats = profile.stats
    assert stats[INSERT_EVENT].count == EVENTS
    assert stats[UPSERT_STREAM].count == EVENTS
    assert stats[INSERT_MESSAGE].count == EVENTS
    assert stats[LOOKUP].count == EVENTS
    assert stats[LOOKUP].row_executions == EVENTS  # each returned its row, then sat open
    assert stats[JOINED].count == 1
    assert stats["COMMIT"].count == 2 and stats["BEGIN IMMEDIATE"].count == 2
    assert "SELECT 1" not in stats
    assert {s.kind for sql, s in stats.items()} <= set(KINDS)
    assert stats[INSERT_EVENT].kind == "log" and stats[LOOKUP].kind == "tables"

    by_kind = profile.seconds_by_kind()
    assert sum(by_kind.values()) == pytest.approx(profile.total_s())
    figures = profile.figures(EVENTS, "event")
    parts = sum(figures[f"sql_{kind}_s"] for kind in KINDS)
    assert parts == pytest.approx(figures["sql_s"], abs=1e-3)  # each rounded to 0.1 ms
    assert figures["sql_s"] == pytest.approx(
        figures["sql_reported_s"] - figures["sql_held_s"], abs=1e-3)
    assert figures["sql_statements"] == sum(s.count for s in stats.values())
    assert figures["sql_held_s"] > 0  # the lookups were held open between statements
    assert 0 < len(figures["sql_top"]) <= 12
    assert sum(row["count"] for row in figures["sql_top"]) <= figures["sql_statements"]


def test_hooks_removed_and_new_connections_attached(memory_db: apsw.Connection) -> None:
    profile = SqlProfile()
    with profile.recording([memory_db]):
        opened = apsw.Connection(":memory:")  # opened while recording: attached by the hook
        opened.execute("CREATE TABLE t (x)")
        opened.execute("INSERT INTO t VALUES (1)")
    opened.execute("INSERT INTO t VALUES (2)")
    opened.close()
    assert profile.stats["INSERT INTO t VALUES (1)"].count == 1
    assert "INSERT INTO t VALUES (2)" not in profile.stats
    assert profile.attach not in apsw.connection_hooks


def test_checkpoints(tmp_path: Path) -> None:
    """Automatic checkpoints are timed by the replacement WAL hook, explicit ones added; the
    connection's own threshold is back afterwards."""
    conn = apsw.Connection(str(tmp_path / "db"))
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA wal_autocheckpoint=20")
        conn.execute("CREATE TABLE stored_events (state BLOB)")
        profile = SqlProfile()
        with profile.recording([conn]):
            for _ in range(30):
                with conn:
                    conn.execute("INSERT INTO stored_events VALUES (randomblob(4000))")
        profile.add_checkpoint(0.001)
        assert profile.stats[AUTOCHECKPOINT_SQL].count >= 1
        assert profile.stats[AUTOCHECKPOINT_SQL].kind == "checkpoint"
        assert profile.stats[EXPLICIT_CHECKPOINT_SQL].count == 1
        figures = profile.figures(30, "event")
        assert figures["sql_checkpoint_s"] >= 0.001
        assert figures["sql_statements"] == sum(
            s.count for s in profile.stats.values() if s.kind != "checkpoint")
        assert conn.execute("PRAGMA wal_autocheckpoint").fetchone() == (20,)
    finally:
        conn.close()


def test_a_small_rebuild_reports_its_sql_floor(tmp_path: Path) -> None:
    import json

    from click.testing import CliRunner

    from benchmarks.rebuild import command

    result = CliRunner().invoke(command, ["--events", "2500", "--reps", "1", "--sql-profile",
                                          "--dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    figures = json.loads(result.output.strip().splitlines()[-1])
    parts = sum(figures[f"sql_{kind}_s"] for kind in KINDS)
    assert figures["sql_s"] == pytest.approx(parts, abs=1e-3)
    # The hooks were on the child's connections: the rebuild's many statements were seen.
    assert figures["sql_statements"] > figures["entries"] // 2
    if figures["sql_s"] > 0:  # SQLite's clock ticks in ms: a tiny rebuild may read 0
        assert figures["sql_floor_events_per_s"] == pytest.approx(
            figures["entries"] / figures["sql_s"], rel=1e-3)
