"""`chatledger log`: the audit history, filtered."""

from __future__ import annotations

import click
import msgspec
from rich.table import Table

from chatledger.cli.context import Context, pass_context
from chatledger.cli.output import (
    MAX_INT,
    console,
    echo_json,
    format_time,
    iso_time,
    parse_when,
    shown,
    stored_json,
)
from chatledger.eventstore.log import LogEntry
from chatledger.eventstore.wire import repair_utf8


@click.command("log")
@click.option("--cid", help="Only this channel's stream (e.g. messaging:general), or @user.")
@click.option("--type", "types", multiple=True, help="Only this event type; repeat for several.")
@click.option("--since", help="From this time: RFC 3339, a date, or an age such as 2h or 3d.")
@click.option("--until", help="Up to this time (same forms as --since).")
@click.option("--limit", type=click.IntRange(1, MAX_INT), default=None, help="At most this many entries.")
@click.option("--newest-first", is_flag=True, help="Newest entries first.")
@click.option("--json", "as_json", is_flag=True,
              help="JSON lines: the envelope, and the event exactly as it arrived under \"event\".")
@pass_context
def log_command(
    ctx: Context, cid: str | None, types: tuple[str, ...], since: str | None, until: str | None,
    limit: int | None, newest_first: bool, as_json: bool,
) -> None:
    """Show the log: what arrived, from where, and when.

    Times are the event's own `created_at`, or when it arrived for entries without one.

    \b
    Examples:
      chatledger --user alice log --limit 20 --newest-first
      chatledger --user alice log --cid messaging:general --type message.new --since 2h
      chatledger --user alice log --json --since 2026-11-01 --until 2026-11-02
    """
    store = ctx.store(create=False)
    since_us = parse_when(since) if since else None
    until_us = parse_when(until) if until else None
    filters = dict(stream=cid, types=types, since=since_us, until=until_us, newest_first=newest_first)
    entries = (
        store.log.entries(limit=limit, **filters) if limit else store.log.iter_entries(**filters)
    )
    if as_json:
        for entry in entries:
            echo_json(_as_json(entry))
        return
    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in ("pos", "time", "source", "stream", "type", "summary"):
        table.add_column(column, no_wrap=column != "summary", overflow="ellipsis")
    count = 0
    for entry in entries:
        table.add_row(
            str(entry.position), format_time(entry.event_at or entry.received_at),
            shown(entry.source), shown(entry.stream), shown(entry.type), shown(summarize(entry)),
        )
        count += 1
    if count == 0:
        click.echo("No entries match.")
        return
    console().print(table)


def _as_json(entry: LogEntry) -> dict[str, object]:
    return {
        "position": entry.position,
        "stream": entry.stream,
        "version": entry.version,
        "type": entry.type,
        "source": entry.source,
        "received_at": iso_time(entry.received_at),
        "event_at": iso_time(entry.event_at),
        "connection_id": entry.connection_id,
        # One JSON document per line: the stored JSON with the whitespace between its tokens
        # removed, every string and number exactly as stored.
        "event": stored_json(entry.payload),
    }


class _Summary(msgspec.Struct):
    """The few fields a one-line summary shows; everything else is skipped unread."""

    class _User(msgspec.Struct):
        id: str | None = None

    class _Message(msgspec.Struct):
        id: str | None = None
        text: str | None = None
        user: "_Summary._User | None" = None

    class _Reaction(msgspec.Struct):
        type: str | None = None
        message_id: str | None = None
        user_id: str | None = None

    user: _User | None = None
    user_id: str | None = None
    message: _Message | None = None
    reaction: _Reaction | None = None


_summary_decoder = msgspec.json.Decoder(_Summary)


def summarize(entry: LogEntry, width: int = 60) -> str:
    """A short human description of an entry (who did what), never failing."""
    try:
        # Text an older version stored without checking it is UTF-8 is read with U+FFFD.
        s = _summary_decoder.decode(repair_utf8(entry.payload))
    except (msgspec.DecodeError, msgspec.ValidationError, UnicodeError, RecursionError):
        return f"{len(entry.payload):,} bytes"
    who = (s.user.id if s.user else None) or s.user_id
    if s.reaction is not None:
        text = f"{s.reaction.type} on {s.reaction.message_id}"
        who = who or s.reaction.user_id
    elif s.message is not None:
        who = who or (s.message.user.id if s.message.user else None)
        body = (s.message.text or "").replace("\n", " ")
        text = f"{s.message.id}: {body}" if body else str(s.message.id)
    else:
        text = ""
    line = f"{who}: {text}" if who and text else (who or text)
    return line if len(line) <= width else line[: width - 1] + "…"
