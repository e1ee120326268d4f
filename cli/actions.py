"""`chatledger send`, `edit`, `delete`, `react`, `unreact`, `read`: local actions.

Each records a command in the store and changes what `show` prints at once (the message shows as
`sending`, `updating`, `deleting`). Without a backend they only queue: `chatledger outbox` lists
what waits, and a sync against a backend replays it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import click

from chatledger import IdKind
from chatledger.cli.context import Context, fail, pass_context
from chatledger.cli.names import CID, MESSAGE_ID, not_stored, resolve
from chatledger.cli.output import MAX_INT, echo_json, escape_controls
from chatledger.errors import UnknownTarget


def _done(ctx: Context, command_id: str, as_json: bool, what: str) -> None:
    info = ctx.store(create=False).outbox.get(command_id)
    if as_json:
        echo_json({"command_id": command_id, "status": info.status})
        return
    # The id holds a message id as the backend or the user wrote it: shown escaped.
    said = escape_controls(command_id)
    if info.status == "cancelled":  # a delete of a message never sent: it is not sent at all
        click.echo(f"not sent: command {said} cancelled ({escape_controls(info.reason or '')})")
    elif what != "sending" and info.kind == "send_message":  # folded into the unsent message
        click.echo(f"changed the unsent message: command {said} carries it")
    else:
        click.echo(f"{what}: command {said} {'queued' if info.unfinished else info.status}")


_json_flag = click.option("--json", "as_json", is_flag=True, help='Print {"command_id": ..., "status": ...}.')
_force_flag = click.option(
    "--force", is_flag=True,
    help="Queue it even when the store has never seen the channel or message (a typo is "
         "refused by the backend only at the next sync).")


@contextmanager
def _known_targets(ctx: Context, force: bool) -> Iterator[None]:
    """An action on a channel or message the store has never seen is refused, with the
    close names it has, unless --force."""
    try:
        yield
    except UnknownTarget as unknown:
        kind: IdKind = "channel" if unknown.kind == "channel" else "message"
        fail(not_stored(ctx, kind, unknown.ident, str(unknown))
             + ": it would be queued and refused at the next sync; pass --force to queue it "
             "anyway")


@click.command("send")
@click.option("--cid", type=CID, required=True, help="The channel, TYPE:ID (e.g. messaging:general).")
@click.option("--text", required=True, help="The message text.")
@click.option("--id", "message_id", help="The message id (a new UUID when not given).")
@click.option("--parent", "parent_id", help="Reply in the thread of this message.")
@click.option("--silent", is_flag=True, help="Send without counting as unread for others.")
@_force_flag
@_json_flag
@pass_context
def send_command(ctx: Context, cid: str, text: str, message_id: str | None,
                 parent_id: str | None, silent: bool, force: bool, as_json: bool) -> None:
    """Send a message (queued until a sync delivers it).

    \b
    Examples:
      chatledger --user alice send --cid messaging:general --text "hello"
      chatledger --user alice send --cid messaging:general --text "me too" --parent 3f1c
      chatledger --user alice send --cid messaging:new-room --text "first!" --force
    """
    store = ctx.store()
    if parent_id is not None:
        parent_id = resolve(ctx, "message", parent_id)
    with _known_targets(ctx, force):
        command_id = store.send_message(cid, text, id=message_id, parent_id=parent_id,
                                        silent=silent, known_only=not force)
    _done(ctx, command_id, as_json, "sending")


@click.command("edit")
@click.argument("message_id", type=MESSAGE_ID)
@click.option("--text", required=True, help="The new text.")
@_json_flag
@pass_context
def edit_command(ctx: Context, message_id: str, text: str, as_json: bool) -> None:
    """Change a message's text. A message not sent yet is changed in place (its send carries
    the new text).

    \b
    Example:
      chatledger --user alice edit 3f1c --text "hello, world"
    """
    message_id = resolve(ctx, "message", message_id)
    command_id = ctx.store(create=False).update_message(message_id, text)
    _done(ctx, command_id, as_json, "updating")


@click.command("delete")
@click.argument("message_id", type=MESSAGE_ID)
@click.option("--hard", is_flag=True, help="Remove it for everyone (not kept as deleted).")
@click.option("--for-me", is_flag=True, help="Hide it for the own user only.")
@_force_flag
@_json_flag
@pass_context
def delete_command(ctx: Context, message_id: str, hard: bool, for_me: bool, force: bool,
                   as_json: bool) -> None:
    """Delete a message. A message not sent yet is simply not sent (its send is cancelled).

    \b
    Examples:
      chatledger --user alice delete 3f1c
      chatledger --user alice delete 3f1c --hard
    """
    if hard and for_me:
        raise click.UsageError("give --hard or --for-me, not both")
    message_id = resolve(ctx, "message", message_id)
    with _known_targets(ctx, force):
        command_id = ctx.store(create=False).delete_message(message_id, hard=hard, for_me=for_me,
                                                            known_only=not force)
    _done(ctx, command_id, as_json, "deleting")


@click.command("react")
@click.option("--message", "message_id", type=MESSAGE_ID, required=True,
              help="The message to react to (a unique prefix of its id will do).")
@click.option("--type", "kind", required=True, help="The reaction type (like, love, ...).")
@click.option("--score", type=click.IntRange(-MAX_INT - 1, MAX_INT), default=1, show_default=True)
@click.option("--unique", is_flag=True, help="Replace all the own reactions on the message.")
@_force_flag
@_json_flag
@pass_context
def react_command(ctx: Context, message_id: str, kind: str, score: int, unique: bool,
                  force: bool, as_json: bool) -> None:
    """React to a message.

    \b
    Example:
      chatledger --user alice react --message 3f1c --type like
    """
    message_id = resolve(ctx, "message", message_id)
    with _known_targets(ctx, force):
        command_id = ctx.store(create=False).send_reaction(
            message_id, kind, score=score, enforce_unique=unique, known_only=not force)
    _done(ctx, command_id, as_json, "reacting")


@click.command("unreact")
@click.option("--message", "message_id", type=MESSAGE_ID, required=True,
              help="The message (a unique prefix of its id will do).")
@click.option("--type", "kind", required=True, help="The reaction type to remove.")
@_force_flag
@_json_flag
@pass_context
def unreact_command(ctx: Context, message_id: str, kind: str, force: bool, as_json: bool) -> None:
    """Remove the own reaction of a type from a message.

    \b
    Example:
      chatledger --user alice unreact --message 3f1c --type like
    """
    message_id = resolve(ctx, "message", message_id)
    with _known_targets(ctx, force):
        command_id = ctx.store(create=False).delete_reaction(message_id, kind,
                                                             known_only=not force)
    _done(ctx, command_id, as_json, "removing the reaction")


@click.command("read")
@click.option("--cid", type=CID, required=True, help="The channel, TYPE:ID.")
@click.option("--message", "message_id", type=MESSAGE_ID,
              help="Read up to this message (default: all).")
@_force_flag
@_json_flag
@pass_context
def read_command(ctx: Context, cid: str, message_id: str | None, force: bool,
                 as_json: bool) -> None:
    """Mark a channel read.

    \b
    Example:
      chatledger --user alice read --cid messaging:general
    """
    if message_id is not None:
        message_id = resolve(ctx, "message", message_id)
    with _known_targets(ctx, force):
        command_id = ctx.store(create=False).mark_read(cid, message_id=message_id,
                                                       known_only=not force)
    _done(ctx, command_id, as_json, "marking read")


ACTION_COMMANDS = (send_command, edit_command, delete_command, react_command, unreact_command,
                   read_command)
