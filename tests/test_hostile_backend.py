"""Issue 14, the sync side: a backend that misbehaves never moves a sync point over data it did
not deliver, never gets an action counted as delivered without confirming it, never stops sync
with one bad value, and `chatledger sync` stays a well-behaved command-line tool.

Everything talks to `HostileServer` (tests/hostile_server.py) on 127.0.0.1; every loop is
bounded, and no assertion is about timing.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import msgspec
import pytest

from chatledger import ChatStore
from chatledger.eventstore.wire.times import format_time
from chatledger.sync.backend import BackendError
from chatledger.sync.client import SyncClient
from chatledger.sync.outcomes import Backoff
from chatledger.sync.replayer import Replayer
from chatledger.sync.stream import StreamBackend
from fixtures import message_new, query_channels_response, reaction_new, sync_response
from hostile_server import (
    API_KEY,
    ARRAY,
    ECHO,
    EMPTY_OBJECT,
    ERROR_BODY,
    GENERAL,
    HANG,
    HTML,
    REDIRECT,
    REFUSE_TOKEN,
    TEXT,
    TOKEN,
    WRONG_MESSAGE,
    HostileServer,
    TrickleServer,
    huge,
    trickle,
    value,
)
from reliability import run_async

FAST = Backoff(base=0.01, cap=0.02)
BIG = 2**70  # no SQLite integer holds it


def at(seconds_ago: float) -> str:
    return format_time(int((time.time() - seconds_ago) * 1_000_000))


def backend(server: HostileServer, **options: Any) -> StreamBackend:
    options.setdefault("timeout", 3.0)
    return StreamBackend(server.url, API_KEY, TOKEN, "alice", health_interval=5.0, **options)


def synced_store(tmp_path: Path, since: str) -> ChatStore:
    """Alice's store, holding #general and synced up to `since`."""
    store = ChatStore.open(tmp_path, "alice")
    store.ingest_query_channels(query_channels_response([GENERAL]))
    store.mark_synced(since)
    assert store.last_sync_at() == since
    return store


def bobs_message(mid: str, when: str) -> bytes:
    return message_new(GENERAL, mid, "sent while alice was away", at=when, uid="bob")


# --------------------------------------------------------------------------------------------
# 1. A sync point moves only over what was stored

# Ways a 2xx /sync answer can be unusable. The huge one is over the default cap (64 MiB), sent
# without a Content-Length so the client must stop reading by itself.
UNUSABLE_SYNC = {
    "captive-portal-html": HTML,
    "error-object-in-200": ERROR_BODY,
    "text-plain": TEXT,
    "json-array": ARRAY,
    "json-without-events": EMPTY_OBJECT,
    "events-not-a-list": value({"events": "none", "duration": "1ms"}),
    "redirect-302": REDIRECT,
}


@pytest.mark.parametrize("answer", list(UNUSABLE_SYNC), ids=list(UNUSABLE_SYNC))
def test_an_unusable_sync_answer_keeps_the_sync_point_and_the_next_sync_brings_the_gap(
        tmp_path: Path, answer: str) -> None:
    since = at(3600)
    store = synced_store(tmp_path, since)
    with HostileServer() as server:
        server.events.append(bobs_message("bob-away", at(1800)))
        server.answer("sync", UNUSABLE_SYNC[answer])

        async def main() -> None:
            async with backend(server) as chat:
                client = SyncClient(store, chat, backoff=FAST, reconnect_backoff=FAST)
                with pytest.raises(BackendError) as failed:
                    await client.run_once()
                assert "could not be used" in str(failed.value) or "redirect" in str(failed.value)
                assert store.last_sync_at() == since  # the old sync point stays
                [kept] = store.quarantine()
                assert kept.source == "sync" and kept.reason
                assert client.status.quarantined == 1
                # The backend answers properly again: one sync brings the gap.
                report = await client.run_once()
                assert store.message("bob-away") is not None
                assert server.sync_asked == [since, since]
                assert report.events == 1 and store.last_sync_at() == report.synced_at

        run_async(main(), 60)
    assert store.verify() == []
    store.close()


