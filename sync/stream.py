"""The Stream Chat adapter: `chatledger.sync.backend.Backend` over aiohttp.

Built from the endpoints of docs/wire.md and docs/backend.md (not from Stream's SDKs). Every call returns the response
body exactly as it arrived, so the store can append it without re-encoding; failures are
`BackendError` (the service answered with an error) or `NoResponse` (it did not answer), which
`chatledger.sync.outcomes.classify` turns into what a replay should do.

    async with StreamBackend(base_url, api_key, token, user_id) as backend:
        body = await backend.send_message("messaging:general", {"id": "m-1", "text": "hi"})
        stream = await backend.connect()
        async for frame in stream:
            ...
"""

from __future__ import annotations

import base64
import os
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any

import aiohttp
import msgspec

from chatledger.sync.answers import MAX_ANSWER_BYTES
from chatledger.sync.backend import BackendError
from chatledger.sync.http import build_url, encode_json, redact, request, split_cid
from chatledger.sync.websocket import StreamConnection, open_connection, websocket_url

DEFAULT_BASE_URL = "https://chat.stream-io-api.com"
MAX_SYNC_CHANNELS = 255  # the backend takes at most 255 channels per /sync call

ENV_BASE_URL = "CHATLEDGER_BASE_URL"
ENV_API_KEY = "CHATLEDGER_API_KEY"
ENV_TOKEN = "CHATLEDGER_TOKEN"
ENV_USER_ID = "CHATLEDGER_USER_ID"


def _bool(value: bool) -> str:
    return "true" if value else "false"


