"""What the HTTP and WebSocket handlers need of the running server, and the helpers they share.

The handlers are given a `ServerContext` (the `DevServer` is the one implementation) through
the application's `SERVER` key, so that they never import the runner that builds them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Protocol

from aiohttp import web

from chatledger.sync.devserver.faults import FaultSet
from chatledger.sync.devserver.hub import Hub
from chatledger.sync.devserver.ratelimit import RateLimiter
from chatledger.sync.devserver.state import State
from chatledger.sync.devserver.wire import ApiError, decode_object, encode


class ServerContext(Protocol):
    """The running server as its request handlers see it."""

    api_key: str
    secret: str
    health_interval: float
    client_timeout: float
    max_sync_events: int
    state: State
    faults: FaultSet
    limiter: RateLimiter
    hub: Hub
    calls: dict[str, int]  # API calls seen per endpoint, faults included

    def make_token(self, user_id: str, expires_at: float | datetime | None = None) -> str: ...

    def snapshot(self) -> dict[str, Any]: ...


SERVER: web.AppKey[ServerContext] = web.AppKey("devserver")


def json_response(body: dict[str, Any], status: int = 200,
                  headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=encode(body), status=status, headers=headers,
                        content_type="application/json")


def error_response(error: ApiError) -> web.Response:
    return json_response(error.body(), error.status, error.headers)


async def read_json(request: web.Request) -> dict[str, Any]:
    """The request's JSON object; an empty body reads as `{}`."""
    raw = await request.read()
    if not raw.strip():
        return {}
    return decode_object(raw, "request body")
