"""`chatledger diff`: the store's tables against the server, each difference explained."""

from __future__ import annotations

import asyncio
from typing import Any

import click
from rich.table import Table

from chatledger.cli.context import Context, pass_context
from chatledger.cli.output import console, echo_json, shown
from chatledger.cli.progress import replay_progress
from chatledger.cli.sync import backend_options

# The exit statuses the issue promises: 0 in sync, 1 differences, 2 an error.
EXIT_IN_SYNC, EXIT_DIFFERENCES, EXIT_ERROR = 0, 1, 2
_VALUE_WIDTH = 40  # a value longer than this is cut in the table (never in --json)


@click.command("diff")
@backend_options
@click.option("--cid", "cids", multiple=True, metavar="CID",
              help="Compare only this channel (repeatable); default: the user's channels on "
                   "the server and every channel the store lists.")
@click.option("--messages", type=click.IntRange(1, 300), default=25, show_default=True,
              help="How many of each channel's newest messages to compare.")
@click.option("--timeout", type=click.FloatRange(min=0.05), default=10.0, show_default=True,
              envvar="CHATLEDGER_TIMEOUT", help="Seconds an answer may take.")
@click.option("--json", "as_json", is_flag=True, help="One JSON line per difference.")
@pass_context
def diff_command(ctx: Context, base_url: str, api_key: str, token: str, cids: tuple[str, ...],
                 messages: int, timeout: float, as_json: bool) -> None:
    """Compare the store with the server's current view, without changing the store.

    Fetches the channels (their newest messages, members, the own read state and own
    reactions) and lists every field that differs, with its cause: pending (a local action
    not delivered yet), refused (the server refused a local action), missed (the server
    changed it and the store never got the change; the window says which part of sync
    should have carried it), local_only (deleted for me, ephemeral), unexplained (a bug).
    Each line names the command that shows the object's history.

    \b
    Exit statuses: 0 in sync, 1 differences found, 2 an error (the backend, the store).

    \b
    Examples:
      chatledger --user alice diff --base-url http://127.0.0.1:4400 --api-key devkey --token $T
      chatledger --user alice diff --cid messaging:general --messages 100 --json
    """
    from chatledger import StreamBackend, SyncClient
    from chatledger.errors import BackendError
    from chatledger.sync.diff import mismatch_dict
    from chatledger.sync.http import redact

    def clean(text: str) -> str:
        return redact(text, [token, api_key])

    from chatledger.errors import StoreError

    user = ctx.require_user()
    try:
        store = ctx.store(create=False)
    except StoreError as error:
        click.echo(f"Error: {error}", err=True)
        raise click.exceptions.Exit(EXIT_ERROR) from None

    async def main(on_progress: Any) -> Any:
        async with StreamBackend(base_url, api_key, token, user, timeout=timeout,
                                 connect_timeout=min(timeout, 5.0)) as backend:
            client = SyncClient(store, backend)
            return await client.diff(list(cids) or None, messages=messages,
                                     on_progress=on_progress)

    try:
        with replay_progress("comparing channels") as on_progress:
            report = asyncio.run(main(on_progress))
    except BackendError as error:
        click.echo(f"Error: the backend: {clean(str(error))}", err=True)
        raise click.exceptions.Exit(EXIT_ERROR) from None
    except Exception as error:  # noqa: BLE001 - one line (and no credentials), whatever it is
        # The store's errors, and whatever the HTTP library raises before a request is made
        # (a URL it refuses, with the URL, its password and the API key in the message).
        said = str(error) if isinstance(error, (OSError, ValueError, StoreError)) else (
            f"{type(error).__name__}: {error}")
        click.echo(f"Error: {clean(said)}", err=True)
        raise click.exceptions.Exit(EXIT_ERROR) from None
    if as_json:
        for mismatch in report.mismatches:
            echo_json(mismatch_dict(mismatch))
    else:
        print_report(report)
    raise click.exceptions.Exit(EXIT_IN_SYNC if report.in_sync else EXIT_DIFFERENCES)


def print_report(report: Any) -> None:
    """A diff on standard output (what `chatledger diff` prints): a summary table of the
    differences by cause and kind, then each difference on a line of its own (ids, cids and
    positions whole), with why, and the command that shows the object's history."""
    out = console()
    compared = (f"{report.channels} channels, {report.messages} messages compared; "
                f"last_sync_at {report.last_sync_at or 'never'}")
    if report.in_sync:
        out.print(f"in sync: {compared}", markup=False, highlight=False)
        return
    kinds = sorted({m.kind for m in report.mismatches})
    summary = Table("cause", *kinds, "all", box=None, pad_edge=False, header_style="bold")
    for cause, count in report.counts().items():
        if count:
            summary.add_row(cause, *(str(sum(1 for m in report.mismatches
                                             if m.cause == cause and m.kind == kind))
                                     for kind in kinds), str(count))
    out.print(summary)
    out.print(f"{len(report.mismatches)} differences: {compared}", markup=False,
              highlight=False)
    for mismatch in report.mismatches:
        cause = mismatch.cause + (f" ({mismatch.window})" if mismatch.window else "")
        out.print("", markup=False)
        out.print(f"{cause}  {mismatch.kind} {shown(mismatch.object_id)} in "
                  f"{shown(mismatch.cid)}  {shown(mismatch.field)}: "
                  f"{_value(mismatch.local)} (local) vs {_value(mismatch.server)} (server)",
                  markup=False, highlight=False, soft_wrap=True)
        out.print(f"    {shown(mismatch.why)}", markup=False, highlight=False, soft_wrap=True)
        out.print(f"    see: {shown(mismatch.explain)}", markup=False, highlight=False,
                  soft_wrap=True)


def _value(value: Any) -> str:
    if value is None:
        return "-"
    text = shown(value if isinstance(value, str) else repr(value))
    return text if len(text) <= _VALUE_WIDTH else text[: _VALUE_WIDTH - 1] + "…"


__all__ = ["EXIT_DIFFERENCES", "EXIT_ERROR", "EXIT_IN_SYNC", "diff_command", "print_report"]
