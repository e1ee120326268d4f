"""`chatledger backup` and `chatledger export`: copies of a store, and of its channels."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import click
import msgspec
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from chatledger import MAX_RESPONSE_BYTES
from chatledger.cli.context import Context, fail, pass_context
from chatledger.cli.output import MAX_INT, console, echo_json
from chatledger.errors import DestinationExists

# Below this many pages (64 MiB of 4 KiB pages) a backup takes well under a second.
_PROGRESS_MIN_PAGES = 16_384


@click.command("backup")
@click.argument("dest", type=click.Path(path_type=Path))
@click.option("--force", is_flag=True, help="Replace DEST if it exists.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@pass_context
def backup_command(ctx: Context, dest: Path, force: bool, as_json: bool) -> None:
    """Copy the user's store to DEST, a file or an existing directory, while it stays in use.

    The copy is one consistent snapshot, taken with SQLite's online backup: programs using the
    store go on writing meanwhile. It is checked before it takes the name DEST, and created
    with mode 0600. An existing DEST is replaced only with --force.

    \b
    Examples:
      chatledger --user alice backup alice-backup.chatledger
      chatledger --user alice backup --force /backups/
    """
    store = ctx.store(create=False)
    err = console(err=True)
    with Progress(TextColumn("backing up"), BarColumn(), TimeRemainingColumn(), console=err,
                  disable=as_json or not err.is_terminal, transient=True) as progress:
        task = progress.add_task("backup", total=None)

        def on_progress(done: int, total: int) -> None:
            if total >= _PROGRESS_MIN_PAGES:
                progress.update(task, completed=done, total=total)

        try:
            report = store.backup(dest, overwrite=force, on_progress=on_progress)
        except DestinationExists as error:
            fail(f"{error} (--force replaces it)")
    if as_json:
        echo_json(report)
        return
    click.echo(f"Backed up {report['events']:,} log entries of {report['user_id']!r} to "
               f"{report['path']} ({report['bytes']:,} bytes, {report['seconds']:.2f} s).")


@click.command("export")
@click.argument("file", type=click.Path(dir_okay=False, allow_dash=True, path_type=str))
@click.option("--cid", "cids", multiple=True,
              help="Only this channel (e.g. messaging:general); repeat for several.")
@click.option("--messages", type=click.IntRange(0, MAX_INT), default=None,
              help="Only the newest N messages of each channel [default: all].")
@click.option("--include-local", is_flag=True,
              help="Also messages with local changes the backend has not confirmed.")
@click.option("--force", is_flag=True, help="Replace FILE if it exists.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@pass_context
def export_command(
    ctx: Context, file: str, cids: tuple[str, ...], messages: int | None, include_local: bool,
    force: bool, as_json: bool,
) -> None:
    """Write channels as one query-channels response to FILE (or standard output, "-").

    Every stored channel (or those given with --cid), with its messages oldest first (thread
    replies included), pinned messages, members, reads and own membership; message and
    channel objects as they arrived from the backend. `chatledger import --kind query FILE`
    loads it into another store. Messages not yet confirmed by the backend are left out
    unless --include-local. FILE is created with mode 0600; an existing FILE is replaced only
    with --force. When FILE is "-", the report goes to standard error.

    \b
    Examples:
      chatledger --user alice export channels.json
      chatledger --user alice export --cid messaging:general --messages 100 general.json
      chatledger --user alice export - | gzip > channels.json.gz
    """
    store = ctx.store(create=False)
    selected = list(cids) or None
    if file == "-":
        report = store.export_channels(sys.stdout.buffer, cids=selected, messages=messages,
                                       include_local=include_local)
        sys.stdout.buffer.flush()
        path = "-"
    else:
        target = _export_target(Path(file), force=force)
        fd, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.",
                                    suffix=".part")
        partial = Path(name)
        try:
            with os.fdopen(fd, "wb") as out:
                report = store.export_channels(out, cids=selected, messages=messages,
                                               include_local=include_local)
            os.replace(partial, target)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        path = str(target)
    _print_export_report({"path": path, **report}, as_json, to_stderr=file == "-")


def _export_target(target: Path, *, force: bool) -> Path:
    target = target.expanduser()
    if not target.parent.is_dir():
        fail(f"cannot export to {target}: the directory {target.parent} does not exist")
    if target.is_dir():
        fail(f"{target} is a directory: give the export a file name")
    if target.exists() and not force:
        fail(f"{target} already exists (--force replaces it)")
    if target.exists() and _is_sqlite(target):
        # --force over a store would destroy it.
        fail(f"{target} is an SQLite database (a store?): export to another file")
    return target


def _is_sqlite(path: Path) -> bool:
    try:
        with path.open("rb") as stream:
            return stream.read(16) == b"SQLite format 3\x00"
    except OSError:
        return False


def _print_export_report(report: dict[str, object], as_json: bool, *, to_stderr: bool) -> None:
    if as_json:
        if to_stderr:
            sys.stderr.buffer.write(msgspec.json.encode(report) + b"\n")
            sys.stderr.flush()
        else:
            echo_json(report)
    else:
        where = "standard output" if report["path"] == "-" else report["path"]
        click.echo(f"Exported {report['channels']:,} channel(s), {report['messages']:,} "
                   f"message(s) to {where} ({report['bytes']:,} bytes).", err=to_stderr)
        left_out = int(report["local_left_out"])  # type: ignore[call-overload]
        if left_out:
            click.echo(f"  left out: {left_out:,} message(s) not yet confirmed by the backend "
                       "(--include-local adds them)", err=True)
    if int(report["bytes"]) > MAX_RESPONSE_BYTES:  # type: ignore[call-overload]
        click.echo(f"  note: `chatledger import` reads documents of up to "
                   f"{MAX_RESPONSE_BYTES // (1024 * 1024)} MiB; export fewer channels per file "
                   "(--cid) to import this one", err=True)


__all__ = ["backup_command", "export_command"]
