"""`chatledger as-of` and `chatledger explain`: the stored state at a past moment, and why a
message is what it is."""

from __future__ import annotations

from typing import Any

import click
import msgspec

from chatledger import Explanation, PastStore
from chatledger.cli.context import Context, fail, pass_context
from chatledger.cli.output import (
    MAX_INT,
    console,
    echo_json,
    format_time,
    labelled_time,
    iso_time,
    parse_when,
    shown,
)
from chatledger.cli.progress import replay_progress
from chatledger.cli.names import CID, MESSAGE_ID, not_stored, resolve
from chatledger.cli.reading import (
    MESSAGE_COLUMNS,
    channel_state_json,
    message_json,
    message_row,
    print_message,
)
from chatledger.cli.render import Column, emit_table, format_options, output_format

# -- as-of ------------------------------------------------------------------------------------------


@click.group("as-of")
@click.option("--position", type=click.IntRange(0, MAX_INT), default=None,
              help="The log position to stop at (see `chatledger log`).")
@click.option("--time", "when", metavar="TIME", default=None,
              help="The moment to stop at: RFC 3339, a date (UTC), or an age such as 2h or 3d.")
@click.pass_context
def as_of_group(ctx: click.Context, position: int | None, when: str | None) -> None:
    """Show a channel or a message as the store had it at a past log position or time.

    The read tables are rebuilt from the log up to that point in a private in-memory copy;
    the store itself is only read. A time means the log as it stood when the last entry that
    arrived at or before it had been appended (arrival time, not the events' own times).

    \b
    Examples:
      chatledger --user alice as-of --position 120 channel messaging:general
      chatledger --user alice as-of --time 2h channel messaging:general --messages 10
      chatledger --user alice as-of --time 2026-11-25T10:00:00Z message 3f1c... --json
    """
    ctx.meta["as_of"] = (position, when)


def _past(ctx: Context, cids: list[str] | None = None,
          message_id: str | None = None) -> PastStore:
    position, when = click.get_current_context().meta["as_of"]
    if position is None and when is None:
        raise click.UsageError("say when: give --position N or --time T (before the subcommand)")
    if position is not None and when is not None:
        raise click.UsageError("give --position or --time, not both")
    time_us = parse_when(when) if when is not None else None
    store = ctx.store(create=False)
    try:
        with replay_progress("replaying the log") as on_progress:
            return store.as_of(position=position, time=time_us, on_progress=on_progress,
                               cids=cids, message_id=message_id)
    except ValueError as error:
        fail(str(error))


def _as_of_json(past: PastStore) -> dict[str, Any]:
    return {"position": past.position, "time": iso_time(past.time)}


def _as_of_text(past: PastStore) -> str:
    where = f"log position {past.position:,}"
    if past.position == 0:
        where += ": before the first entry"
    if past.time is not None:
        return f"as of {labelled_time(past.time)} ({where})"
    return f"as of {where}"


@as_of_group.command("channel")
@click.argument("cid", type=CID)
@click.option("--messages", type=click.IntRange(0, 1000), default=25, show_default=True)
@format_options(
    json_help="One JSON document: the shape of `show channel --json`, plus \"as_of\".")
@pass_context
def as_of_channel(ctx: Context, cid: str, messages: int, fmt: str | None) -> None:
    """One channel's state as it stood then: the channel, members, reads and its newest
    messages.

    \b
    Example:
      chatledger --user alice as-of --position 120 channel messaging:general --json
    """
    # Only the channel's entries are replayed (with the user's and the commands'): the answer
    # costs what the channel holds, not the length of the log.
    with _past(ctx, [cid]) as past:
        state = past.channel(cid, messages=messages)
        if state is None:
            fail(not_stored(ctx, "channel", cid,
                            f"no channel {cid!r} was stored {_as_of_text(past)}"))
        if fmt == "json":
            echo_json({**channel_state_json(state), "as_of": _as_of_json(past)})
            return
        if fmt in ("csv", "tsv"):
            emit_table(MESSAGE_COLUMNS, map(message_row, state.messages), output_format(fmt))
            return
        out = console()
        out.print(f"[bold]{shown(cid)}[/bold]  {shown(state.channel.get('name') or '')}  "
                  f"members: {len(state.members)}  unread: {state.unread_count}  "
                  f"[dim]{_as_of_text(past)}[/dim]")
        out.file.flush()
        emit_table(MESSAGE_COLUMNS, map(message_row, state.messages), "table")


@as_of_group.command("message")
@click.argument("message_id", type=MESSAGE_ID)
@click.option("--json", "as_json", is_flag=True,
              help="One JSON document: the shape of `show message --json`, plus \"as_of\".")
@pass_context
def as_of_message(ctx: Context, message_id: str, as_json: bool) -> None:
    """A message as it stood then.

    \b
    Example:
      chatledger --user alice as-of --time 1d message 3f1c...
    """
    message_id = resolve(ctx, "message", message_id)
    # Only the message's channel's entries are replayed (with the user's and the commands'),
    # as for `explain`.
    with _past(ctx, message_id=message_id) as past:
        message = past.message(message_id)
        if message is None:
            fail(f"no message {message_id!r} was stored {_as_of_text(past)}")
        if as_json:
            echo_json({**message_json(message), "as_of": _as_of_json(past)})
            return
        out = console()
        out.print(f"[dim]{_as_of_text(past)}[/dim]")
        print_message(message, out)