def test_a_sync_answer_over_the_size_cap_is_cut_off_quarantined_and_retried(tmp_path: Path) -> None:
    since = at(3600)
    store = synced_store(tmp_path, since)
    with HostileServer() as server:
        server.events.append(bobs_message("bob-away", at(1800)))
        server.answer("sync", huge(65 * 1024 * 1024))

        async def main() -> None:
            async with backend(server, timeout=30.0) as chat:
                client = SyncClient(store, chat, backoff=FAST, reconnect_backoff=FAST)
                with pytest.raises(BackendError):
                    await client.run_once()
                assert store.last_sync_at() == since
                [kept] = store.quarantine()
                assert kept.size <= 64 * 1024  # the head of it, not 65 MiB
                await client.run_once()
                assert store.message("bob-away") is not None

        run_async(main(), 120)
    store.close()


def test_the_size_cap_is_a_backend_option_and_a_declared_length_is_not_read(tmp_path: Path) -> None:
    since = at(3600)
    store = synced_store(tmp_path, since)
    with HostileServer() as server:
        server.answer("sync", huge(300_000, declared=True), huge(300_000))

        async def main() -> None:
            async with backend(server, max_answer_bytes=200_000) as chat:
                client = SyncClient(store, chat, backoff=FAST, reconnect_backoff=FAST)
                for _ in range(2):
                    with pytest.raises(BackendError, match="cap"):
                        await client.run_once()
                assert store.last_sync_at() == since

        run_async(main(), 60)
    # Both answers start alike: the head kept of the second is the first's, kept once.
    assert len(store.quarantine()) == 1
    store.close()


def test_a_running_sync_retries_an_unusable_answer_with_backoff_and_says_why(tmp_path: Path) -> None:
    since = at(3600)
    store = synced_store(tmp_path, since)
    with HostileServer() as server:
        server.events.append(bobs_message("bob-away", at(1800)))
        server.answer("sync", HTML, ERROR_BODY)
        seen: list[str] = []

        async def main() -> None:
            async with backend(server) as chat:
                client = SyncClient(store, chat, backoff=FAST, reconnect_backoff=FAST,
                                    on_status=lambda status: seen.append(status.last_error or ""))
                stop = asyncio.Event()
                task = asyncio.create_task(client.run(stop))
                for _ in range(500):
                    if store.message("bob-away") is not None and client.status.state == "online":
                        break
                    await asyncio.sleep(0.02)
                stop.set()
                await asyncio.wait_for(task, 10)
                assert store.message("bob-away") is not None
                assert client.status.reconnects >= 2

        run_async(main(), 60)
    assert any("not JSON" in error for error in seen)
    assert any("error object" in error and "code 4" in error for error in seen)
    assert len(store.quarantine()) == 2
    store.close()


def test_the_same_unusable_answer_on_every_retry_is_quarantined_once(tmp_path: Path) -> None:
    store = synced_store(tmp_path, at(3600))
    with HostileServer() as server:
        server.events.append(bobs_message("bob-away", at(1800)))
        server.answer("sync", HTML, HTML, HTML, HTML)

        async def main() -> None:
            async with backend(server) as chat:
                client = SyncClient(store, chat, backoff=FAST, reconnect_backoff=FAST)
                stop = asyncio.Event()
                task = asyncio.create_task(client.run(stop))
                for _ in range(500):
                    if store.message("bob-away") is not None and client.status.state == "online":
                        break
                    await asyncio.sleep(0.02)
                stop.set()
                await asyncio.wait_for(task, 10)
                assert client.status.reconnects >= 4 and client.status.quarantined == 1

        run_async(main(), 60)
    assert len(store.quarantine()) == 1 and store.message("bob-away") is not None
    store.close()


