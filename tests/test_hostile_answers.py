"""The sync room's trust promises against classes of backend faults the other suites do not
script: a misbehaving backend never makes the store skip data, never gets an action counted as
delivered without confirming it, never moves `last_sync_at` over what was not stored, never
loses or double-sends a pending action, and never crashes the client.

Everything talks to `HostileServer` (tests/hostile_server.py) or a raw TCP server on
127.0.0.1; every loop is bounded.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest
from aiohttp import web

from chatledger import ChatStore
from chatledger.eventstore.wire.times import format_time
from chatledger.sync.backend import BackendError, UnusableAnswer
from chatledger.sync.client import SyncClient
from chatledger.sync.http import parse_retry_at
from chatledger.sync.outcomes import Backoff, Outcome, classify
from chatledger.sync.replayer import Replayer
from chatledger.sync.stream import StreamBackend
from fixtures import channel_state, message_new, query_channels_response
from hostile_server import API_KEY, GENERAL, TOKEN, HostileServer, Handler, json_response
from reliability import run_async

FAST = Backoff(base=0.01, cap=0.02)
DEEP = b"[" * 5000 + b"]" * 5000  # deeper than any JSON decoder's stack


def at(seconds_ago: float) -> str:
    return format_time(int((time.time() - seconds_ago) * 1_000_000))


def backend(url: str, **options: Any) -> StreamBackend:
    options.setdefault("timeout", 3.0)
    return StreamBackend(url, API_KEY, TOKEN, "alice", health_interval=5.0, **options)


async def run_until(client: SyncClient, done: Callable[[], bool], tries: int = 300) -> None:
    """Run `client` until `done()` (or it stops by itself), then stop it; raises what crashed
    it, if anything did."""
    stop = asyncio.Event()
    task = asyncio.create_task(client.run(stop))
    for _ in range(tries):
        if done() or task.done():
            break
        await asyncio.sleep(0.02)
    stop.set()
    await asyncio.wait_for(task, 10)


def synced_store(tmp_path: Path, since: str, cids: list[str] | None = None) -> ChatStore:
    store = ChatStore.open(tmp_path, "alice")
    store.ingest_query_channels(query_channels_response(cids or [GENERAL]))
    store.mark_synced(since)
    return store


def raw(status: int, body: bytes, headers: dict[str, str] | None = None,
        content_type: str = "application/json") -> Handler:
    """This status and these exact bytes."""
    async def answer(server: HostileServer, request: web.Request,
                     body_in: dict[str, Any]) -> web.StreamResponse:
        return web.Response(status=status, body=body, headers=headers or {},
                            content_type=content_type)
    return answer


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


# --------------------------------------------------------------------------------------------
# Bodies no decoder can read whole never crash a call: they are an error with the status.

@pytest.mark.parametrize("status", [400, 429, 500, 503])
def test_an_error_answer_nested_past_the_decoder_is_an_error_not_a_crash(
        tmp_path: Path, status: int) -> None:
    """A gateway's error page that is JSON nested thousands deep: the call fails with its
    status (and the outcome table decides), it does not raise a RecursionError out of the
    adapter into the replayer."""
    store = ChatStore.open(tmp_path, "alice")
    store.ingest_query_channels(query_channels_response([GENERAL]))
    store.send_message(GENERAL, "hello", id="m-1")
    with HostileServer() as server:
        server.answer("send_message", raw(status, b'{"code": 9, "x": ' + DEEP + b"}"))

        async def main() -> Any:
            async with backend(server.url) as chat:
                return await Replayer(store, chat, backoff=FAST).replay()

        report = run_async(main(), 30)
    [command] = store.outbox.pending() or store.outbox.conflicts()
    if status == 400:
        assert report.rejected == 1 and report.delivered == 0
    else:
        assert report.retrying == 1 and report.delivered == 0
        assert command.last_error["status"] == status
    store.close()


def test_a_websocket_frame_nested_past_the_decoder_costs_only_itself(tmp_path: Path) -> None:
    """A frame after the first nested thousands deep: quarantined, the frames after it
    stored, the client still running."""
    store = synced_store(tmp_path, at(3600))
    with HostileServer() as server:
        server.frames = [message_new(GENERAL, "before", "before", at=at(3)),
                         b'{"type": "message.new", "created_at": "' + at(2).encode()
                         + b'", "x": ' + DEEP + b"}",
                         DEEP,
                         message_new(GENERAL, "after", "after", at=at(1))]

        async def main() -> None:
            async with backend(server.url) as chat:
                client = SyncClient(store, chat, backoff=FAST, reconnect_backoff=FAST)
                await run_until(client, lambda: store.message("after") is not None)
                assert client.status.quarantined == 2

        run_async(main(), 60)
    assert store.message("before") is not None and store.message("after") is not None
    store.close()


# --------------------------------------------------------------------------------------------
# A time the backend names holds a command back for a bounded while, never for good.

NOW = 1_800_000_000.0


@pytest.mark.parametrize("headers", [
    {"Retry-After": "1e12"},                                  # 31,000 years
    {"Retry-After": "inf"},
    {"Retry-After": "1e999"},
    {"Retry-After": "nan"},
    {"Retry-After": "Fri, 31 Dec 9999 23:59:59 GMT"},         # an HTTP date, far away
    {"X-RateLimit-Reset": str(int(NOW * 1000))},              # milliseconds, not seconds
    {"X-RateLimit-Reset": "inf"},
    {"X-RateLimit-Reset": "nan"},
    {"X-RateLimit-Reset": "-1e999"},
], ids=lambda h: "-".join(f"{k}={v}" for k, v in h.items()))
def test_a_named_retry_time_is_honoured_only_within_bounds(headers: dict[str, str]) -> None:
    retry_at = parse_retry_at(headers, 429, NOW)
    error = BackendError("Too many requests", status=429, code=9, retry_at=retry_at)
    assert classify("send_message", error) is Outcome.RETRY
    backoff = Backoff(base=0.01, cap=0.02)
    at = backoff.next_try(1, NOW, error)
    assert NOW <= at <= NOW + backoff.max_backend_wait  # finite: the command is tried again


def test_a_rate_limit_reset_in_milliseconds_does_not_park_the_command(tmp_path: Path) -> None:
    """429 with `X-RateLimit-Reset` in milliseconds (a broken gateway): the command waits at
    most the bounded time, then goes, and is delivered once."""
    store = ChatStore.open(tmp_path, "alice")
    store.ingest_query_channels(query_channels_response([GENERAL]))
    store.send_message(GENERAL, "hello", id="m-1")
    clock = Clock()
    reset = str(int(time.time() * 1000))
    with HostileServer() as server:
        server.answer("send_message", raw(429, b'{"code": 9, "message": "Too many requests", '
                                               b'"StatusCode": 429}',
                                          {"X-RateLimit-Reset": reset}))

        async def main() -> None:
            async with backend(server.url) as chat:
                replayer = Replayer(store, chat, backoff=FAST, clock=clock)
                first = await replayer.replay()
                assert first.retrying == 1
                [pending] = store.outbox.pending()
                assert pending.next_try_at is not None
                assert pending.next_try_at <= clock.now + FAST.max_backend_wait
                clock.now += FAST.max_backend_wait + 1
                second = await replayer.replay()
                assert second.delivered == 1

        run_async(main(), 30)
    assert store.outbox.pending() == [] and store.message("m-1").local_state is None
    assert len(server.calls_to("send_message")) == 2
    store.close()


# --------------------------------------------------------------------------------------------
# "Already gone" confirms a removal only when it is the backend's own answer.

@pytest.mark.parametrize("answer", [
    raw(404, b"<html><body>404 Not Found</body></html>", content_type="text/html"),
    raw(404, b"", content_type="text/plain"),
    raw(404, b'{"message": "no route"}'),
], ids=["proxy-html", "empty", "json-without-code"])
@pytest.mark.parametrize("kind", ["delete_message", "delete_reaction"])
def test_a_404_that_is_not_streams_does_not_confirm_a_removal(
        tmp_path: Path, kind: str, answer: Handler) -> None:
    store = ChatStore.open(tmp_path, "alice")
    store.ingest_query_channels(query_channels_response([GENERAL]))
    mid = f"{GENERAL}-m0"
    if kind == "delete_message":
        store.delete_message(mid)
    else:
        store.send_reaction(mid, "like")
        with HostileServer() as server:  # the reaction is delivered first
            async def send() -> Any:
                async with backend(server.url) as chat:
                    return await Replayer(store, chat, backoff=FAST).replay()
            assert run_async(send(), 30).delivered == 1
        store.delete_reaction(mid, "like")
    with HostileServer() as server:
        server.answer(kind, answer)

        async def main() -> Any:
            async with backend(server.url) as chat:
                return await Replayer(store, chat, backoff=FAST).replay()

        report = run_async(main(), 30)
    assert report.delivered == 0
    [command] = store.outbox.pending() or store.outbox.conflicts()
    assert command.kind == kind and command.status != "succeeded"
    store.close()


def test_streams_own_404_still_confirms_a_removal(tmp_path: Path) -> None:
    store = ChatStore.open(tmp_path, "alice")
    store.ingest_query_channels(query_channels_response([GENERAL]))
    store.delete_message(f"{GENERAL}-m0")
    with HostileServer() as server:
        server.answer("delete_message", raw(404, b'{"code": 16, "message": "message does not '
                                                 b'exist", "StatusCode": 404}'))

        async def main() -> Any:
            async with backend(server.url) as chat:
                return await Replayer(store, chat, backoff=FAST).replay()

        assert run_async(main(), 30).delivered == 1
    assert store.outbox.pending() == [] and store.outbox.conflicts() == []
    store.close()


# --------------------------------------------------------------------------------------------
# A channel queried again after "too old" counts as caught up only when the answer is about it.

async def OTHER_CHANNEL(server: HostileServer, request: web.Request,
                        body: dict[str, Any]) -> web.StreamResponse:
    """A channel query answered with another channel's state (a cache keyed wrongly)."""
    return json_response(channel_state("messaging:elsewhere"))


