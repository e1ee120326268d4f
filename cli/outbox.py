"""`chatledger outbox` (and its `retry`, `cancel`) and `chatledger conflicts`: the local commands
that wait for the backend, and those it refused."""

from __future__ import annotations

import math
from typing import Any

import click

from chatledger import CommandEvent, CommandInfo
from chatledger.cli.context import Context, pass_context
from chatledger.cli.names import COMMAND_ID, resolve
from chatledger.cli.output import (console, echo_json, escape_controls, iso_time, labelled_time,
                                   shown)
from chatledger.cli.render import Column, emit_table, format_options, output_format


def _micros(seconds: float | None) -> int | None:
    """Unix seconds (a float: when to retry) as epoch microseconds; None for none, and for a
    value no time is (infinite, not a number), which a backend's reset header can make."""
    if seconds is None or not math.isfinite(seconds):
        return None
    return round(seconds * 1_000_000)


def _error_text(error: dict[str, Any] | None) -> str:
    if not error:
        return ""
    parts = [str(error[k]) for k in ("status", "code") if error.get(k) is not None]
    message = str(error.get("message") or "")
    return " ".join(parts + ([message] if message else []))


def _info_json(info: CommandInfo) -> dict[str, Any]:
    return {
        "id": info.id, "kind": info.kind, "cid": info.cid, "message_id": info.message_id,
        "status": info.status, "attempts": info.attempts,
        "next_try_at": iso_time(_micros(info.next_try_at)),
        "depends_on": info.depends_on, "last_error": info.last_error,
        "standing_error": info.standing_error, "reason": info.reason,
        "created_at": iso_time(info.created_at), "updated_at": iso_time(info.updated_at),
        "request": info.request,
    }


def _event_json(event: CommandEvent) -> dict[str, Any]:
    return {"position": event.position, "event": event.name,
            "received_at": iso_time(event.received_at),
            **{k: v for k, v in event.data.items() if k != "timestamp"}}


OUTBOX_COLUMNS = (
    Column("id", "key"), Column("kind", drop=3), Column("status"), Column("tries", "count", drop=2),
    Column("next try", "time", drop=4), Column("target", "key"),
    Column("last error / reason", drop=1),
)


@click.group("outbox", invoke_without_command=True)
@click.option("--all", "show_all", is_flag=True,
              help="Every command, finished ones too (default: those waiting for the backend "
              "or, refused, for you).")
@format_options(json_help="JSON lines, one per command.")
@click.pass_context
def outbox_group(click_ctx: click.Context, show_all: bool, fmt: str | None) -> None:
    """The local commands that wait: for the backend (pending, in flight, failed, with
    attempts and the error that stands) or for you (rejected: the conflicts). `retry` and
    `cancel` act on one of them.

    \b
    Examples:
      chatledger --user alice outbox
      chatledger --user alice outbox --all --json
      chatledger --user alice outbox --csv > outbox.csv
      chatledger --user alice outbox retry send_message:3f1c
      chatledger --user alice outbox cancel update_message:9a0e
    """
    if click_ctx.invoked_subcommand is not None:
        return
    ctx: Context = click_ctx.obj
    outbox = ctx.store(create=False).outbox
    commands = outbox.list() if show_all else outbox.waiting()
    if fmt == "json":
        for info in commands:
            echo_json(_info_json(info))
        return
    emit_table(OUTBOX_COLUMNS, map(_outbox_row, commands), output_format(fmt),
               empty="The outbox is empty: nothing waits for the backend or for you.")


def _outbox_row(info: CommandInfo) -> tuple[Any, ...]:
    detail = info.reason or _error_text(info.standing_error)
    if info.depends_on and info.unfinished:
        detail = f"waits for {info.depends_on}" + (f"; {detail}" if detail else "")
    next_try = _micros(info.next_try_at) if info.status == "failed" else None
    return (info.id, info.kind, info.status, info.attempts, next_try,
            info.message_id or info.cid, detail)


@outbox_group.command("retry")
@click.argument("command_id", type=COMMAND_ID)
@pass_context
def outbox_retry(ctx: Context, command_id: str) -> None:
    """Try a failed or rejected command again at the next sync (and what was rejected with it).
    A unique prefix of the command id will do.

    \b
    Example:
      chatledger --user alice outbox retry send_message:3f1c
    """
    command_id = resolve(ctx, "command", command_id)
    ctx.store(create=False).outbox.retry(command_id)
    click.echo(f"{escape_controls(command_id)}: pending again")


@outbox_group.command("cancel")
@click.argument("command_id", type=COMMAND_ID)
@pass_context
def outbox_cancel(ctx: Context, command_id: str) -> None:
    """Give up on a command: its local change is undone where possible (a message never sent
    disappears), and commands waiting for it are cancelled too. A unique prefix will do.

    \b
    Example:
      chatledger --user alice outbox cancel update_message:9a0e
    """
    command_id = resolve(ctx, "command", command_id)
    ctx.store(create=False).outbox.cancel(command_id)
    click.echo(f"{escape_controls(command_id)}: cancelled")


@click.command("conflicts")
@click.option("--json", "as_json", is_flag=True,
              help="JSON lines: the command, its reason and its log entries under \"events\".")
@pass_context
def conflicts_command(ctx: Context, as_json: bool) -> None:
    """Commands the backend refused, with the reason and the log entries of each.

    Retry one with `chatledger outbox retry ID`, or drop it with `chatledger outbox cancel ID`.

    \b
    Examples:
      chatledger --user alice conflicts
      chatledger --user alice conflicts --json | jq .reason
    """
    conflicts = ctx.store(create=False).outbox.conflicts()
    if as_json:
        for info in conflicts:
            echo_json({**_info_json(info), "events": [_event_json(e) for e in info.history]})
        return
    if not conflicts:
        click.echo("No conflicts: the backend has refused nothing.")
        return
    out = console()
    for info in conflicts:
        out.print(f"[bold]{shown(info.id)}[/bold]  {info.kind}  "
                  f"{shown(info.message_id or info.cid or '')}")
        out.print(f"  reason: {shown(conflict_reason(info))}")
        for event in info.history:
            out.print(f"  {event.position:>7}  {labelled_time(event.received_at)}  "
                      f"{event.name:<16} {shown(_event_detail(event, info))}")


def conflict_reason(info: CommandInfo) -> str:
    """The reason a command was refused, said once: the backend's status and code are added
    only where the reason does not already carry its message."""
    reason = info.reason or ""
    error = info.last_error or {}
    message = str(error.get("message") or "")
    if error and (not message or message not in reason):
        return f"{reason} ({_error_text(error)})" if reason else _error_text(error)
    return reason


def _event_detail(event: CommandEvent, info: CommandInfo) -> str:
    """What one lifecycle event adds; the refusal's reason is printed above it already."""
    attempt = event.data.get("attempt")
    if event.name == "attempt_started":
        return f"attempt {attempt}"
    error = event.data.get("error") or {}
    detail = _error_text(error) or event.data.get("reason") or ""
    said = str(error.get("message") or detail) if isinstance(error, dict) else str(detail)
    if event.name == "rejected" and info.reason and said and (said in info.reason
                                                          or info.reason in said):
        detail = "(the reason above)"
    if attempt is not None:  # an outcome that carries its attempt's start
        return f"attempt {attempt}" + (f": {detail}" if detail else "")
    return str(detail)
