"""`chatledger sync`: run the store against a backend, with a live status line."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from typing import Any

import click

from chatledger.cli.context import Context, pass_context
from chatledger.cli.output import MAX_INT, echo_json


def backend_options(fn: Any) -> Any:
    """--base-url, --api-key and --token, each with its environment variable."""
    for option in reversed([
        click.option("--base-url", envvar="CHATLEDGER_BASE_URL", required=True,
                     help="The backend, e.g. https://chat.stream-io-api.com "
                          "[env CHATLEDGER_BASE_URL]."),
        click.option("--api-key", envvar="CHATLEDGER_API_KEY", required=True,
                     help="The app's API key [env CHATLEDGER_API_KEY]."),
        click.option("--token", envvar="CHATLEDGER_TOKEN", required=True,
                     help="The user's token (a JWT) [env CHATLEDGER_TOKEN]."),
    ]):
        fn = option(fn)
    return fn


def status_line(status: Any, pending: int | None = None) -> str:
    parts = [status.state]
    if status.connection_id:
        parts.append(f"connection {status.connection_id[:12]}")
    parts.append(f"{status.frames} frames")
    parts.append(f"{status.delivered} delivered")
    if status.rejected:
        parts.append(f"{status.rejected} rejected")
    if pending is not None:
        parts.append(f"{pending} pending")
    if status.last_sync_at:
        parts.append(f"synced to {status.last_sync_at}")
    if status.last_error:
        parts.append(f"last error: {status.last_error}")
    return " | ".join(parts)


@click.command("sync")
@backend_options
@click.option("--once", is_flag=True,
              help="Connect, replay the outbox, catch up with what was missed, and exit.")
@click.option("--concurrency", type=click.IntRange(1, MAX_INT), default=8, show_default=True,
              help="Channels replayed at once.")
@click.option("--json", "as_json", is_flag=True, help="With --once: print the report as JSON.")
@pass_context
def sync_command(ctx: Context, base_url: str, api_key: str, token: str, once: bool,
                 concurrency: int, as_json: bool) -> None:
    """Keep the store in step with the backend until interrupted.

    Appends every event of the WebSocket connection, replays the outbox, and after each
    reconnect fetches what was missed (`/sync`, or a fresh query of channels whose gap is too
    old). The status line shows the connection, what was delivered and what is pending.

    \b
    Examples:
      chatledger --user alice sync --base-url http://127.0.0.1:4400 --api-key devkey --token $T
      CHATLEDGER_TOKEN=$T chatledger --user alice sync --once --base-url ... --api-key ...
    """
    from chatledger.sync.client import SyncClient
    from chatledger.sync.stream import StreamBackend

    store = ctx.store()
    user = ctx.require_user()

    async def main() -> Any:
        async with StreamBackend(base_url, api_key, token, user) as backend:
            if once:
                client = SyncClient(store, backend, concurrency=concurrency)
                return await client.run_once()
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                with contextlib.suppress(NotImplementedError, RuntimeError):
                    loop.add_signal_handler(sig, stop.set)
            printer = _StatusPrinter(store)
            client = SyncClient(store, backend, concurrency=concurrency, on_status=printer)
            try:
                await client.run(stop)
            finally:
                printer.done()
            return None

    report = asyncio.run(main())
    if report is None:
        return
    summary = {
        "since": report.since, "synced_at": report.synced_at, "events": report.events,
        "requeried": report.requeried, "loaded": report.loaded,
        "delivered": report.replay.delivered if report.replay else 0,
        "rejected": report.replay.rejected if report.replay else 0,
        "retrying": report.replay.retrying if report.replay else 0,
        "pending": len(store.outbox.pending()),
    }
    if as_json:
        echo_json(summary)
        return
    click.echo(
        f"synced to {summary['synced_at']}: {summary['events']} missed events, "
        f"{len(summary['requeried'])} channels queried again, {len(summary['loaded'])} loaded; "
        f"outbox: {summary['delivered']} delivered, {summary['rejected']} rejected, "
        f"{summary['retrying']} to retry, {summary['pending']} pending"
    )


class _StatusPrinter:
    """One line on stderr: redrawn in place on a terminal; otherwise a line per change of state
    (not one per frame)."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.tty = sys.stderr.isatty()
        self.last_line = ""
        self.last_state: tuple[str, str | None] | None = None

    def __call__(self, status: Any) -> None:
        if self.tty:
            line = status_line(status)
            if line != self.last_line:
                self.last_line = line
                sys.stderr.write("\r\x1b[2K" + line[: _width()])
                sys.stderr.flush()
            return
        state = (status.state, status.last_error)
        if state != self.last_state:
            self.last_state = state
            sys.stderr.write(status_line(status) + "\n")
            sys.stderr.flush()

    def done(self) -> None:
        if self.tty:
            sys.stderr.write("\n")


def _width() -> int:
    import shutil

    return max(20, shutil.get_terminal_size((100, 20)).columns - 1)