def test_a_requery_answered_with_another_channel_keeps_the_sync_point(tmp_path: Path) -> None:
    since = at(3600)
    store = synced_store(tmp_path, since)
    with HostileServer() as server:
        server.answer("sync", raw(400, b'{"code": 4, "message": "last_sync_at is too old", '
                                       b'"StatusCode": 400}'))
        server.answer("query_channel", OTHER_CHANNEL)

        async def main() -> None:
            async with backend(server.url) as chat:
                client = SyncClient(store, chat, backoff=FAST, reconnect_backoff=FAST)
                with pytest.raises(BackendError):
                    await client.run_once()
                assert store.last_sync_at() == since  # #general was not brought up to date
                report = await client.run_once()      # proper answers: it is
                assert report.requeried == [] and store.last_sync_at() == report.synced_at

        run_async(main(), 30)
    store.close()


# --------------------------------------------------------------------------------------------
# Whatever comes back on the socket, a call ends with an answer or a BackendError.

class RawServer:
    """A TCP server on 127.0.0.1 that reads one request head, writes `reply` and hangs up."""

    def __init__(self, reply: bytes) -> None:
        self.reply = reply
        self.url = ""
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> RawServer:
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(8)
        self._sock.settimeout(0.1)
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}"
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()
        return self

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                continue
            with conn:
                conn.settimeout(2)
                try:
                    data = b""
                    while b"\r\n\r\n" not in data:
                        chunk = conn.recv(65536)
                        if not chunk:
                            break
                        data += chunk
                    conn.sendall(self.reply)
                except OSError:
                    pass

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        self._sock.close()


