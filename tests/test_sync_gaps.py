"""Sync points that could move past data the store does not hold.

"A sync point moves only over what was stored" (docs/sync.md): `last_sync_at` must never pass a
channel or an event the store refused, or the next catch-up skips it for good (later `/sync`
calls name only the channels the store holds). Each test scripts `HostileServer`
(tests/hostile_server.py, loopback only, bounded) and checks where the sync point ends up.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import msgspec
import pytest
from aiohttp import web
from chatledger import ChatStore
from chatledger.eventstore.wire.times import format_time
from chatledger.sync.backend import BackendError
from chatledger.sync.client import MAX_REFILED, SyncClient
from chatledger.sync.outcomes import Backoff
from chatledger.sync.stream import StreamBackend
from fixtures import channel_state, query_channels_response
from hostile_server import (
    API_KEY,
    GENERAL,
    TOKEN,
    Handler,
    HostileServer,
    json_response,
)
from reliability import run_async

FAST = Backoff(base=0.01, cap=0.02)
BAD = "messaging:bad"
OTHER = "messaging:other"


def at(seconds_ago: float) -> str:
    return format_time(int((time.time() - seconds_ago) * 1_000_000))


def backend(server: HostileServer) -> StreamBackend:
    return StreamBackend(server.url, API_KEY, TOKEN, "alice", health_interval=5.0, timeout=3.0)


def bad_state(cid: str) -> bytes:
    """A channel state whose bytes no strict JSON decoder takes (a lone surrogate in a
    message): the store quarantines it, but its cid is readable."""
    good = msgspec.json.encode(channel_state(cid))
    return good.replace(b'"text":"hello"', b'"text":"\\ud800"', 1)


def raw(status: int, body: bytes) -> Handler:
    async def answer(server: HostileServer, request: web.Request,
                     body_in: dict[str, Any]) -> web.StreamResponse:
        return web.Response(status=status, body=body, content_type="application/json")
    return answer


def channels_answer(*states: bytes) -> Handler:
    return raw(201, b'{"channels":[' + b",".join(states) + b'],"duration":"1ms"}')


def good(cid: str) -> bytes:
    return msgspec.json.encode(channel_state(cid))


def paged(cids: list[str], *, honour_offset: bool = True) -> Handler:
    """query-channels honouring `limit` and `offset`, as the real backend does (or not)."""
    async def answer(server: HostileServer, request: web.Request,
                     body: dict[str, Any]) -> web.StreamResponse:
        start = int(body.get("offset") or 0) if honour_offset else 0
        page = cids[start:start + int(body.get("limit") or 30)]
        return json_response({"channels": [channel_state(cid) for cid in page],
                              "duration": "1ms"})
    return answer


# --------------------------------------------------------------------------------------------
# The first load: a channel state the store refuses must not be passed by the sync point.

def test_a_first_load_refetches_a_refused_channel_before_the_sync_point(tmp_path: Path) -> None:
    """One state of the first query-channels answer is refused (quarantined): it is queried
    once more and filed before `last_sync_at` is set; `loaded` lists every filed channel
    (also when the answer had to be split by structure)."""
    store = ChatStore.open(tmp_path, "alice")
    with HostileServer() as server:
        server.answer("query_channels", channels_answer(good(GENERAL), bad_state(BAD), good(OTHER)))

        async def main() -> Any:
            async with backend(server) as chat:
                return await SyncClient(store, chat, backoff=FAST).run_once()

        report = run_async(main(), 30)
        assert [body["id"] for body in server.calls_to("query_channel")] == ["bad"]
    assert report.loaded == [GENERAL, OTHER, BAD]
    assert store.channel(BAD) is not None and store.last_sync_at() == report.synced_at
    assert len(store.quarantine()) == 1  # the refused state stays in the quarantine
    store.close()


def test_a_channel_refused_again_keeps_the_sync_point_and_the_good_channels(
        tmp_path: Path) -> None:
    """The refused channel's own query is refused too: the good channels are stored and
    readable, `last_sync_at` stays unset (the next attempt loads the list again), and each
    attempt asks for the bad channel once, not in a loop."""
    store = ChatStore.open(tmp_path, "alice")
    with HostileServer() as server:
        server.always("query_channels", channels_answer(good(GENERAL), bad_state(BAD)))
        server.always("query_channel", raw(201, bad_state(BAD)))

        async def main() -> Any:
            async with backend(server) as chat:
                client = SyncClient(store, chat, backoff=FAST)
                with pytest.raises(BackendError):
                    await client.run_once()
                assert store.last_sync_at() is None and store.channel(GENERAL) is not None
                assert len(server.calls_to("query_channel")) == 1
                server.always("query_channel", None)  # the backend is fixed
                return await client.run_once()

        report = run_async(main(), 30)
    assert store.channel(BAD) is not None and store.last_sync_at() == report.synced_at
    store.close()


def test_a_refused_channel_the_backend_calls_gone_is_passed_over(tmp_path: Path) -> None:
    store = ChatStore.open(tmp_path, "alice")
    with HostileServer() as server:
        server.answer("query_channels", channels_answer(good(GENERAL), bad_state(BAD)))
        server.answer("query_channel", raw(404, b'{"code": 16, "message": "channel does not '
                                               b'exist", "StatusCode": 404}'))

        async def main() -> Any:
            async with backend(server) as chat:
                return await SyncClient(store, chat, backoff=FAST).run_once()

        report = run_async(main(), 30)
    assert report.loaded == [GENERAL] and store.last_sync_at() == report.synced_at
    store.close()


def test_many_refused_channels_are_a_failed_attempt_not_a_flood_of_queries(
        tmp_path: Path) -> None:
    """A hostile answer of many refused states cannot turn one first load into a call per
    state: past `MAX_REFILED` the answer is a failed attempt and the sync point stays."""
    store = ChatStore.open(tmp_path, "alice")
    states = [good(GENERAL)] + [bad_state(f"messaging:bad{i}") for i in range(MAX_REFILED + 1)]
    with HostileServer() as server:
        server.answer("query_channels", channels_answer(*states))

        async def main() -> None:
            async with backend(server) as chat:
                client = SyncClient(store, chat, backoff=FAST, channel_limit=100)
                with pytest.raises(BackendError, match="quarantined"):
                    await client.run_once()

        run_async(main(), 30)
        assert server.calls_to("query_channel") == []
    assert store.last_sync_at() is None and store.channel(GENERAL) is not None
    store.close()


def test_a_state_naming_no_channel_is_passed_over(tmp_path: Path) -> None:
    """A state without a channel cannot be asked for again nor synced: it stays quarantined
    and does not hold the sync point back for ever."""
    store = ChatStore.open(tmp_path, "alice")
    with HostileServer() as server:
        server.answer("query_channels", channels_answer(good(GENERAL), b'{"messages": []}'))

        async def main() -> Any:
            async with backend(server) as chat:
                return await SyncClient(store, chat, backoff=FAST).run_once()

        report = run_async(main(), 30)
        assert server.calls_to("query_channel") == []
    assert report.loaded == [GENERAL] and store.last_sync_at() == report.synced_at
    assert len(store.quarantine()) == 1
    store.close()


# --------------------------------------------------------------------------------------------
# The first load reads every page of the channel list before the sync point is set.

def test_a_first_load_reads_every_page_before_the_sync_point(tmp_path: Path) -> None:
    cids = [f"messaging:c{i}" for i in range(5)]
    store = ChatStore.open(tmp_path, "alice")
    with HostileServer() as server:
        server.always("query_channels", paged(cids))

        async def main() -> Any:
            async with backend(server) as chat:
                return await SyncClient(store, chat, backoff=FAST, channel_limit=2).run_once()

        report = run_async(main(), 30)
        offsets = [body["offset"] for body in server.calls_to("query_channels")]
    assert offsets == [0, 2, 4]
    assert sorted(report.loaded) == cids and store.last_sync_at() == report.synced_at
    assert sorted(store.channel_ids_to_sync(100)) == cids  # the next /sync covers them all
    store.close()


def test_a_paged_first_load_caches_the_whole_list(tmp_path: Path) -> None:
    cids = [f"messaging:c{i}" for i in range(5)]
    store = ChatStore.open(tmp_path, "alice")
    with HostileServer() as server:
        server.always("query_channels", paged(cids))

        async def main() -> Any:
            async with backend(server) as chat:
                client = SyncClient(store, chat, backoff=FAST, channel_limit=2)
                await client.run_once()
                return client

        client = run_async(main(), 30)
    assert store.cached_channels(client.channel_filter, client.channel_sort) == cids
    store.close()


def test_a_server_ignoring_the_offset_does_not_make_the_first_load_loop(tmp_path: Path) -> None:
    store = ChatStore.open(tmp_path, "alice")
    with HostileServer() as server:
        server.always("query_channels", paged([GENERAL, OTHER], honour_offset=False))

        async def main() -> Any:
            async with backend(server) as chat:
                return await SyncClient(store, chat, backoff=FAST, channel_limit=2).run_once()

        report = run_async(main(), 30)
        assert len(server.calls_to("query_channels")) <= 2
    assert report.loaded == [GENERAL, OTHER] and store.last_sync_at() == report.synced_at
    store.close()


# --------------------------------------------------------------------------------------------
# A requery after "too old" whose channel state the store refuses keeps the sync point.

def test_a_requery_whose_state_the_store_refuses_keeps_the_sync_point(tmp_path: Path) -> None:
    since = at(3600)
    store = ChatStore.open(tmp_path, "alice")
    store.ingest_query_channels(query_channels_response([GENERAL, BAD]))
    store.mark_synced(since)
    too_old = raw(400, b'{"code": 4, "message": "last_sync_at is too old", "StatusCode": 400}')
    with HostileServer() as server:
        server.answer("sync", too_old, too_old)
        server.always("query_channel", raw(201, bad_state(BAD)))

        async def main() -> Any:
            async with backend(server) as chat:
                client = SyncClient(store, chat, backoff=FAST)
                with pytest.raises(BackendError):
                    await client.run_once()
                assert store.last_sync_at() == since
                server.always("query_channel", None)
                return await client.run_once()

        report = run_async(main(), 30)
    assert sorted(report.requeried) == [BAD, GENERAL]
    assert store.last_sync_at() == report.synced_at
    store.close()


def test_a_first_sync_queries_the_stored_channels_the_list_does_not_bring(
        tmp_path: Path) -> None:
    """Channels ingested before any sync (an import, frames the application handed over) have
    no sync point: if the first load's list does not bring them, they are queried one by one
    before `last_sync_at` is set, or the next `/sync` would start past their gap."""
    store = ChatStore.open(tmp_path, "alice")
    store.ingest_query_channels(query_channels_response([OTHER]))
    with HostileServer() as server:  # its list holds GENERAL only

        async def main() -> Any:
            async with backend(server) as chat:
                return await SyncClient(store, chat, backoff=FAST).run_once()

        report = run_async(main(), 30)
        assert [body["id"] for body in server.calls_to("query_channel")] == ["other"]
    assert report.loaded == [GENERAL] and report.requeried == [OTHER]
    assert store.last_sync_at() == report.synced_at
    store.close()


def test_a_paged_first_load_in_background_mode_caches_the_whole_list(tmp_path: Path) -> None:
    """The pages of the first load through an AsyncChatStore (its writer thread) too."""
    from chatledger import AsyncChatStore

    cids = [f"messaging:c{i}" for i in range(5)]
    with HostileServer() as server:
        server.always("query_channels", paged(cids))

        async def main() -> None:
            store = await AsyncChatStore.open(tmp_path, "alice")
            try:
                async with backend(server) as chat:
                    client = SyncClient(store, chat, backoff=FAST, channel_limit=2)
                    report = await client.run_once()
                    assert report.loaded == cids
                    assert await store.cached_channels(client.channel_filter,
                                                       client.channel_sort) == cids
                    assert await store.last_sync_at() == report.synced_at
            finally:
                await store.close()

        run_async(main(), 30)


def test_background_mode_holds_the_sync_point_for_a_refused_channel_too(
        tmp_path: Path) -> None:
    """The same with an AsyncChatStore (appends on its writer thread)."""
    from chatledger import AsyncChatStore

    with HostileServer() as server:
        server.always("query_channels", channels_answer(good(GENERAL), bad_state(BAD)))
        server.answer("query_channel", raw(201, bad_state(BAD)))

        async def main() -> None:
            store = await AsyncChatStore.open(tmp_path, "alice")
            try:
                async with backend(server) as chat:
                    client = SyncClient(store, chat, backoff=FAST)
                    with pytest.raises(BackendError):
                        await client.run_once()
                    assert await store.last_sync_at() is None
                    assert await store.channel(GENERAL) is not None
                    report = await client.run_once()
                    assert report.loaded == [GENERAL, BAD]
                    assert await store.last_sync_at() == report.synced_at
            finally:
                await store.close()

        run_async(main(), 30)


# --------------------------------------------------------------------------------------------
# A catch-up after a reconnect loads the channel list again: channels joined while offline.

def test_a_channel_joined_while_offline_is_found_by_the_next_catch_up(tmp_path: Path) -> None:
    """`/sync` names only stored channels: a channel the user was added to while offline is
    found by the catch-up's query of the channel list (its first page), and filed before the
    sync point moves."""
    since = at(3600)
    store = ChatStore.open(tmp_path, "alice")
    store.ingest_query_channels(query_channels_response([GENERAL]))
    store.mark_synced(since)
    with HostileServer(channels=[OTHER, GENERAL]) as server:

        async def main() -> Any:
            async with backend(server) as chat:
                return await SyncClient(store, chat, backoff=FAST).run_once()

        report = run_async(main(), 30)
        assert len(server.calls_to("query_channels")) == 1
        assert server.calls_to("query_channels")[0]["offset"] == 0
        assert len(server.calls_to("sync")) == 1
    assert report.loaded == [OTHER]
    assert store.channel(OTHER) is not None and store.last_sync_at() == report.synced_at
    assert sorted(store.channel_ids_to_sync(100)) == [GENERAL, OTHER]
    store.close()


def test_a_channel_joined_while_offline_is_found_with_no_stored_channels(
        tmp_path: Path) -> None:
    """A store that synced while the user had no channels: the catch-up finds the new one."""
    store = ChatStore.open(tmp_path, "alice")
    store.mark_synced(at(3600))
    with HostileServer(channels=[OTHER]) as server:

        async def main() -> Any:
            async with backend(server) as chat:
                return await SyncClient(store, chat, backoff=FAST).run_once()

        report = run_async(main(), 30)
        assert server.calls_to("sync") == []
    assert report.loaded == [OTHER]
    assert store.channel(OTHER) is not None and store.last_sync_at() == report.synced_at
    store.close()


def test_a_catch_up_with_no_new_channel_files_nothing_from_the_list(tmp_path: Path) -> None:
    since = at(3600)
    store = ChatStore.open(tmp_path, "alice")
    store.ingest_query_channels(query_channels_response([GENERAL]))
    store.mark_synced(since)
    with HostileServer(channels=[GENERAL]) as server:

        async def main() -> Any:
            async with backend(server) as chat:
                return await SyncClient(store, chat, backoff=FAST).run_once()

        report = run_async(main(), 30)
        assert len(server.calls_to("query_channels")) == 1
    assert report.loaded == [] and store.last_sync_at() == report.synced_at
    store.close()


@pytest.mark.parametrize("answer", ["5xx", "html"])
def test_a_failed_list_query_in_a_catch_up_keeps_the_sync_point(
        tmp_path: Path, answer: str) -> None:
    since = at(3600)
    store = ChatStore.open(tmp_path, "alice")
    store.ingest_query_channels(query_channels_response([GENERAL]))
    store.mark_synced(since)
    failure = (raw(500, b'{"code": -1, "message": "internal", "StatusCode": 500}')
               if answer == "5xx" else raw(200, b"<!DOCTYPE html><html>portal</html>"))
    with HostileServer(channels=[OTHER, GENERAL]) as server:
        server.answer("query_channels", failure)

        async def main() -> Any:
            async with backend(server) as chat:
                client = SyncClient(store, chat, backoff=FAST)
                with pytest.raises(BackendError):
                    await client.run_once()
                assert store.last_sync_at() == since and store.channel(OTHER) is None
                return await client.run_once()  # the backend answers again

        report = run_async(main(), 30)
    assert report.loaded == [OTHER] and store.channel(OTHER) is not None
    assert store.last_sync_at() == report.synced_at
    store.close()


def test_a_channel_joined_while_offline_is_found_in_background_mode(tmp_path: Path) -> None:
    from chatledger import AsyncChatStore

    with HostileServer(channels=[OTHER, GENERAL]) as server:

        async def main() -> None:
            store = await AsyncChatStore.open(tmp_path, "alice")
            try:
                await store.ingest_query_channels(query_channels_response([GENERAL]))
                await store.mark_synced(at(3600))
                async with backend(server) as chat:
                    report = await SyncClient(store, chat, backoff=FAST).run_once()
                assert report.loaded == [OTHER]
                assert await store.channel(OTHER) is not None
                assert await store.last_sync_at() == report.synced_at
            finally:
                await store.close()

        run_async(main(), 30)
