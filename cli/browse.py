"""`chatledger browse`: the user's store in Datasette, read-only, in the browser."""

from __future__ import annotations

import webbrowser

import click

from chatledger.cli.context import Context, fail, pass_context

INSTALL_HINT = "chatledger browse needs Datasette: pip install 'chatledger[browse]'"


@click.command("browse")
@click.argument("users", nargs=-1)
@click.option("--all", "all_users", is_flag=True,
              help="Every user's store in the data directory.")
@click.option("--port", type=click.IntRange(0, 65535), default=8001, show_default=True,
              help="Port to listen on, on 127.0.0.1 (0 picks a free one).")
@click.option("--no-open", is_flag=True, help="Do not open a web browser; just print the URL.")
@pass_context
def browse_command(ctx: Context, users: tuple[str, ...], all_users: bool, port: int,
                   no_open: bool) -> None:
    """Open the store in Datasette, read-only, on 127.0.0.1, and print the URL.

    The store is shown with its payloads decoded, times in RFC 3339, links between channels,
    messages and commands, canned queries (conversation, log, outbox, conflicts, sync history,
    explain, as-of, time window, pending or refused) and chart pages. USERS adds other users'
    stores (or --all for every store in the data directory). Runs until Ctrl-C.

    \b
    Examples:
      chatledger --user alice browse
      chatledger --user alice browse bob carol --port 8002 --no-open
      chatledger browse --all
    """
    try:
        import datasette  # noqa: F401  (an optional extra: say so before anything else)
    except ImportError:
        fail(INSTALL_HINT)
    from chatledger.projections.browse.server import BrowseServer, all_store_paths, store_paths

    if all_users:
        paths = all_store_paths(ctx.data_dir)
    else:
        paths = store_paths(ctx.data_dir, [ctx.require_user(), *users])
    server = BrowseServer(paths, port=port)
    names = ", ".join(server.database_names)
    click.echo(f"Browsing {names} (read-only) at {server.url}")
    click.echo("Press Ctrl-C to stop.", err=True)
    if not no_open:
        webbrowser.open(server.url)
    try:
        server.serve()
    except KeyboardInterrupt:
        pass  # Ctrl-C is how this command ends
    click.echo("Stopped.", err=True)