OK_HEAD = b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\n"
MALFORMED_HTTP = {
    "not-http": b"garbage garbage\r\n\r\n",
    "tls-bytes": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 64,
    "status-999": b"HTTP/1.1 999 Weird\r\nContent-Length: 2\r\n\r\n{}",
    "status-0": b"HTTP/1.1 000 Zero\r\nContent-Length: 2\r\n\r\n{}",
    "body-cut-short": OK_HEAD + b"Content-Length: 100\r\n\r\n{\"message\": {\"id\": \"m-1\"",
    "negative-length": OK_HEAD + b"Content-Length: -5\r\n\r\n{}",
    "length-not-a-number": OK_HEAD + b"Content-Length: abc\r\n\r\n{}",
    "two-lengths": OK_HEAD + b"Content-Length: 2\r\nContent-Length: 30\r\n\r\n{}",
    "bad-chunk": OK_HEAD + b"Transfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n",
    "gzip-not-gzip": OK_HEAD + b"Content-Encoding: gzip\r\nContent-Length: 5\r\n\r\nnotgz",
    "deflate-not-deflate": OK_HEAD + b"Content-Encoding: deflate\r\nContent-Length: 5\r\n\r\nnotdf",
    "br-not-br": OK_HEAD + b"Content-Encoding: br\r\nContent-Length: 5\r\n\r\nnotbr",
    "unknown-encoding": OK_HEAD + b"Content-Encoding: x-mystery\r\nContent-Length: 2\r\n\r\n{}",
    "header-line-too-long": OK_HEAD + b"X-Pad: " + b"a" * 200_000 + b"\r\n\r\n{}",
    "too-many-headers": OK_HEAD + b"".join(b"X-%d: 1\r\n" % i for i in range(20_000))
    + b"\r\n{}",
    "non-latin-header": b"HTTP/1.1 429 Slow\r\nRetry-After: \xff\xfe\xfd\r\n"
                        b"X-RateLimit-Reset: \xc3\xa9\r\nContent-Length: 2\r\n\r\n{}",
    "bad-charset": OK_HEAD.replace(b"json", b"json; charset=\xff-nope")
    + b"Content-Length: 2\r\n\r\n{}",
    "switching-protocols": b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                           b"Connection: Upgrade\r\n\r\n",
    "continue-then-nothing": b"HTTP/1.1 100 Continue\r\n\r\n",
    "http-0.9": b"{\"message\": {\"id\": \"m-1\"}}",
    "nul-in-status": b"HTTP/1.1 200\x00OK\r\nContent-Length: 2\r\n\r\n{}",
}


