"""The Stream event stream: one WebSocket connection, yielding raw frames.

`open_connection` does the handshake and waits for the first frame (a `health.check` carrying
`connection_id`); `StreamConnection` is the `EventStream` the sync client iterates. It keeps the
connection alive with client health checks and notices a silent (dead) connection by a receive
deadline, because a TCP connection to a vanished peer can stay "open" for many minutes.
Reconnecting is not done here: the sync client reconnects and catches up with `/sync`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping
from typing import Any

import aiohttp
import msgspec
from yarl import URL

from chatledger.sync.backend import BackendError, ConnectionLost, TimedOut, UnusableAnswer
from chatledger.sync.http import (
    TRANSPORT_ERRORS,
    encode_json,
    error_from_answer,
    no_response,
    read_capped,
)

_CLOSED_TYPES = (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED)


class StreamConnection:
    """One open WebSocket (an `EventStream`). Iterate it for the frames as raw bytes, in
    arrival order, starting with the first `health.check`. Iteration ends with `ConnectionLost`
    when the server closes the connection or nothing arrives for `dead_after` seconds, and
    ends quietly after `close()`."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, first_frame: bytes,
                 connection_id: str, *, health_interval: float, dead_after: float,
                 close_timeout: float,
                 on_close: Callable[[StreamConnection], None] | None = None,
                 redact: Callable[[str], str] = str) -> None:
        self.connection_id: str | None = connection_id
        self.first_frame = first_frame
        self._ws = ws
        self._pending_first: bytes | None = first_frame
        self._health_interval = health_interval
        self._dead_after = dead_after
        self._close_timeout = close_timeout
        self._on_close = on_close
        # For what the server says when it closes (a close reason may repeat the token).
        self._redact = redact
        self._health_task: asyncio.Task[None] | None = None
        self._closing = False   # close() was called: the end of iteration is not a loss
        self._ended = False     # iteration is over (lost or closed); later calls stop at once

    @property
    def closed(self) -> bool:
        return self._ended or self._closing or self._ws.closed

    def __aiter__(self) -> StreamConnection:
        return self

    async def __anext__(self) -> bytes:
        if self._pending_first is not None:
            frame, self._pending_first = self._pending_first, None
            return frame
        if self._ended or self._closing:
            raise StopAsyncIteration
        # Health checks go out only while someone listens: an idle, un-iterated connection is
        # the caller's to close.
        if self._health_task is None:
            self._health_task = asyncio.create_task(self._send_health_checks())
        while True:
            try:
                # A fresh deadline per frame: "no frame for dead_after seconds" means dead.
                msg = await self._ws.receive(timeout=self._dead_after)
            except asyncio.TimeoutError:
                if self._closing:
                    await self._shutdown()
                    raise StopAsyncIteration from None
                await self._shutdown()
                raise ConnectionLost(
                    f"no frame from the server for {self._dead_after:g} s: connection presumed "
                    "dead (closed it)") from None
            if msg.type is aiohttp.WSMsgType.TEXT:
                # aiohttp has validated and decoded UTF-8; encoding gives back the same bytes.
                return msg.data.encode("utf-8")
            if msg.type is aiohttp.WSMsgType.BINARY:
                return bytes(msg.data)
            if msg.type in _CLOSED_TYPES or msg.type is aiohttp.WSMsgType.ERROR:
                if self._closing:
                    await self._shutdown()
                    raise StopAsyncIteration
                await self._shutdown()
                raise ConnectionLost(self._redact(self._loss_message(msg)))
            # PING/PONG are answered by aiohttp (autoping); anything else is not a frame to keep.

    def _loss_message(self, msg: aiohttp.WSMessage) -> str:
        if msg.type is aiohttp.WSMsgType.CLOSE:
            reason = f": {msg.extra}" if msg.extra else ""
            return f"WebSocket closed by the server (code {msg.data}{reason})"
        if msg.type is aiohttp.WSMsgType.ERROR:
            return f"WebSocket failed: {msg.data}"
        # The TCP connection ended without a close frame.
        return f"WebSocket connection dropped by the server (code {self._ws.close_code})"

    async def _send_health_checks(self) -> None:
        # Stream expects the client to say it is alive as well; the server's own health checks
        # arrive as ordinary frames and are yielded like any other.
        payload = encode_json({"type": "health.check", "client_id": self.connection_id})
        text = payload.decode("utf-8")
        while True:
            await asyncio.sleep(self._health_interval)
            try:
                await self._ws.send_str(text)
            except (ConnectionError, aiohttp.ClientError, RuntimeError):
                return  # the socket is gone; the receiving side reports it

    async def _shutdown(self) -> None:
        self._ended = True
        if self._health_task is not None:
            self._health_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._health_task
            self._health_task = None
        # Bounded: a dead peer never answers the close handshake.
        with contextlib.suppress(asyncio.TimeoutError, *TRANSPORT_ERRORS):
            await asyncio.wait_for(self._ws.close(), self._close_timeout)
        if self._on_close is not None:
            on_close, self._on_close = self._on_close, None
            on_close(self)

    async def close(self) -> None:
        """Close the connection cleanly (a normal close frame). An iteration in progress ends
        without an error. Closing twice is harmless."""
        self._closing = True
        self._pending_first = None
        await self._shutdown()


