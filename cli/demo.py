"""`chatledger demo`: the whole story against the local development server, in under a minute."""

from __future__ import annotations

import asyncio
from pathlib import Path

import click
from click.core import ParameterSource

from chatledger.cli.audit import explain_command
from chatledger.cli.context import Context, fail
from chatledger.cli.diff import print_report
from chatledger.cli.outbox import conflicts_command, outbox_group
from chatledger.cli.output import console
from chatledger.cli.reading import channels_command

DEMO_DIR = Path("chatledger-demo")
DEMO_USER = "alice"
_MARK = "made_by"  # meta key: a store the demo made, and may therefore replace


def _demo_target(click_ctx: click.Context) -> tuple[Path, str]:
    """The global --data-dir and --user when given, else ./chatledger-demo and alice."""
    parent = click_ctx.parent
    assert parent is not None
    given = {ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT}
    data_dir = (parent.params["data_dir"]
                if parent.get_parameter_source("data_dir") in given else DEMO_DIR)
    return Path(data_dir), DEMO_USER


@click.command("demo")
@click.pass_context
def demo_command(click_ctx: click.Context) -> None:
    """Run the whole story against a local development server, then show the result.

    Starts the development server in this process, connects Alice's client (HTTP and WebSocket
    on 127.0.0.1), loads her channels and receives live events; then goes offline, makes changes
    that queue in the outbox while others keep talking; comes back on a flaky network (an answer
    lost, a 500), replays the outbox and catches up with what was missed. It prints the channel
    list, the outbox, the conflict the server refused, the audit trail of one message, and a
    diff of the store against the server that shows the refused action.

    The store is left in ./chatledger-demo (or the --data-dir you give) for the other commands
    to explore; running the demo again replaces it.

    \b
    Examples:
      chatledger demo
      chatledger --data-dir ./chatledger-demo --user alice outbox --all
    """
    from chatledger import ChatStore
    from chatledger.sync.demo import run_demo

    data_dir, user = _demo_target(click_ctx)
    _replace_previous_demo(data_dir, user)
    out = console()
    out.rule("[bold]chatledger demo")
    store = ChatStore.open(data_dir, user)
    store.set_note(_MARK, "chatledger demo")
    try:
        result = asyncio.run(run_demo(store, lambda line: out.print(f"[green]•[/green] {line}"),
                                      user=user))
    except TimeoutError as error:
        store.close()
        fail(str(error))
    store.close()

    demo_ctx = Context(data_dir, user, "NORMAL")
    click_ctx.obj = demo_ctx
    try:
        out.rule(f"[bold]{user}'s channels[/bold] (chatledger channels)")
        click_ctx.invoke(channels_command, limit=10)
        out.rule("[bold]The outbox[/bold] (chatledger outbox --all)")
        click_ctx.invoke(outbox_group, show_all=True)
        out.rule("[bold]Refused by the server[/bold] (chatledger conflicts)")
        click_ctx.invoke(conflicts_command)
        if result.traced_message:
            out.rule(f"[bold]Audit trail of one message[/bold] (chatledger explain "
                     f"{result.traced_message})")
            click_ctx.invoke(explain_command, message_id=result.traced_message)
        if result.diff is not None:
            out.rule("[bold]The store against the server[/bold] (chatledger diff)")
            print_report(result.diff)
    finally:
        demo_ctx.close()
    out.rule()
    out.print(f"Done in {result.seconds:.1f} s. The store is in {data_dir}/; explore it with:")
    prefix = f"chatledger --data-dir {data_dir} --user {user}"
    for command in ("channels", "show channel messaging:general", "outbox --all", "conflicts",
                    "log --limit 20", f"explain {result.traced_message}", "verify"):
        out.print(f"  {prefix} {command}", highlight=False)


def _replace_previous_demo(data_dir: Path, user: str) -> None:
    """Remove the store a previous demo left; refuse to touch one the demo did not make."""
    from chatledger import ChatStore
    from chatledger.errors import StoreError

    path = ChatStore.store_file(data_dir, user)
    if not path.exists():
        return
    try:
        with ChatStore.open_file(path) as previous:
            made_by = previous.note(_MARK)
    except StoreError:  # sealed, damaged, or no store at all: not the demo's
        made_by = None
    if made_by != "chatledger demo":
        fail(f"{path} holds a store the demo did not make; give the demo another --data-dir")
    ChatStore.flush_user(data_dir, user)
