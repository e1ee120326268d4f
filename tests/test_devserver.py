"""The local development server: every endpoint, error, fault kind, the WebSocket, the CLI.

Everything runs on loopback with port 0; each test starts and stops its own server. No
pytest-asyncio: async bodies run under `asyncio.run`.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import aiohttp
import pytest
from click.testing import CliRunner

from chatledger.cli.main import cli
from chatledger.sync.devserver import (
    DevServer, FaultSpecError, ThreadedDevServer, make_token, parse_spec, run_in_thread,
    verify_token,
)
from chatledger.sync.devserver.wire import ApiError, parse_time

ERROR_KEYS = {"code", "message", "StatusCode", "duration", "more_info"}
GENERAL = "messaging:general"


class Api:
    """A minimal client: one user's token, answers as (status, body, headers)."""

    def __init__(self, server: DevServer, session: aiohttp.ClientSession, user: str,
                 token: str | None = None, api_key: str | None = None) -> None:
        self.server, self.session, self.user = server, session, user
        self.token = token if token is not None else server.make_token(user)
        self.api_key = api_key or server.api_key

    async def call(self, method: str, path: str, body: Any = None, **params: str
                   ) -> tuple[int, Any, Any]:
        headers = {"Authorization": self.token, "stream-auth-type": "jwt"}
        async with self.session.request(
                method, self.server.url + path, json=body, headers=headers,
                params={"api_key": self.api_key, **params}) as resp:
            return resp.status, await resp.json(content_type=None), resp.headers

    async def send(self, text: str, cid: str = GENERAL, **fields: Any) -> tuple[int, Any, Any]:
        kind, cid_id = cid.split(":")
        return await self.call("POST", f"/channels/{kind}/{cid_id}/message",
                               {"message": {"text": text, **fields}})

    async def ws(self, *, in_query: bool = False) -> aiohttp.ClientWebSocketResponse:
        params = {"api_key": self.api_key, "json": json.dumps(
            {"user_id": self.user, "user_details": {"id": self.user},
             "server_determines_connection_id": True})}
        headers = {}
        if in_query:
            params.update({"authorization": self.token, "stream-auth-type": "jwt"})
        else:
            headers = {"Authorization": self.token, "stream-auth-type": "jwt"}
        return await self.session.ws_connect(self.server.url + "/connect", params=params,
                                             headers=headers)


def with_server(test: Callable[[DevServer, aiohttp.ClientSession], Awaitable[None]],
                **kwargs: Any) -> None:
    """Run `test` against a fresh demo server; the server always stops."""
    kwargs.setdefault("seed", "demo")

    async def main() -> None:
        async with DevServer(**kwargs) as server:
            # force_close: one connection per request, so a cut connection never makes the
            # client library retry on a pooled one.
            connector = aiohttp.TCPConnector(force_close=True)
            async with aiohttp.ClientSession(connector=connector) as session:
                await asyncio.wait_for(test(server, session), 10)

    asyncio.run(main())


async def next_event(ws: aiohttp.ClientWebSocketResponse, kind: str, timeout: float = 2.0
                     ) -> dict[str, Any]:
    """The next frame of type `kind`, skipping others (health checks)."""
    deadline = time.monotonic() + timeout
    while True:
        msg = await ws.receive(timeout=max(0.01, deadline - time.monotonic()))
        assert msg.type == aiohttp.WSMsgType.TEXT, msg
        event = json.loads(msg.data)
        if event["type"] == kind:
            return event


def assert_error(status: int, body: dict[str, Any], want_status: int, want_code: int) -> None:
    assert status == want_status, body
    assert set(body) == ERROR_KEYS, body
    assert body["code"] == want_code and body["StatusCode"] == want_status, body


# -- tokens and auth ---------------------------------------------------------------------------

def test_tokens_round_trip_and_fail_with_the_right_codes() -> None:
    token = make_token("alice", secret="s")
    assert verify_token(token, "s") == "alice"
    for bad, code in ((make_token("alice", secret="other"), 43), ("not.a.jwt", 5), (None, 5),
                      (make_token("alice", secret="s", expires_at=time.time() - 5), 40)):
        with pytest.raises(ApiError) as caught:
            verify_token(bad, "s")
        assert (caught.value.status, caught.value.code) == (401, code)
    assert verify_token(make_token("a", "s", expires_at=time.time() + 60), "s") == "a"


def test_rest_auth_errors_have_streams_shape() -> None:
    async def test(server: DevServer, session: aiohttp.ClientSession) -> None:
        wrong_key = Api(server, session, "alice", api_key="nope")
        assert_error(*(await wrong_key.send("x"))[:2], 401, 2)
        bad = Api(server, session, "alice", token=make_token("alice", "wrong-secret"))
        assert_error(*(await bad.send("x"))[:2], 401, 43)
        expired = Api(server, session, "alice",
                      token=server.make_token("alice", expires_at=time.time() - 1))
        status, body, _ = await expired.send("x")
        assert_error(status, body, 401, 40)
        assert body["message"] == "token expired"
        async with session.get(server.url + "/no/such/route") as r:
            assert_error(r.status, await r.json(), 404, 16)
        async with session.post(server.url + "/sync", params={"api_key": "devkey"},
                                headers={"Authorization": server.make_token("alice")}) as r:
            assert_error(r.status, await r.json(), 401, 5)  # no stream-auth-type header

    with_server(test)


