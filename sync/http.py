"""HTTP plumbing of the Stream adapter: URLs, one request, and how a failed answer becomes a
`BackendError`.

Kept apart from `chatledger.sync.stream` so the WebSocket side (`chatledger.sync.websocket`) can
use the same URL quoting and error mapping for its handshake.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import quote, urlencode

import aiohttp
import msgspec
from yarl import URL

from chatledger.sync.backend import BackendError, NoResponse

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
            return now + max(0.0, float(value))
        except ValueError:
            pass
        try:
            return parsedate_to_datetime(value).timestamp()
        except (TypeError, ValueError, IndexError, OverflowError):
            pass
    if status == 429:
        reset = headers.get("X-RateLimit-Reset")
        if reset:
            try:
                return float(reset.strip())
            except ValueError:
                pass
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
    except msgspec.DecodeError:
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


def no_response(what: str, exc: BaseException) -> NoResponse:
    detail = str(exc) or type(exc).__name__
    return NoResponse(f"no response to {what}: {detail}")


async def request(session: aiohttp.ClientSession, method: str, url: URL, *,
                  headers: Mapping[str, str], body: bytes | None,
                  timeout: aiohttp.ClientTimeout) -> bytes:
    """Send one request; the raw body on 2xx, else `BackendError`, or `NoResponse` when no
    complete answer arrived."""
    what = f"{method} {url.path}"
    try:
        # raise_for_status=False even if a session passed in says otherwise: error answers
        # are read here, for their body.
        async with session.request(method, url, headers=headers, data=body, timeout=timeout,
                                   allow_redirects=False, raise_for_status=False) as resp:
            # Read inside the try: a body cut short is "no response" too.
            raw = await resp.read()
            if 200 <= resp.status < 300:
                return raw
            raise error_from_answer(resp.status, resp.reason, resp.headers, raw)
    except BackendError:
        raise
    except TRANSPORT_ERRORS as exc:
        raise no_response(what, exc) from exc
