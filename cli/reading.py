"""`chatledger channels` and `chatledger show`: the stored state, as the application reads it."""

from __future__ import annotations

from typing import Any

import click
import msgspec

from chatledger import ChannelState, StoredMessage
from chatledger.cli.context import Context, fail, pass_context
from chatledger.cli.names import CID, MESSAGE_ID, StoredId, not_stored, resolve
from chatledger.cli.output import (
    MAX_INT,
    console,
    echo_json,
    format_time,
    labelled_time,
    shown,
    stored_json,
)
from chatledger.cli.render import Column, emit_table, format_options, output_format


def _json_option(value: str | None, name: str) -> Any:
    if value is None:
        return None
    try:
        return msgspec.json.decode(value)
    except (msgspec.DecodeError, msgspec.ValidationError, UnicodeError) as error:
        raise click.BadParameter(f"not JSON: {error}", param_hint=name) from None
    except RecursionError:
        raise click.BadParameter("nested too deeply", param_hint=name) from None


def message_json(message: StoredMessage) -> dict[str, Any]:
    return {"message": stored_json(message.raw) if message.raw else None,
            "local_state": message.local_state,
            "local_command": message.local_command, "position": message.position,
            "deleted_for_me": message.deleted_for_me}


def channel_state_json(state: ChannelState) -> dict[str, Any]:
    """A channel's state (`ChatStore.channel`) as `show channel --json` (and `as-of`) print it."""
    return {**msgspec.structs.asdict(state),
            "messages": [message_json(m) for m in state.messages],
            "pinned_messages": [message_json(m) for m in state.pinned_messages],
            "message_gaps": [list(gap) for gap in state.messages.gaps]}


def message_row(message: StoredMessage) -> tuple[Any, ...]:
    """A message as a row under `MESSAGE_COLUMNS`."""
    state = message.local_state or ("deleted" if message.deleted_at else "")
    return (message.created_at, message.user_id, message.id, state, message.text)


@click.command("channels")
@click.option("--filter", "filter_", metavar="JSON",
              help='A query-channels filter, e.g. \'{"members": {"$in": ["alice"]}}\'.')
@click.option("--sort", metavar="JSON",
              help='Sort keys, e.g. \'[{"field": "last_message_at", "direction": -1}]\', or '
                   'as the SDKs write them: \'{"last_message_at": -1}\'.')
@click.option("--limit", type=click.IntRange(1, 1000), default=30, show_default=True)
@click.option("--offset", type=click.IntRange(0, MAX_INT), default=0, show_default=True)
@format_options()
@pass_context
def channels_command(
    ctx: Context, filter_: str | None, sort: str | None, limit: int, offset: int, fmt: str | None
) -> None:
    """List channels: the filter and sort of the backend's query language, evaluated against
    the stored data.

    \b
    Examples:
      chatledger --user alice channels --limit 10
      chatledger --user alice channels --filter '{"type": "messaging", "frozen": false}'
      chatledger --user alice channels --sort '[{"field": "unread_count", "direction": -1}]' --json
      chatledger --user alice channels --sort '{"last_message_at": -1}' --csv
    """
    from chatledger.errors import FilterError

    store = ctx.store(create=False)
    filter_value, sort_value = _json_option(filter_, "--filter"), _json_option(sort, "--sort")
    try:
        rows = store.channels(filter_value, sort_value, limit=limit, offset=offset)
    except FilterError as error:
        fail(str(error))
    for name, close in store.unknown_filter_fields(filter_value, sort_value).items():
        hint = f" (did you mean {' or '.join(repr(known) for known in close)}?)" if close else ""
        click.echo(f"Warning: no stored channel has a field {name!r}, and the backend defines "
                   f"none by that name{hint}; it matches nothing.", err=True)
    if fmt == "json":
        for channel in rows:
            last = channel.last_message
            echo_json({"cid": channel.cid, "name": channel.name,
                       "last_message_at": channel.last_message_at,
                       "member_count": channel.member_count, "unread_count": channel.unread_count,
                       "hidden": channel.hidden, "membership": channel.membership,
                       "custom": channel.custom,
                       "last_message": message_json(last) if last else None})
        return
    emit_table(CHANNEL_COLUMNS, (
        (summary.cid, summary.name, summary.last_message_at, summary.unread_count,
         summary.member_count, _last_message_text(summary.last_message)) for summary in rows),
        output_format(fmt), empty="No channels match.")


