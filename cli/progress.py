"""A progress bar for long work (rebuilds, replays), shown only on a terminal."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from chatledger.cli.output import console


@contextmanager
def replay_progress(label: str) -> Iterator[Callable[[int, int], None]]:
    """Yields a `(done, total)` callback that drives a bar on standard error."""
    err = console(err=True)
    with Progress(
        TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
        console=err, disable=not err.is_terminal, transient=True,
    ) as progress:
        task = progress.add_task(label, total=None)

        def update(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        yield update
