"""Tests of the Stream adapter (`chatledger.sync.stream`) against loopback servers.

A small aiohttp.web server records every request and answers from a script; raw asyncio servers
play the ones that misbehave (hang up, never answer). No pytest-asyncio: each test runs its
own event loop with asyncio.run and stops its own servers.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from email.utils import format_datetime
from datetime import datetime, timezone
from typing import Any

import aiohttp
import msgspec
import pytest
from aiohttp import web

from chatledger.sync.backend import Backend, BackendError, ConnectionLost, EventStream, NoResponse
from chatledger.sync.http import parse_retry_at
from chatledger.sync.outcomes import Outcome, classify
from chatledger.sync.stream import StreamBackend, user_id_from_token

API_KEY = "key123"
TOKEN = "tok.en.one"
USER = "alice"

# An answer whose bytes must come back untouched: odd spacing, escapes, key order.
RAW_OK = b'{"message":  {"id":"m-1","text":"caf\\u00e9 \xe2\x9c\x93","z":1,"a":2} ,"duration":"0.1ms"}'


def run(coro: Awaitable[Any]) -> Any:
    return asyncio.run(coro)  # type: ignore[arg-type]


# -- the recording server -------------------------------------------------------------------------

@dataclass
class Seen:
    method: str
    raw_path: str          # as sent, percent-escapes kept
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return msgspec.json.decode(self.body)


@dataclass
class Answer:
    status: int = 201
    body: bytes = RAW_OK
    headers: dict[str, str] = field(default_factory=dict)


WsScript = Callable[[web.Request, "Server"], Awaitable[web.StreamResponse]]


@dataclass
class Server:
    base_url: str = ""
    seen: list[Seen] = field(default_factory=list)
    answers: list[Answer] = field(default_factory=list)
    ws_script: WsScript | None = None
    ws_received: list[str] = field(default_factory=list)
    ws_closed: asyncio.Event = field(default_factory=asyncio.Event)
    sockets: list[web.WebSocketResponse] = field(default_factory=list)


def _record(request: web.Request, body: bytes) -> Seen:
    return Seen(request.method, request.raw_path.split("?", 1)[0], dict(request.query),
                {k.lower(): v for k, v in request.headers.items()}, body)


@contextlib.asynccontextmanager
async def serve(ws_script: WsScript | None = None) -> AsyncIterator[Server]:
    server = Server(ws_script=ws_script)

    async def connect(request: web.Request) -> web.StreamResponse:
        server.seen.append(_record(request, b""))
        assert server.ws_script is not None
        return await server.ws_script(request, server)

    async def anything(request: web.Request) -> web.StreamResponse:
        server.seen.append(_record(request, await request.read()))
        answer = server.answers.pop(0) if server.answers else Answer()
        return web.Response(status=answer.status, body=answer.body, headers=answer.headers,
                            content_type="application/json")

    app = web.Application()
    app.router.add_get("/connect", connect)
    app.router.add_route("*", "/{tail:.*}", anything)
    runner = web.AppRunner(app, shutdown_timeout=0.2)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    server.base_url = f"http://127.0.0.1:{port}"
    try:
        yield server
    finally:
        for ws in server.sockets:
            await ws.close()
        await runner.cleanup()


@contextlib.asynccontextmanager
async def raw_server(on_connect: Callable[[asyncio.StreamReader, asyncio.StreamWriter],
                                          Awaitable[None]]) -> AsyncIterator[str]:
    """A TCP server speaking no HTTP: for answers that never come."""
    writers: list[asyncio.StreamWriter] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        await on_connect(reader, writer)

    srv = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        srv.close()
        for w in writers:
            w.close()
        await srv.wait_closed()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def backend(base_url: str, **kwargs: Any) -> StreamBackend:
    return StreamBackend(base_url, API_KEY, TOKEN, USER, **kwargs)


# -- REST: what goes on the wire ------------------------------------------------------------------

def test_is_a_backend() -> None:
    assert isinstance(backend("http://127.0.0.1:1"), Backend)


def test_every_call_sends_the_documented_request() -> None:
    async def main() -> list[Seen]:
        async with serve() as srv, backend(srv.base_url) as b:
            msg = {"id": "m-1", "text": "hi", "attachments": [], "custom_field": {"x": 1}}
            await b.send_message("messaging:general", msg)
            await b.send_message("messaging:general", msg, skip_push=True)
            await b.update_message({"id": "m-1", "text": "edited"})
            await b.partial_update_message("m-1", set={"text": "p"}, unset=["custom_field"])
            await b.delete_message("m-1")
            await b.delete_message("m-1", hard=True, for_me=True)
            await b.send_reaction("m-1", {"type": "like", "score": 2}, enforce_unique=True)
            await b.delete_reaction("m-1", "like")
            await b.mark_read("messaging:general")
            await b.mark_read("messaging:general", message_id="m-1", thread_id="t-1")
            await b.mark_unread("messaging:general", message_id="m-1")
            await b.save_draft("messaging:general", {"text": "draft", "parent_id": "p-1"})
            await b.delete_draft("messaging:general")
            await b.delete_draft("messaging:general", parent_id="p-1")
            await b.query_channels({"members": {"$in": ["alice"]}},
                                   [{"field": "last_message_at", "direction": -1}],
                                   limit=10, offset=20, message_limit=5, watch=False)
            await b.query_channel("messaging:general", messages_limit=50, id_lt="m-9",
                                  watch=False)
            await b.query_channel("messaging:general")
            await b.sync(["messaging:general", "team:x"], "2026-11-25T10:00:00Z")
            return srv.seen

    seen = run(main())
    msg = {"id": "m-1", "text": "hi", "attachments": [], "custom_field": {"x": 1}}
    expected: list[tuple[str, str, dict[str, str], Any]] = [
        ("POST", "/channels/messaging/general/message", {},
         {"message": msg, "skip_push": False}),
        ("POST", "/channels/messaging/general/message", {},
         {"message": msg, "skip_push": True}),
        ("POST", "/messages/m-1", {}, {"message": {"id": "m-1", "text": "edited"}}),
        ("PUT", "/messages/m-1", {}, {"set": {"text": "p"}, "unset": ["custom_field"]}),
        ("DELETE", "/messages/m-1", {"hard": "false", "delete_for_me": "false"}, None),
        ("DELETE", "/messages/m-1", {"hard": "true", "delete_for_me": "true"}, None),
        ("POST", "/messages/m-1/reaction", {},
         {"reaction": {"type": "like", "score": 2}, "enforce_unique": True}),
        ("DELETE", "/messages/m-1/reaction/like", {}, None),
        ("POST", "/channels/messaging/general/read", {}, {}),
        ("POST", "/channels/messaging/general/read", {},
         {"message_id": "m-1", "thread_id": "t-1"}),
        ("POST", "/channels/messaging/general/unread", {}, {"message_id": "m-1"}),
        ("POST", "/channels/messaging/general/draft", {},
         {"message": {"text": "draft", "parent_id": "p-1"}}),
        ("DELETE", "/channels/messaging/general/draft", {}, None),
        ("DELETE", "/channels/messaging/general/draft", {"parent_id": "p-1"}, None),
        ("POST", "/channels", {},
         {"filter_conditions": {"members": {"$in": ["alice"]}},
          "sort": [{"field": "last_message_at", "direction": -1}], "limit": 10, "offset": 20,
          "message_limit": 5, "state": True, "watch": False, "presence": False}),
        ("POST", "/channels/messaging/general/query", {},
         {"state": True, "messages": {"limit": 50, "id_lt": "m-9"}, "watch": False}),
        ("POST", "/channels/messaging/general/query", {},
         {"state": True, "messages": {"limit": 25}, "watch": True}),
        ("POST", "/sync", {},
         {"channel_cids": ["messaging:general", "team:x"],
          "last_sync_at": "2026-11-25T10:00:00Z"}),
    ]
    assert len(seen) == len(expected)
    for got, (method, path, query, body) in zip(seen, expected):
        assert (got.method, got.raw_path) == (method, path)
        assert got.query == {"api_key": API_KEY, **query}
        assert got.headers["authorization"] == TOKEN
        assert got.headers["stream-auth-type"] == "jwt"
        if body is None:
            assert got.body == b""
        else:
            assert got.headers["content-type"] == "application/json"
            assert got.json() == body


def test_raw_body_comes_back_unchanged() -> None:
    odd = b'{ "channels" : [ ], "duration":"1ms", "x":"\\ud83d\\ude00" }'

    async def main() -> list[bytes]:
        async with serve() as srv, backend(srv.base_url) as b:
            srv.answers += [Answer(201, RAW_OK), Answer(201, odd), Answer(200, b"")]
            return [await b.send_message("messaging:general", {"id": "m"}),
                    await b.query_channels({}),
                    await b.delete_reaction("m", "like")]

    assert run(main()) == [RAW_OK, odd, b""]


def test_ids_are_split_on_the_first_colon_and_quoted() -> None:
    async def main() -> list[Seen]:
        async with serve() as srv, backend(srv.base_url) as b:
            await b.send_message("messaging:room!@home:2", {"id": "x"})
            await b.update_message({"id": "m/1?x#y z"})
            await b.delete_reaction("m@1", "thumbs up!")
            await b.mark_read("team:a b")
            return srv.seen

    seen = run(main())
    assert [s.raw_path for s in seen] == [
        "/channels/messaging/room%21%40home%3A2/message",
        "/messages/m%2F1%3Fx%23y%20z",
        "/messages/m%401/reaction/thumbs%20up%21",
        "/channels/team/a%20b/read",
    ]


def test_bad_arguments_fail_before_any_request() -> None:
    async def main() -> list[Seen]:
        async with serve() as srv, backend(srv.base_url) as b:
            for call in (lambda: b.send_message("no-colon", {"id": "x"}),
                         lambda: b.mark_read(":id"),
                         lambda: b.mark_read("type:"),
                         lambda: b.update_message({"text": "no id"}),
                         lambda: b.sync([f"t:{i}" for i in range(256)], "2026-11-25T10:00:00Z")):
                with pytest.raises(ValueError):
                    await call()
            await b.sync([f"t:{i}" for i in range(255)], "2026-11-25T10:00:00Z")
            return srv.seen

    assert len(run(main())) == 1


def test_set_token_applies_to_later_calls() -> None:
    async def main() -> list[Seen]:
        async with serve() as srv, backend(srv.base_url) as b:
            await b.mark_read("messaging:general")
            b.set_token("fresh.tok.en")
            await b.mark_read("messaging:general")
            return srv.seen

    first, second = run(main())
    assert first.headers["authorization"] == TOKEN
    assert second.headers["authorization"] == "fresh.tok.en"


def test_base_url_with_a_path_prefix_and_trailing_slash() -> None:
    async def main() -> list[Seen]:
        async with serve() as srv, backend(srv.base_url + "/chat/") as b:
            await b.sync(["a:b"], "2026-11-25T10:00:00Z")
            return srv.seen

    assert run(main())[0].raw_path == "/chat/sync"


def test_session_ownership() -> None:
    async def main() -> None:
        async with serve() as srv:
            async with aiohttp.ClientSession() as session:
                async with backend(srv.base_url, session=session) as b:
                    await b.mark_read("messaging:general")
                assert not session.closed  # not ours to close
                await session.get(srv.base_url + "/still-usable")
            b2 = backend(srv.base_url)
            await b2.mark_read("messaging:general")
            own = b2._session
            await b2.close()
            assert own is not None and own.closed
            with pytest.raises(RuntimeError):
                await b2.mark_read("messaging:general")

    run(main())


# -- REST: errors ---------------------------------------------------------------------------------

def _error(status: int, code: int, message: str) -> bytes:
    return msgspec.json.encode({"code": code, "message": message, "StatusCode": status,
                                "duration": "", "more_info": "https://example.invalid"})


ERROR_CASES = [
    # (kind, status, code, message, outcome)
    ("send_message", 400, 4, "SendMessage failed with error: \"a message with ID m-1 already exists\"",
     Outcome.DELIVERED),
    ("send_message", 400, 4, "SendMessage failed with error: \"text is too long\"", Outcome.REJECT),
    ("update_message", 400, 4, "message with ID m-1 already exists", Outcome.REJECT),
    ("send_message", 401, 40, "JWTAuth error: token has expired", Outcome.REFRESH_TOKEN),
    ("send_reaction", 403, 17, "user is not allowed to perform action", Outcome.REJECT),
    ("send_message", 403, 60, "slow mode: wait 20 s", Outcome.RETRY),
    ("send_message", 403, 99, "app suspended", Outcome.STOP),
    ("update_message", 404, 16, "message does not exist", Outcome.REJECT),
    ("delete_message", 404, 16, "message does not exist", Outcome.DELIVERED),
    ("delete_reaction", 404, 16, "reaction does not exist", Outcome.DELIVERED),
    ("send_message", 408, 23, "request timeout", Outcome.RETRY),
    ("send_message", 500, -1, "internal error", Outcome.RETRY),
]


async def _call(b: StreamBackend, kind: str) -> bytes:
    if kind == "send_message":
        return await b.send_message("messaging:general", {"id": "m-1", "text": "hi"})
    if kind == "update_message":
        return await b.update_message({"id": "m-1", "text": "hi"})
    if kind == "send_reaction":
        return await b.send_reaction("m-1", {"type": "like"})
    if kind == "delete_message":
        return await b.delete_message("m-1")
    if kind == "delete_reaction":
        return await b.delete_reaction("m-1", "like")
    raise AssertionError(kind)


@pytest.mark.parametrize("kind,status,code,message,outcome", ERROR_CASES)
def test_error_answers_map_to_the_table(kind: str, status: int, code: int, message: str,
                                        outcome: Outcome) -> None:
    body = _error(status, code, message)

    async def main() -> BackendError:
        async with serve() as srv, backend(srv.base_url) as b:
            srv.answers.append(Answer(status, body))
            with pytest.raises(BackendError) as info:
                await _call(b, kind)
            return info.value

    err = run(main())
    assert not isinstance(err, NoResponse)
    assert (err.status, err.code, err.message, err.body) == (status, code, message, body)
    assert err.retry_at is None
    assert classify(kind, err) is outcome


def test_rate_limit_reset_header() -> None:
    reset = int(time.time()) + 42

    async def main() -> BackendError:
        async with serve() as srv, backend(srv.base_url) as b:
            srv.answers.append(Answer(429, _error(429, 9, "Too many requests"), {
                "X-RateLimit-Limit": "1000", "X-RateLimit-Remaining": "0",
                "X-RateLimit-Reset": str(reset)}))
            with pytest.raises(BackendError) as info:
                await _call(b, "send_message")
            return info.value

    err = run(main())
    assert (err.status, err.code, err.retry_at) == (429, 9, float(reset))
    assert classify("send_message", err) is Outcome.RETRY


def test_retry_after_wins_over_rate_limit_reset() -> None:
    async def main() -> BackendError:
        async with serve() as srv, backend(srv.base_url) as b:
            srv.answers.append(Answer(429, _error(429, 9, "Too many requests"), {
                "Retry-After": "7", "X-RateLimit-Reset": str(int(time.time()) + 500)}))
            with pytest.raises(BackendError) as info:
                await _call(b, "send_reaction")
            return info.value

    before = time.time()
    err = run(main())
    assert err.retry_at is not None and before + 6 <= err.retry_at <= time.time() + 7
    assert classify("send_reaction", err) is Outcome.RETRY


def test_retry_after_forms() -> None:
    now = 1_800_000_000.0
    date = format_datetime(datetime.fromtimestamp(now + 90, timezone.utc), usegmt=True)
    assert parse_retry_at({"Retry-After": "30"}, 503, now) == now + 30
    assert parse_retry_at({"Retry-After": date}, 403, now) == now + 90
    assert parse_retry_at({"Retry-After": "soon"}, 500, now) is None
    assert parse_retry_at({"X-RateLimit-Reset": "1800000100"}, 429, now) == 1_800_000_100.0
    assert parse_retry_at({"X-RateLimit-Reset": "1800000100"}, 500, now) is None  # 429 only
    assert parse_retry_at({}, 429, now) is None


@pytest.mark.parametrize("body", [b"<html>502 Bad Gateway</html>", b"", b'["not", "an object"]'])
def test_error_body_that_is_not_a_stream_error(body: bytes) -> None:
    async def main() -> BackendError:
        async with serve() as srv, backend(srv.base_url) as b:
            srv.answers.append(Answer(502, body))
            with pytest.raises(BackendError) as info:
                await _call(b, "send_message")
            return info.value

    err = run(main())
    assert not isinstance(err, NoResponse)
    assert (err.status, err.code, err.body) == (502, None, body)
    assert "502" in err.message
    assert classify("send_message", err) is Outcome.RETRY


def test_error_answers_read_even_when_the_session_raises_for_status() -> None:
    async def main() -> BackendError:
        async with serve() as srv, aiohttp.ClientSession(raise_for_status=True) as session:
            srv.answers.append(Answer(404, _error(404, 16, "message does not exist")))
            async with backend(srv.base_url, session=session) as b:
                with pytest.raises(BackendError) as info:
                    await _call(b, "delete_message")
                return info.value

    err = run(main())
    assert (type(err), err.status, err.code) == (BackendError, 404, 16)


# -- REST: no response ----------------------------------------------------------------------------

def _assert_no_response(err: BackendError) -> None:
    assert isinstance(err, NoResponse)
    assert err.status is None and err.code is None
    assert classify("send_message", err) is Outcome.RETRY


def test_refused_connection_is_no_response() -> None:
    async def main() -> BackendError:
        async with backend(f"http://127.0.0.1:{closed_port()}") as b:
            with pytest.raises(NoResponse) as info:
                await _call(b, "send_message")
            return info.value

    _assert_no_response(run(main()))


def test_server_hanging_up_without_an_answer_is_no_response() -> None:
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.close()

    async def main() -> BackendError:
        async with raw_server(hang_up) as url, backend(url) as b:
            with pytest.raises(NoResponse) as info:
                await _call(b, "send_message")
            return info.value

    _assert_no_response(run(main()))


def test_body_cut_short_is_no_response() -> None:
    async def half(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 100\r\n\r\n{\"message\":")
        await writer.drain()
        writer.close()

    async def main() -> BackendError:
        async with raw_server(half) as url, backend(url) as b:
            with pytest.raises(NoResponse) as info:
                await _call(b, "send_message")
            return info.value

    _assert_no_response(run(main()))


def test_timeout_is_no_response() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        await asyncio.sleep(5)

    async def main() -> tuple[BackendError, float]:
        async with raw_server(silent) as url, backend(url, timeout=0.3) as b:
            start = time.monotonic()
            with pytest.raises(NoResponse) as info:
                await _call(b, "send_message")
            return info.value, time.monotonic() - start

    err, took = run(main())
    _assert_no_response(err)
    assert took < 2.0


# -- WebSocket ------------------------------------------------------------------------------------

def health(connection_id: str = "conn-1") -> bytes:
    return msgspec.json.encode({"type": "health.check", "connection_id": connection_id,
                                "cid": "*", "created_at": "2026-11-25T10:00:00Z",
                                "me": {"id": USER, "total_unread_count": 3}})


def script(*frames: bytes | str, then: str = "wait") -> WsScript:
    """Upgrade, send `frames`, then: "wait" (read until the client goes), "silent" (neither
    read nor write), or "close:<code>" (close with that code after the client's first health
    check arrived)."""
    async def handler(request: web.Request, srv: Server) -> web.StreamResponse:
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        srv.sockets.append(ws)
        for frame in frames:
            if isinstance(frame, str):
                await ws.send_str(frame)
            else:
                await ws.send_bytes(frame)
        if then == "silent":
            await asyncio.sleep(5)
        elif then.startswith("close:"):
            msg = await ws.receive(timeout=5)
            srv.ws_received.append(msg.data)
            await ws.close(code=int(then.split(":")[1]), message=b"going away")
        else:
            async for msg in ws:
                if msg.type is aiohttp.WSMsgType.TEXT:
                    srv.ws_received.append(msg.data)
        srv.ws_closed.set()
        return ws
    return handler


def test_connect_request_and_first_frame() -> None:
    first = health("conn-77").decode()

    async def main() -> tuple[Server, bytes, str | None]:
        async with serve(script(first)) as srv:
            async with backend(srv.base_url, user_details={"id": USER, "name": "Alice"}) as b:
                stream = await b.connect()
                assert isinstance(stream, EventStream)
                frame = await stream.__aiter__().__anext__()
                return srv, frame, stream.connection_id

    srv, frame, connection_id = run(main())
    assert frame == first.encode() and connection_id == "conn-77"
    [seen] = srv.seen
    assert seen.raw_path == "/connect"
    assert seen.query["api_key"] == API_KEY
    assert seen.query["authorization"] == TOKEN
    assert seen.query["stream-auth-type"] == "jwt"
    assert msgspec.json.decode(seen.query["json"]) == {
        "user_id": USER, "user_details": {"id": USER, "name": "Alice"},
        "server_determines_connection_id": True}
    assert seen.headers["authorization"] == TOKEN
    assert seen.headers["stream-auth-type"] == "jwt"


def test_frames_are_yielded_verbatim_and_health_checks_sent() -> None:
    first = health().decode()
    text = '{"type":"message.new",  "cid":"messaging:general","message":{"text":"caf\u00e9 \u2713"}}'
    binary = b'{"type":"custom.event","x":"\\u00e9"}'
    later_health = health().decode()

    async def main() -> tuple[Server, list[bytes], BaseException]:
        async with serve(script(first, text, binary, later_health, then="close:4001")) as srv:
            async with backend(srv.base_url, health_interval=0.05) as b:
                stream = await b.connect()
                frames: list[bytes] = []
                with pytest.raises(ConnectionLost) as info:
                    async for frame in stream:
                        frames.append(frame)
                assert b.connection_id is None  # a lost stream is forgotten
                return srv, frames, info.value

    srv, frames, lost = run(main())
    assert frames == [first.encode(), text.encode(), binary, later_health.encode()]
    assert msgspec.json.decode(srv.ws_received[0]) == {"type": "health.check",
                                                       "client_id": "conn-1"}
    assert "4001" in str(lost) and "going away" in str(lost)
    assert classify("send_message", lost) is Outcome.RETRY


def test_silent_server_is_detected_as_dead() -> None:
    async def main() -> tuple[float, BaseException, bool]:
        async with serve(script(health(), then="silent")) as srv:
            async with backend(srv.base_url, health_interval=0.1, dead_after=0.4) as b:
                stream = await b.connect()
                start = time.monotonic()
                with pytest.raises(ConnectionLost) as info:
                    async for _ in stream:
                        pass
                took = time.monotonic() - start
                return took, info.value, stream._ws.closed

    took, lost, closed = run(main())
    assert 0.35 <= took < 1.5
    assert "0.4" in str(lost) and closed


def test_default_dead_after() -> None:
    assert backend("http://x", health_interval=10).dead_after == 25
    assert backend("http://x").dead_after == 55


def test_close_ends_iteration_quietly() -> None:
    async def main() -> tuple[list[bytes], Server]:
        async with serve(script(health())) as srv:
            async with backend(srv.base_url) as b:
                stream = await b.connect()
                frames: list[bytes] = []

                async def consume() -> None:
                    async for frame in stream:
                        frames.append(frame)

                task = asyncio.create_task(consume())
                await asyncio.sleep(0.05)
                await stream.close()
                await asyncio.wait_for(task, 2)   # ends without ConnectionLost
                await asyncio.wait_for(srv.ws_closed.wait(), 2)
                await stream.close()              # twice is harmless
                return frames, srv

    frames, _ = run(main())
    assert frames == [health()]


def test_backend_close_closes_its_streams_and_connect_again_works() -> None:
    async def main() -> None:
        async with serve(script(health("c1"))) as srv:
            b = backend(srv.base_url)
            one = await b.connect()
            assert b.connection_id == "c1"
            srv.ws_script = script(health("c2"))
            two = await b.connect()
            assert b.connection_id == "c2"
            await b.query_channels({}, watch=True)
            await b.query_channels({}, watch=False)
            await two.close()
            assert b.connection_id == "c1"
            await b.close()
            assert one.closed and two.closed
            assert b.connection_id is None
            watched, unwatched = srv.seen[2:]
            assert watched.query == {"api_key": API_KEY, "connection_id": "c2"}
            assert unwatched.query == {"api_key": API_KEY}

    run(main())


def test_handshake_refused_with_401() -> None:
    body = _error(401, 40, "JWTAuth error: token has expired")

    async def refuse(request: web.Request, srv: Server) -> web.StreamResponse:
        return web.Response(status=401, body=body, content_type="application/json")

    async def main() -> BackendError:
        async with serve(refuse) as srv, backend(srv.base_url) as b:
            with pytest.raises(BackendError) as info:
                await b.connect()
            return info.value

    err = run(main())
    assert not isinstance(err, NoResponse)
    assert (err.status, err.code, err.body) == (401, 40, body)
    assert classify("send_message", err) is Outcome.REFRESH_TOKEN


def test_first_frame_error_object() -> None:
    frame = msgspec.json.encode({"error": {"code": 99, "message": "app suspended",
                                           "StatusCode": 403}})

    async def main() -> BackendError:
        async with serve(script(frame.decode())) as srv, backend(srv.base_url) as b:
            with pytest.raises(BackendError) as info:
                await b.connect()
            return info.value

    err = run(main())
    assert (err.status, err.code, err.message, err.body) == (403, 99, "app suspended", frame)
    assert classify("send_message", err) is Outcome.STOP


def test_first_frame_not_a_health_check() -> None:
    async def main() -> BackendError:
        async with serve(script('{"type":"message.new"}')) as srv, backend(srv.base_url) as b:
            with pytest.raises(BackendError) as info:
                await b.connect()
            return info.value

    assert "message.new" in run(main()).message


def test_connect_refused_is_no_response() -> None:
    async def main() -> None:
        async with backend(f"http://127.0.0.1:{closed_port()}") as b:
            with pytest.raises(NoResponse):
                await b.connect()

    run(main())


# -- configuration --------------------------------------------------------------------------------

def _jwt(claims: dict[str, Any]) -> str:
    import base64
    part = base64.urlsafe_b64encode(msgspec.json.encode(claims)).rstrip(b"=").decode()
    return f"eyJhbGciOiJIUzI1NiJ9.{part}.sig"


def test_from_env() -> None:
    token = _jwt({"user_id": "bob"})
    b = StreamBackend.from_env({"CHATLEDGER_API_KEY": "k", "CHATLEDGER_TOKEN": token},
                               timeout=3.0)
    assert (b.base_url, b.api_key, b.user_id, b.timeout) == (
        "https://chat.stream-io-api.com", "k", "bob", 3.0)
    b = StreamBackend.from_env({"CHATLEDGER_BASE_URL": "http://127.0.0.1:9/",
                                "CHATLEDGER_API_KEY": "k", "CHATLEDGER_TOKEN": "t",
                                "CHATLEDGER_USER_ID": "carol"})
    assert (b.base_url, b.user_id) == ("http://127.0.0.1:9", "carol")
    with pytest.raises(ValueError, match="CHATLEDGER_TOKEN"):
        StreamBackend.from_env({"CHATLEDGER_API_KEY": "k"})
    with pytest.raises(ValueError, match="CHATLEDGER_USER_ID"):
        StreamBackend.from_env({"CHATLEDGER_API_KEY": "k", "CHATLEDGER_TOKEN": "opaque"})
    assert user_id_from_token(_jwt({"user_id": "dave", "exp": 1})) == "dave"
    assert user_id_from_token("not-a-jwt") is None


# -- against the development server ---------------------------------------------------------------

def _devserver() -> Any:
    from chatledger.sync.devserver import DevServer
    return DevServer(seed="demo")


def test_devserver_send_and_duplicate() -> None:
    async def main() -> tuple[bytes, BackendError, BackendError]:
        async with _devserver() as dev:
            token = dev.make_token("alice")
            async with StreamBackend(dev.url, dev.api_key, token, "alice") as b:
                body = await b.send_message("messaging:general",
                                            {"id": "adapter-1", "text": "hi from the adapter",
                                             "custom_key": [1, 2]})
                with pytest.raises(BackendError) as dup:
                    await b.send_message("messaging:general",
                                         {"id": "adapter-1", "text": "again"})
                with pytest.raises(BackendError) as gone:
                    await b.delete_message("never-existed")
                return body, dup.value, gone.value

    body, dup, gone = run(main())
    message = msgspec.json.decode(body)["message"]
    assert (message["id"], message["text"], message["custom_key"]) == (
        "adapter-1", "hi from the adapter", [1, 2])
    assert (dup.status, dup.code) == (400, 4) and "already exists" in dup.message
    assert classify("send_message", dup) is Outcome.DELIVERED
    assert (gone.status, gone.code) == (404, 16)
    assert classify("delete_message", gone) is Outcome.DELIVERED


def test_devserver_websocket_first_frame_and_events() -> None:
    async def main() -> tuple[tuple[bytes, str | None], list[Any]]:
        async with _devserver() as dev:
            alice = StreamBackend(dev.url, dev.api_key, dev.make_token("alice"), "alice")
            bob = StreamBackend(dev.url, dev.api_key, dev.make_token("bob"), "bob")
            async with alice, bob:
                stream = await alice.connect()
                frames = aiter(stream)
                first = await anext(frames)
                await bob.send_message("messaging:alice-bob", {"id": "ws-1", "text": "ping"})
                events = []
                while True:
                    event = msgspec.json.decode(await asyncio.wait_for(anext(frames), 5))
                    events.append(event)
                    if event.get("type") == "message.new":
                        break
                await stream.close()
                return (first, stream.connection_id), events

    (first, connection_id), events = run(main())
    head = msgspec.json.decode(first)
    assert head["type"] == "health.check" and head["connection_id"] == connection_id
    assert events[-1]["message"]["id"] == "ws-1"


def test_devserver_expired_token() -> None:
    async def main() -> tuple[BackendError, BackendError]:
        async with _devserver() as dev:
            token = dev.make_token("alice", expires_at=time.time() - 60)
            async with StreamBackend(dev.url, dev.api_key, token, "alice") as b:
                with pytest.raises(BackendError) as rest:
                    await b.mark_read("messaging:general")
                with pytest.raises(BackendError) as ws:
                    await b.connect()
                return rest.value, ws.value

    rest, ws = run(main())
    assert (rest.status, rest.code) == (401, 40)
    assert (ws.status, ws.code) == (401, 40)
    assert classify("mark_read", rest) is Outcome.REFRESH_TOKEN
    assert classify("mark_read", ws) is Outcome.REFRESH_TOKEN


def test_devserver_reads_and_actions() -> None:
    async def main() -> dict[str, Any]:
        async with _devserver() as dev:
            async with StreamBackend(dev.url, dev.api_key, dev.make_token("alice"), "alice") as b:
                stream = await b.connect()
                out: dict[str, Any] = {}
                out["channels"] = await b.query_channels(
                    {"members": {"$in": ["alice"]}}, [{"field": "last_message_at",
                                                       "direction": -1}], limit=10)
                out["channel"] = await b.query_channel("messaging:general", messages_limit=2)
                await b.send_reaction("demo-hello", {"type": "like", "score": 1})
                await b.delete_reaction("demo-hello", "like")
                await b.partial_update_message("demo-welcome", set={"pinned_note": 1}, unset=[])
                await b.update_message({"id": "demo-quote", "text": "edited"})
                await b.mark_read("messaging:general", message_id="demo-quote")
                await b.mark_unread("messaging:general", message_id="demo-hello")
                await b.save_draft("messaging:random", {"text": "later"})
                await b.delete_draft("messaging:random")
                await b.delete_message("demo-dm-2", hard=True)
                since = datetime.fromtimestamp(time.time() - 3600, timezone.utc)
                out["sync"] = await b.sync(["messaging:general", "messaging:alice-bob"],
                                           since.strftime("%Y-%m-%dT%H:%M:%S.%fZ"))
                with pytest.raises(BackendError) as too_old:
                    await b.sync(["messaging:general"], "2020-01-01T00:00:00Z")
                out["too_old"] = too_old.value
                await stream.close()
                return out

    out = run(main())
    cids = [c["channel"]["cid"] for c in msgspec.json.decode(out["channels"])["channels"]]
    assert "messaging:general" in cids
    assert len(msgspec.json.decode(out["channel"])["messages"]) == 2
    events = msgspec.json.decode(out["sync"])["events"]
    assert "message.deleted" in {e["type"] for e in events}
    assert out["too_old"].status == 400


def test_devserver_injected_faults() -> None:
    async def main() -> dict[str, BaseException]:
        got: dict[str, BaseException] = {}
        async with _devserver() as dev:
            token = dev.make_token("alice")
            async with StreamBackend(dev.url, dev.api_key, token, "alice", timeout=0.5) as b:
                for spec in ("send_message:rate_limit=10:times=1",
                             "send_message:error5xx:times=1",
                             "send_message:drop:times=1",
                             "send_message:timeout=5:times=1",
                             # times=2: aiohttp itself retries an idempotent request
                             # (the upgrade GET) once when the server hangs up
                             "connect:refuse:times=2"):
                    dev.faults.add_spec(spec)
                    with pytest.raises(BackendError) as info:
                        if spec.startswith("connect"):
                            await b.connect()
                        else:
                            await b.send_message("messaging:general",
                                                 {"id": "fault-1", "text": "x"})
                    got[spec.split(":")[1].split("=")[0]] = info.value
                # The server closing the WebSocket (here: triggered by a call) ends the stream.
                stream = await b.connect()
                dev.faults.add_spec("mark_read:close_ws:times=1")
                await b.mark_read("messaging:general")
                with pytest.raises(ConnectionLost) as lost:
                    async for _ in stream:
                        pass
                got["close_ws"] = lost.value
                # after the faults, the same id goes through (or was already applied)
                try:
                    await b.send_message("messaging:general", {"id": "fault-1", "text": "x"})
                except BackendError as err:
                    assert classify("send_message", err) is Outcome.DELIVERED
        return got

    before = time.time()
    got = run(main())
    limited = got["rate_limit"]
    assert isinstance(limited, BackendError) and (limited.status, limited.code) == (429, 9)
    assert limited.retry_at is not None and limited.retry_at >= before + 5
    assert (got["error5xx"].status, got["error5xx"].code) == (500, -1)
    assert "1001" in str(got["close_ws"])
    for kind in ("drop", "timeout", "refuse", "close_ws"):
        assert isinstance(got[kind], NoResponse), (kind, got[kind])
    assert all(classify("send_message", e) is Outcome.RETRY for e in got.values())
