"""The `chatledger` command: the group, its global options, and one-line errors."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import apsw
import click
from eventsourcing.persistence import PersistenceError

from chatledger.cli.actions import ACTION_COMMANDS
from chatledger.cli.admin import flush_command, quarantine_command, stats_command
from chatledger.cli.archive import backup_command, export_command
from chatledger.cli.audit import as_of_group, explain_command
from chatledger.cli.browse import browse_command
from chatledger.cli.context import Context, DamagedFile, fail, is_corruption
from chatledger.cli.demo import demo_command
from chatledger.cli.devserver import devserver_command
from chatledger.cli.history import log_command
from chatledger.cli.importing import import_command
from chatledger.cli.outbox import conflicts_command, outbox_group
from chatledger.cli.personal import mutes_command, reminders_command
from chatledger.cli.reading import channels_command, show_group
from chatledger.cli.sealing import head_command, rekey_command
from chatledger.cli.sync import sync_command
from chatledger.cli.tables import rebuild_command, verify_command
from chatledger.eventstore.log import StoreError
from chatledger.eventstore.userfiles import UserIdError
from chatledger.eventstore.wire import WireError
from chatledger.projections.store import default_data_dir


_ARGV_KEY = "chatledger.argv"


def _is_text(argument: str) -> bool:
    try:
        argument.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


class OneLineUsageError(click.ClickException):
    """A usage error said in one line (`Error: ...`), with click's usage status 2."""

    exit_code = 2


class ChatledgerGroup(click.Group):
    """Turns the store's own errors into one-line messages and a non-zero exit."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        ctx.meta[_ARGV_KEY] = list(args)
        return super().parse_args(ctx, args)

    def invoke(self, ctx: click.Context) -> Any:
        user = ctx.params.get("user")
        for argument in ctx.meta.get(_ARGV_KEY, ()):
            # The user id has its own check (UserIdError), which also names the rule.
            if argument != user and not _is_text(argument):
                # What a shell passes for bytes that are not UTF-8: no id, cid or text holds it.
                raise OneLineUsageError(
                    f"argument {ascii(argument)} is not valid text "
                    "(it holds bytes that are not UTF-8)")
        try:
            return super().invoke(ctx)
        except click.UsageError as error:
            # click would print the usage and a hint over three more lines; scripts and people
            # get the reason alone (`--help` shows the usage).
            raise OneLineUsageError(error.format_message()) from None
        except BrokenPipeError:
            raise  # the reader went away (`| head`): not an error of ours
        except (apsw.CorruptError, PersistenceError) as error:
            if not is_corruption(error):
                fail(str(error) or type(error).__name__)
            context = ctx.find_object(Context)
            raise DamagedFile(context.store_path() if context else "the store", str(error),
                              "run `chatledger verify` to see what is hit, or restore a backup") from None
        except (StoreError, UserIdError, WireError, PersistenceError, OSError) as e:
            fail(str(e) or type(e).__name__)


@click.group(cls=ChatledgerGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="CHATLEDGER_DATA_DIR",
    default=None,
    help="Directory of the per-user store files [env CHATLEDGER_DATA_DIR; "
    "default $XDG_DATA_HOME/chatledger].",
)
@click.option("--user", "-u", envvar="CHATLEDGER_USER", help="Whose store [env CHATLEDGER_USER].")
@click.option(
    "--synchronous",
    type=click.Choice(["NORMAL", "FULL"], case_sensitive=False),
    default="NORMAL",
    show_default=True,
    help="FULL makes every commit durable against power loss, at a cost in speed.",
)
@click.option(
    "--lock-timeout",
    type=click.FloatRange(min=0),
    default=5.0,
    show_default=True,
    envvar="CHATLEDGER_LOCK_TIMEOUT",
    help="Seconds to wait while another process is writing the store [env CHATLEDGER_LOCK_TIMEOUT].",
)
@click.option("--key-file", type=click.Path(dir_okay=False, path_type=Path),
              envvar="CHATLEDGER_KEY_FILE",
              help="File holding the key of a sealed (encrypted) store; a new store is sealed "
                   "with it [env CHATLEDGER_KEY_FILE].")
@click.option("--keyring", "use_keyring", is_flag=True,
              help="Take the store's key from the system keyring (a new store gets a new key "
                   "kept there).")
@click.option("--debug", is_flag=True, envvar="CHATLEDGER_DEBUG",
              help="More detail on stderr for commands that talk to a backend (`sync`); "
                   "credentials are never shown.")
@click.version_option(package_name="chatledger")
@click.pass_context
def cli(
    ctx: click.Context, data_dir: Path | None, user: str | None, synchronous: str,
    lock_timeout: float, key_file: Path | None, use_keyring: bool, debug: bool,
) -> None:
    """chatledger: an offline, event-sourced store of chat data, one SQLite file per user.

    \b
    Examples:
      chatledger --user alice import events.jsonl
      chatledger --user alice log --cid messaging:general --limit 20
      chatledger --user alice stats
    """
    context = Context(data_dir or default_data_dir(), user, synchronous.upper(), lock_timeout)
    context.debug = debug
    context.key_file = key_file
    context.use_keyring = use_keyring
    ctx.obj = context
    ctx.call_on_close(context.close)


for command in (import_command, log_command, stats_command, quarantine_command, flush_command,
                channels_command, show_group, rebuild_command, verify_command, as_of_group,
                explain_command, devserver_command):
    cli.add_command(command)
for command in (*ACTION_COMMANDS, outbox_group, conflicts_command):
    cli.add_command(command)
for command in (sync_command, demo_command):
    cli.add_command(command)
for command in (backup_command, export_command):
    cli.add_command(command)
for command in (reminders_command, mutes_command):
    cli.add_command(command)
cli.add_command(browse_command)
for command in (head_command, rekey_command):
    cli.add_command(command)


def main() -> None:
    try:
        cli(prog_name="chatledger")
    except KeyboardInterrupt:
        click.echo("Interrupted.", err=True)
        sys.exit(130)
    except BrokenPipeError:
        # Quietly, as `cat` does; point stdout at nothing so the exit flush cannot fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(0)
