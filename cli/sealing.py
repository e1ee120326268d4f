"""Sealed stores from the command line: where the key comes from (`--key-file`, `--keyring`),
`chatledger rekey`, `chatledger head`, and the chain check of `chatledger verify --chain`."""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

import click

from chatledger.cli.context import Context, fail, key_action, pass_context
from chatledger.cli.output import echo_json
from chatledger.eventstore import seal
from chatledger.errors import KeyRequired, StoreError

T = TypeVar("T")


def chain_report(ctx: Context, head: tuple[bytes, int] | None) -> seal.ChainReport:
    """The chain checked through the store when it opens (its key given, or none needed), else
    through a read-only look at the file: the chain needs no key."""
    try:
        store = ctx.store(create=False)
    except KeyRequired:
        path = ctx.store_path()
        assert path is not None
        return key_action(lambda: seal.check_file(path, head=head))
    return store.verify_chain(head)


def chain_head(ctx: Context) -> tuple[int, bytes]:
    try:
        return ctx.store(create=False).chain_head()
    except KeyRequired:
        report = chain_report(ctx, None)  # whole: a head over a broken chain would prove nothing
        if report.broken is not None:
            fail(f"the log's chain breaks at {report.broken}")
        return report.head_position, report.head_hash


def report_chain(report: seal.ChainReport, as_json: bool) -> None:
    """Print a chain check; a break is an error (exit 1)."""
    broken = report.broken
    if as_json:
        echo_json({"ok": broken is None, "entries": report.entries,
                   "head": seal.format_head(report.head_position, report.head_hash),
                   "broken_at": broken.position if broken else None,
                   "kind": broken.kind if broken else None,
                   "detail": broken.detail if broken else None})
    if broken is not None:
        fail(f"the log's chain breaks at {broken}")
    if not as_json:
        click.echo(f"The log's chain is whole: {report.entries:,} entries, head "
                   f"{seal.format_head(report.head_position, report.head_hash)}.")


def parse_head_option(value: str | None) -> tuple[bytes, int] | None:
    if value is None:
        return None
    try:
        return seal.parse_head(value)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--head") from None


@click.command("head")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON line.")
@pass_context
def head_command(ctx: Context, as_json: bool) -> None:
    """Print the log's last position and its chain hash, as HASH@POSITION.

    Record it: `chatledger verify --chain --head HASH@POSITION` later proves the log up to
    there unchanged. No key is needed.

    \b
    Example:
      chatledger --user alice head >> alice.heads
    """
    position, chain = chain_head(ctx)
    if as_json:
        echo_json({"position": position, "hash": chain.hex(),
                   "head": seal.format_head(position, chain)})
    else:
        click.echo(seal.format_head(position, chain))


@click.command("rekey")
@click.option("--new-key-file", type=click.Path(dir_okay=False, path_type=Path),
              help="File holding the new key (32 bytes: raw, hexadecimal or base64).")
@click.option("--new-keyring", is_flag=True,
              help="Make a new key and keep it in the system keyring (service chatledger).")
@click.option("--decrypt", is_flag=True, help="Store the payloads unencrypted again.")
@pass_context
def rekey_command(ctx: Context, new_key_file: Path | None, new_keyring: bool,
                  decrypt: bool) -> None:
    """Re-encrypt the store under a new key, or encrypt a plain store in place.

    The store opens with the current key (--key-file or --keyring; none for a plain store).
    Everything is re-encrypted in one transaction: killed, the store stays under its old key
    (run it again). The chain is checked first and computed again over the new bytes, so the
    head changes: record the new one it prints.

    \b
    Examples:
      head -c 32 /dev/urandom > alice.key && chmod 600 alice.key
      chatledger --user alice rekey --new-key-file alice.key          # encrypt in place
      chatledger --user alice --key-file alice.key rekey --new-keyring
    """
    if sum((new_key_file is not None, new_keyring, decrypt)) != 1:
        raise click.UsageError("give one of --new-key-file, --new-keyring, --decrypt")
    store = ctx.store(create=False)
    user = store.user_id or ctx.require_user()
    new_key: bytes | None = None
    if new_key_file is not None:
        new_key = key_action(lambda: seal.read_key_file(new_key_file))
    elif new_keyring:
        new_key = seal.new_key()
        # Kept before it is used: killed after the commit, the next open finds it waiting.
        key_action(lambda: seal.store_keyring_key(user, new_key, pending=True))
    try:
        store.rekey(new_key)
    except StoreError as error:
        fail(str(error))
    if new_keyring:
        key_action(lambda: seal.store_keyring_key(user, new_key))
        key_action(lambda: seal.store_keyring_key(user, None, pending=True))
    position, chain = store.chain_head()
    what = "decrypted" if decrypt else "encrypted under the new key"
    click.echo(f"The store is {what}; the chain's new head is "
               f"{seal.format_head(position, chain)} (record it again).")


__all__ = ["chain_report", "head_command", "parse_head_option", "rekey_command",
           "report_chain"]