@pytest.mark.parametrize("reply", list(MALFORMED_HTTP.values()), ids=list(MALFORMED_HTTP))
def test_a_malformed_http_answer_is_a_backend_error_never_a_crash(reply: bytes) -> None:
    async def main() -> list[Any]:
        results: list[Any] = []
        async with backend(raw_server.url, timeout=2.0) as chat:
            for call in (lambda: chat.send_message(GENERAL, {"id": "m-1", "text": "hi"}),
                         lambda: chat.delete_message("m-1"),
                         lambda: chat.sync([GENERAL], at(60))):
                try:
                    results.append(await call())
                except BackendError as error:
                    results.append(error)
        return results

    with RawServer(reply) as raw_server:
        results = run_async(main(), 30)
    for result in results:
        # Either bytes the caller judges (answers.py), or an error the outcome table reads.
        assert isinstance(result, (bytes, BackendError)), result
        if isinstance(result, BackendError) and result.status is not None \
                and result.status < 400:
            # Not an answer of the chat API, and no refusal either: nothing is rejected for it.
            assert isinstance(result, UnusableAnswer), result
            assert classify("send_message", result) is Outcome.RETRY


# --------------------------------------------------------------------------------------------
# A 2xx that carries a refusal: moderation answers a blocked message with `type: "error"`.

@pytest.mark.parametrize("kind", ["send", "update"])
def test_a_message_blocked_by_moderation_is_a_conflict_not_delivered(
        tmp_path: Path, kind: str) -> None:
    store = ChatStore.open(tmp_path, "alice")
    store.ingest_query_channels(query_channels_response([GENERAL]))
    if kind == "send":
        mid, route = "m-1", "send_message"
        store.send_message(GENERAL, "buy cheap pills", id=mid)
    else:
        mid, route = f"{GENERAL}-m0", "update_message"
        store.update_message(mid, "buy cheap pills")
    blocked = {"message": {"id": mid, "cid": GENERAL, "type": "error",
                           "text": "Message was blocked by moderation policies",
                           "moderation_details": {"action": "MESSAGE_RESPONSE_ACTION_BOUNCE"},
                           "created_at": at(0), "updated_at": at(0), "user": {"id": "alice"}},
               "duration": "1ms"}
    with HostileServer() as server:
        server.always(route, raw(201, msgspec.json.encode(blocked)))

        async def main() -> Any:
            async with backend(server.url) as chat:
                return await Replayer(store, chat, backoff=FAST).replay()

        report = run_async(main(), 30)
    assert report.delivered == 0 and report.rejected == 1
    assert store.outbox.pending() == []
    [conflict] = store.outbox.conflicts()
    assert "blocked by moderation" in conflict.reason
    assert store.message(mid).local_state in ("send_failed", "update_failed")
    assert len(server.calls_to(route)) == 1
    store.close()


