"""`chatledger sync`: run the store against a backend, with a live status line."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
import traceback
from collections.abc import Callable
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


# What `chatledger sync` exits with when the backend fails it (docs/sync.md#exit-statuses).
# 1 (a local error) and 2 (usage) are every command's; 130 is an interrupt (Ctrl-C).
EXIT_STATUS = {"unreachable": 3, "slow": 4, "credentials": 5, "unusable": 6, "error": 6}
EXIT_INTERRUPTED = 130
# Seconds a running sync may take to stop cleanly after Ctrl-C.
STOP_GRACE = 2.0
EXIT_TERMINATED = 143
FAILURE_LABEL = {
    "unreachable": "backend unreachable",
    "slow": "backend too slow",
    "credentials": "credentials refused",
    "unusable": "backend answer unusable",
    "error": "backend error",
}


def status_line(status: Any, pending: int | None = None) -> str:
    parts = [status.state]
    if status.connection_id:
        parts.append(f"connection {status.connection_id[:12]}")
    parts.append(f"{status.frames} frames")
    parts.append(f"{status.delivered} delivered")
    if status.rejected:
        parts.append(f"{status.rejected} rejected")
    if pending is None:
        pending = getattr(status, "pending", None)
    if pending is not None:
        parts.append(f"{pending} pending")
    if getattr(status, "quarantined", 0):
        parts.append(f"{status.quarantined} quarantined")
    if status.last_sync_at:
        parts.append(f"synced to {status.last_sync_at}")
    if status.last_error:
        label = FAILURE_LABEL.get(getattr(status, "last_failure", None) or "", "last error")
        parts.append(f"{label}: {status.last_error}")
    return " | ".join(parts)


class _Interrupted(Exception):
    """A signal stopped the command; `status` is what it exits with."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


@click.command("sync")
@backend_options
@click.option("--once", is_flag=True,
              help="Connect, replay the outbox, catch up with what was missed, and exit.")
@click.option("--concurrency", type=click.IntRange(1, MAX_INT), default=8, show_default=True,
              help="Channels replayed at once.")
@click.option("--timeout", type=click.FloatRange(min=0.05), default=10.0, show_default=True,
              envvar="CHATLEDGER_TIMEOUT",
              help="Seconds an answer may take, from request to last byte [env CHATLEDGER_TIMEOUT].")
@click.option("--json", "as_json", is_flag=True, help="With --once: print the report as JSON.")
@click.option("--debug", is_flag=True,
              help="Log what sync does on stderr, and show a traceback on an unexpected error "
                   "(credentials are never shown either way).")
