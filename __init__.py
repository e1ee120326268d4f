"""chatledger: offline persistence for chat clients, as an event-sourced local store.

The package root wires the folders together; applications start here::

    from chatledger import ChatStore, SyncClient, StreamBackend

    store = ChatStore.open("~/.local/share/chatledger", "alice")
    store.ingest(b'{"type": "message.new", "cid": "messaging:general", ...}')
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from chatledger.eventstore.backup import DestinationExists
from chatledger.eventstore.commands import CommandError, InvalidTransition, UnknownCommand
from chatledger.eventstore.log import StoreError
from chatledger.eventstore.userfiles import UserIdError
from chatledger.eventstore.wire import WireError
from chatledger.projections.actions import UnknownMessage
from chatledger.projections.aio_store import AsyncChatStore
from chatledger.projections.filters import FilterError
from chatledger.projections.store import ChatStore, RejectedInput

if TYPE_CHECKING:
    from chatledger.sync import archive
    from chatledger.sync.backend import Backend, BackendError, NoResponse
    from chatledger.sync.client import SyncClient, SyncReport
    from chatledger.sync.outcomes import Outcome
    from chatledger.sync.replayer import ReplayReport
    from chatledger.sync.stream import StreamBackend

# The sync layer pulls in aiohttp, which an application that only reads its store (and every
# `chatledger` command that does not talk to a backend) should not pay for at import time.
_SYNC_NAMES = {
    "Backend": "chatledger.sync.backend",
    "BackendError": "chatledger.sync.backend",
    "NoResponse": "chatledger.sync.backend",
    "SyncClient": "chatledger.sync.client",
    "SyncReport": "chatledger.sync.client",
    "Outcome": "chatledger.sync.outcomes",
    "ReplayReport": "chatledger.sync.replayer",
    "StreamBackend": "chatledger.sync.stream",
    # A module (`from chatledger import archive`): it pulls in psycopg, an optional dependency.
    "archive": "chatledger.sync.archive",
}


def __getattr__(name: str) -> Any:
    module = _SYNC_NAMES.get(name)
    if module is None:
        raise AttributeError(f"module 'chatledger' has no attribute {name!r}")
    imported = importlib.import_module(module)
    if module.rpartition(".")[2] == name:
        return imported
    return getattr(imported, name)


__all__ = [
    "AsyncChatStore", "ChatStore",
    "Backend", "StreamBackend", "SyncClient", "SyncReport", "ReplayReport", "Outcome",
    "StoreError", "CommandError", "UnknownCommand", "InvalidTransition", "UnknownMessage",
    "DestinationExists", "RejectedInput", "WireError", "FilterError", "UserIdError",
    "BackendError", "NoResponse",
]
__version__ = "0.1.0"
