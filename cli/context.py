"""What every command shares: the store the global options name, and how to fail."""

from __future__ import annotations

import difflib
import os
from pathlib import Path
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

import apsw
import click

from chatledger import ChatStore
from chatledger.eventstore import seal
from chatledger.errors import KeyRequired

T = TypeVar("T")


class Context:
    """What the global options said, and the store they name (opened on first use)."""

    def __init__(
        self, data_dir: Path, user: str | None, synchronous: str, lock_timeout: float = 5.0
    ) -> None:
        self.data_dir = data_dir
        self.user = user
        self.synchronous = synchronous
        self.lock_timeout = lock_timeout
        # --key-file / --keyring: where a sealed store's key comes from (cli/sealing.py).
        self.key_file: Path | None = None
        self.use_keyring = False
        self.debug = False  # --debug: more detail on stderr, never credentials
        self._store: ChatStore | None = None
        self._created = False  # whether this command created the store's file

    def require_user(self) -> str:
        if not self.user:
            raise click.UsageError(
                "no user given: pass --user ID (or set CHATLEDGER_USER) to choose whose store to use"
            )
        return self.user

    def store(self, *, create: bool = True) -> ChatStore:
        if self._store is None:
            from chatledger.cli.progress import replay_progress

            # Opening rebuilds the read tables when another version built them: show it.
            path = self.store_path()
            if not create:
                self._check_store_is_there()
            self._created = path is not None and not os.path.lexists(path)
            with replay_progress("rebuilding read tables") as on_progress:
                self._store = open_sealed(self, lambda key: ChatStore.open(
                    self.data_dir, self.require_user(), synchronous=self.synchronous,  # type: ignore[arg-type]
                    create=create, lock_timeout=self.lock_timeout,
                    on_rebuild_progress=on_progress, key=key,
                ))
        return self._store

    def store_path(self) -> Path | None:
        """The file of the user's store, when a user is given."""
        return ChatStore.store_file(self.data_dir, self.user) if self.user else None

    def store_exists(self) -> bool:
        """Whether the user's store file is there (before `store()` may create it)."""
        return ChatStore.store_file(self.data_dir, self.require_user()).exists()

    def _check_store_is_there(self) -> None:
        """A missing store, said with what is there instead: a data directory that does not
        exist, or the users it has stores for (the closest first)."""
        path = self.store_path()
        # A link, even dangling, is there: opening it says why it is refused.
        if path is not None and not os.path.lexists(path):
            fail(missing_store_message(self.data_dir, self.require_user()))

    def discard_new_store(self) -> None:
        """Delete the store this command created, if the log is still empty (a failed first
        import or sync, Ctrl-C before anything was stored); a store that existed before, or
        that another process has written to meanwhile, is kept."""
        if self._created and self._store is not None and self._store.is_empty():
            self._store.flush()
            self._store = None
            self._created = False

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None


def missing_store_message(data_dir: Path, user: str) -> str:
    """Why there is no store to open, and what there is instead."""
    if not data_dir.is_dir():
        return (f"no store for user {user!r}: the data directory {data_dir} does not exist "
                "(give --data-dir or set CHATLEDGER_DATA_DIR)")
    users = [store.user_id for store in ChatStore.list_users(data_dir) if store.user_id]
    if not users:
        return f"no store for user {user!r} in {data_dir}: it holds no stores yet"
    close = difflib.get_close_matches(user, users, n=3, cutoff=0.5)
    close += [other for other in users if other.lower() == user.lower() and other not in close]
    hint = f"; did you mean {' or '.join(repr(name) for name in close)}?" if close else ""
    listed = ", ".join(users[:10]) + (", ..." if len(users) > 10 else "")
    return (f"no store for user {user!r} in {data_dir} (stores there: {listed}; "
            f"`chatledger users` lists them){hint}")


pass_context = click.make_pass_decorator(Context)


def fail(message: str) -> NoReturn:
    raise click.ClickException(message)


class Interrupted(click.ClickException):
    """Ctrl-C: exit status 130, as a shell reports a process stopped by SIGINT (click's own
    handling says "Aborted!" with status 1). The message is printed as it is."""

    exit_code = 130

    def show(self, file: Any = None) -> None:
        click.echo(self.message, err=True)


DAMAGED_EXIT_STATUS = 3


def is_corruption(error: BaseException) -> bool:
    """Whether SQLite reported the file as damaged (the library's errors wrap APSW's)."""
    cause: BaseException | None = error
    while cause is not None:  # StoreError from PersistenceError from apsw.CorruptError
        if isinstance(cause, apsw.CorruptError):
            return True
        cause = cause.__cause__
    return False


class DamagedFile(click.ClickException):
    """The store's file is damaged (SQLite reports corruption): exit status 3, so that a check
    at start (`chatledger verify`) tells it from tables that merely differ (1)."""

    exit_code = DAMAGED_EXIT_STATUS

    def __init__(self, path: object, detail: str, advice: str) -> None:
        super().__init__(f"the file is damaged ({detail}): {path}; {advice}")


# -- the key of a sealed store (--key-file, --keyring) ---------------------------------------


def given_key(ctx: Context, *, creating: bool) -> bytes | None:
    """The key the global options name (None: none given). With `--keyring` and no key kept
    for the user yet, a new store gets a fresh key, kept in the keyring before it is used."""
    if ctx.key_file is not None:
        return key_action(lambda: seal.read_key_file(ctx.key_file))  # type: ignore[arg-type]
    if not ctx.use_keyring:
        return None
    user = ctx.require_user()
    key = key_action(lambda: seal.keyring_key(user))
    if key is None and creating:
        key = seal.new_key()
        key_action(lambda: seal.store_keyring_key(user, key))
    return key


def open_sealed(ctx: Context, opener: Callable[[bytes | None], T]) -> T:
    """`opener(key)` with the key of the global options. With `--keyring`, a key that no longer
    fits is followed by the one a killed `rekey` left waiting (`<user>.next`), which then
    becomes the user's key."""
    key = given_key(ctx, creating=not ctx.store_exists())
    try:
        return opener(key)
    except KeyRequired:
        if not ctx.use_keyring:
            raise
        user = ctx.require_user()
        waiting = key_action(lambda: seal.keyring_key(user, pending=True))
        if waiting is None or waiting == key:
            raise
        opened = opener(waiting)
        key_action(lambda: seal.store_keyring_key(user, waiting))
        key_action(lambda: seal.store_keyring_key(user, None, pending=True))
        return opened


def key_action(action: Callable[[], T]) -> T:
    """`action()`, with a key store's failure (an unreadable key file, no keyring) as a one-line
    error."""
    try:
        return action()
    except seal.StoreKeyError as error:
        fail(str(error))
