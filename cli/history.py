"""`chatledger log`: the audit history, filtered."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import click
import msgspec

from chatledger import LogEntry
from chatledger.cli.context import Context, pass_context
from chatledger.cli.names import CID
from chatledger.cli.output import MAX_INT, echo_json, iso_time, parse_when, stored_json
from chatledger.cli.render import Column, emit_table, format_options, output_format
from chatledger.eventstore.wire import repair_utf8


# Entries `log` prints when neither --limit nor --all is given: the newest, in order.
DEFAULT_LOG_LIMIT = 100

LOG_COLUMNS = (
    Column("pos", "key"), Column("time", "time", drop=3), Column("source", drop=4),
    Column("stream", "key"), Column("type", drop=2), Column("summary", drop=5),
)


@click.command("log")
@click.option("--cid", type=CID, help="Only this channel's stream (e.g. messaging:general), or @user.")
@click.option("--type", "types", multiple=True, help="Only this event type; repeat for several.")
@click.option("--since", help="From this time: RFC 3339, a date, or an age such as 2h or 3d.")
@click.option("--until", help="Up to this time (same forms as --since).")
@click.option("--limit", type=click.IntRange(1, MAX_INT), default=None,
              help=f"At most this many entries [default: the newest {DEFAULT_LOG_LIMIT}].")
@click.option("--all", "show_all", is_flag=True, help="Every matching entry, not only the newest.")
@click.option("--newest-first", is_flag=True, help="Newest entries first.")
@format_options(json_help="JSON lines: the envelope, and the event exactly as it arrived "
                          "under \"event\".")
@pass_context
def log_command(
    ctx: Context, cid: str | None, types: tuple[str, ...], since: str | None, until: str | None,
    limit: int | None, show_all: bool, newest_first: bool, fmt: str | None,
) -> None:
    """Show the log: what arrived, from where, and when.

    Times are the event's own `created_at`, or when it arrived for entries without one. With
    neither --limit nor --all, the newest 100 entries that match are shown, in order, and a
    note on stderr says when there are more. Tables stream; on a terminal they page.

    \b
    Examples:
      chatledger --user alice log --newest-first
      chatledger --user alice log --all --cid messaging:general --type message.new --since 2h
      chatledger --user alice log --json --since 2026-11-01 --until 2026-11-02
      chatledger --user alice log --all --csv > log.csv
    """
    if show_all and limit is not None:
        raise click.UsageError("give --limit or --all, not both")
    store = ctx.store(create=False)
    filters: dict[str, Any] = dict(cid=cid, types=types,
                                   # An empty time (`--since "$T"`, T unset) is a usage
                                   # error, as for `as-of --time`, not "no limit".
                                   since=parse_when(since) if since is not None else None,
                                   until=parse_when(until) if until is not None else None)
    entries: Iterable[LogEntry]
    if show_all:
        entries = store.iter_history(newest_first=newest_first, **filters)
    elif limit is not None:
        entries = store.history(limit=limit, newest_first=newest_first, **filters)
    else:
        newest = store.history(limit=DEFAULT_LOG_LIMIT + 1, newest_first=True, **filters)
        if len(newest) > DEFAULT_LOG_LIMIT:
            newest = newest[:DEFAULT_LOG_LIMIT]
            click.echo(f"(the newest {DEFAULT_LOG_LIMIT} matching entries; --all shows every "
                       "one, --limit N as many as you like)", err=True)
        entries = newest if newest_first else newest[::-1]
    if fmt == "json":
        for entry in entries:
            echo_json(_as_json(entry))
        return
    rows = ((entry.position, entry.event_at or entry.received_at, entry.source, entry.stream,
             entry.type, summarize(entry, width=200)) for entry in entries)
    emit_table(LOG_COLUMNS, rows, output_format(fmt), empty="No entries match.")


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
        summary = _summary_decoder.decode(repair_utf8(entry.payload))
    except (msgspec.DecodeError, msgspec.ValidationError, UnicodeError, RecursionError):
        return f"{len(entry.payload):,} bytes"
    who = (summary.user.id if summary.user else None) or summary.user_id
    if summary.reaction is not None:
        text = f"{summary.reaction.type} on {summary.reaction.message_id}"
        who = who or summary.reaction.user_id
    elif summary.message is not None:
        who = who or (summary.message.user.id if summary.message.user else None)
        body = (summary.message.text or "").replace("\n", " ")
        text = f"{summary.message.id}: {body}" if body else str(summary.message.id)
    else:
        text = ""
    line = f"{who}: {text}" if who and text else (who or text)
    return line if len(line) <= width else line[: width - 1] + "…"