# -- messages ------------------------------------------------------------------------------------

def test_send_message_then_duplicate_id_is_already_exists() -> None:
    async def test(server: DevServer, session: aiohttp.ClientSession) -> None:
        alice = Api(server, session, "alice")
        status, body, headers = await alice.send("hi", id="m-1", attachments=[{"type": "x"}],
                                                 colour="red", mentioned_users=["bob"])
        assert status == 201, body
        message = body["message"]
        assert message["id"] == "m-1" and message["text"] == "hi" and message["colour"] == "red"
        assert message["user"]["id"] == "alice" and message["type"] == "regular"
        assert [u["id"] for u in message["mentioned_users"]] == ["bob"]
        assert message["created_at"].endswith("Z") and len(message["created_at"]) == 27
        assert "duration" in body and headers["X-RateLimit-Limit"] == "1000"
        status, body, _ = await alice.send("hi again", id="m-1")
        assert_error(status, body, 400, 4)
        assert "already exists" in body["message"]
        state = server.snapshot()
        assert state["send_attempts"]["m-1"] == 2 and state["send_applied"]["m-1"] == 1
        assert sum(1 for m in state["messages"] if m["id"] == "m-1") == 1

    with_server(test)


def test_send_message_errors() -> None:
    async def test(server: DevServer, session: aiohttp.ClientSession) -> None:
        alice, dave = Api(server, session, "alice"), Api(server, session, "dave")
        assert_error(*(await alice.send("x", cid="messaging:nowhere"))[:2], 404, 16)
        assert_error(*(await dave.send("x", cid="messaging:alice-bob"))[:2], 403, 17)
        assert_error(*(await alice.send(""))[:2], 400, 4)
        assert_error(*(await alice.send("x" * 5001))[:2], 400, 4)
        assert_error(*(await alice.send("x", parent_id="missing"))[:2], 400, 4)
        status, body, _ = await alice.call("POST", "/channels/messaging/general/message",
                                           {"nope": 1})
        assert_error(status, body, 400, 4)

    with_server(test)


def test_threads_quotes_update_partial_update_and_deletes() -> None:
    async def test(server: DevServer, session: aiohttp.ClientSession) -> None:
        alice, bob = Api(server, session, "alice"), Api(server, session, "bob")
        await alice.send("root", id="root")
        status, body, _ = await bob.send("reply", id="r1", parent_id="root",
                                         quoted_message_id="root")
        assert status == 201 and body["message"]["type"] == "reply"
        assert body["message"]["quoted_message"]["id"] == "root"
        assert server.state.messages["root"].reply_count == 1

        status, body, _ = await alice.call("POST", "/messages/root",
                                           {"message": {"text": "edited", "tag": 1}})
        assert status == 201 and body["message"]["text"] == "edited"
        assert body["message"]["tag"] == 1 and body["message"]["message_text_updated_at"]
        assert_error(*(await bob.call("POST", "/messages/root",
                                      {"message": {"text": "mine"}}))[:2], 403, 17)
        assert_error(*(await alice.call("POST", "/messages/none",
                                        {"message": {"text": "x"}}))[:2], 404, 16)
        status, body, _ = await alice.call("PUT", "/messages/root",
                                           {"set": {"text": "partial", "mood": "ok"},
                                            "unset": ["tag"]})
        assert status == 201 and body["message"]["text"] == "partial"
        assert body["message"]["mood"] == "ok" and "tag" not in body["message"]
        assert_error(*(await alice.call("PUT", "/messages/root",
                                        {"set": {"created_at": "x"}}))[:2], 400, 4)

        status, body, _ = await bob.call("DELETE", "/messages/r1")
        assert status == 200 and body["message"]["type"] == "deleted"
        assert body["message"]["deleted_at"]
        status, body, _ = await bob.call("DELETE", "/messages/r1", hard="true")
        assert status == 200 and "r1" not in server.state.messages
        assert server.state.messages["root"].reply_count == 0
        assert_error(*(await bob.call("DELETE", "/messages/r1"))[:2], 404, 16)
        assert_error(*(await bob.call("DELETE", "/messages/root"))[:2], 403, 17)
        status, body, _ = await bob.call("DELETE", "/messages/root", delete_for_me="true")
        assert status == 200 and body["message"]["type"] == "deleted"
        assert server.state.messages["root"].type == "regular"  # others still see it
        state = server.snapshot()
        assert "r1" in state["hard_deleted_message_ids"]
        root = next(m for m in state["messages"] if m["id"] == "root")
        assert root["deleted_for"] == ["bob"] and root["deleted"] is False
        # a hard-deleted id stays taken: a resend after a lost answer is still "already exists"
        assert "already exists" in (await bob.send("again", id="r1"))[1]["message"]

    with_server(test)


