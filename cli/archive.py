"""`chatledger archive`: many users' logs in a shared PostgreSQL archive (see docs/archive.md).

Thin calls into `chatledger.sync.archive`, imported when a subcommand runs: psycopg is an
optional dependency (`pip install 'chatledger[archive]'`), and the other commands never pay
for it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import click
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from chatledger.cli.context import Context, fail, pass_context
from chatledger.cli.output import console, echo_json, format_time, parse_when

_URL_ENV = "CHATLEDGER_ARCHIVE_URL"
_SCHEMA_ENV = "CHATLEDGER_ARCHIVE_SCHEMA"


def _archive() -> ModuleType:
    try:
        from chatledger import archive
    except ImportError as error:
        fail(f"the archive needs psycopg ({error}): pip install 'chatledger[archive]'")
    return archive


def _schema_option(command: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--schema", envvar=_SCHEMA_ENV, default="chatledger", show_default=True,
        help=f"The PostgreSQL schema the archive's tables live in [env {_SCHEMA_ENV}].",
    )(command)


def _url_option(name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    return click.option(
        name, "url", envvar=_URL_ENV, required=True, metavar="URL",
        help="postgresql://[user@]host[:port]/database; the password may come from PGPASSWORD, "
             f"~/.pgpass or a service file (postgresql:///?service=NAME) [env {_URL_ENV}].")


@contextmanager
def _progress(label: str, quiet: bool) -> Iterator[Callable[[str, int, int], None]]:
    """A bar per user on standard error (on a terminal, and not with --json)."""
    err = console(err=True)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeRemainingColumn(), console=err, disable=quiet or not err.is_terminal,
                  transient=True) as progress:
        tasks: dict[str, Any] = {}

        def update(user_id: str, done: int, total: int) -> None:
            if user_id not in tasks:
                tasks[user_id] = progress.add_task(f"{label} {user_id}", total=total)
            progress.update(tasks[user_id], completed=done, total=total)

        yield update


@click.group("archive")
def archive_group() -> None:
    """Many users' logs in one PostgreSQL database: push stores to it, pull them back, and ask
    questions across users there.

    \b
    Examples:
      chatledger archive push --to postgresql://archiver@db.example/chat
      chatledger archive pull --from postgresql://db.example/chat --user alice --data-dir /tmp/r
      chatledger archive users --from postgresql://db.example/chat
    """


@archive_group.command("push")
@_url_option("--to")
@_schema_option
@click.option("--json", "as_json", is_flag=True, help="Print a summary as one JSON line.")
@click.option("--partitions", type=click.IntRange(1, 1024), default=None, metavar="N",
              help="If this push creates the archive: split its events table by user into N "
                   "hash partitions (an archive that exists keeps its layout).")
@pass_context
def push_command(ctx: Context, url: str, schema: str, as_json: bool,
                 partitions: int | None) -> None:
    """Send to the archive what it lacks of the store of --user, or of every store in the
    data directory. Run it again after an interruption: each entry is stored once. Several
    machines may push at once. The archive's tables are created on first use.

    \b
    Examples:
      chatledger archive push --to postgresql://archiver@db.example/chat
      chatledger --user alice archive push --to postgresql:///?service=archive --json
      chatledger archive push --to postgresql://archiver@db.example/chat --partitions 16
    """
    archive = _archive()
    users = [ctx.user] if ctx.user else None
    with _progress("pushing", as_json) as on_progress:
        report = archive.push(url, data_dir=ctx.data_dir, users=users, schema=schema,
                              on_progress=on_progress, partitions=partitions)
    if as_json:
        echo_json(report.as_dict())
        return
    for user in report.users:
        click.echo(f"{user.user_id}: pushed {user.pushed:,} entries, the archive holds up to "
                   f"position {user.last_position:,}")
    click.echo(f"Pushed {report.pushed:,} entries of {len(report.users)} user(s) to "
               f"{report.archive} in {report.seconds:.2f} s.")


@archive_group.command("pull")
@_url_option("--from")
@_schema_option
@click.option("--user", "user_id", default=None,
              help="Whose store to restore [default: the global --user].")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where to restore it [default: the global --data-dir].")
@click.option("--upto", metavar="POSITION|TIME", default=None,
              help="Restore the store as it was at a log position, or at a time (RFC 3339, a "
                   "date, or an age such as 2h), as `as-of` reads it.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as one JSON line.")
@pass_context
def pull_command(ctx: Context, url: str, schema: str, user_id: str | None,
                 data_dir: Path | None, upto: str | None, as_json: bool) -> None:
    """Restore a user's store from the archive: the log entry for entry, byte for byte, then
    the read tables rebuilt and verified. An existing store is never replaced.

    \b
    Examples:
      chatledger archive pull --from postgresql://db.example/chat --user alice --data-dir /tmp/r
      chatledger archive pull --from postgresql://db.example/chat --user alice --upto 1200
      chatledger archive pull --from postgresql://db.example/chat --user alice --upto 2026-11-25
    """
    archive = _archive()
    user = user_id or ctx.require_user()
    position, when = _upto(upto)
    with _progress("pulling", as_json) as on_progress:
        report = archive.pull(url, user, data_dir=data_dir or ctx.data_dir, schema=schema,
                              upto_position=position, upto_time=when, on_progress=on_progress)
    if as_json:
        echo_json(report.as_dict())
        return
    checked = ("verify: clean" if report.differences == 0
               else f"verify: {report.differences} difference(s)")
    click.echo(f"Restored {report.entries:,} entries of {report.user_id!r} (up to position "
               f"{report.position:,}) to {report.path} in {report.seconds:.2f} s; {checked}.")


def _upto(text: str | None) -> tuple[int | None, int | None]:
    if text is None:
        return None, None
    if text.strip().isdigit():
        return int(text), None
    return None, parse_when(text)


@archive_group.command("users")
@_url_option("--from")
@_schema_option
@click.option("--json", "as_json", is_flag=True, help="JSON lines, one user a line.")
def users_command(url: str, schema: str, as_json: bool) -> None:
    """Every user in the archive: entries, last position and push, and actions pending or
    refused (local commands not yet settled, and rejected by the backend).

    \b
    Examples:
      chatledger archive users --from postgresql://db.example/chat
      chatledger archive users --from postgresql://db.example/chat --json | jq .refused
    """
    rows = _archive().users(url, schema=schema)
    if as_json:
        for row in rows:
            echo_json(row)
        return
    table = Table("user", "entries", "last position", "last push", "pending", "refused",
                  box=None, pad_edge=False, header_style="bold")
    for row in rows:
        table.add_row(row["user_id"], f"{row['entries']:,}", str(row["last_position"]),
                      row["last_push_at"], str(row["pending"]), str(row["refused"]))
    console().print(table)


@archive_group.command("find")
@click.argument("message_id")
@_url_option("--from")
@_schema_option
@click.option("--json", "as_json", is_flag=True, help="JSON lines, one entry a line.")
def find_command(message_id: str, url: str, schema: str, as_json: bool) -> None:
    """Which users' logs name MESSAGE_ID (as `explain` reads entries), at which positions.

    \b
    Examples:
      chatledger archive find 3f1c2a9e-5d0b-4c61-9a57-0e8f6b1d2c3a --from postgresql://db.example/chat
    """
    rows = _archive().find(url, message_id, schema=schema)
    if as_json:
        for row in rows:
            echo_json(row)
        return
    if not rows:
        click.echo(f"No log in the archive names {message_id!r}.")
        return
    table = Table("user", "position", "stream", "type", "source", "received",
                  box=None, pad_edge=False, header_style="bold")
    for row in rows:
        table.add_row(row["user_id"], str(row["position"]), row["stream"], row["type"],
                      row["source"], format_time(row["received_at"]))
    console().print(table)


@archive_group.command("stats")
@click.option("--by", type=click.Choice(["type", "day", "user"]), default="type",
              show_default=True, help="Group the entries by type, by UTC day of arrival, or by user.")
@_url_option("--from")
@_schema_option
@click.option("--json", "as_json", is_flag=True, help="JSON lines, one group a line.")
def stats_command(by: str, url: str, schema: str, as_json: bool) -> None:
    """Entries and payload bytes across every user, by type, day or user.

    \b
    Examples:
      chatledger archive stats --by day --from postgresql://db.example/chat
      chatledger archive stats --by user --from postgresql://db.example/chat --json
    """
    rows = _archive().stats(url, by=by, schema=schema)
    if as_json:
        for row in rows:
            echo_json(row)
        return
    table = Table(by, "entries", "payload bytes", "users", box=None, pad_edge=False,
                  header_style="bold")
    for row in rows:
        table.add_row(str(row["key"]), f"{row['entries']:,}", f"{row['payload_bytes']:,}",
                      str(row["users"]))
    console().print(table)


__all__ = ["archive_group"]