# -- explain ----------------------------------------------------------------------------------------


EXPLAIN_COLUMNS = (
    Column("pos", "key"), Column("time", "time", drop=2), Column("source", drop=3),
    Column("type", drop=1), Column("what changed"),
)


@click.command("explain")
@click.argument("message_id", type=MESSAGE_ID)
@click.option("--all", "unchanged", is_flag=True,
              help="Also list entries that name the message but changed nothing.")
@format_options(json_help="JSON lines: one per entry, with each change as [before, after].")
@pass_context
def explain_command(ctx: Context, message_id: str, unchanged: bool, fmt: str | None) -> None:
    """Every log entry that made a message what it is, oldest first, with what each changed.

    Includes entries that changed it without naming it: a truncation, a deleted or cleared
    channel, all of a user's messages deleted.

    \b
    Examples:
      chatledger --user alice explain 3f1c...
      chatledger --user alice explain 3f1c... --json | jq .changes
    """
    message_id = resolve(ctx, "message", message_id)
    store = ctx.store(create=False)
    explained = store.explain(message_id, unchanged=unchanged)
    if not explained:
        fail(f"no message {message_id!r} was ever stored")
    if fmt == "json":
        for step in explained:
            echo_json(_explanation_json(step))
        return
    emit_table(EXPLAIN_COLUMNS, ((step.position, step.event_at or step.received_at, step.source,
                                  step.type, describe(step)) for step in explained),
               output_format(fmt))


def _explanation_json(explanation: Explanation) -> dict[str, Any]:
    return {
        "position": explanation.position, "stream": explanation.stream,
        "type": explanation.type, "source": explanation.source,
        "received_at": iso_time(explanation.received_at),
        "event_at": iso_time(explanation.event_at),
        "note": explanation.note, "command": explanation.command or None,
        "changes": {field: [_json_value(field, before), _json_value(field, after)]
                    for field, (before, after) in explanation.changes.items()},
    }


_TIME_FIELDS = frozenset({"created_at", "pinned_at", "updated_at", "deleted_at"})


def _json_value(field: str, value: Any) -> Any:
    # The row's times are epoch microseconds; in JSON, like the log's envelope, RFC 3339.
    if field in _TIME_FIELDS and isinstance(value, int) and not isinstance(value, bool):
        return iso_time(value)
    return value


def _show(field: str, value: Any, width: int = 40) -> str:
    if value is None:
        return "-"
    if field in _TIME_FIELDS and isinstance(value, int) and not isinstance(value, bool):
        return format_time(value)
    if isinstance(value, str):
        text = f"'{value}'"
    elif isinstance(value, (bool, int, float)):
        text = str(value).lower() if isinstance(value, bool) else str(value)
    else:
        text = msgspec.json.encode(value).decode()
    if field == "cid" or field.endswith("_id"):
        return text  # an id is never cut (`user_id`, `parent_id`, `quoted_message_id`)
    return text if len(text) <= width else text[: width - 1] + "…"


def _reactions(before: dict[str, int], after: dict[str, int]) -> str:
    parts = [f"+{k}" for k in after if k not in before]
    parts += [f"-{k}" for k in before if k not in after]
    parts += [f"{k} score {before[k]} -> {after[k]}" for k in after
              if k in before and before[k] != after[k]]
    return " ".join(parts)


def describe(explanation: Explanation) -> str:
    """One line: the note, then each change as `field: before -> after` (after what a local
    command's event says, for those)."""
    text = _describe_changes(explanation)
    if explanation.command:
        # Which command: a message's trail holds its send's attempts and its reactions' too.
        kind = explanation.stream.partition(":")[0] if ":" in explanation.stream else ""
        command = explanation.command
        said = command if not kind or command.startswith(kind) else f"{kind} {command}"
        return said if text == "no change" else f"{said}; {text}"
    return text


def _describe_changes(explanation: Explanation) -> str:
    changes = explanation.changes
    if explanation.note == "stored":
        shown = [f"{f} {_show(f, changes[f][1])}" for f in ("user_id", "text") if f in changes]
        if "reactions" in changes:
            shown.append(f"reactions: {_reactions(*changes['reactions'])}")
        return f"stored: {', '.join(shown)}" if shown else "stored"
    removed = "cid" in changes and changes["cid"][1] is None
    if removed or not changes:
        # The whole row went, or nothing changed: the note says it all.
        text = explanation.note
        if "reactions" in changes and changes["reactions"][0]:
            text += f" (with reactions {' '.join(changes['reactions'][0])})"
        return text
    shown = []
    for field, (before, after) in changes.items():
        if field == "reactions":
            shown.append(f"reactions: {_reactions(before, after)}")
        else:
            shown.append(f"{field}: {_show(field, before)} -> {_show(field, after)}")
    return f"{explanation.note}: {', '.join(shown)}"