# -- reactions, reads, drafts ---------------------------------------------------------------------

def test_reactions_replace_enforce_unique_and_delete() -> None:
    async def test(server: DevServer, session: aiohttp.ClientSession) -> None:
        alice, bob = Api(server, session, "alice"), Api(server, session, "bob")
        path = "/messages/demo-hello/reaction"
        status, body, _ = await alice.call("POST", path, {"reaction": {"type": "like"}})
        assert status == 201 and body["reaction"]["type"] == "like"
        assert body["message"]["reaction_counts"] == {"like": 1}
        assert [r["type"] for r in body["message"]["own_reactions"]] == ["like"]
        await bob.call("POST", path, {"reaction": {"type": "like", "score": 3}})
        _, body, _ = await alice.call("POST", path, {"reaction": {"type": "like", "score": 2,
                                                                  "emoji": "+1"}})
        assert body["message"]["reaction_counts"] == {"like": 2}
        assert body["message"]["reaction_scores"] == {"like": 5}
        assert body["reaction"]["emoji"] == "+1"
        _, body, _ = await alice.call("POST", path, {"reaction": {"type": "love"},
                                                     "enforce_unique": True})
        assert body["message"]["reaction_counts"] == {"like": 1, "love": 1}
        assert len(body["message"]["latest_reactions"]) == 2
        status, body, _ = await alice.call("DELETE", path + "/love")
        assert status == 200 and body["message"]["reaction_counts"] == {"like": 1}
        assert_error(*(await alice.call("DELETE", path + "/love"))[:2], 404, 16)
        assert_error(*(await alice.call("POST", "/messages/nope/reaction",
                                        {"reaction": {"type": "x"}}))[:2], 404, 16)
        assert_error(*(await alice.call("POST", path, {"reaction": {}}))[:2], 400, 4)
        kinds = [e.event["type"] for e in server.state.history if e.event.get("reaction")]
        assert kinds == ["reaction.new", "reaction.new", "reaction.updated",
                         "reaction.updated", "reaction.deleted"]

    with_server(test)


def test_mark_read_mark_unread_and_drafts() -> None:
    async def test(server: DevServer, session: aiohttp.ClientSession) -> None:
        carol = Api(server, session, "carol")
        assert server.state.reads[(GENERAL, "carol")].unread_messages == 4
        status, body, _ = await carol.call("POST", "/channels/messaging/general/read", {})
        assert status == 201 and body["event"]["type"] == "message.read"
        assert body["event"]["last_read_message_id"] == "demo-quote"
        assert server.state.reads[(GENERAL, "carol")].unread_messages == 0
        status, body, _ = await carol.call("POST", "/channels/messaging/general/unread",
                                           {"message_id": "demo-hello"})
        assert status == 201
        read = server.state.reads[(GENERAL, "carol")]
        assert (read.unread_messages, read.last_read_message_id) == (3, "demo-welcome")
        assert_error(*(await carol.call("POST", "/channels/messaging/general/unread",
                                        {"message_id": "nope"}))[:2], 404, 16)
        assert_error(*(await carol.call("POST", "/channels/messaging/alice-bob/read",
                                        {}))[:2], 403, 17)

        status, body, _ = await carol.call("POST", "/channels/messaging/general/draft",
                                           {"message": {"text": "draft", "x": 1}})
        assert status == 201 and body["draft"]["message"]["text"] == "draft"
        await carol.call("POST", "/channels/messaging/general/draft",
                         {"message": {"text": "thread draft", "parent_id": "demo-welcome"}})
        assert len(server.snapshot()["drafts"]) == 2
        status, _, _ = await carol.call("DELETE", "/channels/messaging/general/draft",
                                        parent_id="demo-welcome")
        assert status == 200
        assert [d["parent_id"] for d in server.snapshot()["drafts"]] == [None]
        assert_error(*(await carol.call("DELETE", "/channels/messaging/general/draft",
                                        parent_id="demo-welcome"))[:2], 404, 16)
        kinds = [e.event["type"] for e in server.state.history if e.only_user == "carol"]
        assert kinds[-4:] == ["notification.mark_unread", "draft.updated", "draft.updated",
                              "draft.deleted"]

    with_server(test)


# -- queries and sync -----------------------------------------------------------------------------