# --------------------------------------------------------------------------------------------
# A channel id the backend gave that no query can name does not stop a catch-up.

def test_a_stored_channel_without_a_type_does_not_crash_a_requery(tmp_path: Path) -> None:
    """The backend once filed a channel whose cid has no `type:` part; a "too old" answer
    queries the channels again: the others are brought up to date, the odd one stays as it
    was, and the call neither crashes nor raises anything but a BackendError."""
    since = at(3600)
    store = ChatStore.open(tmp_path, "alice")
    odd = channel_state(GENERAL)
    odd["channel"].update(cid="nocolon", type="", id="nocolon")
    for item in odd["messages"]:
        item["cid"] = "nocolon"
        item["id"] = "odd-" + item["id"]
    store.ingest_query_channels(msgspec.json.encode(
        {"channels": [odd, channel_state(GENERAL)]}))
    store.mark_synced(since)
    assert "nocolon" in store.channel_ids_to_sync()
    with HostileServer() as server:
        server.answer("sync", raw(400, b'{"code": 4, "message": "too old", "StatusCode": 400}'))

        async def main() -> Any:
            async with backend(server.url) as chat:
                return await SyncClient(store, chat, backoff=FAST).run_once()

        report = run_async(main(), 30)
    assert report.requeried == [GENERAL]
    assert [body["id"] for body in server.calls_to("query_channel")] == ["general"]
    assert store.last_sync_at() == report.synced_at
    store.close()


# --------------------------------------------------------------------------------------------
# A read's list that is not a list (null included) is a failed attempt, never "nothing new".

@pytest.mark.parametrize("body", [b'{"events": null, "duration": "1ms"}',
                                  b'{"events": {"0": {}}, "duration": "1ms"}',
                                  b'{"events": true}'],
                         ids=["null", "object", "boolean"])
def test_a_sync_answer_whose_events_are_not_a_list_keeps_the_sync_point(
        tmp_path: Path, body: bytes) -> None:
    since = at(3600)
    store = synced_store(tmp_path, since)
    with HostileServer() as server:
        server.events.append(message_new(GENERAL, "bob-away", "x", at=at(1800), uid="bob"))
        server.answer("sync", raw(201, body))

        async def main() -> None:
            async with backend(server.url) as chat:
                client = SyncClient(store, chat, backoff=FAST)
                with pytest.raises(UnusableAnswer):
                    await client.run_once()
                assert store.last_sync_at() == since
                await client.run_once()

        run_async(main(), 30)
    assert store.message("bob-away") is not None
    assert server.sync_asked[0] == server.sync_asked[1] == since
    store.close()


@pytest.mark.parametrize("body", [b'{"channels": null, "duration": "1ms"}',
                                  b'{"channels": "none"}'], ids=["null", "string"])
def test_a_first_load_whose_channels_are_not_a_list_sets_no_sync_point(
        tmp_path: Path, body: bytes) -> None:
    """Else the store holds a sync point and no channels: later syncs have nothing to ask
    for, and the channel list never loads."""
    store = ChatStore.open(tmp_path, "alice")
    with HostileServer() as server:
        server.answer("query_channels", raw(201, body))

        async def main() -> Any:
            async with backend(server.url) as chat:
                client = SyncClient(store, chat, backoff=FAST)
                with pytest.raises(UnusableAnswer):
                    await client.run_once()
                assert store.last_sync_at() is None
                return await client.run_once()

        report = run_async(main(), 30)
    assert report.loaded == [GENERAL] and store.channel_ids_to_sync() == [GENERAL]
    store.close()


# --------------------------------------------------------------------------------------------
# Every stored channel is caught up (in calls of at most 255), or the sync point skips some.

