"""`chatledger import`: append files of events or backend responses to a user's log."""

from __future__ import annotations

import os
from typing import BinaryIO

import click
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

from chatledger import IMPORT_KINDS, ImportReport
from chatledger.cli.context import Context, Interrupted, fail, pass_context
from chatledger.cli.output import console, echo_json, escape_controls
from chatledger.errors import AlreadyImported, ImportInterrupted, ImportStopped, NothingToResume

# Below this size a progress bar would only flicker.
_PROGRESS_MIN_BYTES = 4 * 1024 * 1024


@click.command("import")
@click.argument("file", type=click.File("rb"), default="-")
@click.option(
    "--kind",
    type=click.Choice(IMPORT_KINDS),
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
@click.option("--again", is_flag=True,
              help="Store the input even when an earlier import stored it whole already.")
@click.option("--resume", is_flag=True,
              help="Continue an import that stopped part-way (an error if none did).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@pass_context
def import_command(
    ctx: Context, file: BinaryIO, kind: str, source: str, batch_size: int, again: bool,
    resume: bool, as_json: bool,
) -> None:
    """Append FILE (or standard input, "-") to the user's log, verbatim.

    Malformed items are kept in the quarantine with the reason (see
    `chatledger quarantine`) and the rest is stored; the exit status is then 1.

    An import ledger in the store remembers each input (by content hash and size, up to
    which line, when): importing the same input again stores nothing and says so (exit 0)
    unless --again. JSON lines are stored in batches: an import that stops part-way (a full
    disk, Ctrl-C: exit 130) says how far it got, and running it again (or with --resume)
    continues after that line.

    \b
    Examples:
      chatledger --user alice import events.jsonl
      chatledger --user alice import --resume events.jsonl
      chatledger --user alice import --again events.jsonl
      chatledger --user alice import --kind query channels.json
      cat sync.json | chatledger --user alice import -
    """
    if again and resume:
        raise click.UsageError("give --again or --resume, not both")
    if _is_terminal(file):
        # `import` alone waits for standard input: say so rather than seem to hang.
        click.echo("Reading events from standard input (end with Ctrl-D, stop with Ctrl-C)...",
                   err=True)
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
            report = store.import_file(
                file, kind=kind, source=source, batch_size=batch_size,  # type: ignore[arg-type]
                on_progress=lambda done: progress.update(task, completed=done),
                again=again, resume=resume,
            )
        except ImportInterrupted as stopped:
            interrupted: ImportInterrupted | None = stopped
        except ImportStopped as stopped:
            if stopped.report.items:
                _print_report(stopped.report, as_json)
            raise Interrupted(
                f"Interrupted: {stopped.report.stored:,} items were stored (up to line "
                f"{stopped.committed_line:,}); `chatledger import --resume` with the same "
                "input continues after it.") from None
        except AlreadyImported as already:
            _already_in(already, as_json)
            return
        except NothingToResume as nothing:
            fail(str(nothing))
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
        fail("the input holds nothing to import")  # a store this created is removed
    _print_report(report, as_json)
    if report.quarantined:
        rest = "the rest is stored" if report.stored else "nothing was stored"
        fail(
            f"{report.quarantined:,} of {report.items:,} items were quarantined "
            f"(first: {escape_controls(report.reasons[0])}); {rest}"
        )


def _is_terminal(file: BinaryIO) -> bool:
    try:
        return file.isatty()
    except (OSError, ValueError, AttributeError):
        return False


def _already_in(already: AlreadyImported, as_json: bool) -> None:
    point = already.point
    if as_json:
        echo_json({"already_imported": True, "lines": point.lines, "bytes": point.bytes,
                   "sha256": point.sha256, "imported_at": point.at})
        return
    click.echo(f"Already imported: {point.lines:,} lines ({point.bytes:,} bytes) of this input "
               f"were stored at {point.at or 'an unknown time'}; nothing was stored now "
               "(--again stores it again).")


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
        click.echo(f"Continued after line {report.resumed_after_line:,}: an earlier import "
                   "of this input had stored the lines up to it.")
    span = (
        f" (positions {report.first_position}-{report.last_position})"
        if report.first_position is not None else ""
    )
    click.echo(f"Imported {report.stored:,} of {report.items:,} items ({report.kind}){span}.")
    for reason in report.reasons[1:5]:
        click.echo(f"  quarantined: {escape_controls(reason)}", err=True)