def test_query_channels_filters_sort_and_paging() -> None:
    async def test(server: DevServer, session: aiohttp.ClientSession) -> None:
        alice = Api(server, session, "alice")

        async def cids(body: dict[str, Any]) -> list[str]:
            status, answer, _ = await alice.call("POST", "/channels", body)
            assert status == 201, answer
            return [c["channel"]["cid"] for c in answer["channels"]]

        everything = await cids({"filter_conditions": {"members": {"$in": ["alice"]}}})
        assert set(everything) == {GENERAL, "messaging:alice-bob", "team:support",
                                   "messaging:random"}
        # newest activity first; a channel without messages counts from its creation
        assert everything == ["messaging:random", "team:support", "messaging:alice-bob",
                              GENERAL]
        assert await cids({"filter_conditions": {"type": "team"}}) == ["team:support"]
        assert set(await cids({"filter_conditions": {"id": {"$in": ["general", "random"]}}})) \
            == {GENERAL, "messaging:random"}
        assert await cids({"filter_conditions": {"cid": {"$in": [GENERAL]}}}) == [GENERAL]
        assert await cids({"filter_conditions": {"members": {"$in": ["dave"]}}}) == [GENERAL]
        assert await cids({"filter_conditions": {"region": "eu"}}) == ["team:support"]
        by_created = await cids({"filter_conditions": {}, "sort": [
            {"field": "created_at", "direction": 1}]})
        assert by_created == [GENERAL, "messaging:alice-bob", "team:support",
                              "messaging:random"]
        assert await cids({"sort": [{"field": "created_at", "direction": 1}], "limit": 2,
                           "offset": 1}) == ["messaging:alice-bob", "team:support"]
        _, answer, _ = await alice.call("POST", "/channels", {
            "filter_conditions": {"cid": GENERAL}, "message_limit": 2})
        state = answer["channels"][0]
        assert [m["id"] for m in state["messages"]] == ["demo-thread-2", "demo-quote"]
        assert {"channel", "messages", "pinned_messages", "members", "read", "membership",
                "watcher_count", "watchers", "threads"} <= set(state)
        assert state["channel"]["name"] == "General" and state["channel"]["member_count"] == 4
        assert state["membership"]["user_id"] == "alice"

    with_server(test)


def test_query_one_channel_pages_and_creates() -> None:
    async def test(server: DevServer, session: aiohttp.ClientSession) -> None:
        alice = Api(server, session, "alice")
        status, body, _ = await alice.call("POST", "/channels/messaging/general/query",
                                           {"state": True, "messages": {"limit": 2,
                                                                        "id_lt": "demo-quote"}})
        assert status == 201
        assert [m["id"] for m in body["messages"]] == ["demo-hello", "demo-thread-2"]
        assert_error(*(await alice.call("POST", "/channels/messaging/none/query",
                                        {}))[:2], 404, 16)
        assert_error(*(await Api(server, session, "dave").call(
            "POST", "/channels/messaging/alice-bob/query", {}))[:2], 403, 17)
        status, body, _ = await alice.call("POST", "/channels/messaging/new/query",
                                           {"data": {"members": ["bob"], "topic": "t"}})
        assert status == 201 and body["channel"]["topic"] == "t"
        assert {m["user_id"] for m in body["members"]} == {"alice", "bob"}

    with_server(test)


def test_sync_returns_events_in_order_and_enforces_the_window() -> None:
    async def test(server: DevServer, session: aiohttp.ClientSession) -> None:
        alice, bob = Api(server, session, "alice"), Api(server, session, "bob")
        since = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        await bob.send("one", id="s1")
        await bob.send("two", cid="messaging:alice-bob", id="s2")
        await bob.call("POST", "/messages/s1/reaction", {"reaction": {"type": "like"}})
        await bob.call("POST", "/channels/messaging/general/draft", {"message": {"text": "d"}})
        status, body, _ = await alice.call("POST", "/sync", {
            "channel_cids": [GENERAL, "messaging:alice-bob", "team:support",
                             "messaging:nowhere"],
            "last_sync_at": since})
        assert status == 201, body
        assert [e["type"] for e in body["events"]] == ["message.new", "message.new",
                                                       "reaction.new"]  # not bob's draft
        times = [parse_time(e["created_at"]) for e in body["events"]]
        assert times == sorted(times)
        assert body["inaccessible_cids"] == ["messaging:nowhere"]
        dave = Api(server, session, "dave")
        _, body, _ = await dave.call("POST", "/sync", {"channel_cids": ["messaging:alice-bob"],
                                                       "last_sync_at": since})
        assert body["inaccessible_cids"] == ["messaging:alice-bob"] and body["events"] == []

        old = (datetime.now(timezone.utc) - timedelta(days=31)).isoformat()
        status, body, _ = await alice.call("POST", "/sync", {"channel_cids": [GENERAL],
                                                             "last_sync_at": old})
        assert_error(status, body, 400, 4)
        assert "too old" in body["message"]
        status, body, _ = await alice.call("POST", "/sync", {
            "channel_cids": [f"messaging:c{i}" for i in range(256)], "last_sync_at": since})
        assert_error(status, body, 400, 4)
        server.max_sync_events = 1
        status, body, _ = await alice.call("POST", "/sync", {"channel_cids": [GENERAL],
                                                             "last_sync_at": since})
        assert_error(status, body, 400, 4)
        assert "too many events" in body["message"]

    with_server(test)


