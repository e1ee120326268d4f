"""`diff`: the store against the development server, with faults that make each kind of
difference, and an in-sync store that shows none. Loopback only; every wait is bounded."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

from click.testing import CliRunner

from chatledger.cli.main import cli
from chatledger.eventstore.wire.times import format_time
from chatledger.sync.diff import (
    AFTER_LAST_SYNC, GAP, LIVE, LOCAL_ONLY, MISSED, PENDING, QUARANTINE, REFUSED, UNEXPLAINED,
    DiffReport,
)
from reliability import connected, run_async

GENERAL = "messaging:general"
TIMEOUT = 60


async def eventually(check: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


def found(report: DiffReport, object_id: str, field: str | None = None) -> list[Any]:
    return [m for m in report.mismatches
            if m.object_id == object_id and (field is None or m.field == field)]


def test_an_in_sync_store_shows_no_difference(tmp_path):
    async def main() -> None:
        async with connected(tmp_path) as (server, store, client):
            await client.run_once()
            positions = store.log.max_position()
            report = await client.diff()
            assert report.in_sync, report.mismatches
            assert report.channels == 4 and report.messages > 0
            assert (await client.diff([GENERAL], messages=2)).in_sync
            assert store.log.max_position() == positions  # nothing written

    run_async(main(), TIMEOUT)


def test_diff_with_a_store_in_background_mode(tmp_path):
    async def main() -> None:
        async with connected(tmp_path, background=True) as (server, store, client):
            await client.run_once()
            assert (await client.diff()).in_sync
            await store.update_message("demo-hello", "edited offline")
            report = await client.diff([GENERAL])
            assert {(m.object_id, m.field, m.cause) for m in report.mismatches} == {
                ("demo-hello", "text", PENDING), ("demo-hello", "local_state", PENDING)}

    run_async(main(), TIMEOUT)


def test_a_dropped_websocket_event_is_missed_on_the_live_window(tmp_path):
    async def main() -> None:
        async with connected(tmp_path) as (server, store, client):
            stop = asyncio.Event()
            task = asyncio.create_task(client.run(stop))
            await eventually(lambda: client.status.state == "online")
            server.faults.add_spec("ws_event:drop:times=1")
            server.act("bob", "update_message", message_id="demo-hello", text="edited, lost")
            server.act("bob", "send_message", cid=GENERAL, text="arrives", id="after-1")
            await eventually(lambda: store.message("after-1") is not None)
            stop.set()
            await asyncio.wait_for(task, 5)  # moves last_sync_at to the latest frame
            report = await client.diff()
            [text] = found(report, "demo-hello", "text")
            assert (text.cause, text.window) == (MISSED, LIVE)
            assert text.server == "edited, lost" and text.explain == "chatledger explain demo-hello"
            assert {m.cause for m in report.mismatches} == {MISSED}

    run_async(main(), TIMEOUT)


def test_a_change_after_the_last_sync_is_missed_until_the_next_sync(tmp_path):
    async def main() -> None:
        async with connected(tmp_path) as (server, store, client):
            await client.run_once()
            server.act("bob", "send_message", cid=GENERAL, text="while away", id="away-1")
            report = await client.diff()
            [gone] = found(report, "away-1")
            assert (gone.cause, gone.window, gone.field) == (MISSED, AFTER_LAST_SYNC, "exists")
            await client.run_once()
            assert (await client.diff()).in_sync

    run_async(main(), TIMEOUT)


def test_a_lost_answer_an_offline_edit_and_a_refused_action(tmp_path):
    async def main() -> None:
        async with connected(tmp_path) as (server, store, client):
            await client.run_once()
            # Refused: the server says no for good.
            server.faults.add("update_message", "reject", times=1)
            store.update_message("demo-welcome", "nobody may edit this")
            await client.replay()
            # The server applies the send, the answer never comes back (every try).
            server.faults.add("send_message", "drop", times=50)
            store.send_message(GENERAL, "applied, answer lost", id="lost-answer")
            await client.replay()
            server.faults.clear()
            assert "lost-answer" in {m["id"] for m in server.snapshot()["messages"]}
            # Offline: an edit not sent yet.
            store.update_message("demo-hello", "edited offline")
            report = await client.diff()
            [lost] = found(report, "lost-answer", "local_state")
            assert lost.cause == PENDING and "failed" in lost.why
            [refused] = found(report, "demo-welcome", "text")
            assert refused.cause == REFUSED and "injected fault" in refused.why
            assert refused.local == "nobody may edit this"
            [edit] = found(report, "demo-hello", "text")
            assert (edit.cause, edit.local) == (PENDING, "edited offline")
            assert edit.command_id is not None
            # What the lost answer's send did on the server besides (the own read state moved
            # by it) comes with the next sync: missed, after last_sync_at; nothing unexplained.
            assert {m.window for m in report.mismatches if m.cause == MISSED} <= {AFTER_LAST_SYNC}
            assert not [m for m in report.mismatches if m.cause == UNEXPLAINED]

    run_async(main(), TIMEOUT)


def test_local_only_and_unexplained(tmp_path):
    async def main() -> None:
        async with connected(tmp_path) as (server, store, client):
            await client.run_once()
            now = format_time(time.time_ns() // 1000)
            store.ingest(json.dumps({
                "type": "message.new", "cid": GENERAL, "created_at": now,
                "message": {"id": "eph-1", "type": "ephemeral", "text": "only you see this",
                            "user": {"id": "alice"}, "created_at": now, "updated_at": now},
            }).encode())
            # An edit the server never made, imported by hand: the store is ahead of the
            # server with nothing to account for it.
            store.ingest(json.dumps({
                "type": "message.updated", "cid": GENERAL, "created_at": now,
                "message": {**store.message("demo-hello").json(), "text": "forged",
                            "updated_at": now},
            }).encode(), source="import")
            report = await client.diff()
            [ephemeral] = found(report, "eph-1")
            assert ephemeral.cause == LOCAL_ONLY
            [forged] = found(report, "demo-hello", "text")
            assert (forged.cause, forged.local) == (UNEXPLAINED, "forged")

    run_async(main(), TIMEOUT)


def test_the_command(tmp_path):
    async def main() -> None:
        async with connected(tmp_path) as (server, store, client):
            await client.run_once()
            store.update_message("demo-hello", "edited offline")
            store.close()
            env = {"CHATLEDGER_BASE_URL": server.url, "CHATLEDGER_API_KEY": server.api_key,
                   "CHATLEDGER_TOKEN": server.make_token("alice")}
            base = ["--data-dir", str(tmp_path), "--user", "alice"]

            def invoke(*args: str) -> Any:
                return CliRunner().invoke(cli, [*base, *args], env=env)

            result = await asyncio.to_thread(invoke, "diff", "--json")
            assert result.exit_code == 1, result.output
            lines = [json.loads(line) for line in result.output.splitlines()]
            [text] = [line for line in lines if line.get("field") == "text"]
            assert text["cause"] == PENDING and text["object_id"] == "demo-hello"
            result = await asyncio.to_thread(invoke, "diff", "--cid", "messaging:random")
            assert result.exit_code == 0, result.output
            assert "in sync" in result.output
            result = await asyncio.to_thread(invoke, "diff")
            assert result.exit_code == 1 and "pending" in result.output
            assert "chatledger explain demo-hello" in result.output
            bad = {**env, "CHATLEDGER_TOKEN": "not-a-token"}
            result = await asyncio.to_thread(
                lambda: CliRunner().invoke(cli, [*base, "diff"], env=bad))
            assert result.exit_code == 2 and "not-a-token" not in result.output

    run_async(main(), TIMEOUT)


def test_history_the_store_never_held_and_a_quarantined_answer(tmp_path):
    async def main() -> None:
        async with connected(tmp_path) as (server, store, client):
            server.seed(channels=[{"type": "messaging", "id": "long", "members": ["alice", "bob"],
                                   "messages": [{"user_id": "bob", "text": f"old {n}",
                                                 "id": f"long-{n}"} for n in range(30)]}])
            await client.run_once()  # loads the newest 25 of each channel
            assert store.message("long-0") is None and store.message("long-29") is not None
            report = await client.diff(["messaging:long"], messages=30)
            older = [m for m in report.mismatches if m.field == "exists"]
            assert {m.object_id for m in older} == {f"long-{n}" for n in range(5)}
            assert {(m.cause, m.window) for m in older} == {(MISSED, GAP)}
            # A change the store then marks as synced past, while the answer that would have
            # carried it was quarantined.
            server.act("bob", "update_message", message_id="long-29", text="changed")
            await asyncio.sleep(0.01)
            store.mark_synced(format_time(time.time_ns() // 1000))
            store.record_unusable_answer(b"<html>portal</html>", "not JSON")
            report = await client.diff(["messaging:long"], messages=10)
            [changed] = found(report, "long-29", "text")
            assert (changed.cause, changed.window) == (MISSED, QUARANTINE)
            assert "not JSON" in changed.why

    run_async(main(), TIMEOUT)
