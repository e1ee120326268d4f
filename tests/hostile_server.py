"""A chat backend on 127.0.0.1 that answers the way broken networks and servers do.

Written from docs/wire.md for the tests of issue 14 (not from any SDK). It runs in a thread with its
own event loop, so a test can talk to it from `asyncio.run(...)` or from a subprocess (the
command line). Each endpoint answers properly by default; `server.answer(route, *answers)`
queues hostile answers for the next calls to that route, one each:

    with HostileServer() as server:
        server.answer("sync", HTML, OK)     # a captive portal once, then a proper answer

Routes: connect, sync, query_channels, query_channel, send_message, update_message,
partial_update_message, delete_message, send_reaction, delete_reaction, mark_read, mark_unread.
Every loop here is bounded and every answer ends, so the tests stop by themselves.
"""

from __future__ import annotations

import asyncio
import collections
import json
import socket
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
from aiohttp import WSMsgType, web

from chatledger.eventstore.wire.times import format_time, parse_time
from fixtures import channel_state

TOKEN = "eyJhbGciOiJIUzI1NiJ9.eyJ1c2VyX2lkIjoiYWxpY2UifQ.c2VjcmV0LXNpZ25hdHVyZS14eXo"
API_KEY = "hostile-api-key-4f2a9c"
GENERAL = "messaging:general"

Handler = Callable[["HostileServer", web.Request, dict[str, Any]], Awaitable[web.StreamResponse]]


def now_text() -> str:
    return format_time(int(time.time() * 1_000_000))


def json_response(body: Any, status: int = 201) -> web.Response:
    return web.Response(status=status, body=msgspec.json.encode(body),
                        content_type="application/json")


# -- hostile answers ---------------------------------------------------------------------------