# -- websocket ------------------------------------------------------------------------------------

def test_websocket_first_frame_events_and_health_checks() -> None:
    async def test(server: DevServer, session: aiohttp.ClientSession) -> None:
        alice, bob = Api(server, session, "alice"), Api(server, session, "bob")
        ws = await alice.ws()
        first = json.loads((await ws.receive(timeout=2)).data)
        assert first["type"] == "health.check" and first["cid"] == "*"
        assert first["connection_id"] and first["me"]["id"] == "alice"
        assert first["me"]["total_unread_count"] == 1 and first["me"]["unread_channels"] == 1
        await bob.send("ping", id="w1")
        event = await next_event(ws, "message.new")
        assert event["message"]["id"] == "w1" and event["cid"] == GENERAL
        assert event["channel_member_count"] == 4 and event["channel_message_count"] >= 1
        assert event["user"]["id"] == "bob" and event["total_unread_count"] == 2
        assert {"channel_type", "channel_id", "created_at", "message_id"} <= set(event)
        # another user's action through /_dev/act arrives too
        async with session.post(server.url + "/_dev/act", json={
                "user_id": "bob", "action": "send_reaction", "message_id": "w1",
                "type": "wow"}) as resp:
            assert resp.status == 201
        assert (await next_event(ws, "reaction.new"))["reaction"]["type"] == "wow"
        # not to non-members: dave is not in alice-bob
        dave_ws = await Api(server, session, "dave").ws(in_query=True)  # token in the query
        assert json.loads((await dave_ws.receive(timeout=2)).data)["type"] == "health.check"
        await bob.send("private", cid="messaging:alice-bob")
        assert (await next_event(ws, "message.new"))["cid"] == "messaging:alice-bob"
        await dave_ws.send_str(json.dumps({"type": "health.check"}))
        beat = await next_event(dave_ws, "health.check", timeout=1)  # periodic, no me
        assert beat["connection_id"] and "me" not in beat
        # seeding a member into a running server announces it
        server.seed(channels=[{"type": "messaging", "id": "random", "members": ["dave"]}])
        added = await next_event(dave_ws, "notification.added_to_channel")
        assert added["cid"] == "messaging:random"
        assert (await next_event(ws, "member.added"))["member"]["user_id"] == "dave"
        await ws.close()
        await dave_ws.close()

    with_server(test, health_interval=0.2)


def test_every_write_reaches_the_members_sockets_and_private_ones_only_the_owner() -> None:
    async def test(server: DevServer, session: aiohttp.ClientSession) -> None:
        alice, bob = Api(server, session, "alice"), Api(server, session, "bob")
        alice_ws, bob_ws = await alice.ws(), await bob.ws()
        await bob.send("to edit", id="e1")
        await bob.call("POST", "/messages/e1", {"message": {"text": "edited"}})
        await bob.call("PUT", "/messages/e1", {"set": {"k": 1}})
        await bob.call("POST", "/messages/e1/reaction", {"reaction": {"type": "like"}})
        await bob.call("POST", "/messages/e1/reaction", {"reaction": {"type": "like"}})
        await bob.call("DELETE", "/messages/e1/reaction/like")
        await bob.call("POST", "/channels/messaging/general/draft", {"message": {"text": "d"}})
        await bob.call("DELETE", "/channels/messaging/general/draft")
        await bob.call("POST", "/channels/messaging/general/unread", {"message_id": "demo-hello"})
        await bob.call("DELETE", "/messages/demo-hello", delete_for_me="true")
        await bob.call("POST", "/channels/messaging/general/read", {})
        await bob.call("DELETE", "/messages/e1", hard="true")
        shared = ["message.new", "message.updated", "message.updated", "reaction.new",
                  "reaction.updated", "reaction.deleted", "message.read", "message.deleted"]
        own_order = [*shared[:6], "draft.updated", "draft.deleted", "notification.mark_unread",
                     "message.deleted", "message.read", "message.deleted"]

        async def kinds(ws: aiohttp.ClientWebSocketResponse, count: int) -> list[dict]:
            events = []
            while len(events) < count:
                event = json.loads((await ws.receive(timeout=2)).data)
                if event["type"] != "health.check":
                    events.append(event)
            return events

        seen = await kinds(alice_ws, len(shared))
        assert [e["type"] for e in seen] == shared
        assert seen[-1]["hard_delete"] is True and seen[-1]["message"]["type"] == "deleted"
        assert seen[4]["message"]["reaction_counts"] == {"like": 1}
        own = await kinds(bob_ws, len(own_order))
        assert [e["type"] for e in own] == own_order
        assert own[9]["deleted_for_me"] is True and own[9]["message_id"] == "demo-hello"
        with pytest.raises(asyncio.TimeoutError):
            await alice_ws.receive(timeout=0.2)  # nothing private leaked to alice
        await alice_ws.close()
        await bob_ws.close()

    with_server(test)


