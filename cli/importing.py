"""`chatledger import`: append files of events or backend responses to a user's log."""

from __future__ import annotations

import os
from typing import BinaryIO

import click
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

from chatledger.cli.context import Context, fail, pass_context
from chatledger.cli.output import console, echo_json, escape_controls
from chatledger.eventstore.importer import KINDS, ImportInterrupted, ImportReport, import_stream

# Below this size a progress bar would only flicker.
_PROGRESS_MIN_BYTES = 4 * 1024 * 1024


@click.command("import")
@click.argument("file", type=click.File("rb"), default="-")
@click.option(
    "--kind",
    type=click.Choice(KINDS),
    default="auto",
    show_default=True,
    help="What the file holds: JSON lines of events, or one query-channels, sync or channel "
    "response. auto decides from the content.",
)
@click.option(
    "--source",
    type=click.Choice(["import", "websocket", "sync", "query"]),
    default="import",
    show_default=True,
    help="Where the events are recorded as coming from.",
)
@click.option("--batch", "batch_size", type=click.IntRange(1, 100_000), default=1_000,
              show_default=True, help="Events per transaction.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@pass_context
def import_command(
    ctx: Context, file: BinaryIO, kind: str, source: str, batch_size: int, as_json: bool
) -> None:
    """Append FILE (or standard input, "-") to the user's log, verbatim.

    Malformed items are kept in the quarantine with the reason (see
    `chatledger quarantine`) and the rest is stored; the exit status is then 1.

    JSON lines are stored in batches: an import that stops part-way (a full disk) says how
    far it got, and running it again on the same input continues after that line.

    \b
    Examples:
      chatledger --user alice import events.jsonl
      chatledger --user alice import --kind query channels.json
      cat sync.json | chatledger --user alice import -
    """
    existed = ctx.store_exists()
    store = ctx.store()
    size = _size_of(file)
    err = console(err=True)
    show_bar = size is not None and size >= _PROGRESS_MIN_BYTES and err.is_terminal and not as_json
    with Progress(
        TextColumn("importing"), BarColumn(), DownloadColumn(), TimeRemainingColumn(),
        console=err, disable=not show_bar, transient=True,
    ) as progress:
        task = progress.add_task("import", total=size)
        try:
            report = import_stream(
                store.log, file, kind=kind, source=source, batch_size=batch_size,  # type: ignore[arg-type]
                on_progress=lambda done: progress.update(task, completed=done),
            )
        except ImportInterrupted as stopped:
            interrupted = stopped
        else:
            interrupted = None
    if interrupted is not None:
        if interrupted.report.items:
            _print_report(interrupted.report, as_json)
        fail(str(interrupted))
    if report.items == 0 and report.resumed_after_line:
        _print_report(report, as_json)
        return
    if report.items == 0:
        if not existed:
            ctx.discard_new_store()  # an empty input leaves no empty store behind
        fail("the input holds nothing to import")
    _print_report(report, as_json)
    if report.quarantined:
        rest = "the rest is stored" if report.stored else "nothing was stored"
        fail(
            f"{report.quarantined:,} of {report.items:,} items were quarantined "
            f"(first: {escape_controls(report.reasons[0])}); {rest}"
        )


def _size_of(file: BinaryIO) -> int | None:
    try:
        return os.fstat(file.fileno()).st_size or None
    except (OSError, ValueError, AttributeError):
        return None


def _print_report(report: ImportReport, as_json: bool) -> None:
    if as_json:
        echo_json({
            "kind": report.kind, "items": report.items, "stored": report.stored,
            "quarantined": report.quarantined, "first_position": report.first_position,
            "last_position": report.last_position, "reasons": report.reasons,
            "resumed_after_line": report.resumed_after_line,
        })
        return
    if report.resumed_after_line:
        click.echo(f"Continued after line {report.resumed_after_line:,}, which an earlier "
                   "run of this import had stored before it stopped.")
    span = (
        f" (positions {report.first_position}-{report.last_position})"
        if report.first_position is not None else ""
    )
    click.echo(f"Imported {report.stored:,} of {report.items:,} items ({report.kind}){span}.")
    for reason in report.reasons[1:5]:
        click.echo(f"  quarantined: {escape_controls(reason)}", err=True)
