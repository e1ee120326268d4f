"""`chatledger reminders` and `chatledger mutes`: the own user's reminders and mutes as stored."""

from __future__ import annotations

from typing import Any

import click
from rich.table import Table

from chatledger.cli.context import Context, pass_context
from chatledger.cli.output import console, echo_json, format_time, iso_time

_TIMES = ("remind_at", "created_at", "updated_at", "expires")


def _with_iso_times(row: dict[str, Any]) -> dict[str, Any]:
    """A row for JSON output: its epoch-microsecond times as RFC 3339 text."""
    return {key: iso_time(value) if key in _TIMES else value for key, value in row.items()}


@click.command("reminders")
@click.option("--cid", help="Only this channel's reminders.")
@click.option("--due", is_flag=True, help="Only the reminders the backend said are due.")
@click.option("--json", "as_json", is_flag=True,
              help="JSON lines: the row's fields and the `reminder` object as received.")
@pass_context
def reminders_command(ctx: Context, cid: str | None, due: bool, as_json: bool) -> None:
    """The own user's message reminders, soonest first (those without a time last).

    \b
    Examples:
      chatledger --user alice reminders
      chatledger --user alice reminders --due --json
    """
    rows = ctx.store(create=False).reminders(cid, due=due)
    if as_json:
        for row in rows:
            echo_json(_with_iso_times(row))
        return
    if not rows:
        click.echo("No reminders.")
        return
    table = Table("message", "channel", "remind at", "due", "created", box=None, pad_edge=False,
                  header_style="bold")
    for row in rows:
        table.add_row(row["message_id"], row["cid"] or "-", format_time(row["remind_at"]),
                      "due" if row["due"] else "", format_time(row["created_at"]))
    console().print(table)
