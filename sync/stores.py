"""The sync layer works with either kind of store, through one helper.

A `ChatStore` answers on the caller's thread (a short transaction on the event loop); an
`AsyncChatStore` (background mode) answers with awaitables served by its writer thread and read
pool, so the event loop never waits for SQLite. `await done(store.method(...))` works with both.
"""

from __future__ import annotations

import inspect
from typing import Any, TypeVar, Union

from chatledger.projections.aio_store import AsyncChatStore
from chatledger.projections.store import ChatStore

T = TypeVar("T")
AnyStore = Union[ChatStore, AsyncChatStore]


async def done(value: Any) -> Any:
    """The value itself, or what it resolves to when it is awaitable."""
    if inspect.isawaitable(value):
        return await value
    return value
