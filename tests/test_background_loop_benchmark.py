"""`python -m benchmarks loop` (background mode's event-loop stalls): it runs, and it says where its
longest stall fell. Figures are only measured there, never asserted here."""

from __future__ import annotations

import asyncio
import json
import time

from click.testing import CliRunner

from benchmarks.loop import StallMonitor, command


def test_the_longest_stall_of_a_phase_counts_only_stalls_that_ended_in_it() -> None:
    monitor = StallMonitor()
    monitor.stalls[:] = [0.001, 0.004, 0.002, 0.003]
    monitor.woke[:] = [1.0, 2.0, 3.0, 4.0]
    assert monitor.longest_between(0.0, 10.0) == 4.0
    assert monitor.longest_between(2.5, 10.0) == 3.0
    assert monitor.longest_between(1.0, 2.0) == 1.0  # the end is excluded
    assert monitor.longest_between(5.0, 10.0) is None


def test_the_monitor_records_when_each_tick_woke() -> None:
    async def main() -> StallMonitor:
        monitor = StallMonitor()
        task = asyncio.create_task(monitor.run())
        await asyncio.sleep(0.02)
        monitor.stop()
        await task
        return monitor

    before = time.perf_counter()
    monitor = run_loop(main())
    assert monitor.stalls and len(monitor.woke) == len(monitor.stalls)
    assert monitor.woke == sorted(monitor.woke) and monitor.woke[0] > before


def test_a_small_run_reports_the_phases_of_its_longest_stall(tmp_path: object) -> None:
    result = CliRunner().invoke(
        command, ["--events", "400", "--idle-seconds", "0.05", "--dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    figures = json.loads(result.output.strip().splitlines()[-1])
    assert figures["events"] == 400
    phases = [figures["ingest_max_stall_ms"], figures["close_max_stall_ms"]]
    assert figures["max_stall_ms"] == max(p for p in phases if p is not None)
    assert figures["max_stall_at_s"] is not None
    # The same ingest ran in another process beside this idle loop, and was measured.
    assert figures["process_baseline_max_stall_ms"] is not None
    assert figures["process_baseline_max_stall_ms"] >= figures["process_baseline_p99_stall_ms"]
    assert figures["process_baseline_s"] > 0


def run_loop(coro: object) -> StallMonitor:
    return asyncio.run(coro)  # type: ignore[arg-type]
