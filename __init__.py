"""chatledger: offline persistence for chat clients, as an event-sourced local store.

The package root wires the folders together; applications start here::

    from chatledger import ChatStore

    store = ChatStore.open("~/.local/share/chatledger", "alice")
    store.ingest(b'{"type": "message.new", "cid": "messaging:general", ...}')
"""

from chatledger.projections.aio_store import AsyncChatStore
from chatledger.projections.store import ChatStore

__all__ = ["AsyncChatStore", "ChatStore"]
__version__ = "0.1.0"
