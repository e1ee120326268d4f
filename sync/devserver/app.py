"""The REST routes, and the middleware every API call goes through:
faults first (a fault may stand for the network, so it acts before anything else), then the
api key and token, then the rate limit, then the handler."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from aiohttp import web

from chatledger.sync.devserver import query
from chatledger.sync.devserver.auth import verify_token
from chatledger.sync.devserver.faults import Fault
from chatledger.sync.devserver.wire import UTC, ApiError, error_body
from chatledger.sync.devserver.admin import ADMIN_ROUTES
from chatledger.sync.devserver.context import (
    SERVER, ServerContext, error_response, json_response, read_json)
from chatledger.sync.devserver.ws import parse_connect_query, serve_connection

# aiohttp 3.14 types request keys and warns about plain strings; older releases (the bounds in
# pyproject.toml reach back to 3.9) know only strings. The handlers use whichever is here.
if hasattr(web, "RequestKey"):
    USER: Any = web.RequestKey("devserver.user_id", str)
    DROP: Any = web.RequestKey("devserver.drop", bool)
else:  # pragma: no cover - exercised by the oldest-dependencies check
    USER = "devserver.user_id"
    DROP = "devserver.drop"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def ok(body: dict[str, Any], status: int = 201, started: float | None = None) -> web.Response:
    elapsed = 0.0 if started is None else (time.perf_counter() - started) * 1000
    return json_response({**body, "duration": f"{elapsed:.2f}ms"}, status)


def authenticate(request: web.Request, server: ServerContext, *, from_query: bool = False) -> str:
    """The user the request's token names; the WebSocket may carry the token in the query
    (browsers cannot set headers on a WebSocket)."""
    if request.query.get("api_key") != server.api_key:
        raise ApiError(401, 2, "api_key not valid: pass the server's api key as ?api_key=")
    token = request.headers.get("Authorization")
    auth_type = request.headers.get("stream-auth-type")
    if from_query:
        token = token or request.query.get("authorization")
        auth_type = auth_type or request.query.get("stream-auth-type")
    if auth_type != "jwt":
        raise ApiError(401, 5, "stream-auth-type must be 'jwt'")
    if token and token.lower().startswith("bearer "):
        token = token[7:]
    return verify_token(token, server.secret)


def close_silently(request: web.Request) -> web.Response:
    """Cut the connection: the client sees no answer at all (the response is never written)."""
    if request.transport is not None:
        request.transport.close()
    return web.Response(status=204)


async def apply_fault(fault: Fault, request: web.Request, server: ServerContext
                      ) -> web.StreamResponse | None:
    """Act out a fault before the call is handled; a response ends the call there."""
    if fault.kind == "refuse":
        return close_silently(request)
    if fault.kind == "delay":
        await asyncio.sleep(fault.duration)
    elif fault.kind == "timeout":
        await asyncio.sleep(fault.duration)
        return close_silently(request)
    elif fault.kind in ("error5xx", "reject"):
        status, code, message = fault.answer()
        return json_response(error_body(status, code, message), status)
    elif fault.kind == "rate_limit":
        reset = time.time() + fault.duration
        limit = server.limiter.limits.get(request.match_info.route.name or "") or 0
        headers = {"X-RateLimit-Limit": str(limit), "X-RateLimit-Remaining": "0",
                   "X-RateLimit-Reset": str(int(reset + 0.999)),
                   "Retry-After": str(max(1, int(fault.duration + 0.999)))}
        return json_response(error_body(429, 9, "Too many requests (injected fault)"), 429,
                             headers)
    elif fault.kind == "close_ws":
        await server.hub.close_all()
    return None  # delay, close_ws, drop: go on


@web.middleware
async def api_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    route = request.match_info.route
    name = route.name if route is not None else None
    if name is None:  # no such route: answer in Stream's shape too, not aiohttp's text
        try:
            return await handler(request)
        except web.HTTPException as error:
            if error.status < 400:
                raise
            return json_response(error_body(error.status, 16 if error.status == 404 else 4,
                                            f"{error.reason}: {request.method} {request.path}"),
                                 error.status)
    if name.startswith("dev_"):
        return await handler(request)
    server = request.app[SERVER]
    fault = server.faults.pick(name)
    server.calls[name] = server.calls.get(name, 0) + 1
    if fault is not None:
        cut = await apply_fault(fault, request, server)
        if cut is not None:
            return cut
    if name == "connect":
        request[DROP] = fault is not None and fault.kind == "drop"
        return await handler(request)  # authenticates itself: the token may be in the query
    try:
        request[USER] = authenticate(request, server)
        verdict = server.limiter.check(name, request[USER])
        if verdict is not None and not verdict.allowed:
            raise ApiError(429, 9, f"Too many requests for {name}: limit "
                           f"{verdict.limit}/min, retry after {verdict.retry_after} s",
                           headers=verdict.headers())
        server.state.user(request[USER])
        response = await handler(request)
        if verdict is not None:
            response.headers.update(verdict.headers())
    except ApiError as error:
        return error_response(error)
    except web.HTTPException as error:  # aiohttp's own refusals (body too large, ...)
        return json_response(error_body(error.status, 4, error.reason), error.status)
    except Exception as error:  # a bug here must still answer in Stream's shape
        return json_response(
            error_body(500, -1, f"internal error: {type(error).__name__}: {error}"), 500)
    if fault is not None and fault.kind == "drop":
        return close_silently(request)  # applied, but the answer is lost
    return response


# -- handlers -------------------------------------------------------------------------------------

def _cid(request: web.Request) -> str:
    return f"{request.match_info['type']}:{request.match_info['id']}"


def _flag(request: web.Request, name: str) -> bool:
    return request.query.get(name, "false").lower() in ("1", "true", "yes")


async def send_message(request: web.Request) -> web.Response:
    started, body = time.perf_counter(), await read_json(request)
    state = request.app[SERVER].state
    return ok(state.send_message(request[USER], _cid(request), body.get("message"),
                                 skip_push=bool(body.get("skip_push"))), started=started)


async def update_message(request: web.Request) -> web.Response:
    started, body = time.perf_counter(), await read_json(request)
    return ok(request.app[SERVER].state.update_message(
        request[USER], request.match_info["mid"], body.get("message")), started=started)


async def partial_update_message(request: web.Request) -> web.Response:
    started, body = time.perf_counter(), await read_json(request)
    return ok(request.app[SERVER].state.partial_update_message(
        request[USER], request.match_info["mid"], body.get("set") or {},
        body.get("unset") or []), started=started)


async def delete_message(request: web.Request) -> web.Response:
    started = time.perf_counter()
    return ok(request.app[SERVER].state.delete_message(
        request[USER], request.match_info["mid"], hard=_flag(request, "hard"),
        delete_for_me=_flag(request, "delete_for_me")), 200, started)


async def send_reaction(request: web.Request) -> web.Response:
    started, body = time.perf_counter(), await read_json(request)
    return ok(request.app[SERVER].state.send_reaction(
        request[USER], request.match_info["mid"], body.get("reaction"),
        enforce_unique=bool(body.get("enforce_unique"))), started=started)


async def delete_reaction(request: web.Request) -> web.Response:
    started = time.perf_counter()
    return ok(request.app[SERVER].state.delete_reaction(
        request[USER], request.match_info["mid"], request.match_info["rtype"]), 200, started)


async def mark_read(request: web.Request) -> web.Response:
    started, body = time.perf_counter(), await read_json(request)
    return ok(request.app[SERVER].state.mark_read(
        request[USER], _cid(request), message_id=body.get("message_id"),
        thread_id=body.get("thread_id")), started=started)


async def mark_unread(request: web.Request) -> web.Response:
    started, body = time.perf_counter(), await read_json(request)
    return ok(request.app[SERVER].state.mark_unread(
        request[USER], _cid(request), message_id=body.get("message_id")), started=started)


async def save_draft(request: web.Request) -> web.Response:
    started, body = time.perf_counter(), await read_json(request)
    return ok(request.app[SERVER].state.save_draft(request[USER], _cid(request),
                                                   body.get("message")), started=started)


async def delete_draft(request: web.Request) -> web.Response:
    started = time.perf_counter()
    return ok(request.app[SERVER].state.delete_draft(
        request[USER], _cid(request), parent_id=request.query.get("parent_id") or None),
        200, started)


async def query_channels(request: web.Request) -> web.Response:
    started, body = time.perf_counter(), await read_json(request)
    return ok(query.query_channels(request.app[SERVER].state, request[USER], body),
              started=started)


async def query_channel(request: web.Request) -> web.Response:
    started, body = time.perf_counter(), await read_json(request)
    return ok(query.query_channel(request.app[SERVER].state, request[USER],
                                  request.match_info["type"], request.match_info["id"], body),
              started=started)


async def sync(request: web.Request) -> web.Response:
    started, body = time.perf_counter(), await read_json(request)
    server = request.app[SERVER]
    return ok(query.sync(server.state, request[USER], body, max_events=server.max_sync_events,
                         now=datetime.now(UTC)), started=started)


async def connect(request: web.Request) -> web.StreamResponse:
    """Errors before the upgrade are plain HTTP answers in Stream's error shape."""
    server = request.app[SERVER]
    try:
        token_user = authenticate(request, server, from_query=True)
        user_id, details = parse_connect_query(request)
        if user_id is None:
            user_id = token_user
        if user_id != token_user:
            raise ApiError(401, 5, f"the token is for '{token_user}', not '{user_id}'")
        verdict = server.limiter.check("connect", user_id)
        if verdict is not None and not verdict.allowed:
            raise ApiError(429, 9, "Too many connects", headers=verdict.headers())
    except ApiError as error:
        return error_response(error)
    drop = request.get(DROP, False)
    return await serve_connection(server, request, user_id, details, drop=drop)


