"""Datasette over one or more store files, read-only, on the loopback interface.

`BrowseServer(paths).serve()` is what `chatledger browse` runs; `start()` / `stop()` run the
same server on a thread (tests, notebooks). Datasette is imported only here, when a server is
made: it is an optional extra (`pip install 'chatledger[browse]'`).

Read-only: Datasette opens every file with `mode=ro`, which reads a store safely while another
process appends to it (SQLite's WAL, as any reader does; a reader may create the `-wal` and
`-shm` files beside the store when they are missing, and never changes what the file holds).
"""

from __future__ import annotations

import socket
import sqlite3
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from chatledger.eventstore.log import StoreError
from chatledger.eventstore.userfiles import SUFFIX, user_db_path
from chatledger.projections.browse.sqlfunctions import is_store
from chatledger.projections.history import readonly_uri

LOOPBACK = "127.0.0.1"
DEFAULT_PORT = 8001  # Datasette's own default
# Canned queries over a large log (a conversation, the sync history) may take longer than
# Datasette's default limit of one second.
SETTINGS = {"sql_time_limit_ms": 10_000, "facet_time_limit_ms": 1_000}
STARTUP_TIMEOUT = 30.0


def store_paths(data_dir: str | Path, users: Sequence[str]) -> list[Path]:
    """The store files of `users` in `data_dir`, in order, each checked to be a store."""
    paths = []
    for user in dict.fromkeys(users):
        path = user_db_path(data_dir, user)
        if not path.exists():
            raise StoreError(f"no store for user {user!r} in {data_dir}")
        check_store(path)
        paths.append(path)
    return paths


def all_store_paths(data_dir: str | Path) -> list[Path]:
    """Every store file in `data_dir`, by file name; other files are passed over."""
    found = []
    for path in sorted(Path(data_dir).glob(f"*{SUFFIX}")):
        try:
            check_store(path)
        except StoreError:
            continue  # not a store (or not readable): nothing to show
        found.append(path)
    if not found:
        raise StoreError(f"no stores in {data_dir}")
    return found


def check_store(path: Path) -> None:
    """Raise StoreError unless `path` is a chatledger store (read without changing it)."""
    if not path.is_file():
        raise StoreError(f"{path} is not a file")
    try:
        connection = sqlite3.connect(readonly_uri(path), uri=True)
    except sqlite3.Error as error:
        raise StoreError(f"cannot open {path}: {error}") from error
    try:
        if not is_store(connection):
            raise StoreError(f"{path} is not a chatledger store")
    except sqlite3.DatabaseError as error:
        raise StoreError(f"{path} is not a chatledger store ({error})") from error
    finally:
        connection.close()


class BrowseServer:
    """Datasette over `paths`, read-only, listening on `host`:`port` (0: a free port).

    Contract: the socket is bound when the object is made, so `url` is known (and a port in
    use fails) before anything is served; `serve()` blocks until interrupted (Ctrl-C), and
    `start()` / `stop()` run the same server on a thread.
    """

    def __init__(self, paths: Sequence[Path], *, host: str = LOOPBACK,
                 port: int = DEFAULT_PORT) -> None:
        if not paths:
            raise ValueError("no store to browse")
        self.paths = [Path(path) for path in paths]
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            self._socket.bind((host, port))
            self._socket.listen(128)
        except OSError as error:
            self._socket.close()
            raise StoreError(
                f"cannot listen on {host}:{port}: {error.strerror or error}") from error
        self.host = host
        self.port = self._socket.getsockname()[1]
        self._server: Any = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The first store's page (the instance's page when there are several)."""
        from datasette.utils import tilde_encode  # how Datasette spells a name in a URL

        base = f"http://{self.host}:{self.port}/"
        return base + tilde_encode(self.database_names[0]) if len(self.paths) == 1 else base

    @property
    def database_names(self) -> list[str]:
        # Datasette names a file's database by its stem, as `datasette FILE` does.
        return [p.name[: -len(SUFFIX)] if p.name.endswith(SUFFIX) else p.stem for p in self.paths]

    def datasette(self) -> Any:
        from datasette.app import Datasette

        return Datasette(files=[str(p) for p in self.paths], settings=SETTINGS,
                         metadata={"title": "chatledger"})

    def _make_server(self) -> Any:
        import uvicorn

        config = uvicorn.Config(self.datasette().app(), log_level="warning", lifespan="on")
        self._server = uvicorn.Server(config)
        return self._server

    def serve(self) -> None:
        """Serve until interrupted: uvicorn shuts down on Ctrl-C, then raises
        KeyboardInterrupt as the signal would have."""
        self._make_server().run(sockets=[self._socket])

    def start(self) -> str:
        """Serve on a thread; returns the URL once the server answers."""
        server = self._make_server()  # off the main thread, uvicorn leaves signals alone
        self._thread = threading.Thread(target=server.run, kwargs={"sockets": [self._socket]},
                                        name="chatledger-browse", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while not server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise StoreError("the browse server did not start")
            time.sleep(0.02)
        return self.url

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        self._socket.close()

    def __enter__(self) -> BrowseServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


__all__ = ["BrowseServer", "DEFAULT_PORT", "all_store_paths", "check_store", "store_paths"]
