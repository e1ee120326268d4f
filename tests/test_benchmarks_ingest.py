"""`python -m benchmarks ingest` on a store too small for its paired comparison.

The paired comparison times only the batches after the compression dictionary's training; below
that many events it has nothing to time, and the command must say so instead of dividing by
zero. No timing is asserted.
"""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from benchmarks.cli import main


def test_small_ingest_run_skips_the_paired_comparison(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main, ["ingest", "--events", "300", "--reps", "1", "--dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "paired: skipped for 300 events" in result.output
    summary = result.output.strip().splitlines()[-1]
    assert '"events":300' in summary
    assert "paired_seconds" not in summary
