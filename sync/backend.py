"""The backend interface: what the store needs from a chat backend, and how calls fail.

Everything a backend returns is the raw JSON body, as `bytes`: the store appends it verbatim, so
nothing is decoded here that the log would have to encode again. The Stream adapter
(`chatledger.sync.stream`) implements this protocol over HTTP and WebSocket; tests implement it
with scripted answers.

Failures are `BackendError`s carrying what the backend said (HTTP status, Stream error code,
message, when a rate limit resets); `NoResponse` is the failure that carries nothing, because no
answer arrived. `chatledger.sync.outcomes` turns either into what a replay should do.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any, Protocol, runtime_checkable

# The errors a backend raises are defined with the others (chatledger.errors); this module is
# where a backend's author finds them.
from chatledger.errors import BackendError, ConnectionLost, NoResponse, TimedOut, UnusableAnswer

__all__ = ["Backend", "EventStream", "BackendError", "NoResponse", "TimedOut", "ConnectionLost",
           "UnusableAnswer"]


@runtime_checkable
class EventStream(Protocol):
    """One WebSocket connection: iterate it for the raw frames, in arrival order.

    Iteration ends with `ConnectionLost` when the connection dies; reconnecting is the caller's
    job (it must catch up with `/sync` after a gap). The first frame is the `health.check` that
    carries `connection_id`.
    """

    connection_id: str | None

    def __aiter__(self) -> AsyncIterator[bytes]: ...

    async def close(self) -> None: ...


@runtime_checkable
class Backend(Protocol):
    """The calls a chat client makes. Each returns the raw response body or raises
    `BackendError`. `cid` is `"<type>:<id>"`; message and reaction bodies are the JSON objects
    the endpoints take (docs/backend.md, "What goes on the wire"), as dicts."""

    # -- local actions -------------------------------------------------------------------------

    async def send_message(self, cid: str, message: dict[str, Any], *,
                           skip_push: bool = False) -> bytes: ...

    async def update_message(self, message: dict[str, Any]) -> bytes: ...

    async def partial_update_message(self, message_id: str, *, set: dict[str, Any],
                                     unset: Sequence[str]) -> bytes: ...

    async def delete_message(self, message_id: str, *, hard: bool = False,
                             for_me: bool = False) -> bytes: ...

    async def send_reaction(self, message_id: str, reaction: dict[str, Any], *,
                            enforce_unique: bool = False) -> bytes: ...

    async def delete_reaction(self, message_id: str, reaction_type: str) -> bytes: ...

    async def mark_read(self, cid: str, *, message_id: str | None = None,
                        thread_id: str | None = None) -> bytes: ...

    async def mark_unread(self, cid: str, *, message_id: str) -> bytes: ...

    async def save_draft(self, cid: str, message: dict[str, Any]) -> bytes: ...

    async def delete_draft(self, cid: str, *, parent_id: str | None = None) -> bytes: ...

    # -- reading -------------------------------------------------------------------------------

    async def query_channels(
        self, filter: dict[str, Any], sort: Sequence[dict[str, Any]] = (), *,
        limit: int = 30, offset: int = 0, message_limit: int = 25, watch: bool = True,
        presence: bool = False,
    ) -> bytes: ...

    async def query_channel(self, cid: str, *, messages_limit: int = 25,
                            id_lt: str | None = None, watch: bool = True) -> bytes: ...

    async def sync(self, channel_cids: Sequence[str], last_sync_at: str) -> bytes: ...

    # -- the event stream and credentials ------------------------------------------------------

    async def connect(self) -> EventStream: ...

    def set_token(self, token: str) -> None: ...

    async def close(self) -> None: ...
