"""The `chatledger` command: the group, its global options, and one-line errors."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from collections.abc import Callable
from typing import Any

import apsw
import click
from eventsourcing.persistence import PersistenceError

from chatledger import default_data_dir
from chatledger.cli.actions import ACTION_COMMANDS
from chatledger.cli.admin import flush_command, quarantine_command, stats_command, users_command
from chatledger.cli.archive import archive_group
from chatledger.cli.copies import backup_command, export_command
from chatledger.cli.audit import as_of_group, explain_command
from chatledger.cli.browse import browse_command
from chatledger.cli.context import Context, DamagedFile, Interrupted, fail, is_corruption
from chatledger.cli.names import GLOBAL_OPTION_KEY, USER_ID, complete_with
from chatledger.cli.output import escape_line, settings, without_credentials
from chatledger.cli.demo import demo_command
from chatledger.cli.devserver import devserver_command
from chatledger.cli.bundle import bundle_command
from chatledger.cli.diff import diff_command
from chatledger.cli.history import log_command
from chatledger.cli.importing import import_command
from chatledger.cli.outbox import conflicts_command, outbox_group
from chatledger.cli.personal import mutes_command, reminders_command
from chatledger.cli.reading import channels_command, show_group
from chatledger.cli.sealing import head_command, rekey_command
from chatledger.cli.sync import sync_command
from chatledger.cli.tables import rebuild_command, verify_command
from chatledger.errors import StoreError, UserIdError, WireError


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
            return self._invoke_reporting_errors(ctx)
        except BaseException as error:
            if isinstance(error, click.ClickException):
                # An error is one line, and an id or a name from the store quoted in it can
                # neither clear the screen nor break the line; no credential is shown.
                # (click types `message` as final; it is a plain attribute, read by `show`.)
                error.message = escape_line(without_credentials(error.message))  # type: ignore[misc]
            # No command leaves behind a store it created and then stored nothing in (a failed
            # first sync, an import stopped before its first batch).
            context = ctx.find_object(Context)
            if context is not None:
                context.discard_new_store()
            raise

    def _invoke_reporting_errors(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.UsageError as error:
            # click would print the usage and a hint over three more lines; scripts and people
            # get the reason alone (`--help` shows the usage).
            raise OneLineUsageError(error.format_message()) from None
        except KeyboardInterrupt:
            raise Interrupted("Interrupted.") from None
        except BrokenPipeError:
            raise  # the reader went away (`| head`): not an error of ours
        except (apsw.CorruptError, PersistenceError) as error:
            if not is_corruption(error):
                fail(str(error) or type(error).__name__)
            context = ctx.find_object(Context)
            raise DamagedFile(context.store_path() if context else "the store", str(error),
                              "run `chatledger verify` to see what is hit, or restore a backup") from None
        except (StoreError, UserIdError, WireError, PersistenceError, OSError) as error:
            fail(str(error) or type(error).__name__)


@click.group(cls=ChatledgerGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="CHATLEDGER_DATA_DIR",
    default=None,
    help="Directory of the per-user store files [env CHATLEDGER_DATA_DIR; "
    "default $XDG_DATA_HOME/chatledger].",
)
@click.option("--user", "-u", envvar="CHATLEDGER_USER", shell_complete=complete_with(USER_ID),
              help="Whose store [env CHATLEDGER_USER].")
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
@click.option("--local-time", is_flag=True, envvar="CHATLEDGER_LOCAL_TIME",
              help="Show times in the local time zone, not UTC [env CHATLEDGER_LOCAL_TIME=1]. "
                   "JSON stays in UTC.")
@click.option("--no-pager", is_flag=True,
              help="Never page long tables (they page through $PAGER on a terminal).")
@click.version_option(package_name="chatledger")
@click.pass_context
def cli(
    ctx: click.Context, data_dir: Path | None, user: str | None, synchronous: str,
    lock_timeout: float, key_file: Path | None, use_keyring: bool, debug: bool,
    local_time: bool, no_pager: bool,
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
    settings.local_time = local_time
    settings.no_pager = no_pager
    context.key_file = key_file
    context.use_keyring = use_keyring
    ctx.obj = context
    ctx.call_on_close(context.close)


def _set_data_dir(context: Context, value: Path) -> None:
    context.data_dir = value


def _set_user(context: Context, value: str) -> None:
    context.user = value


def _set_synchronous(context: Context, value: str) -> None:
    context.synchronous = value.upper()


def _set_lock_timeout(context: Context, value: float) -> None:
    context.lock_timeout = value


def _set_debug(context: Context, value: bool) -> None:
    context.debug = value


def _set_key_file(context: Context, value: Path) -> None:
    context.key_file = value


def _set_keyring(context: Context, value: bool) -> None:
    context.use_keyring = value


def _set_local_time(context: Context, value: bool) -> None:
    settings.local_time = value


def _set_no_pager(context: Context, value: bool) -> None:
    settings.no_pager = value


def _global_option(option: click.Option, apply: Callable[[Context, Any], None]) -> click.Option:
    """A copy of a global option for a subcommand, so that it may follow the subcommand's
    name (`chatledger channels --user alice`), as git and sqlite-utils users expect."""

    def store(ctx: click.Context, param: click.Parameter, value: Any) -> None:
        if value is None or value is False:
            return
        context = ctx.find_object(Context)
        if context is None:
            # The shell is completing a command line (the group has not run): completion
            # reads the store these name (see names.completion_store).
            ctx.meta[GLOBAL_OPTION_KEY + (param.name or "")] = value
            return
        apply(context, value)

    return click.Option(option.opts + option.secondary_opts, type=option.type,
                        is_flag=option.is_flag, default=None if not option.is_flag else False,
                        expose_value=False, hidden=True, callback=store,
                        shell_complete=complete_with(USER_ID) if option.name == "user" else None)


_APPLY_GLOBAL: dict[str, Callable[[Context, Any], None]] = {
    "data_dir": _set_data_dir, "user": _set_user, "synchronous": _set_synchronous,
    "lock_timeout": _set_lock_timeout, "key_file": _set_key_file, "use_keyring": _set_keyring,
    "debug": _set_debug, "local_time": _set_local_time, "no_pager": _set_no_pager}


def accept_global_options(command: click.Command) -> None:
    """Give `command` (and, for a group, every command under it) the global options, where
    it has no option of the same name of its own (`sync --debug` is its own)."""
    taken = {opt for param in command.params for opt in param.opts + param.secondary_opts}
    for param in cli.params:
        if isinstance(param, click.Option) and param.name in _APPLY_GLOBAL:
            if not taken & set(param.opts + param.secondary_opts):
                command.params.append(_global_option(param, _APPLY_GLOBAL[param.name]))
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            accept_global_options(sub)


for command in (import_command, log_command, stats_command, quarantine_command, flush_command,
                users_command,
                channels_command, show_group, rebuild_command, verify_command, as_of_group,
                explain_command, devserver_command):
    cli.add_command(command)
for command in (*ACTION_COMMANDS, outbox_group, conflicts_command):
    cli.add_command(command)
for command in (sync_command, demo_command):
    cli.add_command(command)
for command in (backup_command, export_command, archive_group):
    cli.add_command(command)
for command in (reminders_command, mutes_command):
    cli.add_command(command)
cli.add_command(browse_command)
cli.add_command(diff_command)
cli.add_command(bundle_command)
for command in (head_command, rekey_command):
    cli.add_command(command)
for command in cli.commands.values():
    accept_global_options(command)


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
