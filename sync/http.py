"""HTTP plumbing of the Stream adapter: URLs, one request, and how a failed answer becomes a
`BackendError`.

Kept apart from `chatledger.sync.stream` so the WebSocket side (`chatledger.sync.websocket`) can
use the same URL quoting and error mapping for its handshake.
"""

from __future__ import annotations

import asyncio
import math
import re
import time
from collections.abc import Iterable, Mapping
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import quote, urlencode

import aiohttp
import msgspec
from yarl import URL

from chatledger.sync.answers import KEPT_HEAD_BYTES, MAX_ANSWER_BYTES, describe_body
from chatledger.sync.backend import BackendError, NoResponse, TimedOut, UnusableAnswer

# aiohttp's ways of saying "no (complete) answer arrived". `ClientResponseError` covers a reply
# that is not HTTP at all (a broken proxy, a garbled status line): no status we could act on.
# `InvalidURL` is not listed: it is a programming error, not a network one.
TRANSPORT_ERRORS: tuple[type[BaseException], ...] = (
    aiohttp.ClientConnectionError,   # refused, reset, server disconnected, socket timeouts
    aiohttp.ClientPayloadError,      # body cut short
    aiohttp.ClientResponseError,
    asyncio.TimeoutError,            # total timeout (TimeoutError on 3.11+)
    OSError,
)

_json_encoder = msgspec.json.Encoder()


def encode_json(obj: Any) -> bytes:
    return _json_encoder.encode(obj)


def quote_segment(value: str) -> str:
    """One path segment, with everything but unreserved characters escaped: ids may contain
    '/', '?', '#', '!', '@' or spaces, and none of them may change the path's shape."""
    return quote(str(value), safe="")


def split_cid(cid: str) -> tuple[str, str]:
    """`"type:id"` -> `("type", "id")`, split on the first ':' (ids may contain ':')."""
    channel_type, sep, channel_id = cid.partition(":")
    if not sep or not channel_type or not channel_id:
        raise ValueError(f"not a channel cid (\"<type>:<id>\"): {cid!r}")
    return channel_type, channel_id


def build_url(base_url: str, segments: tuple[str, ...], query: Mapping[str, str]) -> URL:
    """`base_url` + quoted `segments` + `query`, marked as already encoded so that neither yarl
    nor aiohttp re-quotes or un-quotes what we escaped (yarl would turn `%21` back into `!`)."""
    path = "".join("/" + quote_segment(s) for s in segments)
    text = base_url.rstrip("/") + path
    if query:
        text += "?" + urlencode(list(query.items()), quote_via=quote)
    return URL(text, encoded=True)


def parse_retry_at(headers: Mapping[str, str], status: int, now: float | None = None) -> float | None:
    """The unix time before which retrying is pointless: `Retry-After` (seconds or an HTTP
    date) on any answer, else `X-RateLimit-Reset` (unix seconds) on a 429. None when neither
    is present or readable."""
    now = time.time() if now is None else now
    retry_after = headers.get("Retry-After")
    if retry_after:
        value = retry_after.strip()
        try:
            seconds = float(value)
        except ValueError:
            pass
        else:
            # "inf", "nan", "1e999" are numbers to float() but no time: unreadable, like "soon".
            if math.isfinite(seconds):
                return now + max(0.0, seconds)
        try:
            return parsedate_to_datetime(value).timestamp()
        except (TypeError, ValueError, IndexError, OverflowError):
            pass
    if status == 429:
        reset = headers.get("X-RateLimit-Reset")
        if reset:
            try:
                at = float(reset.strip())
            except ValueError:
                pass
            else:
                if math.isfinite(at):
                    return at
    return None


