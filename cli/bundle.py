"""`chatledger bundle`: a copy of the store for a bug report, optionally redacted."""

from __future__ import annotations

from pathlib import Path

import click

from chatledger.cli.context import Context, pass_context
from chatledger.cli.output import echo_json, parse_when


@click.command("bundle")
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option("--redact", is_flag=True,
              help="Replace texts, attachment URLs and titles, user names and images, channel "
                   "names and custom field values with placeholders of the same length and "
                   "shape; ids, types, times, counts, the outbox and errors are kept.")
@click.option("--since", "since_text", metavar="TIME",
              help="Only what was received from TIME on (RFC 3339, a date, or an age: 2h, 3d).")
@click.option("--cid", "cids", multiple=True, metavar="CID",
              help="Only this channel (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@pass_context
def bundle_command(ctx: Context, out: Path, redact: bool, since_text: str | None,
                   cids: tuple[str, ...], as_json: bool) -> None:
    """Write a copy of the user's store into the directory OUT, to attach to a bug report.

    The copy is one consistent snapshot (the store stays in use meanwhile), with its read
    tables rebuilt from its log and verified. Open it with every command:
    `chatledger --data-dir OUT --user USER stats` says it is a bundle.

    \b
    Examples:
      chatledger --user alice bundle ./report --redact
      chatledger --user alice bundle ./report --redact --since 2d --cid messaging:general
    """
    since = parse_when(since_text) if since_text is not None else None
    store = ctx.store(create=False)
    report = store.bundle(out, redact=redact, since=since, cids=list(cids) or None)
    if as_json:
        echo_json(report)
        return
    what = "redacted bundle" if redact else "bundle"
    left_out = f", {report['left_out']:,} left out" if report["left_out"] else ""
    replaced = f", {report['replaced']:,} values replaced" if redact else ""
    click.echo(f"Wrote a {what} of {store.user_id!r}: {report['path']} "
               f"({report['events']:,} log entries{left_out}{replaced}; "
               f"{report['bytes']:,} bytes, {report['seconds']:.2f} s).")
    click.echo(f"Open it with: chatledger --data-dir {out} --user {store.user_id} stats")


__all__ = ["bundle_command"]