def test_a_catch_up_covers_every_stored_channel_in_chunks_of_255(tmp_path: Path) -> None:
    since = at(3600)
    cids = [f"messaging:c{n:03}" for n in range(300)]
    store = ChatStore.open(tmp_path, "alice")
    states = []
    for n, cid in enumerate(cids):  # c000 the least recently active
        state = channel_state(cid, messages=0)
        state["channel"]["last_message_at"] = format_time(
            int((time.time() - 7200 + n) * 1_000_000))
        states.append(state)
    store.ingest_query_channels(msgspec.json.encode({"channels": states}))
    store.mark_synced(since)
    with HostileServer(channels=cids) as server:
        server.events.append(message_new(cids[0], "quiet-one", "x", at=at(1800), uid="bob"))

        async def main() -> Any:
            async with backend(server.url) as chat:
                return await SyncClient(store, chat, backoff=FAST).run_once()

        report = run_async(main(), 60)
    asked = server.calls_to("sync")
    assert all(len(body["channel_cids"]) <= 255 for body in asked)
    assert sorted(cid for body in asked for cid in body["channel_cids"]) == cids
    assert report.calls == 2 and store.message("quiet-one") is not None
    assert store.last_sync_at() == report.synced_at
    store.close()


# --------------------------------------------------------------------------------------------
# A frame that arrives during the catch-up is newer than the /sync answer that comes after it.

def test_a_newer_frame_received_before_an_older_sync_answer_wins(tmp_path: Path) -> None:
    from fixtures import event, message

    since = at(3600)
    store = synced_store(tmp_path, since)
    old, new = at(1800), at(60)
    with HostileServer() as server:
        server.events.append(message_new(GENERAL, "m-x", "first words", at=old, uid="bob"))
        server.events.append(event("message.deleted", GENERAL, at=at(1700), message=message(
            "m-y", GENERAL, at=at(1750), type="deleted", deleted_at=at(1700))))
        # On the connection at once, long before /sync answers: the newer states.
        server.frames = [
            event("message.updated", GENERAL, at=new, message=message(
                "m-x", GENERAL, at=old, text="edited later", updated_at=new)),
            event("message.undeleted", GENERAL, at=new, message=message(
                "m-y", GENERAL, at=at(1750), text="back", updated_at=new)),
        ]

        async def main() -> None:
            async with backend(server.url) as chat:
                client = SyncClient(store, chat, backoff=FAST)
                await run_until(client, lambda: client.status.state == "online"
                                and client.status.frames >= 3)

        run_async(main(), 30)
    arrived = [entry.json()["type"] for entry in store.history(cid=GENERAL)
               if entry.json().get("message", {}).get("id") in ("m-x", "m-y")]
    assert arrived == ["message.updated", "message.undeleted", "message.new",
                       "message.deleted"]  # the newer states came first
    assert store.message("m-x").text == "edited later"
    assert store.message("m-y").text == "back" and store.message("m-y").deleted_at is None
    store.close()


# --------------------------------------------------------------------------------------------
# A reaction is confirmed by a reaction of the type asked for (docs/actions.md), not by any
# object; the message it names, when it names one, must be the one asked for.

@pytest.mark.parametrize("answer", [
    {"message": {"id": f"{GENERAL}-m0"}, "reaction": {}},
    {"message": {"id": f"{GENERAL}-m0"}, "reaction": {"message_id": f"{GENERAL}-m0"}},
    {"message": {"id": f"{GENERAL}-m0"}, "reaction": {"message_id": f"{GENERAL}-m0",
                                                       "type": 5}},
    {"message": {"id": f"{GENERAL}-m0"}, "reaction": {"message_id": 7, "type": "like"}},
], ids=["empty", "no-type", "type-not-a-string", "message-id-not-a-string"])
@pytest.mark.parametrize("kind", ["send_reaction", "delete_reaction"])
def test_a_reaction_answer_that_names_nothing_does_not_confirm(
        tmp_path: Path, kind: str, answer: dict[str, Any]) -> None:
    store = ChatStore.open(tmp_path, "alice")
    store.ingest_query_channels(query_channels_response([GENERAL]))
    mid = f"{GENERAL}-m0"
    store.send_reaction(mid, "like")
    with HostileServer() as server:
        if kind == "delete_reaction":
            async def send() -> Any:
                async with backend(server.url) as chat:
                    return await Replayer(store, chat, backoff=FAST).replay()
            assert run_async(send(), 30).delivered == 1
            store.delete_reaction(mid, "like")
        server.answer(kind, raw(201, msgspec.json.encode(answer)))

        async def main() -> Any:
            async with backend(server.url) as chat:
                return await Replayer(store, chat, backoff=FAST).replay()

        report = run_async(main(), 30)
    assert report.delivered == 0 and report.retrying == 1
    [pending] = store.outbox.pending()
    assert pending.kind == kind and "did not confirm" in pending.last_error["message"]
    store.close()