@pytest.mark.parametrize("answer", ["captive-portal-html", "error-object-in-200", "text-plain"])
def test_an_unusable_first_query_reports_no_loaded_channels_and_sets_no_sync_point(
        tmp_path: Path, answer: str) -> None:
    store = ChatStore.open(tmp_path, "alice")
    with HostileServer() as server:
        server.answer("query_channels", UNUSABLE_SYNC[answer])

        async def main() -> None:
            async with backend(server) as chat:
                client = SyncClient(store, chat, backoff=FAST, reconnect_backoff=FAST)
                with pytest.raises(BackendError):
                    await client.run_once()
                assert store.last_sync_at() is None
                assert store.channels() == []
                report = await client.run_once()
                assert report.loaded == [GENERAL] and store.last_sync_at() is not None

        run_async(main(), 60)
    store.close()


def test_loaded_lists_only_the_channels_the_store_filed(tmp_path: Path) -> None:
    """A query-channels answer whose channel states are all malformed: each is quarantined,
    and none is reported as loaded (the issue's "80,000 loaded cids while stats shows 0")."""
    store = ChatStore.open(tmp_path, "alice")
    broken = {"channels": [{"channel": {"cid": f"messaging:c{i}"}, "messages": "oops"}
                           for i in range(50)], "duration": "1ms"}
    with HostileServer() as server:
        server.answer("query_channels", value(broken))

        async def main() -> None:
            async with backend(server) as chat:
                client = SyncClient(store, chat)
                return await client.load_channels()

        loaded = run_async(main(), 60)
    assert loaded == [] and store.stats().channels == 0
    assert len(store.quarantine(limit=100)) == 50
    store.close()


def test_an_answer_echoing_the_credentials_is_quarantined_without_them(tmp_path: Path) -> None:
    store = synced_store(tmp_path, at(3600))
    with HostileServer() as server:
        server.answer("sync", ECHO)

        async def main() -> None:
            async with backend(server) as chat:
                client = SyncClient(store, chat)
                with pytest.raises(BackendError) as failed:
                    await client.run_once()
                assert TOKEN not in str(failed.value) and API_KEY not in str(failed.value)

        run_async(main(), 60)
    [kept] = store.quarantine()
    assert b"you asked for" in kept.raw
    assert TOKEN.encode() not in kept.raw and API_KEY.encode() not in kept.raw
    store.close()


@pytest.mark.parametrize("created_at", ["not a time", "9999-12-31T23:59:59Z", None])
def test_a_first_frame_with_a_bad_time_neither_stops_sync_nor_moves_the_point_ahead(
        tmp_path: Path, created_at: str | None) -> None:
    since = at(3600)
    store = synced_store(tmp_path, since)
    with HostileServer() as server:
        server.first_frame_at = lambda: created_at  # type: ignore[assignment,return-value]
        server.events.append(bobs_message("bob-away", at(1800)))

        async def main() -> Any:
            async with backend(server) as chat:
                return await SyncClient(store, chat).run_once()

        report = run_async(main(), 60)
    assert store.message("bob-away") is not None
    assert since < store.last_sync_at() <= at(-60)  # not in the future
    assert report.synced_at == store.last_sync_at()
    store.close()


# --------------------------------------------------------------------------------------------
# 2. An action is delivered only when the answer confirms it

UNCONFIRMING = {
    "captive-portal-html": HTML,
    "error-object-in-200": ERROR_BODY,
    "text-plain": TEXT,
    "empty-object": EMPTY_OBJECT,
    "another-message": WRONG_MESSAGE,
    "redirect-302": REDIRECT,
}


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize("answer", list(UNCONFIRMING), ids=list(UNCONFIRMING))
def test_a_send_answered_without_confirmation_is_retried_then_a_conflict(
        tmp_path: Path, answer: str) -> None:
    store = ChatStore.open(tmp_path, "alice")
    store.ingest_query_channels(query_channels_response([GENERAL]))
    store.send_message(GENERAL, "hello", id="m-1")
    command_id = store.outbox.pending()[0].id
    clock = Clock()
    with HostileServer() as server:
        server.always("send_message", UNCONFIRMING[answer])

        async def main() -> None:
            async with backend(server) as chat:
                replayer = Replayer(store, chat, backoff=FAST, clock=clock)  # 3 unconfirmed: a conflict
                first = await replayer.replay()
                assert first.delivered == 0 and first.retrying == 1
                [pending] = store.outbox.pending()
                assert pending.status == "failed"
                assert "did not confirm" in pending.last_error["message"]
                assert store.message("m-1").local_state == "sending"
                for _ in range(2):
                    clock.now += 3600
                    await replayer.replay()
                assert store.outbox.pending() == []
                [conflict] = store.outbox.conflicts()
                assert conflict.id == command_id and "did not confirm" in conflict.reason
                assert store.message("m-1").local_state == "send_failed"
                # The answer is kept with the command, for `explain`.
                assert any(e.data.get("error", {}) and e.data["error"].get("answer")
                           for e in store.outbox.get(command_id).history)
                # Fixed backend, the user retries: delivered.
                server.always("send_message", None)
                store.outbox.retry(command_id)
                clock.now += 3600
                report = await replayer.replay()
                assert report.delivered == 1
                assert store.message("m-1").local_state is None

        run_async(main(), 60)
    assert len(server.calls_to("send_message")) == 4
    store.close()


