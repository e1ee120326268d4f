"""How much of a benchmark's time SQLite itself spends: the floor no Python optimisation goes below.

`SqlProfile.recording()` hooks every APSW connection of the process (the open ones and any opened
meanwhile) and sums, per statement text, the time SQLite reports for it. Three corrections make
that sum SQLite's time rather than SQLite's plus some Python's:

- SQLite's statement clock runs from the first step to completion *or reset*. A statement read
  with `fetchone()` is not reset until its cursor runs the next one, so the Python work in
  between would count as SQL. Each statement's time after its last row (measured with
  `perf_counter_ns` from SQLite's row event to its profile event) is taken off: `held`.
- SQLite reports the statement before running the WAL hook, so an automatic checkpoint is in no
  statement's time. The default hook is replaced by one that does what SQLite's does (a PASSIVE
  checkpoint once the WAL holds `wal_autocheckpoint` pages) and times it.
- Checkpoints made through the C API (`Connection.wal_checkpoint`) are not statements at all: the
  caller times them and adds them with `add_checkpoint`.

SQLite's clock (the VFS's `xCurrentTimeInt64`) ticks in milliseconds: one statement reads 0 or
1 ms, but over thousands the sum is the true total (each reads 1 ms with probability duration/1 ms).
Per-call figures of rare statements are therefore rough. The hooks cost Python time on every
statement, so the wall time of a recorded run is longer than an unrecorded one.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import apsw

# The event log's own tables and indexes (chatledger/eventstore/schema.py); everything else a
# statement may name is a read table (chatledger/projections/schema.py) or SQLite's.
LOG_TABLES = frozenset({
    "stored_events", "stored_events_aggregate", "streams", "zstd_dictionaries", "tracking",
    "chatledger_meta", "quarantine",
})
# Transaction control: what a batch costs to open and make durable, apart from its rows.
TRANSACTION_WORDS = frozenset({"begin", "commit", "end", "rollback", "savepoint", "release"})
KINDS = ("log", "tables", "commit", "checkpoint")

AUTOCHECKPOINT_SQL = "[automatic WAL checkpoint, PASSIVE]"
EXPLICIT_CHECKPOINT_SQL = "[explicit WAL checkpoint]"

_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# The table after FROM, JOIN, INTO or UPDATE [OR <conflict>]: what a statement reads or writes.
_TABLE_REF = re.compile(r"\b(?:FROM|JOIN|INTO|UPDATE(?:\s+OR\s+\w+)?)\s+[\"`\[]?([A-Za-z_]\w*)",
                        re.IGNORECASE)
_ROW = apsw.SQLITE_TRACE_ROW
_PROFILE = apsw.SQLITE_TRACE_PROFILE


def classify(sql: str) -> str:
    """'commit' (transaction control), 'log' or 'tables' (everything else).

    'log': every table the statement reads or writes is the log's, or it is a VACUUM (the log
    repacks the file after training its compression dictionary). A read table joined to the log
    (the retry stream's read fetches its payloads from stored_events) counts as the table's.
    """
    first = _WORD.match(sql.lstrip())
    verb = first.group(0).lower() if first else ""
    if verb in TRANSACTION_WORDS:
        return "commit"
    if verb == "vacuum":
        return "log"
    # `... ON CONFLICT DO UPDATE SET` names no table: drop the SET it matches.
    tables = {name.lower() for name in _TABLE_REF.findall(sql)} - {"set"}
    return "log" if tables and tables <= LOG_TABLES else "tables"


@dataclass
class StatementStats:
    kind: str
    count: int = 0
    reported_ns: int = 0  # what SQLite's profile event said, summed
    held_ns: int = 0  # of that, the time after the statement's last row (Python's, see above)
    row_executions: int = 0  # executions that returned at least one row

    @property
    def ns(self) -> int:
        return self.reported_ns - self.held_ns


class SqlProfile:
    """Per-statement SQLite time across the connections it is attached to (see the module doc)."""

    def __init__(self) -> None:
        self.stats: dict[str, StatementStats] = {}
        self._last_row: dict[int, int] = {}  # statement id -> perf_counter_ns of its last row
        self._lock = threading.Lock()  # a background store runs statements on several threads
        self._attached: list[tuple[apsw.Connection, int]] = []  # with its wal_autocheckpoint

    # -- hooks -------------------------------------------------------------------------------------

    def attach(self, connection: apsw.Connection) -> None:
        """Trace `connection` and time its automatic checkpoints.

        A connection opened while recording is attached when it opens: a later `PRAGMA
        wal_autocheckpoint` on it puts SQLite's own hook back, and its checkpoints go untimed.
        """
        pages = connection.execute("PRAGMA wal_autocheckpoint").fetchone()[0]
        connection.trace_v2(_ROW | _PROFILE, self._on_trace, id=self)
        if pages > 0:
            connection.set_wal_hook(self._wal_hook(pages))
        self._attached.append((connection, pages))

    def detach_all(self) -> None:
        """Remove the hooks from the connections still open; SQLite's checkpoint threshold is
        put back as it was."""
        for connection, pages in self._attached:
            try:
                connection.trace_v2(0, None, id=self)
                if pages > 0:
                    connection.set_wal_hook(None)
                    connection.wal_autocheckpoint(pages)
            except apsw.ConnectionClosedError:
                pass
        self._attached.clear()

    @contextmanager
    def recording(self, connections: Iterable[apsw.Connection] | None = None
                  ) -> Iterator[SqlProfile]:
        """Attach to `connections` (default: every open APSW connection of the process) and to
        any connection opened inside the block; detach at its end."""
        for connection in list(apsw.connections() if connections is None else connections):
            self.attach(connection)
        apsw.connection_hooks.append(self.attach)
        try:
            yield self
        finally:
            apsw.connection_hooks.remove(self.attach)
            self.detach_all()

    def _on_trace(self, event: dict[str, Any]) -> None:
        now = time.perf_counter_ns()
        if event["code"] == _ROW:
            self._last_row[event["id"]] = now
            return
        row_at = self._last_row.pop(event["id"], None)
        sql = event["sql"]
        with self._lock:
            stats = self.stats.get(sql)
            if stats is None:
                stats = self.stats[sql] = StatementStats(classify(sql))
            stats.count += 1
            stats.reported_ns += event["nanoseconds"]
            if row_at is not None:
                stats.held_ns += now - row_at
                stats.row_executions += 1

    def _wal_hook(self, pages_limit: int) -> Any:
        def hook(connection: apsw.Connection, db_name: str, pages: int) -> int:
            # What sqlite3WalDefaultHook does, timed: it is SQLite's time too.
            if pages >= pages_limit:
                t0 = time.perf_counter_ns()
                connection.wal_checkpoint(db_name)
                self._add(AUTOCHECKPOINT_SQL, time.perf_counter_ns() - t0)
            return apsw.SQLITE_OK

        return hook

    def add_checkpoint(self, seconds: float, label: str = EXPLICIT_CHECKPOINT_SQL) -> None:
        """Count a checkpoint the caller made through the C API and timed itself."""
        self._add(label, round(seconds * 1e9))

    def _add(self, label: str, ns: int) -> None:
        with self._lock:
            stats = self.stats.setdefault(label, StatementStats("checkpoint"))
            stats.count += 1
            stats.reported_ns += ns

    # -- figures -----------------------------------------------------------------------------------

    def seconds_by_kind(self) -> dict[str, float]:
        out = dict.fromkeys(KINDS, 0.0)
        for stats in self.stats.values():
            out[stats.kind] += stats.ns / 1e9
        return out

    def total_s(self) -> float:
        return sum(stats.ns for stats in self.stats.values()) / 1e9

    def top(self, n: int = 12) -> list[dict[str, Any]]:
        """The `n` statements with the most SQLite time: first 100 characters of the SQL (blanks
        squeezed), kind, executions, total ms, µs per call, and the ms taken off as held."""
        ranked = sorted(self.stats.items(), key=lambda item: item[1].ns, reverse=True)[:n]
        return [{
            "sql": " ".join(sql.split())[:100],
            "kind": stats.kind,
            "count": stats.count,
            "total_ms": round(stats.ns / 1e6, 1),
            "us_per_call": round(stats.ns / stats.count / 1e3, 2) if stats.count else None,
            "held_ms": round(stats.held_ns / 1e6, 1),
        } for sql, stats in ranked]

    def figures(self, work: int, unit: str) -> dict[str, Any]:
        """The JSON keys both benchmarks report: totals, the split by kind, the top statements.
        `work` is how many events or commands the recorded run handled (`unit`)."""
        by_kind = self.seconds_by_kind()
        total = self.total_s()
        return {
            "sql_s": round(total, 4),
            f"sql_us_per_{unit}": round(total / work * 1e6, 2) if work else None,
            "sql_log_s": round(by_kind["log"], 4),
            "sql_tables_s": round(by_kind["tables"], 4),
            "sql_commit_s": round(by_kind["commit"], 4),
            "sql_checkpoint_s": round(by_kind["checkpoint"], 4),
            "sql_reported_s": round(sum(s.reported_ns for s in self.stats.values()) / 1e9, 4),
            "sql_held_s": round(sum(s.held_ns for s in self.stats.values()) / 1e9, 4),
            "sql_statements": sum(s.count for s in self.stats.values() if s.kind != "checkpoint"),
            "sql_top": self.top(),
        }


def print_figures(figures: dict[str, Any], work: int, unit: str, wall_s: float) -> None:
    """The split by kind and the top statements, on stdout (before the JSON line)."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console(highlight=False, soft_wrap=True, width=140)
    total = figures["sql_s"]
    table = Table(title=f"SQLite time of the recorded run ({work:,} {unit}s, {wall_s:.2f} s wall)")
    for name in ("part", "s", "share of SQL", f"µs/{unit}"):
        table.add_column(name, justify="left" if name == "part" else "right")
    for kind in KINDS:
        seconds = figures[f"sql_{kind}_s"]
        table.add_row(kind, f"{seconds:.3f}", f"{seconds / total:.1%}" if total else "-",
                      f"{seconds / work * 1e6:.1f}" if work else "-")
    table.add_row("all", f"{total:.3f}", f"{wall_s and total / wall_s:.1%} of wall",
                  f"{total / work * 1e6:.1f}" if work else "-")
    console.print(table)
    console.print(f"SQLite reported {figures['sql_reported_s']:.3f} s over "
                  f"{figures['sql_statements']:,} statements; {figures['sql_held_s']:.3f} s of it "
                  f"was statements held open after their last row (taken off).")
    top = Table(title="top statements by SQLite time")
    for name in ("sql", "kind", "count", "total ms", "µs/call", "held ms"):
        top.add_column(name, justify="left" if name in ("sql", "kind") else "right")
    for row in figures["sql_top"]:
        # escape: rich would take the checkpoints' [labels] (and SQL's brackets) for markup
        top.add_row(escape(row["sql"]), row["kind"], f"{row['count']:,}", f"{row['total_ms']:,.1f}",
                    f"{row['us_per_call']:,.2f}", f"{row['held_ms']:,.1f}")
    console.print(top)