# --------------------------------------------------------------------------------------------
# A channel skipped on a requery must really be gone or forbidden, by the backend's own word.

TOO_OLD = raw(400, b'{"code": 4, "message": "last_sync_at is too old", "StatusCode": 400}')


@pytest.mark.parametrize("answer", [
    raw(403, b'{"code": 99, "message": "app suspended", "StatusCode": 403}'),
    raw(403, b'{"code": 60, "message": "cooldown", "StatusCode": 403}'),
    raw(403, b"<html>Forbidden by your network administrator</html>", content_type="text/html"),
    raw(404, b"<html>404 Not Found</html>", content_type="text/html"),
], ids=["app-suspended", "cooldown", "proxy-403", "proxy-404"])
def test_a_requery_refused_for_another_reason_keeps_the_sync_point(
        tmp_path: Path, answer: Handler) -> None:
    since = at(3600)
    store = synced_store(tmp_path, since)
    with HostileServer() as server:
        server.answer("sync", TOO_OLD)
        server.answer("query_channel", answer)

        async def main() -> None:
            async with backend(server.url) as chat:
                client = SyncClient(store, chat, backoff=FAST)
                with pytest.raises(BackendError):
                    await client.run_once()
                assert store.last_sync_at() == since

        run_async(main(), 30)
    store.close()


@pytest.mark.parametrize("answer", [
    raw(404, b'{"code": 16, "message": "channel does not exist", "StatusCode": 404}'),
    raw(403, b'{"code": 17, "message": "not allowed to read", "StatusCode": 403}'),
], ids=["gone", "not-allowed"])
def test_a_requery_of_a_channel_gone_or_forbidden_still_moves_on(
        tmp_path: Path, answer: Handler) -> None:
    since = at(3600)
    store = synced_store(tmp_path, since)
    with HostileServer() as server:
        server.answer("sync", TOO_OLD)
        server.answer("query_channel", answer)

        async def main() -> Any:
            async with backend(server.url) as chat:
                return await SyncClient(store, chat, backoff=FAST).run_once()

        report = run_async(main(), 30)
    assert report.requeried == [] and store.last_sync_at() == report.synced_at
    assert store.channel(GENERAL) is not None  # what the store had stays
    store.close()


# --------------------------------------------------------------------------------------------
# A running client waits as long as a rate limit says before connecting again.

def test_a_rate_limited_connect_waits_for_the_named_time(tmp_path: Path) -> None:
    store = synced_store(tmp_path, at(3600))
    with HostileServer() as server:
        server.always("connect", raw(429, b'{"code": 9, "message": "Too many requests", '
                                          b'"StatusCode": 429}', {"Retry-After": "30"}))

        async def main() -> None:
            async with backend(server.url) as chat:
                client = SyncClient(store, chat, backoff=FAST, reconnect_backoff=FAST)
                stop = asyncio.Event()
                task = asyncio.create_task(client.run(stop))
                await asyncio.sleep(1.0)  # with FAST alone: dozens of attempts
                stop.set()
                await asyncio.wait_for(task, 10)
                assert client.status.last_failure == "error"

        run_async(main(), 30)
    # The handshake, and the adapter's one plain GET to read the refusal's body.
    assert len(server.calls_to("connect")) <= 2
    store.close()


# --------------------------------------------------------------------------------------------
# An edit or a delete made after a send's answer was lost must reach the backend: the backend
# may have applied the send before its gateway answered 5xx, so neither may fold into it.