def test_silent_client_is_disconnected_and_ws_auth_is_checked() -> None:
    async def test(server: DevServer, session: aiohttp.ClientSession) -> None:
        ws = await Api(server, session, "alice").ws()
        started = time.monotonic()
        while (msg := await ws.receive(timeout=3)).type == aiohttp.WSMsgType.TEXT:
            pass
        assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
        assert time.monotonic() - started < 2.5
        with pytest.raises(aiohttp.WSServerHandshakeError) as caught:
            await Api(server, session, "alice", token="bad").ws()
        assert caught.value.status == 401
        with pytest.raises(aiohttp.WSServerHandshakeError):
            await Api(server, session, "alice", token=server.make_token("bob")).ws()

    with_server(test, health_interval=0.1, client_timeout=0.4)


# -- rate limits ----------------------------------------------------------------------------------

def test_rate_limit_answers_429_with_headers() -> None:
    async def test(server: DevServer, session: aiohttp.ClientSession) -> None:
        alice = Api(server, session, "alice")
        for i in range(2):
            status, _, headers = await alice.send(f"m{i}")
            assert status == 201 and headers["X-RateLimit-Remaining"] == str(1 - i)
        status, body, headers = await alice.send("too many")
        assert_error(status, body, 429, 9)
        assert headers["X-RateLimit-Limit"] == "2" and headers["X-RateLimit-Remaining"] == "0"
        assert int(headers["X-RateLimit-Reset"]) > time.time()
        assert 1 <= int(headers["Retry-After"]) <= 60
        assert (await Api(server, session, "bob").send("other user"))[0] == 201

    with_server(test, rate_limits={"send_message": 2})


# -- faults ---------------------------------------------------------------------------------------

def test_fault_kinds_over_rest() -> None:
    async def test(server: DevServer, session: aiohttp.ClientSession) -> None:
        alice = Api(server, session, "alice")
        server.faults.add("send_message", "refuse", times=1)
        with pytest.raises(aiohttp.ServerDisconnectedError):
            await alice.send("refused", id="f1")
        assert "f1" not in server.state.messages  # refused before applying

        server.faults.add("send_message", "drop", times=1)
        with pytest.raises(aiohttp.ServerDisconnectedError):
            await alice.send("dropped", id="f2")
        assert "f2" in server.state.messages  # applied, answer lost
        assert "already exists" in (await alice.send("dropped", id="f2"))[1]["message"]

        server.faults.add("*", "delay", times=1, seconds=0.3)
        started = time.monotonic()
        assert (await alice.send("slow"))[0] == 201
        assert time.monotonic() - started >= 0.3

        server.faults.add("send_message", "error5xx", times=2)
        for _ in range(2):
            assert_error(*(await alice.send("x"))[:2], 500, -1)
        assert (await alice.send("then fine"))[0] == 201

        server.faults.add("mark_read", "rate_limit", times=1, seconds=5)
        status, body, headers = await alice.call("POST", "/channels/messaging/general/read", {})
        assert_error(status, body, 429, 9)
        assert int(headers["X-RateLimit-Reset"]) >= time.time() + 4
        assert headers["Retry-After"] == "5"

        server.faults.add("send_reaction", "reject", times=1)
        assert_error(*(await alice.call("POST", "/messages/demo-hello/reaction",
                                        {"reaction": {"type": "x"}}))[:2], 403, 17)
        server.faults.add_spec("send_reaction:reject=404:code=16:times=1")
        assert_error(*(await alice.call("POST", "/messages/demo-hello/reaction",
                                        {"reaction": {"type": "x"}}))[:2], 404, 16)

        server.faults.add("sync", "timeout", times=1, seconds=0.2)
        started = time.monotonic()
        with pytest.raises(aiohttp.ServerDisconnectedError):
            await alice.call("POST", "/sync", {"channel_cids": [], "last_sync_at": "x"})
        assert time.monotonic() - started >= 0.2
        assert len(server.faults) == 0  # every `times` rule used up

    with_server(test)


def test_client_timeout_against_a_timeout_fault_and_fast_stop() -> None:
    async def test(server: DevServer, session: aiohttp.ClientSession) -> None:
        server.faults.add("query_channels", "timeout")  # 30 s: longer than any client waits
        alice = Api(server, session, "alice")
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(alice.call("POST", "/channels", {}), 0.3)

    started = time.monotonic()
    with_server(test)
    assert time.monotonic() - started < 5  # stop() did not wait for the hanging handler


