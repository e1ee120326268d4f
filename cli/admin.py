"""`chatledger stats`, `quarantine` and `flush`: looking after a user's store."""

from __future__ import annotations

import click
from rich.table import Table

from chatledger.cli.context import Context, fail, pass_context
from chatledger.cli.output import MAX_INT, console, echo_json, format_time, iso_time, shown
from chatledger.eventstore.userfiles import store_files, user_db_path
from chatledger.projections.store import ChatStore


@click.command("stats")
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON.")
@pass_context
def stats_command(ctx: Context, as_json: bool) -> None:
    """Counts and sizes of a user's store.

    \b
    Example:
      chatledger --user alice stats
    """
    stats = ctx.store(create=False).stats()
    if as_json:
        echo_json(stats)
        return
    out = console()
    summary = Table(box=None, show_header=False, pad_edge=False)
    summary.add_column(style="bold")
    summary.add_column()
    ratio = stats["compression_ratio"]
    for label, value in (
        ("user", stats["user_id"]),
        ("file", stats["path"]),
        ("events", f"{stats['events']:,}"),
        ("channels", f"{stats['channels']:,}"
         + (f" (and {stats['hidden_channels']:,} hidden)" if stats["hidden_channels"] else "")),
        ("streams", f"{stats['streams']:,}"),
        ("quarantined", f"{stats['quarantined']:,}"),
        ("unprojected", f"{stats.get('unprojected', 0):,}"),
        ("payload bytes", f"{stats['payload_bytes']:,}"),
        ("stored payload bytes", f"{stats['stored_payload_bytes']:,}"
         + (f" ({ratio} x smaller)" if stats["dictionaries"] else " (not compressed yet)")),
        ("file bytes", f"{stats['file_bytes']:,}"),
    ):
        summary.add_row(label, shown(value))
    out.print(summary)
    if stats["by_type"]:
        types = Table("type", "events", box=None, pad_edge=False, header_style="bold")
        for topic, count in stats["by_type"].items():
            types.add_row(shown(topic), f"{count:,}")
        out.print()
        out.print(types)


@click.command("quarantine")
@click.option("--limit", type=click.IntRange(1, MAX_INT), default=20, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="JSON lines, with the raw bytes as text.")
@pass_context
def quarantine_command(ctx: Context, limit: int, as_json: bool) -> None:
    """Input the store refused, newest first, with the reason.

    \b
    Example:
      chatledger --user alice quarantine --limit 5
    """
    store = ctx.store(create=False)
    items = store.quarantine(limit=limit)
    # Stored in the log, but with a value the tables cannot hold left out of them.
    unprojected = store.unprojected(limit=limit)
    if as_json:
        for item in items:
            raw = item["raw"]
            echo_json({**item, "received_at": iso_time(item["received_at"]),
                       "raw": raw.decode("utf-8", "replace")})
        for entry in unprojected:
            echo_json({"stored": True, **entry})
        return
    if not items:
        click.echo("Nothing is quarantined.")
    else:
        table = Table("id", "received", "source", "size", "reason", box=None, pad_edge=False,
                      header_style="bold")
        for item in items:
            table.add_row(str(item["id"]), format_time(item["received_at"]), shown(item["source"]),
                          f"{item['size']:,}", shown(item["reason"]))
        console().print(table)
    if unprojected:
        click.echo("\nStored, but not wholly projected:")
        table = Table("position", "type", "reason", box=None, pad_edge=False,
                      header_style="bold")
        for entry in unprojected:
            table.add_row(str(entry["position"]), shown(entry["type"]), shown(entry["reason"]))
        console().print(table)


@click.command("flush")
@click.option("--yes", "-y", is_flag=True, help="Do not ask before deleting.")
@pass_context
def flush_command(ctx: Context, yes: bool) -> None:
    """Delete a user's store: the database and its -wal and -shm files (log out).

    Everything in it is gone afterwards, pending actions included.

    \b
    Example:
      chatledger --user alice flush --yes
    """
    user = ctx.require_user()
    path = user_db_path(ctx.data_dir, user)
    if not store_files(path):  # any of its files: a flush killed half-way left some
        fail(f"no store for user {user!r} in {ctx.data_dir}")
    if not yes:
        click.confirm(f"Delete the store of {user!r} ({path})?", abort=True)
    # Deleted without opening: a store that cannot be opened (damaged, from a newer version)
    # can still be logged out of.
    removed = ChatStore.flush_user(ctx.data_dir, user)
    if ctx.use_keyring:
        # The key goes with the store (and one a killed rekey left waiting).
        from chatledger.eventstore.seal import StoreKeyError, store_keyring_key

        try:
            store_keyring_key(user, None)
            store_keyring_key(user, None, pending=True)
        except StoreKeyError as error:
            fail(f"deleted the store, but not its key: {error}")
    click.echo(f"Deleted {len(removed)} file(s) of {user!r}.")


__all__ = ["flush_command", "quarantine_command", "stats_command"]