CHANNEL_COLUMNS = (
    Column("cid", "key"), Column("name", drop=2), Column("last message at", "time", drop=3),
    Column("unread", "count"), Column("members", "count", drop=4),
    Column("last message", drop=5),
)
MESSAGE_COLUMNS = (
    Column("time", "time", drop=2), Column("user", "key", drop=3), Column("id", "key"),
    Column("state", drop=4), Column("text", drop=1),
)


def _last_message_text(message: StoredMessage | None) -> str:
    if message is None:
        return ""
    return f"{message.user_id}: {message.text}"


@click.group("show")
def show_group() -> None:
    """Show a channel, a message or a user as stored now.

    \b
    Examples:
      chatledger --user alice show channel messaging:general --messages 10
      chatledger --user alice show message 3f1c...
      chatledger --user alice show user bob --json
    """


@show_group.command("channel")
@click.argument("cid", type=CID)
@click.option("--messages", type=click.IntRange(0, 1000), default=25, show_default=True)
@format_options(json_help="One JSON document: the channel, members, reads, messages.")
@pass_context
def show_channel(ctx: Context, cid: str, messages: int, fmt: str | None) -> None:
    """One channel's state: the channel, members, reads and its newest messages, and where
    those cross history the store may not hold whole (a `gap:` line each; `message_gaps` in
    JSON: pairs of [created_at, id]).

    \b
    Examples:
      chatledger --user alice show channel messaging:general --messages 10
      chatledger --user alice show channel messaging:general --csv > general.csv
    """
    state = ctx.store(create=False).channel(cid, messages=messages)
    if state is None:
        fail(not_stored(ctx, "channel", cid, f"no channel {cid!r} is stored"))
    if fmt == "json":
        echo_json(channel_state_json(state))
        return
    if fmt in ("csv", "tsv"):
        emit_table(MESSAGE_COLUMNS, map(message_row, state.messages), output_format(fmt))
        return
    out = console()
    out.print(f"[bold]{shown(cid)}[/bold]  {shown(state.channel.get('name') or '')}  "
              f"members: {len(state.members)}  unread: {state.unread_count}")
    out.file.flush()
    emit_table(MESSAGE_COLUMNS, map(message_row, state.messages), "table")
    for gap in state.messages.gaps:
        out.print(f"gap: the store may lack messages between {shown(gap.older[1])} "
                  f"({format_time(gap.older[0])}) and {shown(gap.newer[1])} "
                  f"({format_time(gap.newer[0])})")


@show_group.command("message")
@click.argument("message_id", type=MESSAGE_ID)
@click.option("--json", "as_json", is_flag=True)
@pass_context
def show_message(ctx: Context, message_id: str, as_json: bool) -> None:
    """A message as stored now, with its local state. A unique prefix of its id will do.

    \b
    Example:
      chatledger --user alice show message 3f1c
    """
    message_id = resolve(ctx, "message", message_id)
    message = ctx.store(create=False).message(message_id)
    if message is None:
        fail(f"no message {message_id!r} is stored")
    if as_json:
        echo_json(message_json(message))
        return
    print_message(message)


def print_message(message: StoredMessage, out: Any = None) -> None:
    """A message as a block of labelled lines."""
    out = out or console()
    for label, value in (("id", message.id), ("channel", message.cid), ("user", message.user_id),
                         ("created", labelled_time(message.created_at)), ("type", message.type),
                         ("thread of", message.parent_id or "-"), ("replies", message.reply_count),
                         ("local state", message.local_state or "confirmed"),
                         ("log position", message.position),
                         ("reactions", reaction_text(message.reaction_counts) or "-")):
        out.print(f"[bold]{label:>12}[/bold]  {shown(value)}")
    out.print(f"[bold]{'text':>12}[/bold]  {shown(message.text)}")


def reaction_text(counts: dict[str, int]) -> str:
    """Reaction counts as `like 2, wow 1`, most frequent first."""
    ordered = sorted(counts.items(), key=lambda pair: (-pair[1], pair[0]))
    return ", ".join(f"{kind} {count}" for kind, count in ordered)


@show_group.command("user")
@click.argument("user_id", type=StoredId("user"))
@click.option("--json", "as_json", is_flag=True)
@pass_context
def show_user(ctx: Context, user_id: str, as_json: bool) -> None:
    """A user as last seen.

    \b
    Example:
      chatledger --user alice show user bob --json
    """
    user = ctx.store(create=False).user(user_id)
    if user is None:
        fail(not_stored(ctx, "user", user_id, f"no user {user_id!r} is stored"))
    if as_json:
        # The object as received, with the row beside it under "_row".
        echo_json({**user.user, "_row": user.row})
        return
    out = console()
    for key, value in user.user.items():
        out.print(f"[bold]{shown(key):>12}[/bold]  {shown(value)}")