def error_from_answer(status: int | None, reason: str | None, headers: Mapping[str, str],
                      body: bytes) -> BackendError:
    """A non-2xx answer as a `BackendError`. Stream's error body is
    `{"code", "message", "StatusCode", ...}`; anything else (an HTML page from a proxy, an empty
    body) still yields an error with the HTTP status, so the outcome table can act on it."""
    code: int | None = None
    message: str | None = None
    try:
        decoded = msgspec.json.decode(body) if body else None
    except (msgspec.DecodeError, UnicodeError, RecursionError):
        # Not JSON, or nested past the decoder's stack (a hostile gateway's page): no Stream
        # error, but still an error with its status, never a crash of the caller.
        decoded = None
    if isinstance(decoded, dict):
        # A WebSocket error frame nests the object under "error"; accept both shapes.
        if isinstance(decoded.get("error"), dict):
            decoded = decoded["error"]
        raw_code = decoded.get("code")
        if isinstance(raw_code, int) and not isinstance(raw_code, bool):
            code = raw_code
        if isinstance(decoded.get("message"), str):
            message = decoded["message"]
        # An error frame on the WebSocket has no HTTP status of its own: it names one.
        if status is None and isinstance(decoded.get("StatusCode"), int):
            status = decoded["StatusCode"]
    if message is None:
        # Keep the service's own words when it gave any; otherwise say what HTTP said.
        message = f"HTTP {status} {reason or ''}".strip()
    retry_at = parse_retry_at(headers, status) if status is not None else None
    return BackendError(message, status=status, code=code, retry_at=retry_at, body=body)


# Query parameters and header-like values that hold credentials, wherever a URL or a request
# shows up in a message (aiohttp puts whole URLs, query included, into some of its errors).
_CREDENTIAL_PARAMS = re.compile(
    r"(?i)\b(api_key|authorization|token|access_token|stream-auth-type)=[^&\s'\"<>]*")
