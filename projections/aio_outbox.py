"""`AsyncOutbox`: the outbox of an `AsyncChatStore`, with `Outbox`'s method names, awaitable.

Writes (`start`, `settle`, `record`, `retry`, `cancel`) run on the store's writer thread, in
queue order with its appends; reads run in its read pool. The event loop never waits for SQLite.
"""

from __future__ import annotations

import asyncio
import builtins
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

from chatledger.eventstore.commands import Settlement
from chatledger.projections.outbox import CommandInfo, Outbox, PendingCommand

T = TypeVar("T")


class AsyncOutbox:
    """Awaitable `Outbox` calls, routed the way `AsyncChatStore` routes the store's."""

    def __init__(
        self, outbox: Outbox,
        write: Callable[..., asyncio.Future[Any]], read: Callable[..., asyncio.Future[Any]],
    ) -> None:
        self._outbox = outbox
        self._write = write
        self._read = read

    # -- reads -----------------------------------------------------------------------------------

    def pending(self, *, cid: str | None = None) -> asyncio.Future[list[PendingCommand]]:
        return self._read(self._outbox.pending, cid=cid)

    def retry_stream_ids(self) -> asyncio.Future[list[str]]:
        return self._read(self._outbox.retry_stream_ids)

    # (Below, `list` is this method: the builtin is `builtins.list`.)
    def list(
        self, status: str | Iterable[str] | None = None,
    ) -> asyncio.Future[builtins.list[CommandInfo]]:
        return self._read(self._outbox.list, status)

    def conflicts(self) -> asyncio.Future[builtins.list[CommandInfo]]:
        return self._read(self._outbox.conflicts)

    def get(self, command_id: str) -> asyncio.Future[CommandInfo]:
        return self._read(self._outbox.get, command_id)

    def sending(self, command_id: str) -> None:
        """`Outbox.sending`, at once (a note in memory, not a write)."""
        self._outbox.sending(command_id)

    # -- writes ----------------------------------------------------------------------------------

    def start(self, command_ids: Sequence[str]) -> asyncio.Future[None]:
        return self._write(self._outbox.start, list(command_ids))

    def settle(self, results: Sequence[Settlement]) -> asyncio.Future[None]:
        return self._write(self._outbox.settle, list(results))

    def record(self, records: Sequence[str | Settlement]) -> asyncio.Future[None]:
        return self._write(self._outbox.record, list(records))

    def retry(self, command_id: str) -> asyncio.Future[None]:
        return self._write(self._outbox.retry, command_id)

    def cancel(self, command_id: str, *, reason: str = "cancelled by the user") -> asyncio.Future[None]:
        return self._write(self._outbox.cancel, command_id, reason=reason)
