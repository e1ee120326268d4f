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

from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, Protocol, runtime_checkable


class BackendError(Exception):
    """The backend answered with an error (or, for `NoResponse`, did not answer).

    `status` is the HTTP status, `code` Stream's error code from the body, `retry_at` the unix
    time before which a retry is pointless (from `Retry-After` or `X-RateLimit-Reset`), and
    `body` the error body as it arrived.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: int | None = None,
        retry_at: float | None = None,
        body: bytes | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.retry_at = retry_at
        self.body = body

    def as_dict(self) -> dict[str, Any]:
        """What the log records of the error."""
        return {"status": self.status, "code": self.code, "message": self.message,
                "retry_at": self.retry_at}

    def redacted(self, redact: Callable[[str], str]) -> BackendError:
        """This error with `redact` applied to its message (credentials out of what is shown,
        logged or recorded). Changes the error in place and returns it."""
        self.message = redact(self.message)
        self.args = (self.message,)
        return self

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.message!r}, status={self.status!r}, "
                f"code={self.code!r})")


class NoResponse(BackendError):
    """No answer: connection refused or reset, timeout, DNS failure. The request may or may not
    have been applied; the client-chosen id makes sending it again safe."""


class TimedOut(NoResponse):
    """An answer did not arrive complete in time: the backend (or the way to it) is too slow,
    e.g. a server sending its body a byte a second. Transient, like any `NoResponse`."""


class UnusableAnswer(BackendError):
    """A 2xx answer that cannot be used: not JSON, an HTML page, an error object in the body,
    the wrong shape for the call, or over the size cap. The request may or may not have been
    applied; nothing is to be concluded from the answer, so it is a failed attempt (retried
    like a transient error), never a success. `status` is the 2xx status that came with it;
    `body` holds the answer (its head only, when it was over the cap); `quarantine_id` says
    where the store keeps it, once it does."""

    quarantine_id: int | None = None

    def quarantined_as(self, quarantine_id: int) -> UnusableAnswer:
        """Note where the store keeps the answer (and say so in the message)."""
        self.quarantine_id = quarantine_id
        self.message = f"{self.message} (quarantined as #{quarantine_id})"
        self.args = (self.message,)
        return self


class ConnectionLost(NoResponse):
    """The event stream ended: closed by the server, or silent past the health-check deadline."""


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
    of WIRE.md's endpoint table, as dicts."""

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
