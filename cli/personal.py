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


@click.command("mutes")
@click.option("--expired", is_flag=True, help="Also the mutes past their expiry time.")
@click.option("--json", "as_json", is_flag=True,
              help='JSON lines: {"kind": "user"|"channel", ...the row, "mute": object}.')
@pass_context
def mutes_command(ctx: Context, expired: bool, as_json: bool) -> None:
    """The users and channels the own user has muted, as the backend last listed them.

    A muted channel's new messages do not count as unread; `channels --filter
    '{"muted": true}'` lists the muted channels.

    \b
    Examples:
      chatledger --user alice mutes
      chatledger --user alice mutes --expired --json
    """
    store = ctx.store(create=False)
    rows = ([("user", row["user_id"], row) for row in store.mutes(expired=expired)]
            + [("channel", row["cid"], row) for row in store.channel_mutes(expired=expired)])
    if as_json:
        for kind, _, row in rows:
            echo_json({"kind": kind, **_with_iso_times(row)})
        return
    if not rows:
        click.echo("Nothing is muted.")
        return
    table = Table("kind", "muted", "since", "expires", box=None, pad_edge=False,
                  header_style="bold")
    for kind, target, row in rows:
        table.add_row(kind, target, format_time(row["created_at"]),
                      format_time(row["expires"]) if row["expires"] is not None else "never")
    console().print(table)