def user_id_from_token(token: str) -> str | None:
    """The `user_id` claim of a Stream user token (a JWT), read without verifying it: the
    server verifies; the client only wants to know whose token it holds."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    payload = parts[1] + "=" * (-len(parts[1]) % 4)
    try:
        claims = msgspec.json.decode(base64.urlsafe_b64decode(payload))
    except (ValueError, msgspec.DecodeError):
        return None
    user_id = claims.get("user_id") if isinstance(claims, dict) else None
    return user_id if isinstance(user_id, str) and user_id else None


class StreamBackend:
    """Stream Chat over HTTP and WebSocket, for one user.

    `timeout` bounds each REST call (and the WebSocket handshake plus its first frame) from
    start to end of the body (a server sending its body a byte a second fails with `TimedOut`);
    `connect_timeout` bounds opening the TCP connection. An answer larger than
    `max_answer_bytes` (default 64 MiB, `chatledger.sync.answers.MAX_ANSWER_BYTES`) is not read
    past the cap: `UnusableAnswer` for a 2xx. No error this backend raises holds the token, the
    API key or a URL with them (`chatledger.sync.http.redact`). The WebSocket
    sends a client health check every `health_interval` seconds and is declared dead when no
    frame arrives for `dead_after` seconds (default `2 * health_interval + 5`: two missed server
    health checks plus slack). A `session` passed in is used as is and left open by `close()`.
    """

    def __init__(self, base_url: str, api_key: str, token: str, user_id: str, *,
                 user_details: dict[str, Any] | None = None, timeout: float = 10.0,
                 connect_timeout: float = 5.0, session: aiohttp.ClientSession | None = None,
                 health_interval: float = 25.0, dead_after: float | None = None,
                 max_answer_bytes: int = MAX_ANSWER_BYTES) -> None:
        if not base_url:
            raise ValueError("base_url is required")
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.user_id = user_id
        self.user_details = user_details
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.health_interval = health_interval
        self.dead_after = dead_after if dead_after is not None else 2 * health_interval + 5
        self.max_answer_bytes = max_answer_bytes
        self._token = token
        # Every token this backend was given: an old one must not show up in a message either.
        self._secrets: list[str] = [s for s in (token, api_key) if s]
        self._session = session
        self._owns_session = session is None
        self._closed = False
        # Open streams from connect(), oldest first; closed with the backend. A stream leaves
        # the list when it closes or is lost.
        self._streams: list[StreamConnection] = []
        self._client_timeout = aiohttp.ClientTimeout(total=timeout, sock_connect=connect_timeout)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **kwargs: Any) -> StreamBackend:
        """A backend configured from `CHATLEDGER_BASE_URL` (default Stream's API),
        `CHATLEDGER_API_KEY`, `CHATLEDGER_TOKEN` and `CHATLEDGER_USER_ID` (default: the token's
        `user_id` claim). Keyword arguments override the environment and pass the options."""
        env = os.environ if environ is None else environ
        base_url = kwargs.pop("base_url", None) or env.get(ENV_BASE_URL) or DEFAULT_BASE_URL
        api_key = kwargs.pop("api_key", None) or env.get(ENV_API_KEY)
        token = kwargs.pop("token", None) or env.get(ENV_TOKEN)
        missing = [name for name, value in ((ENV_API_KEY, api_key), (ENV_TOKEN, token))
                   if not value]
        if missing:
            raise ValueError(f"not set: {', '.join(missing)}")
        assert api_key is not None and token is not None
        user_id = (kwargs.pop("user_id", None) or env.get(ENV_USER_ID)
                   or user_id_from_token(token))
        if not user_id:
            raise ValueError(f"{ENV_USER_ID} is not set and the token names no user_id")
        return cls(base_url, api_key, token, user_id, **kwargs)

    # -- lifecycle -----------------------------------------------------------------------------

    async def __aenter__(self) -> StreamBackend:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.close()

    async def close(self) -> None:
        """Close open event streams and the HTTP session if this backend created it."""
        self._closed = True
        for stream in list(self._streams):
            await stream.close()
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None

    def set_token(self, token: str) -> None:
        """Use `token` for every later call (an open WebSocket keeps the one it connected with)."""
        self._token = token
        if token and token not in self._secrets:
            self._secrets.append(token)

    def redact(self, text: str) -> str:
        """`text` without this backend's credentials (tokens, API key, URLs holding them)."""
        return redact(text, self._secrets)

    def _scrub(self, body: bytes) -> bytes:
        """`body` without this backend's credentials: an answer is stored (or quarantined),
        and some servers and portals echo the request, query string and token included."""
        for secret in self._secrets:
            encoded = secret.encode("utf-8", "surrogatepass")
            if encoded in body:
                body = body.replace(encoded, b"[redacted]")
        return body

    @property
    def connection_id(self) -> str | None:
        """The connection id of an open event stream, if any (sent with watching queries)."""
        for stream in reversed(self._streams):
            if not stream.closed:
                return stream.connection_id
        return None

    def _forget(self, stream: StreamConnection) -> None:
        if stream in self._streams:
            self._streams.remove(stream)

    def _get_session(self) -> aiohttp.ClientSession:
        if self._closed:
            raise RuntimeError("StreamBackend is closed")
        if self._session is None:
            # Created lazily, inside the running loop, and reused by every call: one
            # connection pool for REST and WebSocket makes connect() again cheap.
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=self.connect_timeout))
        return self._session

    def _headers(self, body: bool) -> dict[str, str]:
        headers = {"Authorization": self._token, "stream-auth-type": "jwt"}
        if body:
            headers["Content-Type"] = "application/json"
        return headers

    async def _call(self, method: str, segments: tuple[str, ...], body: Any = None,
                    query: Mapping[str, str] | None = None) -> bytes:
        params = {"api_key": self.api_key, **(query or {})}
        url = build_url(self.base_url, segments, params)
        data = encode_json(body) if body is not None else None
        try:
            raw = await request(self._get_session(), method, url,
                                headers=self._headers(data is not None), body=data,
                                timeout=self._client_timeout, max_bytes=self.max_answer_bytes)
        except BackendError as error:
            if error.body:
                error.body = self._scrub(error.body)
            raise error.redacted(self.redact) from None
        return self._scrub(raw)

    def _watch_query(self, watch: bool, presence: bool = False) -> dict[str, str]:
        # Stream ties watching (and presence) to a WebSocket connection, named in the query.
        connection_id = self.connection_id if (watch or presence) else None
        return {"connection_id": connection_id} if connection_id else {}

    # -- local actions -------------------------------------------------------------------------

    async def send_message(self, cid: str, message: dict[str, Any], *,
                           skip_push: bool = False) -> bytes:
        channel_type, channel_id = split_cid(cid)
        return await self._call("POST", ("channels", channel_type, channel_id, "message"),
                                {"message": message, "skip_push": skip_push})

    async def update_message(self, message: dict[str, Any]) -> bytes:
        message_id = message.get("id")
        if not isinstance(message_id, str) or not message_id:
            raise ValueError("update_message needs the message's 'id'")
        return await self._call("POST", ("messages", message_id), {"message": message})

    async def partial_update_message(self, message_id: str, *, set: dict[str, Any],
                                     unset: Sequence[str]) -> bytes:
        return await self._call("PUT", ("messages", message_id),
                                {"set": set, "unset": list(unset)})

    async def delete_message(self, message_id: str, *, hard: bool = False,
                             for_me: bool = False) -> bytes:
        return await self._call("DELETE", ("messages", message_id),
                                query={"hard": _bool(hard), "delete_for_me": _bool(for_me)})

    async def send_reaction(self, message_id: str, reaction: dict[str, Any], *,
                            enforce_unique: bool = False) -> bytes:
        return await self._call("POST", ("messages", message_id, "reaction"),
                                {"reaction": reaction, "enforce_unique": enforce_unique})

    async def delete_reaction(self, message_id: str, reaction_type: str) -> bytes:
        return await self._call("DELETE", ("messages", message_id, "reaction", reaction_type))

    async def mark_read(self, cid: str, *, message_id: str | None = None,
                        thread_id: str | None = None) -> bytes:
        channel_type, channel_id = split_cid(cid)
        # Absent rather than null: "no message id" means "everything up to now".
        body = {k: v for k, v in (("message_id", message_id), ("thread_id", thread_id))
                if v is not None}
        return await self._call("POST", ("channels", channel_type, channel_id, "read"), body)

    async def mark_unread(self, cid: str, *, message_id: str) -> bytes:
        channel_type, channel_id = split_cid(cid)
        return await self._call("POST", ("channels", channel_type, channel_id, "unread"),
                                {"message_id": message_id})

    async def save_draft(self, cid: str, message: dict[str, Any]) -> bytes:
        channel_type, channel_id = split_cid(cid)
        return await self._call("POST", ("channels", channel_type, channel_id, "draft"),
                                {"message": message})

    async def delete_draft(self, cid: str, *, parent_id: str | None = None) -> bytes:
        channel_type, channel_id = split_cid(cid)
        query = {"parent_id": parent_id} if parent_id is not None else None
        return await self._call("DELETE", ("channels", channel_type, channel_id, "draft"),
                                query=query)

    # -- reading -------------------------------------------------------------------------------

    async def query_channels(
        self, filter: dict[str, Any], sort: Sequence[dict[str, Any]] = (), *,
        limit: int = 30, offset: int = 0, message_limit: int = 25, watch: bool = True,
        presence: bool = False,
    ) -> bytes:
        body = {"filter_conditions": filter, "sort": list(sort), "limit": limit,
                "offset": offset, "message_limit": message_limit, "state": True,
                "watch": watch, "presence": presence}
        return await self._call("POST", ("channels",), body,
                                query=self._watch_query(watch, presence))

    async def query_channel(self, cid: str, *, messages_limit: int = 25,
                            id_lt: str | None = None, watch: bool = True) -> bytes:
        channel_type, channel_id = split_cid(cid)
        messages: dict[str, Any] = {"limit": messages_limit}
        if id_lt is not None:
            messages["id_lt"] = id_lt
        body = {"state": True, "messages": messages, "watch": watch}
        return await self._call("POST", ("channels", channel_type, channel_id, "query"), body,
                                query=self._watch_query(watch))

    async def sync(self, channel_cids: Sequence[str], last_sync_at: str) -> bytes:
        cids = list(channel_cids)
        if len(cids) > MAX_SYNC_CHANNELS:
            # Refused here: the service would answer 400, which the sync client reads as
            # "too old" and answers by re-querying every channel.
            raise ValueError(f"at most {MAX_SYNC_CHANNELS} channels per sync call, "
                             f"got {len(cids)}")
        return await self._call("POST", ("sync",),
                                {"channel_cids": cids, "last_sync_at": last_sync_at})

    # -- the event stream ----------------------------------------------------------------------

    async def connect(self) -> StreamConnection:
        """Open the WebSocket and wait for its first frame (a `health.check` with the
        connection id). Raises `BackendError` when the service refuses (bad token: status 401),
        `NoResponse` when it cannot be reached. Each call opens a new connection on the shared
        session; the caller closes the old one."""
        details = self.user_details if self.user_details is not None else {"id": self.user_id}
        payload = encode_json({"user_id": self.user_id, "user_details": details,
                               "server_determines_connection_id": True}).decode("utf-8")
        # Browsers cannot set headers on a WebSocket, so Stream also reads the token from the
        # query; send both.
        url = build_url(websocket_url(self.base_url), ("connect",),
                        {"api_key": self.api_key, "json": payload,
                         "authorization": self._token, "stream-auth-type": "jwt"})
        try:
            stream = await open_connection(
                self._get_session(), url, self._headers(False), timeout=self.timeout,
                close_timeout=min(self.connect_timeout, 2.0),
                health_interval=self.health_interval, dead_after=self.dead_after,
                on_close=self._forget, redact=self.redact)
        except BackendError as error:
            if error.body:
                error.body = self._scrub(error.body)
            raise error.redacted(self.redact) from None
        self._streams.append(stream)
        return stream