@pass_context
def sync_command(ctx: Context, base_url: str, api_key: str, token: str, once: bool,
                 concurrency: int, timeout: float, as_json: bool, debug: bool) -> None:
    """Keep the store in step with the backend until interrupted.

    Appends every event of the WebSocket connection, replays the outbox, and after each
    reconnect fetches what was missed (`/sync`, or a fresh query of channels whose gap is too
    old). The status line shows the connection, what was delivered and what is pending, and
    why the backend cannot be used when it cannot. Commands queued meanwhile by another
    process (`chatledger send` in another terminal) are sent within about a second.

    \b
    Exit statuses (with --once; without it, sync keeps retrying while the backend is
    unreachable, slow or answers badly, and exits only on refused credentials or a signal):
      0    done
      1    a local error (the store)
      3    backend unreachable (refused, reset, DNS, TLS)
      4    backend too slow (no complete answer within --timeout)
      5    credentials refused (token or API key)
      6    the backend answered with an error, or with a 2xx it cannot have meant
           (a captive portal's page, an error object, the wrong shape, over the size cap;
           quarantined, and the sync point kept)
      130  interrupted (Ctrl-C; 143 for SIGTERM)

    \b
    Examples:
      chatledger --user alice sync --base-url http://127.0.0.1:4400 --api-key devkey --token $T
      CHATLEDGER_TOKEN=$T chatledger --user alice sync --once --base-url ... --api-key ...
    """
    from chatledger import StreamBackend, SyncClient
    from chatledger.errors import BackendError
    from chatledger.sync.http import redact
    from chatledger.sync.outcomes import failure_kind

    secrets = [token, api_key]

    def clean(text: str) -> str:
        return redact(text, secrets)

    debug = debug or bool(getattr(ctx, "debug", False))
    if debug:
        _log_to_stderr(clean)
    store = ctx.store()
    user = ctx.require_user()
    stopped_by: list[int] = []

    async def until_signal(work: Any) -> Any:
        """Run `work` (a coroutine taking the stop event); SIGINT or SIGTERM sets the event,
        and `work` is cancelled if it does not end by itself soon after."""
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()

        def on_signal(number: int) -> None:
            if not stopped_by:
                stopped_by.append(EXIT_INTERRUPTED if number == signal.SIGINT else EXIT_TERMINATED)
            stop.set()

        for number in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(number, on_signal, number)
        task = asyncio.ensure_future(work(stop))
        stopping = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait([task, stopping], return_when=asyncio.FIRST_COMPLETED)
            if not task.done() and not once:
                # `run` ends by itself once `stop` is set, closing the connection cleanly,
                # unless it is waiting for an answer: that wait is cut short. `run_once` is
                # cancelled at once.
                await asyncio.wait([task], timeout=min(timeout, STOP_GRACE))
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            if stopped_by:
                raise _Interrupted(stopped_by[0])
            return task.result()
        finally:
            stopping.cancel()

    async def main() -> Any:
        async with StreamBackend(base_url, api_key, token, user, timeout=timeout,
                                 connect_timeout=min(timeout, 5.0)) as backend:
            if once:
                client = SyncClient(store, backend, concurrency=concurrency)
                return await until_signal(lambda stop: client.run_once())
            printer = _StatusPrinter(clean)
            client = SyncClient(store, backend, concurrency=concurrency, on_status=printer)
            try:
                await until_signal(client.run)
            finally:
                printer.done()
            return None

    try:
        report = asyncio.run(main())
    except _Interrupted as interrupted:
        click.echo("Interrupted.", err=True)
        ctx_exit(interrupted.status)
    except KeyboardInterrupt:
        click.echo("Interrupted.", err=True)
        ctx_exit(EXIT_INTERRUPTED)
    except BackendError as error:
        kind = failure_kind(error)
        click.echo(f"Error: {FAILURE_LABEL[kind]}: {clean(str(error))}", err=True)
        ctx_exit(EXIT_STATUS[kind])
    except (click.ClickException, click.exceptions.Exit):
        raise
    except Exception as error:  # noqa: BLE001 - one line (and no credentials), whatever it is
        if debug:
            sys.stderr.write(clean("".join(traceback.format_exception(error))))
        if _is_store_error(error):
            raise
        click.echo(f"Error: {clean(f'{type(error).__name__}: {error}')}", err=True)
        ctx_exit(1)
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


def ctx_exit(status: int) -> None:
    """End the command with `status` (through click, so the store is closed on the way)."""
    raise click.exceptions.Exit(status)


def _is_store_error(error: BaseException) -> bool:
    """Errors the command group words itself (one line, exit 1)."""
    from eventsourcing.persistence import PersistenceError

    from chatledger.errors import StoreError

    return isinstance(error, (StoreError, PersistenceError, OSError))


class _RedactingFormatter(logging.Formatter):
    def __init__(self, clean: Callable[[str], str]) -> None:
        super().__init__("%(asctime)s %(name)s %(levelname)s %(message)s")
        self.clean = clean

    def format(self, record: logging.LogRecord) -> str:
        return self.clean(super().format(record))


def _log_to_stderr(clean: Callable[[str], str]) -> None:
    """--debug: every log record on stderr, credentials taken out of each (tracebacks too)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_RedactingFormatter(clean))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)


class _StatusPrinter:
    """One line on stderr: redrawn in place on a terminal; otherwise a line per change of
    state, error or counts (not one per frame, and not one per reconnect attempt while the
    backend stays unreachable for the same reason). Every line goes through `clean`."""

    def __init__(self, clean: Callable[[str], str]) -> None:
        self.clean = clean
        self.tty = sys.stderr.isatty()
        self.last_line = ""
        self.last_key: tuple[Any, ...] | None = None

    def __call__(self, status: Any) -> None:
        if self.tty:
            line = self.clean(status_line(status))
            if line != self.last_line:
                self.last_line = line
                sys.stderr.write("\r\x1b[2K" + line[: _width()])
                sys.stderr.flush()
            return
        if status.state == "connecting" and self.last_key is not None:
            return  # a retry: its outcome gets the line
        key = (status.state, status.last_error, status.delivered, status.rejected,
               getattr(status, "pending", None))
        if key != self.last_key:
            self.last_key = key
            sys.stderr.write(self.clean(status_line(status)) + "\n")
            sys.stderr.flush()

    def done(self) -> None:
        if self.tty:
            sys.stderr.write("\n")


def _width() -> int:
    import shutil

    return max(20, shutil.get_terminal_size((100, 20)).columns - 1)