# A JWT anywhere (the user's token, or an older one the backend echoes back).
_JWT = re.compile(r"\beyJ[\w-]*\.[\w-]+\.[\w-]*")
# The user:password part of any URL in a text.
_URL_USERINFO = re.compile(r"(\b[a-z][a-z0-9+.-]*://)[^/\s@'\"<>]+@", re.IGNORECASE)
# The query string of any URL in a text.
_URL_QUERY = re.compile(r"(\b[a-z][a-z0-9+.-]*://[^\s?'\"<>]*)\?[^\s'\"<>]*", re.IGNORECASE)


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """`text` with credentials taken out: each of `secrets` (the token, the API key), URL query
    strings, credential parameters and anything shaped like a JWT. For every message that may
    be shown, logged or recorded."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "[redacted]")
    text = _URL_USERINFO.sub(r"\1[redacted]@", text)
    text = _URL_QUERY.sub(r"\1?[query redacted]", text)
    text = _CREDENTIAL_PARAMS.sub(r"\1=[redacted]", text)
    return _JWT.sub("[redacted token]", text)


def _transport_detail(exc: BaseException) -> str:
    """What went wrong on the way, in words that never hold the request's URL (aiohttp's own
    messages for some errors include it, query string and credentials with it)."""
    if isinstance(exc, aiohttp.ClientConnectorError):
        reason = exc.os_error.strerror if exc.os_error.strerror else type(exc.os_error).__name__
        return f"cannot connect to {exc.host}:{exc.port} ({reason})"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "the server closed the connection without an answer"
    if isinstance(exc, aiohttp.ClientPayloadError):
        return "the answer was cut short"
    if isinstance(exc, aiohttp.ClientResponseError):
        return f"a broken answer ({exc.status}, {exc.message})"
    return redact(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)


# Opening the TCP connection timed out: nothing answered at all (aiohttp >= 3.10 says so).
_CONNECT_TIMEOUT: tuple[type[BaseException], ...] = tuple(
    t for t in (getattr(aiohttp, "ConnectionTimeoutError", None),) if t is not None)


def no_response(what: str, exc: BaseException, timeout: float | None = None) -> NoResponse:
    """The `NoResponse` for a transport failure: `TimedOut` when the answer did not arrive
    complete in time (a slow server), else unreachable (refused, reset, DNS, TLS)."""
    if isinstance(exc, asyncio.TimeoutError) and not isinstance(exc, _CONNECT_TIMEOUT):
        within = f" within {timeout:g} s" if timeout else " in time"
        return TimedOut(f"no complete answer to {what}{within}")
    return NoResponse(f"no response to {what}: {_transport_detail(exc)}")


async def read_capped(resp: aiohttp.ClientResponse, *,
                      max_bytes: int = MAX_ANSWER_BYTES) -> tuple[bytes, bool]:
    """(body, True), or (its first `KEPT_HEAD_BYTES`, False) when the body is larger than
    `max_bytes`: reading stops at the cap, whatever Content-Length says, so a huge or endless
    answer costs at most the cap in memory."""
    if resp.content_length is not None and resp.content_length > max_bytes:
        return await _head(resp), False
    buffer = bytearray()
    async for chunk in resp.content.iter_chunked(256 * 1024):
        buffer += chunk
        if len(buffer) > max_bytes:
            return bytes(buffer[:KEPT_HEAD_BYTES]), False
    return bytes(buffer), True


async def _head(resp: aiohttp.ClientResponse) -> bytes:
    try:
        return await resp.content.readexactly(KEPT_HEAD_BYTES)
    except asyncio.IncompleteReadError as short:
        return short.partial


async def request(session: aiohttp.ClientSession, method: str, url: URL, *,
                  headers: Mapping[str, str], body: bytes | None,
                  timeout: aiohttp.ClientTimeout,
                  max_bytes: int = MAX_ANSWER_BYTES) -> bytes:
    """Send one request; the raw body on 2xx, else `BackendError`, or `NoResponse` when no
    complete answer arrived (`TimedOut` when it was too slow). An answer over `max_bytes` is
    `UnusableAnswer` (2xx) or an error with its head only."""
    what = f"{method} {url.path}"
    try:
        # raise_for_status=False even if a session passed in says otherwise: error answers
        # are read here, for their body.
        async with session.request(method, url, headers=headers, data=body, timeout=timeout,
                                   allow_redirects=False, raise_for_status=False) as resp:
            # Read inside the try: a body cut short is "no response" too.
            raw, complete = await read_capped(resp, max_bytes=max_bytes)
            if not complete and 200 <= resp.status < 300:
                raise UnusableAnswer(f"the answer to {what} is over the {max_bytes:,}-byte cap",
                                     status=resp.status, body=raw)
            if 200 <= resp.status < 300:
                return raw
            if 300 <= resp.status < 400:
                # Redirects are not followed: the chat API never redirects, a captive portal
                # or a proxy's login page does. Not a refusal of the request: unusable.
                raise UnusableAnswer(
                    f"the answer to {what} is a redirect (HTTP {resp.status}), not the chat "
                    "API's (a captive portal or a proxy?)", status=resp.status, body=raw)
            if resp.status < 400:
                # A final 1xx (101 to a plain request) or a status below 100: no answer the
                # chat API gives, and no refusal of the request either (the outcome table
                # would read "any other 4xx-like status" as a permanent rejection).
                raise UnusableAnswer(
                    f"the answer to {what} is HTTP {resp.status}, not the chat API's",
                    status=resp.status, body=raw)
            raise error_from_answer(resp.status, resp.reason, resp.headers, raw)
    except BackendError:
        raise
    except TRANSPORT_ERRORS as exc:
        # Not chained: aiohttp's exception holds the URL, credentials included.
        raise no_response(what, exc, timeout.total) from None


def unusable(what: str, body: bytes, status: int | None = None) -> UnusableAnswer:
    """An `UnusableAnswer` for a 2xx answer to `what` that cannot be used, saying why."""
    return UnusableAnswer(f"the answer to {what} could not be used: {describe_body(body)}",
                          status=status, body=body)
