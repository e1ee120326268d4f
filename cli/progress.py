"""A progress bar for long work (rebuilds, replays), shown only on a terminal."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
)

from chatledger.cli.output import console


class _LazyBar:
    """A bar that appears at the first report of progress, not before: opening a store whose
    tables are ready reports nothing, and must not flash "0/?" on the terminal."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.progress: Progress | None = None
        self.task = TaskID(0)

    def update(self, done: int, total: int) -> None:
        if self.progress is None:
            err = console(err=True)
            if not err.is_terminal:
                return
            self.progress = Progress(
                TextColumn(self.label), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                console=err, transient=True,
            )
            self.progress.start()
            self.task = self.progress.add_task(self.label, total=total)
        self.progress.update(self.task, completed=done, total=total)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None


@contextmanager
def replay_progress(label: str) -> Iterator[Callable[[int, int], None]]:
    """Yields a `(done, total)` callback that drives a bar on standard error."""
    bar = _LazyBar(label)
    try:
        yield bar.update
    finally:
        bar.close()