@pytest.mark.parametrize("gateway_status", [502, 504])
@pytest.mark.parametrize("action", ["edit", "delete"])
def test_an_action_after_a_lost_send_answer_reaches_the_backend(
        tmp_path: Path, action: str, gateway_status: int) -> None:
    store = ChatStore.open(tmp_path, "alice")
    store.ingest_query_channels(query_channels_response([GENERAL]))
    store.send_message(GENERAL, "hello", id="m-1")
    clock = Clock()

    async def applied_then_gateway_error(server: HostileServer, request: web.Request,
                                         body: dict[str, Any]) -> web.StreamResponse:
        await server.proper(request, body)  # the backend has it; the answer is lost on the way
        return web.Response(status=gateway_status, text="Gateway error")

    already = raw(400, b'{"code": 4, "message": "a message with id m-1 already exists", '
                       b'"StatusCode": 400}')
    with HostileServer() as server:
        server.answer("send_message", applied_then_gateway_error, already)

        async def main() -> None:
            async with backend(server.url) as chat:
                replayer = Replayer(store, chat, backoff=FAST, clock=clock)
                assert (await replayer.replay()).retrying == 1
                if action == "edit":
                    store.update_message("m-1", "hello, edited")
                else:
                    store.delete_message("m-1")
                for _ in range(3):
                    clock.now += 3600
                    await replayer.replay()

        run_async(main(), 30)
        assert store.outbox.pending() == []
        if action == "edit":
            assert store.message("m-1").text == "hello, edited"
            assert server.messages["m-1"]["text"] == "hello, edited"  # what the user sees
        else:
            assert [body["mid"] for body in server.calls_to("delete_message")] == ["m-1"]
    store.close()


# --------------------------------------------------------------------------------------------
# A `message` of the wrong kind, or an answer cut short, confirms no message action.

WRONG_MESSAGES = {
    "list": b'{"message": [{"id": "m-1"}]}',
    "number": b'{"message": 1}',
    "null": b'{"message": null}',
    "id-number": b'{"message": {"id": 1}}',
    "id-empty": b'{"message": {"id": ""}}',
    "truncated": b'{"message": {"id": "m-1", "text": "hel',
    "two-documents": b'{"message": {"id": "m-1"}}{"message": {"id": "m-1"}}',
}


@pytest.mark.parametrize("body", list(WRONG_MESSAGES.values()), ids=list(WRONG_MESSAGES))
def test_a_message_answer_of_the_wrong_kind_does_not_confirm_a_send(
        tmp_path: Path, body: bytes) -> None:
    store = ChatStore.open(tmp_path, "alice")
    store.ingest_query_channels(query_channels_response([GENERAL]))
    store.send_message(GENERAL, "hello", id="m-1")
    with HostileServer() as server:
        server.answer("send_message", raw(201, body))

        async def main() -> Any:
            async with backend(server.url) as chat:
                return await Replayer(store, chat, backoff=FAST).replay()

        report = run_async(main(), 30)
    assert report.delivered == 0 and report.retrying == 1
    assert store.message("m-1").local_state == "sending"
    store.close()


# --------------------------------------------------------------------------------------------
# A frame that claims a later moment than the backend's own clock is no end of a gap.

def test_a_frame_dated_ahead_of_the_backends_clock_does_not_move_the_sync_point(
        tmp_path: Path) -> None:
    """The first frame gives the backend's time; a later frame dated hours after it (junk, or
    a hostile server) is stored, but the sync point must not jump there: a reconnect would ask
    `/sync` from hours ahead and skip everything sent meanwhile."""
    store = synced_store(tmp_path, at(3600))
    with HostileServer() as server:
        server.frames = [message_new(GENERAL, "live", "now", at=at(0), uid="bob"),
                         message_new(GENERAL, "ahead", "from the future", at=at(-7200),
                                     uid="bob")]

        async def main() -> Any:
            async with backend(server.url) as chat:
                client = SyncClient(store, chat, backoff=FAST)
                await run_until(client, lambda: client.status.state == "online"
                                and client.status.frames >= 3)

        run_async(main(), 30)
    assert store.message("ahead") is not None and store.message("live") is not None
    assert store.last_sync_at() <= at(-120)  # not two hours ahead
    store.close()
