"""The `python -m benchmarks` command group.

Each subcommand lives in a module of its own that defines a click command named `command`; list it in
`SUBCOMMANDS` to make it available. Modules are imported only when their subcommand runs (or when
`--help` lists them), so a broken or missing benchmark does not take the others down.
"""

from __future__ import annotations

import importlib

import click

# name -> (module, one-line help shown even when the module cannot be imported)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "ingest": ("benchmarks.ingest", "Append throughput: chatledger's log vs raw APSW vs stock eventsourcing."),
    "sample": ("benchmarks.sample", "Write generated events as JSON lines (to try the store out)."),
    "loop": ("benchmarks.loop", "Event-loop stalls while ingesting in background mode (AsyncChatStore)."),
    "project": ("benchmarks.project", "Ingest with every projection vs the log alone vs raw APSW; file size."),
    "rebuild": ("benchmarks.rebuild", "Rebuild of the read tables by replay: events/s and peak memory."),
    "read": ("benchmarks.read", "Reads in a fresh process: first screen, pages of 50 messages."),
    "outbox": ("benchmarks.outbox", "Local commands: queue offline, replay; the store's cost per command."),
    "sync": ("benchmarks.sync", "Replay queued actions against the development server: the store's share."),
    "audit": ("benchmarks.audit", "Audit questions (explain, log --cid, as-of channel) in a fresh process; what links cost ingest."),
    "archive": ("benchmarks.archive", "Push and pull to the PostgreSQL archive vs a plain COPY of the same rows."),
}


class _LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(SUBCOMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        entry = SUBCOMMANDS.get(name)
        if entry is None:
            return None
        module_name, short_help = entry
        try:
            module = importlib.import_module(module_name)
        except ImportError as e:
            message = f"unavailable: cannot import {module_name} ({e})"

            @click.command(name=name, help=f"{short_help} ({message})", short_help=message)
            def unavailable() -> None:
                raise click.ClickException(message)

            return unavailable
        command = module.command
        if command.short_help is None:
            command.short_help = short_help
        return command


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Benchmarks of the chatledger store, measured against baselines in the same run.

    Run from the repository root. Human-readable results go to stdout, followed by one JSON object
    on the last line (for scripts and CI); progress goes to stderr.
    """