def websocket_url(base_url: str) -> str:
    """The WebSocket origin for a REST base URL: http -> ws, https -> wss."""
    if base_url.startswith("https://"):
        return "wss://" + base_url[len("https://"):]
    if base_url.startswith("http://"):
        return "ws://" + base_url[len("http://"):]
    return base_url


async def open_connection(session: aiohttp.ClientSession, url: URL, headers: Mapping[str, str],
                          *, timeout: float, close_timeout: float, health_interval: float,
                          dead_after: float,
                          on_close: Callable[[StreamConnection], None] | None = None,
                          redact: Callable[[str], str] = str) -> StreamConnection:
    """Handshake, then wait (at most `timeout` seconds) for the first frame, which must be a
    `health.check` with a `connection_id`."""
    # aiohttp < 3.10 has no ClientWSTimeout and takes the close timeout as a float.
    ws_timeout: Any = (aiohttp.ClientWSTimeout(ws_receive=None, ws_close=close_timeout)
                       if hasattr(aiohttp, "ClientWSTimeout") else close_timeout)
    try:
        ws = await asyncio.wait_for(
            session.ws_connect(url, headers=headers, autoclose=True, autoping=True,
                               heartbeat=None, timeout=ws_timeout),
            timeout)
    except aiohttp.WSServerHandshakeError as exc:
        raise await _handshake_error(session, url, headers, exc, timeout) from None
    except TRANSPORT_ERRORS as exc:
        # Not chained: aiohttp's exception holds the URL, and this one carries the token.
        raise no_response("GET /connect", exc, timeout) from None

    try:
        first, connection_id = await _first_frame(ws, timeout)
    except BaseException:
        with contextlib.suppress(asyncio.TimeoutError, *TRANSPORT_ERRORS):
            await asyncio.wait_for(ws.close(), close_timeout)
        raise
    return StreamConnection(ws, first, connection_id, health_interval=health_interval,
                            dead_after=dead_after, close_timeout=close_timeout,
                            on_close=on_close, redact=redact)


async def _first_frame(ws: aiohttp.ClientWebSocketResponse, timeout: float) -> tuple[bytes, str]:
    try:
        msg = await ws.receive(timeout=timeout)
    except asyncio.TimeoutError:
        raise TimedOut(f"no first frame on the WebSocket within {timeout:g} s") from None
    if msg.type is aiohttp.WSMsgType.TEXT:
        raw = msg.data.encode("utf-8")
    elif msg.type is aiohttp.WSMsgType.BINARY:
        raw = bytes(msg.data)
    else:
        code = msg.data if msg.type is aiohttp.WSMsgType.CLOSE else ws.close_code
        raise ConnectionLost(f"WebSocket closed before its first frame (code {code})")
    try:
        frame: Any = msgspec.json.decode(raw)
    except (msgspec.DecodeError, msgspec.ValidationError, UnicodeError, RecursionError):
        # Not JSON, a number out of range, or nested past the decoder's stack.
        frame = None
    if not isinstance(frame, dict):
        raise BackendError("the WebSocket's first frame is not a JSON object", body=raw)
    if frame.get("type") == "health.check":
        connection_id = frame.get("connection_id")
        if isinstance(connection_id, str) and connection_id:
            return raw, connection_id
        raise BackendError("the first health.check carries no connection_id", body=raw)
    if isinstance(frame.get("error"), dict) or "code" in frame or "StatusCode" in frame:
        # Stream refuses a connection (bad token, suspended app) with an error frame.
        raise error_from_answer(None, None, {}, raw)
    raise BackendError(f"unexpected first frame on the WebSocket: {frame.get('type')!r}",
                       body=raw)


async def _handshake_error(session: aiohttp.ClientSession, url: URL, headers: Mapping[str, str],
                           exc: aiohttp.WSServerHandshakeError, timeout: float) -> BackendError:
    """The handshake was answered, but not with an upgrade. aiohttp drops the body of that
    answer, and the Stream error code is only in the body (401 code 40 = token expired, 403
    code 99 = app suspended, ...), so ask once more as a plain GET and read the body if it
    answers with the same status. A status below 400 (a captive portal's 200 page, a redirect)
    is an answer that cannot be used, not a refusal."""
    status = exc.status
    if status is None:
        return no_response("GET /connect", exc)
    body = b""
    with contextlib.suppress(asyncio.TimeoutError, *TRANSPORT_ERRORS):
        async with session.get(url, headers=headers, allow_redirects=False,
                               timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
            if resp.status == status:
                body, _ = await read_capped(resp)
    if status < 400:
        return UnusableAnswer(
            f"the WebSocket handshake was answered with HTTP {status}, not an upgrade "
            "(a proxy or a captive portal?)", status=status, body=body)
    return error_from_answer(status, "(WebSocket handshake refused)", exc.headers or {}, body)
