"""chatledger: offline persistence for chat clients, as an event-sourced local store.

The package root wires the folders together; applications start here::

    from chatledger import ChatStore, SyncClient, StreamBackend

    store = ChatStore.open("~/.local/share/chatledger", "alice")
    store.ingest(b'{"type": "message.new", "cid": "messaging:general", ...}')
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from chatledger import errors
# Every error, by the list chatledger.errors keeps (re-exported below through `__all__`).
from chatledger.errors import *  # noqa: F403
from chatledger.eventstore.importer import KINDS as IMPORT_KINDS
from chatledger.eventstore.importer import ImportReport
from chatledger.eventstore.importer import Kind as ImportKind
from chatledger.eventstore.ingest import MAX_RESPONSE_BYTES
from chatledger.eventstore.log import AppendResult, Damage, LogEntry
from chatledger.eventstore.seal import ChainReport
from chatledger.eventstore.userfiles import StoreFile
from chatledger.projections.aio_store import AsyncChatStore
from chatledger.projections.engine import Difference
from chatledger.projections.history import Explanation, PastStore
from chatledger.projections.ids import IdKind
from chatledger.projections.outbox import CommandEvent, CommandInfo, PendingCommand
from chatledger.projections.results import (
    ChannelMute, ChannelState, ChannelSummary, ConnectionInfo, QuarantineEntry, ResultRow,
    StoreStats, StoredDraft, StoredMember, StoredMessage, StoredPoll, StoredRead, StoredReaction,
    StoredReminder, StoredThread, StoredUser, ThreadRead, UnprojectedEntry, UnreadCounts,
    UserMute,
)
from chatledger.projections.store import ChatStore, default_data_dir

if TYPE_CHECKING:
    from chatledger.sync import archive
    from chatledger.sync.backend import Backend
    from chatledger.sync.client import SyncClient, SyncReport
    from chatledger.sync.outcomes import Outcome
    from chatledger.sync.replayer import ReplayReport
    from chatledger.sync.stream import StreamBackend

# The sync layer pulls in aiohttp, which an application that only reads its store (and every
# `chatledger` command that does not talk to a backend) should not pay for at import time.
_SYNC_NAMES = {
    "Backend": "chatledger.sync.backend",
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
    # what the read API returns (chatledger.projections.results)
    "ChannelSummary", "StoredMessage", "ChannelState", "StoredMember", "StoredRead",
    "StoredReaction", "UnreadCounts", "StoredUser", "StoredDraft", "StoredPoll", "StoredThread",
    "ThreadRead", "StoredReminder", "UserMute", "ChannelMute", "ConnectionInfo",
    "UnprojectedEntry", "QuarantineEntry", "StoreStats", "ResultRow",
    # what the other ChatStore methods return or take
    "default_data_dir", "LogEntry", "AppendResult", "Damage", "StoreFile", "ImportReport",
    "ImportKind", "IMPORT_KINDS", "MAX_RESPONSE_BYTES", "IdKind", "ChainReport", "Difference",
    "Explanation", "PastStore", "PendingCommand", "CommandInfo", "CommandEvent",
    "Backend", "StreamBackend", "SyncClient", "SyncReport", "ReplayReport", "Outcome", "archive",
]
# ... and every error, as chatledger.errors lists them (one list, not a copy to keep in step).
__all__ += errors.__all__
__version__ = "0.1.0"