ROUTES: list[tuple[str, str, Handler, str]] = [
    ("POST", "/channels/{type}/{id}/message", send_message, "send_message"),
    ("POST", "/messages/{mid}", update_message, "update_message"),
    ("PUT", "/messages/{mid}", partial_update_message, "partial_update_message"),
    ("DELETE", "/messages/{mid}", delete_message, "delete_message"),
    ("POST", "/messages/{mid}/reaction", send_reaction, "send_reaction"),
    ("DELETE", "/messages/{mid}/reaction/{rtype}", delete_reaction, "delete_reaction"),
    ("POST", "/channels/{type}/{id}/read", mark_read, "mark_read"),
    ("POST", "/channels/{type}/{id}/unread", mark_unread, "mark_unread"),
    ("POST", "/channels/{type}/{id}/draft", save_draft, "save_draft"),
    ("DELETE", "/channels/{type}/{id}/draft", delete_draft, "delete_draft"),
    ("POST", "/channels", query_channels, "query_channels"),
    ("POST", "/channels/{type}/{id}/query", query_channel, "query_channel"),
    ("POST", "/sync", sync, "sync"),
    ("GET", "/connect", connect, "connect"),
]


def build_app(server: ServerContext) -> web.Application:
    app = web.Application(middlewares=[api_middleware], client_max_size=16 * 1024 * 1024)
    app[SERVER] = server
    for method, path, handler, name in [*ROUTES, *ADMIN_ROUTES]:
        app.router.add_route(method, path, handler, name=name)
    return app
