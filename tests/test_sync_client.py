"""The sync client end to end on loopback: the development server, the Stream adapter, a store."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest

from chatledger.eventstore.wire.times import format_time
from convergence import differences, stored_twice
from reliability import connected

GENERAL = "messaging:general"


def running(tmp_path, *, background: bool = False, **server_options: Any) -> Any:
    """A development server, Alice's store and a client (see `reliability.connected`)."""
    return connected(tmp_path, background=background, **server_options)


async def eventually(check: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


def test_first_sync_loads_the_channels(tmp_path):
    async def main() -> None:
        async with running(tmp_path) as (server, store, client):
            report = await client.run_once()
            assert GENERAL in report.loaded
            assert store.last_sync_at() is not None
            assert {c.cid for c in store.channels(limit=50)} >= {GENERAL}
            assert store.message("demo-hello") is not None
            assert differences(store, server.snapshot()) == []

    asyncio.run(main())


def test_live_events_and_actions(tmp_path):
    async def main() -> None:
        async with running(tmp_path) as (server, store, client):
            stop = asyncio.Event()
            task = asyncio.create_task(client.run(stop))
            await eventually(lambda: client.status.state == "online")
            server.act("bob", "send_message", cid=GENERAL, text="live one", id="live-1")
            await eventually(lambda: store.message("live-1") is not None)
            store.send_message(GENERAL, "from alice", id="alice-1")
            client.notify()
            await eventually(lambda: store.message("alice-1").local_state is None)
            assert "alice-1" in {m["id"] for m in server.snapshot()["messages"]}
            stop.set()
            await asyncio.wait_for(task, 5)
            assert differences(store, server.snapshot()) == []

    asyncio.run(main())


def test_offline_actions_and_missed_events_converge(tmp_path):
    async def main() -> None:
        async with running(tmp_path) as (server, store, client):
            await client.run_once()
            # Offline: the user acts, and the others talk meanwhile.
            store.send_message(GENERAL, "sent offline", id="off-1")
            store.send_message(GENERAL, "typo", id="off-2")
            store.update_message("off-2", "fixed")
            store.send_reaction("demo-hello", "like")
            store.send_reaction("off-1", "love")
            store.send_message(GENERAL, "never mind", id="off-3")
            store.delete_message("off-3")
            store.update_message("demo-welcome", "Welcome, edited offline")
            store.mark_read(GENERAL)
            for i in range(3):
                server.act("bob", "send_message", cid=GENERAL, text=f"missed {i}", id=f"missed-{i}")
            server.act("carol", "delete_message", message_id="demo-thread-1")
            report = await client.run_once()
            assert report.replay.delivered >= 6 and report.replay.rejected == 0
            assert report.events >= 4
            assert store.outbox.pending() == []
            assert store.message("missed-2") is not None
            assert differences(store, server.snapshot()) == []
            assert "off-3" not in server.snapshot()["send_attempts"]
            assert store.verify() == []

    asyncio.run(main())


def test_faults_during_replay_lose_nothing_and_store_nothing_twice(tmp_path):
    async def main() -> None:
        async with running(tmp_path) as (server, store, client):
            await client.run_once()
            for i in range(12):
                store.send_message(GENERAL if i % 2 else "messaging:alice-bob", f"m{i}", id=f"f-{i}")
            store.send_reaction("f-1", "like")
            server.faults.add("send_message", "drop", times=3)
            server.faults.add("send_message", "error5xx", times=2)
            server.faults.add("send_reaction", "rate_limit", times=1, seconds=0.1)
            server.faults.add("send_message", "delay", times=2, seconds=0.05)
            for _ in range(40):
                await client.run_once()
                if not store.outbox.pending():
                    break
                await asyncio.sleep(0.06)
            assert store.outbox.pending() == []
            snapshot = server.snapshot()
            assert stored_twice(snapshot) == []
            assert max(snapshot["send_attempts"].values()) >= 2  # the drops were resent
            assert differences(store, snapshot) == []
            assert store.verify() == []

    asyncio.run(main())


def test_a_gap_too_old_queries_the_channels_again_and_keeps_pending_actions(tmp_path):
    async def main() -> None:
        async with running(tmp_path) as (server, store, client):
            await client.run_once()
            # Pretend the last sync was 40 days ago; mark_synced never moves backwards, so
            # open a fresh store and give it an old mark.
            long_ago = format_time(int((time.time() - 40 * 86400) * 1_000_000))
            store.mark_synced(long_ago)
            with store.log.datastore.transaction(commit=True) as c:
                c.execute("UPDATE connection SET value=? WHERE key='last_sync_at'",
                          (int((time.time() - 40 * 86400) * 1_000_000),))
            server.faults.add("send_message", "error5xx", times=50)  # the pending send stays
            store.send_message(GENERAL, "still here", id="kept-1")
            server.act("bob", "send_message", cid=GENERAL, text="while away", id="away-1")
            report = await client.run_once()
            assert GENERAL in report.requeried and report.calls == 0
            assert store.message("away-1") is not None
            assert store.message("kept-1").local_state == "sending"
            assert [c.message_id for c in store.outbox.pending()] == ["kept-1"]

    asyncio.run(main())


def test_sync_answering_400_queries_those_channels_instead(tmp_path):
    async def main() -> None:
        async with running(tmp_path, max_sync_events=1) as (server, store, client):
            await client.run_once()
            for i in range(3):
                server.act("bob", "send_message", cid=GENERAL, text=f"burst {i}", id=f"burst-{i}")
            report = await client.run_once()
            assert report.calls >= 1 and GENERAL in report.requeried
            assert store.message("burst-2") is not None

    asyncio.run(main())


def test_the_connection_comes_back_after_the_server_closes_it(tmp_path):
    async def main() -> None:
        async with running(tmp_path) as (server, store, client):
            stop = asyncio.Event()
            task = asyncio.create_task(client.run(stop))
            await eventually(lambda: client.status.state == "online")
            first = client.status.connection_id
            server.faults.add("connect", "refuse", times=2)
            await server.close_websockets()
            server.act("bob", "send_message", cid=GENERAL, text="during the gap", id="gap-1")
            await eventually(lambda: client.status.state == "online"
                             and client.status.connection_id != first)
            await eventually(lambda: store.message("gap-1") is not None)
            assert client.status.reconnects >= 1
            stop.set()
            await asyncio.wait_for(task, 5)

    asyncio.run(main())


@pytest.mark.parametrize("kind", ["refuse", "error5xx", "timeout"])
def test_sync_client_survives_a_failing_connect(tmp_path, kind):
    async def main() -> None:
        async with running(tmp_path) as (server, store, client):
            server.faults.add("connect", kind, times=2, seconds=0.3)
            stop = asyncio.Event()
            task = asyncio.create_task(client.run(stop))
            await eventually(lambda: client.status.state == "online", timeout=10)
            stop.set()
            await asyncio.wait_for(task, 5)

    asyncio.run(main())


def test_background_mode_keeps_sqlite_off_the_event_loop(tmp_path):
    """The same story with an AsyncChatStore: frames, replay and catch-up go through its
    writer thread and read pool."""

    async def main() -> None:
        async with running(tmp_path, background=True) as (server, store, client):
            stop = asyncio.Event()
            task = asyncio.create_task(client.run(stop))
            await eventually(lambda: client.status.state == "online")
            server.act("bob", "send_message", cid=GENERAL, text="live", id="bg-live")
            await store.send_message(GENERAL, "from alice", id="bg-1")
            await store.send_reaction("demo-hello", "like")
            client.notify()
            for _ in range(250):
                if not await store.outbox.pending() and await store.message("bg-live"):
                    break
                await asyncio.sleep(0.02)
            assert await store.outbox.pending() == []
            assert (await store.message("bg-1")).local_state is None
            stop.set()
            await asyncio.wait_for(task, 5)
            report = await client.run_once()
            assert report.replay.delivered == 0
            assert differences(store.store, server.snapshot()) == []
            assert await store.verify() == []

    asyncio.run(main())


def test_the_first_status_says_where_the_store_stands(tmp_path):
    """A client started on a store that has synced before says so from its first status on."""
    async def main() -> None:
        async with running(tmp_path) as (server, store, client):
            await client.run_once()
            synced = store.last_sync_at()
            assert synced is not None
            client.status.last_sync_at = None  # as a new client on this store starts
            seen: list[tuple[str, str | None]] = []
            client.on_status = lambda status: seen.append((status.state, status.last_sync_at))
            await client.run_once()
            assert seen[0] == ("connecting", synced)

    asyncio.run(main())


def test_a_frame_with_the_unset_time_does_not_stop_the_connection(tmp_path):
    # 0001-01-01T00:00:00Z is the backend's "no time": it tells no end of a gap, and a frame
    # carrying it is stored and passed over like any other, not a reason to drop the stream.
    async def main() -> None:
        async with running(tmp_path) as (server, store, client):
            stop = asyncio.Event()
            task = asyncio.create_task(client.run(stop))
            await eventually(lambda: client.status.state == "online")
            server.hub.deliver({"type": "custom.nothing", "cid": GENERAL,
                                "created_at": "0001-01-01T00:00:00Z"}, ["alice"])
            server.act("bob", "send_message", cid=GENERAL, text="after it", id="after-unset")
            await eventually(lambda: store.message("after-unset") is not None)
            assert client.status.state == "online"
            stop.set()
            await asyncio.wait_for(task, 5)

    asyncio.run(main())
