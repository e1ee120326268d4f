"""`chatledger rebuild` and `verify`: the read tables against the log."""

from __future__ import annotations

import click

from chatledger.cli.context import Context, fail, pass_context
from chatledger.cli.output import MAX_INT, echo_json
from chatledger.cli.progress import replay_progress


@click.command("rebuild")
@pass_context
def rebuild_command(ctx: Context) -> None:
    """Rebuild the read tables from the whole log (in one transaction: readers see the old
    tables or the new ones, never half).

    \b
    Example:
      chatledger --user alice rebuild
    """
    store = ctx.store(create=False)
    with replay_progress("rebuilding") as on_progress:
        position = store.rebuild(on_progress)
    click.echo(f"Rebuilt the read tables up to log position {position:,}.")


@click.command("verify")
@click.option("--json", "as_json", is_flag=True, help="Print each difference as a JSON line.")
@click.option("--limit", type=click.IntRange(1, MAX_INT), default=20, show_default=True,
              help="Differences to print at most.")
@pass_context
def verify_command(ctx: Context, as_json: bool, limit: int) -> None:
    """Rebuild into a scratch copy and compare it with the live tables; exit 1 if they differ.

    \b
    Example:
      chatledger --user alice verify && echo "tables match the log"
    """
    store = ctx.store(create=False)
    with replay_progress("verifying") as on_progress:
        differences = store.verify(on_progress)
    for difference in differences[:limit]:
        if as_json:
            echo_json({"table": difference.table, "side": difference.side,
                       "row": list(difference.row)})
        else:
            click.echo(f"{difference.table}: {difference.side} {difference.row}", err=True)
    if differences:
        fail(f"the read tables differ from a fresh rebuild in {len(differences):,} rows "
             "(`chatledger rebuild` repairs them)")
    if not as_json:
        click.echo(f"The read tables match the log (position {store.projections.position() or 0:,}).")
