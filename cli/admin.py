"""`chatledger stats`, `quarantine` and `flush`: looking after a user's store."""

from __future__ import annotations

from typing import Any

import click
import msgspec
from rich.table import Table

from chatledger import ChatStore
from chatledger.cli.context import Context, fail, missing_store_message, pass_context
from chatledger.cli.output import (MAX_INT, console, echo_json, escape_controls, format_time,
                                   iso_time, shown, writable)
from chatledger.cli.render import Column, emit_table, format_options, output_format


@click.command("stats")
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON.")
@pass_context
def stats_command(ctx: Context, as_json: bool) -> None:
    """Counts and sizes of a user's store.

    \b
    Example:
      chatledger --user alice stats
    """
    store_stats = ctx.store(create=False).stats()
    if as_json:
        echo_json(store_stats)
        return
    stats = msgspec.structs.asdict(store_stats)  # the figures by name, for the table below
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
        *_bundle_rows(stats.get("bundle")),
    ):
        summary.add_row(label, shown(value))
    with out.capture() as captured:
        out.print(summary)
        if stats["by_type"]:
            types = Table("type", "events", box=None, pad_edge=False, header_style="bold")
            for topic, count in stats["by_type"].items():
                types.add_row(shown(topic), f"{count:,}")
            out.print()
            out.print(types)
    # Rich pads every cell to its column's width: no line ends in that padding.
    for line in captured.get().splitlines():
        click.echo(line.rstrip())


# What a bundle's `redacted` says (any other value: just "a bundle").
_BUNDLE_KINDS: dict[Any, str] = {True: "a redacted bundle", False: "a bundle (not redacted)"}


def _bundle_rows(info: dict[str, Any] | None) -> list[tuple[str, str]]:
    """A line saying the store is a bundle (`chatledger bundle`), and how it was made."""
    if info is None:
        return []
    kind = _BUNDLE_KINDS.get(info.get("redacted"), "a bundle")
    made = (f" made by chatledger {info.get('chatledger_version', '?')} "
            f"(projection version {info.get('projection_version', '?')})")
    when = f" at {format_time(info['made_at'])}" if isinstance(info.get("made_at"), int) else ""
    cut = []
    if info.get("since") is not None:
        cut.append(f"since {format_time(info['since'])}")
    if info.get("cids"):
        cut.append("channels " + ", ".join(map(str, info["cids"])))
    return [("bundle", kind + made + when + (f"; only {'; '.join(cut)}" if cut else ""))]


QUARANTINE_COLUMNS = (
    Column("id", "key"), Column("received", "time", drop=2), Column("source", drop=3),
    Column("size", "count", drop=1), Column("reason"),
)
UNPROJECTED_COLUMNS = (Column("position", "key"), Column("type", drop=1), Column("reason"))
USER_COLUMNS = (
    Column("user", "key"), Column("size", "count", drop=2), Column("events", "count"),
    Column("last activity", "time", drop=1), Column("file", drop=3),
)


@click.command("users")
@format_options()
@click.pass_context
def users_command(click_ctx: click.Context, fmt: str | None) -> None:
    """The stores in the data directory: each user id with the store's size in bytes, its
    number of log entries and its last activity (when its newest entry arrived).

    \b
    Examples:
      chatledger users
      chatledger --data-dir ./chat users --json
    """
    ctx: Context = click_ctx.obj
    stores = ChatStore.list_users(ctx.data_dir)
    if fmt == "json":
        for store in stores:
            # A file name's bytes need not be text: escaped, so that the line is JSON.
            user_id = None if store.user_id is None else writable(store.user_id)
            echo_json({"user_id": user_id, "path": writable(str(store.path)), "bytes": store.bytes,
                       "events": store.events, "last_activity_at": iso_time(store.last_activity_at),
                       "problem": store.problem})
        return
    if not stores and fmt is None:
        where = "does not exist" if not ctx.data_dir.is_dir() else "holds no stores"
        click.echo(f"The data directory {escape_controls(writable(str(ctx.data_dir)))} {where}.")
        return
    emit_table(USER_COLUMNS, ((store.user_id or "?", store.bytes, store.events,
                               store.last_activity_at, store.problem or store.path.name)
                              for store in stores), output_format(fmt))


@click.command("quarantine")
@click.option("--limit", type=click.IntRange(1, MAX_INT), default=20, show_default=True)
@format_options(json_help="JSON lines, with the raw bytes as text.")
@pass_context
def quarantine_command(ctx: Context, limit: int, fmt: str | None) -> None:
    """Input the store refused, newest first, with the reason.

    \b
    Example:
      chatledger --user alice quarantine --limit 5
    """
    store = ctx.store(create=False)
    items = store.quarantine(limit=limit)
    # Stored in the log, but with a value the tables cannot hold left out of them.
    unprojected = store.unprojected(limit=limit)
    if fmt == "json":
        for item in items:
            echo_json({**msgspec.structs.asdict(item), "received_at": iso_time(item.received_at),
                       "raw": item.raw.decode("utf-8", "replace")})
        for entry in unprojected:
            echo_json({"stored": True, **msgspec.structs.asdict(entry)})
        return
    emit_table(QUARANTINE_COLUMNS, ((item.id, item.received_at, item.source,
                                     item.size, item.reason) for item in items),
               output_format(fmt), empty="Nothing is quarantined.")
    if unprojected and fmt is None:
        click.echo("\nStored, but not wholly projected:")
        emit_table(UNPROJECTED_COLUMNS, ((entry.position, entry.type, entry.reason)
                                         for entry in unprojected), "table")


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
    path = ChatStore.store_file(ctx.data_dir, user)
    if not ChatStore.store_files(ctx.data_dir, user):  # any of its files: a flush killed half-way left some
        fail(missing_store_message(ctx.data_dir, user))
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


__all__ = ["flush_command", "quarantine_command", "stats_command", "users_command"]