def test_close_ws_connect_faults_and_probability_is_deterministic() -> None:
    async def test(server: DevServer, session: aiohttp.ClientSession) -> None:
        alice = Api(server, session, "alice")
        ws = await alice.ws()
        await ws.receive(timeout=2)
        server.faults.add("mark_read", "close_ws", times=1)
        status, _, _ = await alice.call("POST", "/channels/messaging/general/read", {})
        assert status == 201  # the call itself goes through
        msg = await ws.receive(timeout=2)
        assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
        assert await server.close_websockets() == 0

        server.faults.add("connect", "error5xx", times=1)
        with pytest.raises(aiohttp.WSServerHandshakeError) as caught:
            await alice.ws()
        assert caught.value.status == 500
        # aiohttp resends an idempotent request (GET, PUT, DELETE) once when the connection
        # is cut, so it takes two refusals to make the handshake fail
        server.faults.add("connect", "refuse", times=2)
        with pytest.raises((aiohttp.ServerDisconnectedError, aiohttp.ClientOSError)):
            await alice.ws()
        server.faults.add("connect", "drop", times=1)
        ws = await alice.ws()
        assert (await ws.receive(timeout=2)).type in (aiohttp.WSMsgType.CLOSE,
                                                      aiohttp.WSMsgType.CLOSED)

        async def pattern() -> list[int]:
            server.faults.clear()
            server.faults.reseed(7)
            server.faults.add("query_channel", "error5xx", probability=0.5)
            return [(await alice.call("POST", "/channels/messaging/general/query", {}))[0]
                    for _ in range(12)]

        first = await pattern()
        assert set(first) == {201, 500}
        assert await pattern() == first

    with_server(test)


def test_ws_event_drop_loses_one_pushed_frame_and_keeps_it_for_sync() -> None:
    async def test(server: DevServer, session: aiohttp.ClientSession) -> None:
        alice = Api(server, session, "alice")
        ws = await alice.ws()
        await ws.receive(timeout=2)  # health.check
        server.faults.add("*", "delay", seconds=0.0)  # `*` leaves pushed events alone
        server.faults.add_spec("ws_event:drop:times=1")
        server.act("bob", "send_message", cid=GENERAL, text="lost on the way", id="lost-1")
        server.act("bob", "send_message", cid=GENERAL, text="arrives", id="kept-1")
        frame = json.loads((await ws.receive(timeout=2)).data)
        assert frame["type"] == "message.new" and frame["message"]["id"] == "kept-1"
        assert [f["kind"] for f in server.faults.list()] == ["delay"]  # used up
        # The event is in the history `/sync` draws from: a frame lost, not an event unsent.
        since = (datetime.now(timezone.utc) - timedelta(minutes=1)).isoformat()
        status, body, _ = await alice.call("POST", "/sync", {"channel_cids": [GENERAL],
                                                            "last_sync_at": since})
        assert status == 201
        assert "lost-1" in {e.get("message", {}).get("id") for e in body["events"]}
        await ws.close()

    with_server(test)
    for bad in ("ws_event:refuse", "ws_event:error5xx:times=1"):
        with pytest.raises(FaultSpecError):
            parse_spec(bad)
    assert parse_spec("ws_event:drop:times=2").times == 2


def test_dev_endpoints_faults_state_act_seed_token() -> None:
    async def test(server: DevServer, session: aiohttp.ClientSession) -> None:
        base = server.url + "/_dev"
        async with session.post(base + "/faults", json={"spec": "send_message:error5xx:times=3"}
                                ) as r:
            assert r.status == 201
        async with session.post(base + "/faults", json={"faults": [
                {"endpoint": "sync", "kind": "delay", "seconds": 0.1, "p": 0.5}]}) as r:
            assert r.status == 201
        async with session.get(base + "/faults") as r:
            rules = (await r.json())["faults"]
        assert [(f["endpoint"], f["kind"], f["times"]) for f in rules] == [
            ("send_message", "error5xx", 3), ("sync", "delay", None)]
        async with session.post(base + "/faults", json={"kind": "explode"}) as r:
            assert_error(r.status, await r.json(), 400, 4)
        async with session.delete(base + "/faults") as r:
            assert (await r.json())["removed"] == 2

        async with session.post(base + "/seed", json={
                "users": [{"id": "erin", "name": "Erin", "team": "x"}],
                "channels": [{"type": "messaging", "id": "erin", "members": ["erin", "alice"],
                              "messages": [{"user_id": "erin", "text": "seeded"}]}]}) as r:
            assert r.status == 201 and (await r.json())["messages"] == 1
        async with session.post(base + "/act", json={
                "user_id": "erin", "action": "send_message", "cid": "messaging:erin",
                "text": "acted", "id": "act-1"}) as r:
            assert r.status == 201 and (await r.json())["message"]["user"]["id"] == "erin"
        async with session.post(base + "/act", json={
                "user_id": "alice", "action": "delete_message", "message_id": "act-1"}) as r:
            assert_error(r.status, await r.json(), 403, 17)
        async with session.get(base + "/token", params={"user_id": "erin"}) as r:
            assert verify_token((await r.json())["token"], server.secret) == "erin"
        async with session.get(base + "/state") as r:
            state = await r.json()
        assert {"users", "channels", "messages", "reactions", "reads", "drafts",
                "send_attempts", "send_applied", "faults", "calls"} <= set(state)
        assert any(m["id"] == "act-1" for m in state["messages"])
        assert next(u for u in state["users"] if u["id"] == "erin")["team"] == "x"

    with_server(test)


