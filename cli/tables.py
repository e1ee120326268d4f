"""`chatledger rebuild` and `verify`: the read tables against the log."""

from __future__ import annotations

import apsw
import click
from eventsourcing.persistence import PersistenceError

from chatledger import ChatStore, Damage
from chatledger.cli.context import Context, DamagedFile, fail, is_corruption, pass_context
from chatledger.cli.output import MAX_INT, echo_json
from chatledger.cli.progress import replay_progress
from chatledger.errors import StoreError


@click.command("rebuild")
@pass_context
def rebuild_command(ctx: Context) -> None:
    """Rebuild the read tables from the whole log (in one transaction: readers see the old
    tables or the new ones, never half).

    When SQLite finds read tables damaged and the log intact, they are removed from the file
    and built afresh; a damaged log is an error (exit 3) that says to restore a backup.

    \b
    Example:
      chatledger --user alice rebuild
    """
    try:
        store = ctx.store(create=False)
        with replay_progress("rebuilding") as on_progress:
            position = store.rebuild(on_progress)
    except (StoreError, PersistenceError, apsw.CorruptError) as error:
        if not is_corruption(error):
            raise
        position = _rebuild_damaged(ctx, str(error))
    click.echo(f"Rebuilt the read tables up to log position {position:,}.")


def _log_damage(ctx: Context, detail: str) -> Damage:
    """What is damaged, checked through the log alone: opening the whole store reads read
    tables too, which may be what is damaged."""
    from chatledger.cli.context import open_sealed

    ctx.close()
    try:
        # With the key of the global options: a sealed store needs it.
        damage = open_sealed(ctx, lambda key: ChatStore.check_file(ctx.store_path() or "",
                                                                   key=key))
    except (StoreError, PersistenceError, apsw.CorruptError) as error:
        if not is_corruption(error):
            raise
        return Damage([detail], log_hit=True)
    return damage or Damage([detail], log_hit=False)


def _rebuild_damaged(ctx: Context, detail: str) -> int:
    """A rebuild that SQLite stopped on a damaged page: when the log itself is intact, the
    damaged read tables are removed from the file and built afresh; otherwise the file is
    damaged past what a rebuild repairs."""
    damage = _log_damage(ctx, detail)
    if damage.log_hit:
        raise DamagedFile(ctx.store_path(), damage.problems[0], damage.advice())
    from chatledger.cli.context import open_sealed

    open_sealed(ctx, lambda key: ChatStore.forget_read_tables(ctx.store_path() or "", key=key))
    store = ctx.store(create=False)  # opening builds the read tables from the log again
    damage_left = store.damage()
    if damage_left is not None:
        raise DamagedFile(store.path, damage_left.problems[0], damage_left.advice())
    return store.projected_position()


@click.command("verify")
@click.option("--json", "as_json", is_flag=True, help="Print each difference as a JSON line.")
@click.option("--limit", type=click.IntRange(1, MAX_INT), default=20, show_default=True,
              help="Differences to print at most.")
@click.option("--chain", is_flag=True,
              help="Check the log's hash chain instead (no key needed): exit 1 at the first "
                   "entry changed, removed, inserted or reordered.")
@click.option("--head", "head", metavar="HASH@POSITION",
              help="With --chain: a head `chatledger head` printed earlier, which must still hold.")
@pass_context
def verify_command(ctx: Context, as_json: bool, limit: int, chain: bool,
                   head: str | None) -> None:
    """Check the file, rebuild into a scratch copy and compare it with the live tables.

    Exit 1 if the tables differ from the log (`rebuild` repairs them), 3 if the file is
    damaged (SQLite's integrity check fails), with what to do. With --chain, recompute the
    log's hash chain (and check a recorded --head): exit 1 names the first entry that is not
    what was appended.

    \b
    Examples:
      chatledger --user alice verify && echo "tables match the log"
      chatledger --user alice verify --chain --head 3f2a...9c@120400
    """
    if head is not None and not chain:
        raise click.UsageError("--head goes with --chain")
    if chain:
        from chatledger.cli.sealing import chain_report, parse_head_option, report_chain

        report_chain(chain_report(ctx, parse_head_option(head)), as_json)
        return
    try:
        store = ctx.store(create=False)
    except (StoreError, PersistenceError, apsw.CorruptError) as error:
        if not is_corruption(error):
            raise
        damage = _log_damage(ctx, str(error))  # opening it read a damaged page
        raise DamagedFile(ctx.store_path(), damage.problems[0], damage.advice()) from None
    # The file first: a comparison of tables read from damaged pages would prove nothing.
    file_damage = store.damage()
    if file_damage is not None:
        raise DamagedFile(store.path, file_damage.problems[0], file_damage.advice())
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
        click.echo(f"The read tables match the log (position {store.projected_position():,}).")