async def OK(server: HostileServer, request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
    """The proper answer of the route."""
    return await server.proper(request, body)


async def HTML(server: HostileServer, request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
    """A captive portal: 200 with a login page."""
    return web.Response(status=200, content_type="text/html",
                        text="<!DOCTYPE html><html><head><title>Hotel WiFi</title></head>"
                             "<body><form action='/login'>Accept the terms</form></body></html>")


async def ERROR_BODY(server: HostileServer, request: web.Request,
                     body: dict[str, Any]) -> web.StreamResponse:
    """A gateway's 200 with Stream's error object in the body."""
    return json_response({"code": 4, "message": "GetOrCreateChannel failed with error: bad input",
                          "StatusCode": 400, "duration": "0.10ms",
                          "more_info": "https://getstream.io/chat/docs/api_errors_response"},
                         status=200)


async def TEXT(server: HostileServer, request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
    """200 text/plain."""
    return web.Response(status=200, content_type="text/plain", text="OK")


async def EMPTY_OBJECT(server: HostileServer, request: web.Request,
                       body: dict[str, Any]) -> web.StreamResponse:
    """201 `{}`: JSON, but not what any endpoint promises."""
    return json_response({"duration": "0.01ms"})


async def ARRAY(server: HostileServer, request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
    return json_response([1, 2, 3])


async def WRONG_MESSAGE(server: HostileServer, request: web.Request,
                        body: dict[str, Any]) -> web.StreamResponse:
    """A message answer about another message than the one the request named."""
    return json_response({"message": {"id": "someone-elses", "text": "?", "type": "regular"},
                          "reaction": {"type": "other", "message_id": "someone-elses"},
                          "event": None})


def huge(size: int, *, declared: bool = False) -> Handler:
    """A 200 answer of `size` bytes (valid JSON if read whole), sent in chunks; `declared` sends
    its Content-Length first."""
    async def answer(server: HostileServer, request: web.Request,
                     body: dict[str, Any]) -> web.StreamResponse:
        head, tail = b'{"events":[],"channels":[],"padding":"', b'"}'
        response = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
        if declared:
            response.content_length = size
        await response.prepare(request)
        await response.write(head)
        left = size - len(head) - len(tail)
        chunk = b"x" * (1 << 20)
        try:
            while left > 0:
                piece = chunk[:left]
                await response.write(piece)
                left -= len(piece)
            await response.write(tail)
        except (ConnectionError, RuntimeError):
            pass  # the client stopped reading at its cap and went away
        return response
    return answer


def trickle(interval: float = 1.0, size: int = 400) -> Handler:
    """A 200 whose body comes a byte every `interval` seconds (`size` bytes in all)."""
    async def answer(server: HostileServer, request: web.Request,
                     body: dict[str, Any]) -> web.StreamResponse:
        response = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
        response.content_length = size
        await response.prepare(request)
        try:
            for _ in range(size):
                await response.write(b" ")
                await asyncio.sleep(interval)
        except (ConnectionError, RuntimeError):
            pass
        return response
    return answer


async def REDIRECT(server: HostileServer, request: web.Request,
                   body: dict[str, Any]) -> web.StreamResponse:
    """A captive portal's other way: 302 to its login page."""
    return web.Response(status=302, headers={"Location": "http://portal.example/login"},
                        content_type="text/html", text="<a href='/login'>log in</a>")


def _requested_url(request: web.Request) -> str:
    # Built by hand: `request.url` fails on aiohttp 3.10 with a newer yarl (host with a port).
    return f"{request.scheme}://{request.host}{request.path_qs}"


async def ECHO(server: HostileServer, request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
    """200 text/html repeating the request: its URL (api key in the query) and its token."""
    return web.Response(status=200, content_type="text/html",
                        text=f"<html>you asked for {_requested_url(request)} with "
                             f"{request.headers.get('Authorization')}</html>")


async def REFUSE_TOKEN(server: HostileServer, request: web.Request,
                       body: dict[str, Any]) -> web.StreamResponse:
    """401, and a message that repeats the token and key it was given (as some servers do)."""
    token = request.headers.get("Authorization") or request.query.get("authorization", "")
    key = request.query.get("api_key", "")
    return json_response({"code": 40, "StatusCode": 401, "duration": "0.1ms",
                          "message": f"token {token} for api_key {key} at "
                                     f"{_requested_url(request)} is expired"}, status=401)


async def HANG(server: HostileServer, request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
    """No answer at all until the server stops (at most a minute)."""
    await asyncio.sleep(60)
    return json_response({})


def value(payload: Any, status: int = 201) -> Handler:
    """This exact JSON value."""
    async def answer(server: HostileServer, request: web.Request,
                     body: dict[str, Any]) -> web.StreamResponse:
        return json_response(payload, status)
    return answer


# -- the server --------------------------------------------------------------------------------

ROUTES = [
    ("GET", "/connect", "connect"),
    ("POST", "/sync", "sync"),
    ("POST", "/channels", "query_channels"),
    ("POST", "/channels/{type}/{id}/query", "query_channel"),
    ("POST", "/channels/{type}/{id}/message", "send_message"),
    ("POST", "/messages/{mid}", "update_message"),
    ("PUT", "/messages/{mid}", "partial_update_message"),
    ("DELETE", "/messages/{mid}", "delete_message"),
    ("POST", "/messages/{mid}/reaction", "send_reaction"),
    ("DELETE", "/messages/{mid}/reaction/{kind}", "delete_reaction"),
    ("POST", "/channels/{type}/{id}/read", "mark_read"),
    ("POST", "/channels/{type}/{id}/unread", "mark_unread"),
]


class HostileServer:
    """See the module doc. `events` are what `/sync` knows (each with its `created_at` and
    `cid`); `frames` are sent on every WebSocket connection after the first `health.check`."""

    def __init__(self, channels: list[str] | None = None) -> None:
        self.channels = channels or [GENERAL]
        self.first_frame_at: Callable[[], str] = now_text  # the health.check's created_at
        self.events: list[bytes] = []
        self.frames: list[bytes] = []
        self.messages: dict[str, dict[str, Any]] = {}
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.sync_asked: list[str] = []  # the `last_sync_at` of each /sync request
        self._answers: dict[str, collections.deque[Handler]] = collections.defaultdict(
            collections.deque)
        self._defaults: dict[str, Handler] = {}
        self._sockets: set[web.WebSocketResponse] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self.url = ""

    # -- scripting -------------------------------------------------------------------------

    def answer(self, route: str, *answers: Handler) -> HostileServer:
        """The next calls of `route` get these answers, one each (then proper ones again)."""
        self._answers[route].extend(answers)
        return self

    def always(self, route: str, answer: Handler | None) -> HostileServer:
        """Every call of `route` gets `answer` (None: proper answers again)."""
        if answer is None:
            self._defaults.pop(route, None)
        else:
            self._defaults[route] = answer
        return self

    def calls_to(self, route: str) -> list[dict[str, Any]]:
        return [body for name, body in list(self.calls) if name == route]

    # -- running ---------------------------------------------------------------------------

    def __enter__(self) -> HostileServer:
        started = threading.Event()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"

        def serve() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            app = web.Application(client_max_size=1 << 20)
            for method, path, name in ROUTES:
                app.router.add_route(method, path, self._handler(name))
            app.on_shutdown.append(self._close_sockets)
            self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
            loop.run_until_complete(self._runner.setup())
            site = web.SockSite(self._runner, sock)
            loop.run_until_complete(site.start())
            started.set()
            loop.run_forever()
            loop.run_until_complete(self._runner.cleanup())
            loop.close()

        self._thread = threading.Thread(target=serve, name="hostile-server", daemon=True)
        self._thread.start()
        if not started.wait(10):
            raise RuntimeError("the hostile server did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(15)

    async def _close_sockets(self, app: web.Application) -> None:
        for ws in list(self._sockets):
            await ws.close()

    def _handler(self, route: str) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def handle(request: web.Request) -> web.StreamResponse:
            raw = await request.read()
            try:
                body = msgspec.json.decode(raw) if raw else {}
            except msgspec.DecodeError:
                body = {}
            body = {**body, **request.match_info, **request.query} if isinstance(body, dict) else {}
            self.calls.append((route, body))
            if route == "sync":
                self.sync_asked.append(body.get("last_sync_at"))
            body["@route"] = route
            queued = self._answers[route]
            answer = queued.popleft() if queued else self._defaults.get(route, OK)
            return await answer(self, request, body)
        return handle

    # -- proper answers (docs/wire.md, "Endpoints") -------------------------------------------------------

    async def proper(self, request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        route = body["@route"]
        if route == "connect":
            return await self._connect(request)
        if route == "sync":
            since = parse_time(body["last_sync_at"])
            wanted = set(body.get("channel_cids") or [])
            # Read leniently (json): an event here may be one msgspec refuses, on purpose.
            events = [e for e in self.events
                      if parse_time(json.loads(e)["created_at"]) > since
                      and json.loads(e).get("cid") in wanted]
            return web.Response(status=201, content_type="application/json",
                                body=b'{"events":[' + b",".join(events)
                                + b'],"inaccessible_cids":[],"duration":"1ms"}')
        if route == "query_channels":
            return json_response({"channels": [channel_state(cid) for cid in self.channels],
                                  "duration": "2ms"})
        if route == "query_channel":
            return json_response(channel_state(f"{body['type']}:{body['id']}"))
        if route in ("send_message", "update_message"):
            message = {**body["message"], "type": "regular", "created_at": now_text(),
                       "updated_at": now_text(), "user": {"id": "alice"}}
            if route == "send_message":
                message["cid"] = f"{body['type']}:{body['id']}"
            self.messages[message["id"]] = message
            return json_response({"message": message, "duration": "1ms"})
        if route in ("partial_update_message", "delete_message"):
            message = {**self.messages.get(body["mid"], {"text": ""}), "id": body["mid"]}
            if route == "delete_message":
                message.update(type="deleted", deleted_at=now_text())
            return json_response({"message": message}, 200 if route == "delete_message" else 201)
        if route in ("send_reaction", "delete_reaction"):
            kind = body.get("kind") or (body.get("reaction") or {}).get("type")
            reaction = {"message_id": body["mid"], "user_id": "alice", "type": kind, "score": 1,
                        "created_at": now_text(), "updated_at": now_text()}
            return json_response({"message": {"id": body["mid"], "text": ""},
                                  "reaction": reaction})
        if route == "mark_read":
            return json_response({"event": {"type": "message.read", "created_at": now_text(),
                                            "cid": f"{body['type']}:{body['id']}"}})
        return json_response({"duration": "1ms"})

    async def _connect(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        self._sockets.add(ws)
        try:
            await ws.send_bytes(msgspec.json.encode({
                "type": "health.check", "cid": "*", "connection_id": f"conn-{len(self.calls)}",
                "created_at": self.first_frame_at(), "me": {"id": "alice",
                                                            "total_unread_count": 0}}))
            for frame in list(self.frames):
                await ws.send_bytes(frame)
            async for msg in ws:  # until the client (or the server's shutdown) closes it
                if msg.type in (WSMsgType.CLOSE, WSMsgType.ERROR):
                    break
        finally:
            self._sockets.discard(ws)
        return ws


class TrickleServer:
    """A TCP server on 127.0.0.1 that answers any request with an HTTP response sent a byte
    every `interval` seconds, status line and headers included: the slowest kind of server,
    which no per-read timeout catches. `with TrickleServer() as server: server.url`."""

    RESPONSE = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n"
                b"\r\n{}")

    def __init__(self, interval: float = 1.0) -> None:
        self.interval = interval
        self.connections = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self.url = ""

    def __enter__(self) -> TrickleServer:
        started = threading.Event()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"

        async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.connections += 1
            try:
                await reader.readuntil(b"\r\n\r\n")
                for byte in self.RESPONSE:
                    writer.write(bytes([byte]))
                    await writer.drain()
                    await asyncio.sleep(self.interval)
            except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
                pass
            finally:
                writer.close()

        def serve() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            server = loop.run_until_complete(asyncio.start_server(answer, sock=sock))
            started.set()
            loop.run_forever()
            server.close()
            for task in asyncio.all_tasks(loop):
                task.cancel()
            loop.run_until_complete(asyncio.sleep(0))
            loop.close()

        self._thread = threading.Thread(target=serve, name="trickle-server", daemon=True)
        self._thread.start()
        if not started.wait(10):
            raise RuntimeError("the trickle server did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(15)