@pytest.mark.parametrize("kind", ["update", "delete", "react", "unreact", "mark_read"])
@pytest.mark.parametrize("answer", ["error-object-in-200", "captive-portal-html"])
def test_other_actions_answered_without_confirmation_are_not_delivered(
        tmp_path: Path, kind: str, answer: str) -> None:
    store = ChatStore.open(tmp_path, "alice")
    store.ingest_query_channels(query_channels_response([GENERAL]))
    mid = f"{GENERAL}-m0"
    route = {"update": "update_message", "delete": "delete_message", "react": "send_reaction",
             "unreact": "delete_reaction", "mark_read": "mark_read"}[kind]
    if kind == "update":
        store.update_message(mid, "edited")
    elif kind == "delete":
        store.delete_message(mid)
    elif kind == "react":
        store.send_reaction(mid, "like")
    elif kind == "unreact":
        store.ingest(reaction_new(GENERAL, mid, "like"))
        store.delete_reaction(mid, "like")
    else:
        store.mark_read(GENERAL)
    with HostileServer() as server:
        server.always(route, UNCONFIRMING[answer])

        async def main() -> Any:
            async with backend(server) as chat:
                return await Replayer(store, chat, backoff=FAST).replay()

        report = run_async(main(), 60)
    assert report.delivered == 0 and report.retrying == 1
    [pending] = store.outbox.pending()
    assert pending.kind == route and "did not confirm" in pending.last_error["message"]
    store.close()


def test_proper_answers_still_confirm_every_action(tmp_path: Path) -> None:
    store = ChatStore.open(tmp_path, "alice")
    store.ingest_query_channels(query_channels_response([GENERAL]))
    mid = f"{GENERAL}-m0"
    store.send_message(GENERAL, "new", id="m-new")
    store.update_message(mid, "edited")
    store.send_reaction(mid, "like")
    store.mark_read(GENERAL)
    store.delete_message("m-new")  # folds into the send: cancelled, never sent
    with HostileServer() as server:
        async def main() -> Any:
            async with backend(server) as chat:
                return await Replayer(store, chat, backoff=FAST).replay()

        report = run_async(main(), 60)
    assert report.rejected == 0 and report.retrying == 0 and report.delivered == 3
    assert store.outbox.pending() == []
    store.close()


# --------------------------------------------------------------------------------------------
# 4. A value the tables cannot hold costs only itself

def poison_frames() -> list[bytes]:
    base = msgspec.json.decode(message_new(GENERAL, "p-count", "member count", at=at(60)))
    member_count = {**base, "channel_member_count": BIG}
    reply = msgspec.json.decode(message_new(GENERAL, "p-reply", "reply count", at=at(59)))
    reply["message"]["reply_count"] = BIG
    score = msgspec.json.decode(reaction_new(GENERAL, f"{GENERAL}-m0", "like", at=at(58)))
    score["reaction"]["score"] = BIG
    # The member count last: a batch's channel changes are written at its end, so nothing
    # after it in the same answer would overwrite it first.
    return [msgspec.json.encode(reply), msgspec.json.encode(score),
            msgspec.json.encode(member_count)]