def test_fault_spec_parser() -> None:
    rule = parse_spec("send_message:error5xx:times=3")
    assert (rule.endpoint, rule.kind, rule.times, rule.answer()) == (
        "send_message", "error5xx", 3, (500, -1, "internal error (injected fault)"))
    rule = parse_spec("*:delay=0.5:p=0.2")
    assert (rule.endpoint, rule.kind, rule.duration, rule.probability) == ("*", "delay", 0.5, 0.2)
    assert parse_spec("sync:rate_limit=10").duration == 10
    assert parse_spec("connect:timeout").duration == 30
    assert parse_spec("x:reject=404:code=16:message=gone".replace("x", "delete_draft")
                      ).answer() == (404, 16, "gone")
    assert parse_spec("send_message:error5xx=503").answer()[0] == 503
    for bad in ("send_message", "nowhere:refuse", "send_message:explode",
                "send_message:refuse:times=0", "send_message:refuse:p=2",
                "send_message:refuse:color=red", "send_message:delay=soon",
                "send_message:reject=500", "send_message:error5xx=404"):
        with pytest.raises(FaultSpecError):
            parse_spec(bad)


# -- threads and the command line -----------------------------------------------------------------

def test_threaded_server_for_synchronous_callers() -> None:
    with ThreadedDevServer(seed="demo", rate_limits={"send_message": None}) as server:
        request = urllib.request.Request(
            server.url + "/channels/messaging/general/message?api_key=devkey",
            data=json.dumps({"message": {"id": "t1", "text": "from a thread"}}).encode(),
            headers={"Authorization": server.make_token("bob"), "stream-auth-type": "jwt",
                     "Content-Type": "application/json"}, method="POST")
        with urllib.request.urlopen(request, timeout=5) as resp:
            assert resp.status == 201
        assert server.act("alice", "send_reaction", message_id="t1", type="like")["reaction"]
        server.seed(users=["zed"])
        snapshot = server.snapshot()
        assert snapshot["send_applied"]["t1"] == 1 and "zed" in {u["id"] for u in
                                                                 snapshot["users"]}
        server.faults.add("send_message", "error5xx", times=1)
        assert len(server.faults) == 1
    server = run_in_thread()
    try:
        assert server.url.startswith("http://127.0.0.1:")
    finally:
        server.stop()


def test_seed_forms_and_unknown_seed() -> None:
    server = DevServer(seed={"users": ["u1", {"id": "u2", "nick": "two"}],
                             "channels": [{"type": "team", "id": "t", "members": ["u1", "u2"],
                                           "messages": [{"user_id": "u1", "text": "hey"}]}]})
    snapshot = server.snapshot()
    assert [c["cid"] for c in snapshot["channels"]] == ["team:t"]
    assert snapshot["channels"][0]["created_by"]["id"] == "u1"
    assert [m["text"] for m in snapshot["messages"]] == ["hey"]
    assert next(u for u in snapshot["users"] if u["id"] == "u2")["nick"] == "two"
    assert DevServer(seed=lambda state: state.upsert_user("x")).state.users.keys() == {"x"}
    assert DevServer().snapshot()["channels"] == []
    with pytest.raises(ValueError):
        DevServer(seed="nope")


def test_cli_devserver_prints_its_url_and_serves() -> None:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-c", "from chatledger.cli.main import main; main()", "devserver",
         "--port", "0", "--fault", "send_message:error5xx:times=1", "--health-interval", "5"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = proc.stdout.readline()
        assert "listening on http://127.0.0.1:" in line, line + proc.stderr.read()
        url = line.strip().rsplit(" ", 1)[-1]
        lines = [proc.stdout.readline() for _ in range(6)]
        assert any("alice" in l and l.strip().split()[-1].count(".") == 2 for l in lines)
        with urllib.request.urlopen(url + "/_dev/state", timeout=5) as resp:
            state = json.loads(resp.read())
        assert state["faults"][0]["kind"] == "error5xx"
        assert any(c["cid"] == GENERAL for c in state["channels"])
        proc.terminate()  # SIGTERM, like Ctrl-C: a clean stop
        assert proc.wait(5) == 0
        assert "Stopped." in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)


def test_cli_devserver_refuses_remote_hosts_and_bad_specs() -> None:
    runner = CliRunner()
    result = runner.invoke(cli, ["devserver", "--host", "0.0.0.0"])
    assert result.exit_code != 0 and "--allow-remote" in result.output
    result = runner.invoke(cli, ["devserver", "--fault", "send_message:explode"])
    assert result.exit_code != 0 and "unknown fault kind" in result.output
