"""`chatledger reminders` and `chatledger mutes`: the own user's reminders and mutes as stored."""

from __future__ import annotations

from typing import Any

import click
import msgspec

from chatledger import ChannelMute, ResultRow, UserMute
from chatledger.cli.context import Context, pass_context
from chatledger.cli.output import echo_json, iso_time
from chatledger.cli.render import Column, emit_table, format_options, output_format

_TIMES = ("remind_at", "created_at", "updated_at", "expires")
REMINDER_COLUMNS = (
    Column("message", "key"), Column("channel", "key", drop=2), Column("remind at", "time"),
    Column("due"), Column("created", "time", drop=1),
)
MUTE_COLUMNS = (Column("kind"), Column("muted", "key"), Column("since", "time", drop=1),
                Column("expires", "time"))


def _with_iso_times(row: ResultRow) -> dict[str, Any]:
    """A row for JSON output: its epoch-microsecond times as RFC 3339 text."""
    return {key: iso_time(value) if key in _TIMES else value
            for key, value in msgspec.structs.asdict(row).items()}


@click.command("reminders")
@click.option("--cid", help="Only this channel's reminders.")
@click.option("--due", is_flag=True, help="Only the reminders the backend said are due.")
@format_options(json_help="JSON lines: the row's fields and the `reminder` object as received.")
@pass_context
def reminders_command(ctx: Context, cid: str | None, due: bool, fmt: str | None) -> None:
    """The own user's message reminders, soonest first (those without a time last).

    \b
    Examples:
      chatledger --user alice reminders
      chatledger --user alice reminders --due --json
    """
    rows = ctx.store(create=False).reminders(cid, due=due)
    if fmt == "json":
        for row in rows:
            echo_json(_with_iso_times(row))
        return
    emit_table(REMINDER_COLUMNS, ((row.message_id, row.cid, row.remind_at,
                                   "due" if row.due else "", row.created_at)
                                  for row in rows), output_format(fmt), empty="No reminders.")


@click.command("mutes")
@click.option("--expired", is_flag=True, help="Also the mutes past their expiry time.")
@format_options(json_help='JSON lines: {"kind": "user"|"channel", ...the row, "mute": object}.')
@pass_context
def mutes_command(ctx: Context, expired: bool, fmt: str | None) -> None:
    """The users and channels the own user has muted, as the backend last listed them.

    A muted channel's new messages do not count as unread; `channels --filter
    '{"muted": true}'` lists the muted channels.

    \b
    Examples:
      chatledger --user alice mutes
      chatledger --user alice mutes --expired --json
    """
    store = ctx.store(create=False)
    rows: list[tuple[str, str, UserMute | ChannelMute]] = [
        *(("user", row.user_id, row) for row in store.mutes(expired=expired)),
        *(("channel", row.cid, row) for row in store.channel_mutes(expired=expired))]
    if fmt == "json":
        for kind, _, row in rows:
            echo_json({"kind": kind, **_with_iso_times(row)})
        return
    # A mute without an expiry time lasts until it is lifted.
    emit_table(MUTE_COLUMNS, ((kind, target, row.created_at,
                               "never" if row.expires is None else row.expires)
                              for kind, target, row in rows),
               output_format(fmt), empty="Nothing is muted.")