def test_a_value_beyond_64_bits_in_a_websocket_frame_costs_only_itself(tmp_path: Path) -> None:
    store = synced_store(tmp_path, at(3600))
    with HostileServer() as server:
        server.frames = [message_new(GENERAL, "before", "before", at=at(61)), *poison_frames(),
                         message_new(GENERAL, "after", "after", at=at(57))]

        async def main() -> None:
            async with backend(server) as chat:
                client = SyncClient(store, chat, backoff=FAST, reconnect_backoff=FAST)
                stop = asyncio.Event()
                task = asyncio.create_task(client.run(stop))
                for _ in range(500):
                    if store.message("after") is not None or task.done():
                        break
                    await asyncio.sleep(0.02)
                assert not task.done(), task.exception()  # sync did not stop
                stop.set()
                await asyncio.wait_for(task, 10)

        run_async(main(), 60)
    for mid in ("before", "p-count", "p-reply", "after"):
        assert store.message(mid) is not None, mid
    assert store.message("p-count").json()["text"] == "member count"
    stored = {e.type for e in store.history(cid=GENERAL)}
    assert {"message.new", "reaction.new"} <= stored
    skipped = store.unprojected()
    assert len(skipped) == 3 and all("64 bits" in s.reason for s in skipped)
    assert store.stats().unprojected == 3
    assert store.verify() == []
    store.close()


def test_a_value_beyond_64_bits_in_a_sync_answer_costs_only_itself(tmp_path: Path) -> None:
    since = at(3600)
    store = synced_store(tmp_path, since)
    good = [message_new(GENERAL, f"good-{i}", "fine", at=at(1000 - i)) for i in range(3)]
    with HostileServer() as server:
        # The poison is last: nothing after it in the answer would hide it.
        server.events = [*good, *poison_frames()]

        async def main() -> Any:
            async with backend(server) as chat:
                client = SyncClient(store, chat, backoff=FAST, reconnect_backoff=FAST)
                return await client.run_once()

        report = run_async(main(), 60)
    assert report.events == 6 and store.last_sync_at() == report.synced_at
    for number in range(3):
        assert store.message(f"good-{number}") is not None
    assert len(store.unprojected()) == 3
    assert store.verify() == [] and store.rebuild() and store.verify() == []
    store.close()


def test_one_event_a_json_decoder_refuses_costs_only_itself(tmp_path: Path) -> None:
    """A lone surrogate escape (or bytes that are not UTF-8) in one event makes the whole /sync
    answer "not JSON"; its other events are still stored, and the bad one quarantined."""
    since = at(3600)
    store = synced_store(tmp_path, since)
    good = [bobs_message(f"good-{i}", at(1000 - i)) for i in range(2)]
    bad = bobs_message("bad", at(999)).replace(b"sent while", b"sent \\ud800 while")
    with HostileServer() as server:
        server.events = [good[0], bad, good[1]]

        async def main() -> Any:
            async with backend(server) as chat:
                return await SyncClient(store, chat).run_once()

        report = run_async(main(), 60)
    assert store.message("good-0") is not None and store.message("good-1") is not None
    assert store.message("bad") is None
    [kept] = store.quarantine()
    assert b"\\ud800" in kept.raw and "not JSON" in kept.reason
    assert store.last_sync_at() == report.synced_at
    assert store.verify() == []
    store.close()


def test_a_value_beyond_64_bits_ingested_directly_is_stored(tmp_path: Path) -> None:
    store = ChatStore.open(tmp_path, "alice")
    for frame in poison_frames():
        assert store.ingest(frame) > 0
    result = store.ingest_sync(sync_response(poison_frames()))
    assert result.stored == 4
    assert store.verify() == []
    store.close()


# --------------------------------------------------------------------------------------------
# 5. `chatledger sync` behaves like a command-line tool

def sync_cli(tmp_path: Path, url: str, *args: str, timeout: float = 60,
             env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`chatledger sync ARGS`; a `--debug` among ARGS is given as the global option."""
    debug = [arg for arg in args if arg == "--debug"]
    args = tuple(arg for arg in args if arg != "--debug")
    return subprocess.run(
        [sys.executable, "-c", "from chatledger.cli.main import main; main()",
         "--data-dir", str(tmp_path), "--user", "alice", *debug, "sync",
         "--base-url", url, "--api-key", API_KEY, "--token", TOKEN, *args],
        capture_output=True, text=True, timeout=timeout,
        env={**os.environ, **(env or {})})


def unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def assert_clean(proc: subprocess.CompletedProcess[str]) -> None:
    """No traceback, and no credential anywhere in what was printed."""
    output = proc.stdout + proc.stderr
    assert "Traceback" not in output, output
    for secret in (TOKEN, API_KEY, TOKEN.split(".")[1], TOKEN.split(".")[2]):
        assert secret not in output, output


@pytest.mark.parametrize("debug", [(), ("--debug",)], ids=["plain", "debug"])
def test_sync_once_against_an_unreachable_backend(tmp_path: Path, debug: tuple[str, ...]) -> None:
    proc = sync_cli(tmp_path, f"http://127.0.0.1:{unused_port()}", *debug, "--once")
    assert proc.returncode == 3, proc.stderr
    assert_clean(proc)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("Error")]
    assert len(errors) == 1 and "unreachable" in errors[0]
    if not debug:
        assert len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("debug", [(), ("--debug",)], ids=["plain", "debug"])
def test_sync_once_against_a_server_sending_a_byte_a_second(tmp_path: Path,
                                                            debug: tuple[str, ...]) -> None:
    with TrickleServer(interval=1.0) as server:
        proc = sync_cli(tmp_path, server.url, *debug, "--once", "--timeout", "1.5")
    assert proc.returncode == 4, proc.stderr
    assert_clean(proc)
    assert "too slow" in proc.stderr


def test_sync_once_against_a_slow_sync_answer(tmp_path: Path) -> None:
    store = synced_store(tmp_path, at(3600))
    store.close()
    with HostileServer() as server:
        server.always("sync", trickle(1.0))
        proc = sync_cli(tmp_path, server.url, "--once", "--timeout", "1.5")
    assert proc.returncode == 4, proc.stderr
    assert_clean(proc)


@pytest.mark.parametrize("debug", [(), ("--debug",)], ids=["plain", "debug"])
@pytest.mark.parametrize("once", [True, False], ids=["once", "running"])
def test_sync_against_a_backend_refusing_the_token(tmp_path: Path, debug: tuple[str, ...],
                                                   once: bool) -> None:
    with HostileServer() as server:
        server.always("connect", REFUSE_TOKEN)
        proc = sync_cli(tmp_path, server.url, *debug, *(["--once"] if once else []))
    assert proc.returncode == 5, proc.stderr
    assert_clean(proc)
    assert "credentials refused" in proc.stderr


def test_sync_once_against_a_captive_portal(tmp_path: Path) -> None:
    with HostileServer() as server:
        server.always("connect", HTML)
        proc = sync_cli(tmp_path, server.url, "--once")
    assert proc.returncode == 6, proc.stderr
    assert_clean(proc)
    assert len(proc.stderr.strip().splitlines()) == 1


def test_sync_once_with_an_unusable_sync_answer_keeps_the_point(tmp_path: Path) -> None:
    since = at(3600)
    synced_store(tmp_path, since).close()
    with HostileServer() as server:
        server.always("sync", ERROR_BODY)
        proc = sync_cli(tmp_path, server.url, "--once")
    assert proc.returncode == 6, proc.stderr
    assert_clean(proc)
    assert "error object" in proc.stderr
    with ChatStore.open(tmp_path, "alice") as store:
        assert store.last_sync_at() == since


def interrupted(tmp_path: Path, url: str, *args: str) -> subprocess.CompletedProcess[str]:
    """`chatledger sync ...` interrupted with SIGINT once it has said something on stderr."""
    proc = subprocess.Popen(
        [sys.executable, "-c", "from chatledger.cli.main import main; main()",
         "--data-dir", str(tmp_path), "--user", "alice", "sync", "--base-url", url,
         "--api-key", API_KEY, "--token", TOKEN, *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    first = proc.stderr.readline()  # the first status line: the loop is running
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, first + err)


def test_ctrl_c_stops_a_running_sync_with_130(tmp_path: Path) -> None:
    proc = interrupted(tmp_path, f"http://127.0.0.1:{unused_port()}")
    assert proc.returncode == 130, proc.stderr
    assert_clean(proc)
    assert "unreachable" in proc.stderr


def test_ctrl_c_stops_sync_once_waiting_for_a_slow_backend_with_130(tmp_path: Path) -> None:
    with HostileServer() as server:
        server.always("connect", HANG)
        proc = subprocess.Popen(
            [sys.executable, "-c", "from chatledger.cli.main import main; main()",
             "--data-dir", str(tmp_path), "--user", "alice", "sync", "--once",
             "--base-url", server.url, "--api-key", API_KEY, "--token", TOKEN,
             "--timeout", "30"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(500):  # until the request is on the wire
            if server.calls_to("connect"):
                break
            time.sleep(0.02)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert_clean(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))


# --------------------------------------------------------------------------------------------
# 6. A running sync picks up work queued by another process

def test_a_running_sync_client_sends_what_another_connection_queued(tmp_path: Path) -> None:
    store = synced_store(tmp_path, at(3600))
    with HostileServer() as server:
        async def main() -> None:
            async with backend(server) as chat:
                client = SyncClient(store, chat, backoff=FAST, reconnect_backoff=FAST)
                stop = asyncio.Event()
                task = asyncio.create_task(client.run(stop))
                for _ in range(500):
                    if client.status.state == "online":
                        break
                    await asyncio.sleep(0.02)
                # Another process (here: another connection to the file) queues a message;
                # nobody calls client.notify().
                other = ChatStore.open(tmp_path, "alice")
                other.send_message(GENERAL, "from elsewhere", id="elsewhere-1")
                other.close()
                for _ in range(500):
                    if "elsewhere-1" in server.messages and client.status.delivered:
                        break
                    await asyncio.sleep(0.02)
                stop.set()
                await asyncio.wait_for(task, 10)
                assert "elsewhere-1" in server.messages
                assert client.status.delivered == 1 and client.status.pending == 0

        run_async(main(), 60)
    assert store.message("elsewhere-1").local_state is None
    store.close()


def test_a_running_sync_command_sends_what_another_command_queued(tmp_path: Path) -> None:
    synced_store(tmp_path, at(3600)).close()
    with HostileServer() as server:
        proc = subprocess.Popen(
            [sys.executable, "-c", "from chatledger.cli.main import main; main()",
             "--data-dir", str(tmp_path), "--user", "alice", "sync",
             "--base-url", server.url, "--api-key", API_KEY, "--token", TOKEN],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert proc.stderr is not None
            lines = [proc.stderr.readline()]
            while "online" not in lines[-1] and lines[-1]:
                lines.append(proc.stderr.readline())
            send = subprocess.run(
                [sys.executable, "-c", "from chatledger.cli.main import main; main()",
                 "--data-dir", str(tmp_path), "--user", "alice", "send", "--cid", GENERAL,
                 "--text", "from another terminal", "--id", "cli-elsewhere"],
                capture_output=True, text=True, timeout=60)
            assert send.returncode == 0, send.stderr
            while "1 delivered" not in lines[-1] and lines[-1]:
                lines.append(proc.stderr.readline())
        finally:
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=60)
    assert "cli-elsewhere" in server.messages
    assert any("1 delivered" in line and "0 pending" in line for line in lines), lines
    assert proc.returncode == 130
    assert "Traceback" not in err


def test_redact_takes_out_every_form_of_credential() -> None:
    from chatledger.sync.http import redact

    text = redact(f"GET https://u:pw@chat.example/connect?api_key={API_KEY}&authorization={TOKEN}"
                  f" failed; header Authorization: {TOKEN}; key {API_KEY}; old token "
                  "eyJhbGciOiJIUzI1NiJ9.eyJ1c2VyX2lkIjoiYm9iIn0.b2xk", [TOKEN, API_KEY])
    for secret in (TOKEN, API_KEY, "u:pw", "eyJ1c2VyX2lkIjoiYm9iIn0"):
        assert secret not in text
    assert "chat.example/connect" in text


def test_a_query_channels_answer_over_the_store_limit_reports_no_loaded_cids(tmp_path: Path) -> None:
    """The issue's 90 MB answer, from any `Backend` (here a scripted one, so no adapter cap
    applies): the store quarantines it, and no cid is reported as loaded."""
    from scripted import ScriptedBackend

    state = msgspec.json.encode({"channel": {"cid": "messaging:c-XXXXXX", "type": "messaging",
                                             "id": "c-XXXXXX"}, "messages": [], "padding": "p" * 900})
    states = b",".join(state.replace(b"XXXXXX", f"{i:06d}".encode()) for i in range(72_000))
    answer = b'{"channels":[' + states + b'],"duration":"1ms"}'
    assert len(answer) > 64 * 1024 * 1024
    store = ChatStore.open(tmp_path, "alice")
    client = SyncClient(store, ScriptedBackend().then("query_channels", answer))

    async def main() -> None:
        with pytest.raises(BackendError):
            await client.sync_missed(at(0))

    run_async(main(), 120)
    assert store.last_sync_at() is None and store.stats().channels == 0
    assert client.status.quarantined == 1
    store.close()


def test_background_mode_keeps_the_sync_point_too(tmp_path: Path) -> None:
    """The same promises with an AsyncChatStore (the writer thread quarantines the answer)."""
    from chatledger import AsyncChatStore

    since = at(3600)
    synced_store(tmp_path, since).close()
    with HostileServer() as server:
        server.events.append(bobs_message("bob-away", at(1800)))
        server.answer("sync", huge(70_000, declared=False), ERROR_BODY)
        server.answer("send_message", HTML)

        async def main() -> None:
            store = await AsyncChatStore.open(tmp_path, "alice")
            try:
                await store.send_message(GENERAL, "hi", id="bg-1")
                async with backend(server, max_answer_bytes=50_000) as chat:
                    client = SyncClient(store, chat, backoff=FAST, reconnect_backoff=FAST)
                    for _ in range(2):
                        with pytest.raises(BackendError):
                            await client.run_once()
                        assert await store.last_sync_at() == since
                    assert len(await store.quarantine()) == 2
                    history = (await store.outbox.get("send_message:bg-1")).history
                    assert any("did not confirm" in str(e.data) for e in history
                               if e.name == "attempt_failed")
                    # The send is due again only after its backoff (FAST: at most 0.02 s).
                    await asyncio.sleep(0.05)
                    report = await client.run_once()
                    assert await store.message("bob-away") is not None
                    assert report.synced_at == await store.last_sync_at()
                    assert (await store.message("bg-1")).local_state is None
            finally:
                await store.close()

        run_async(main(), 60)


@pytest.mark.parametrize("indent", [None, 0, 2])
def test_splitting_an_answer_by_structure_keeps_each_item_exactly(indent: int | None) -> None:
    import json as std_json

    from chatledger.eventstore.salvage import split_object_list

    items = [{"text": 'quote " and ] } [ { , : \\ and \\"', "n": [1, [2, {"x": "]"}]]},
             {"empty": {}, "list": [], "s": "\\u00e9"}, {"last": None}]
    document = std_json.dumps({"before": [1, 2], "events": items, "after": "x"}, indent=indent)
    split = split_object_list(document.encode(), "events")
    assert split is not None
    found, others = split
    assert [std_json.loads(item) for item in found] == items
    assert std_json.loads(others["before"]) == [1, 2] and std_json.loads(others["after"]) == "x"
    for broken in (document[:-1], document[:len(document) // 2], "[" + document + "]",
                   document.replace('"events"', '"other"')):
        assert split_object_list(broken.encode(), "events") is None
