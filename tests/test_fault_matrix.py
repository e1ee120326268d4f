"""Every fault the development server can inject, alone and in pairs, during replay and during
catch-up: once the faults are gone, one more sync leaves the local tables equal to the server's
state, with every command's outcome recorded (none lost, none applied twice).

Then a property: random offline sessions (the user's actions on their own and others' messages,
the others talking meanwhile) converge after replay and catch-up.

Loopback only, small timeouts (a `timeout` fault costs half a second), fast backoff.
"""

from __future__ import annotations

import asyncio
import itertools
import tempfile
import time
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chatledger import ChatStore
from chatledger.eventstore.commands import CommandError, CommandStatus
from chatledger.sync.backend import BackendError
from chatledger.sync.client import SyncClient
from chatledger.sync.devserver import DevServer
from chatledger.sync.devserver.faults import KINDS
from chatledger.sync.devserver.wire import ApiError
from convergence import differences, stored_twice
from reliability import connected, no_rate_limits, run_async, scaled

GENERAL, DIRECT = "messaging:general", "messaging:alice-bob"
FINISHED = {CommandStatus.SUCCEEDED, CommandStatus.REJECTED, CommandStatus.CANCELLED}
WRITES = ("send_message", "update_message", "delete_message", "send_reaction", "delete_reaction",
          "mark_read")
CATCH_UP = ("connect", "sync", "query_channels", "query_channel")
# How each kind is injected: short enough that a test takes a second or two.
OPTIONS: dict[str, dict[str, Any]] = {
    "refuse": {}, "drop": {}, "error5xx": {}, "close_ws": {}, "reject": {},
    "delay": {"seconds": 0.05},
    "rate_limit": {"seconds": 0.2},
    "timeout": {"seconds": 1.0},  # longer than the client's 0.5 s
}
assert set(OPTIONS) == set(KINDS), "a fault kind the matrix does not cover"
COMBOS = [(k,) for k in KINDS] + list(itertools.combinations(KINDS, 2))


def online(directory: Any) -> Any:
    """Server, store and client with short timeouts and no rate limits (`reliability.connected`)."""
    return connected(directory, timeout=0.5, health_interval=0.3, dead_after=2.0,
                     rate_limits=no_rate_limits())


async def sync_until_settled(store: ChatStore, client: SyncClient, seconds: float) -> int:
    """run_once over and over while faults fire; backend errors are expected, nothing else."""
    failures = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            await client.run_once()
        except BackendError:
            failures += 1
        else:
            if not store.outbox.pending():
                break
        await asyncio.sleep(0.05)
    return failures


async def converge(server: DevServer, store: ChatStore, client: SyncClient,
                   commands: list[str], *, may_reject: bool) -> None:
    """Faults gone: a final sync; then every command has an outcome and the states agree."""
    server.faults.clear()
    for _ in range(40):  # a rate-limited command waits for its reset (whole seconds)
        await client.run_once()
        if not store.outbox.pending():
            break
        await asyncio.sleep(0.1)
    assert store.outbox.pending() == []
    statuses = {c.id: c.status for c in store.outbox.list()}
    assert set(commands) <= set(statuses), "a command went missing"
    assert set(statuses.values()) <= FINISHED
    rejected = [c for c, s in statuses.items() if s == CommandStatus.REJECTED]
    if not may_reject:
        assert rejected == [], [store.outbox.get(c).reason for c in rejected]
    snapshot = server.snapshot()
    assert stored_twice(snapshot) == []
    if rejected:
        # A conflict keeps the local change for the user to fix or give up; giving up undoes it.
        for command in rejected:
            if store.outbox.get(command).status == CommandStatus.REJECTED:
                store.outbox.cancel(command)
        await client.run_once()
        snapshot = server.snapshot()
    assert differences(store, snapshot) == []
    assert store.verify() == []


def offline_session(server: DevServer, store: ChatStore, tag: str) -> list[str]:
    """Actions while offline (on own and others' messages), the others talking meanwhile."""
    commands = [
        store.send_message(GENERAL, f"one {tag}", id=f"{tag}-1"),
        store.send_message(DIRECT, f"two {tag}", id=f"{tag}-2"),
        store.send_message(GENERAL, f"three {tag}", id=f"{tag}-3"),
        store.update_message(f"{tag}-2", f"two, edited {tag}"),
        store.send_reaction("demo-hello", "like"),
        store.send_reaction(f"{tag}-1", "love"),
        store.update_message("demo-welcome", f"welcome, edited {tag}"),
        store.delete_message(f"{tag}-3"),
        store.mark_read(GENERAL),
    ]
    for i in range(2):
        server.act("bob", "send_message", cid=GENERAL, text=f"missed {i}", id=f"{tag}-bob-{i}")
    server.act("carol", "send_reaction", message_id="demo-hello", type="wow")
    return commands


def add_faults(server: DevServer, kinds: tuple[str, ...], endpoints: tuple[str, ...]) -> None:
    for kind in kinds:
        for endpoint in endpoints:
            if kind == "reject" and endpoint not in ("send_reaction", "sync"):
                continue  # one permanent refusal is enough to see it recorded
            # times=2: aiohttp silently resends an idempotent request cut once.
            server.faults.add(endpoint, kind, times=2, **OPTIONS[kind])


@pytest.mark.parametrize("phase", ["replay", "catch-up"])
@pytest.mark.parametrize("kinds", COMBOS, ids=["+".join(c) for c in COMBOS])
def test_faults_converge(tmp_path, kinds: tuple[str, ...], phase: str) -> None:
    async def main() -> None:
        async with online(tmp_path) as (server, store, client):
            await client.run_once()
            commands = offline_session(server, store, "f")
            add_faults(server, kinds, WRITES if phase == "replay" else CATCH_UP)
            await sync_until_settled(store, client, seconds=3.0)
            # The faults may still be armed (`times`), or used up: either way clear them.
            await converge(server, store, client, commands,
                           may_reject="reject" in kinds and phase == "replay")
            snapshot = server.snapshot()
            assert {"f-1", "f-2"} <= set(snapshot["send_applied"])
            assert "f-3" not in snapshot["send_attempts"]  # deleted before it was sent

    run_async(main(), 60)


def test_a_rejected_command_is_recorded_as_a_conflict(tmp_path) -> None:
    async def main() -> None:
        async with online(tmp_path) as (server, store, client):
            await client.run_once()
            command = store.send_reaction("demo-hello", "like")
            server.faults.add("send_reaction", "reject", times=1)
            await client.run_once()
            info = store.outbox.get(command)
            assert info.status == CommandStatus.REJECTED and "injected fault" in info.reason
            assert [c.id for c in store.outbox.conflicts()] == [command]

    run_async(main(), 30)


# --------------------------------------------------------------------------------------------
# Property: random offline sessions converge

TARGET = st.integers(0, 1_000)
OPS = st.one_of(
    st.tuples(st.just("send"), st.sampled_from([GENERAL, DIRECT])),
    st.tuples(st.just("edit"), TARGET),
    st.tuples(st.just("delete"), TARGET, st.sampled_from(["soft", "hard"])),
    st.tuples(st.just("react"), TARGET, st.sampled_from(["like", "love"])),
    st.tuples(st.just("unreact"), TARGET, st.sampled_from(["like", "love"])),
    st.tuples(st.just("mark_read"), st.sampled_from([GENERAL, DIRECT])),
    st.tuples(st.just("other_send"), st.sampled_from(["bob", "carol"])),
    st.tuples(st.just("other_edit"), TARGET),
    st.tuples(st.just("other_delete"), TARGET),
    st.tuples(st.just("other_react"), TARGET, st.sampled_from(["like", "wow"])),
    st.tuples(st.just("sync")),
)


def _ids(store: ChatStore, own: bool) -> list[str]:
    with store.log.datastore.transaction(commit=False) as c:
        sql = ("SELECT id FROM messages WHERE cid IN (?, ?) AND deleted_at IS NULL "
               "AND deleted_for_me = 0" + (" AND user_id = 'alice'" if own else "") + " ORDER BY id")
        return [r[0] for r in c.execute(sql, (GENERAL, DIRECT))]


def _server_ids(server: DevServer, author: str | None = None) -> list[str]:
    return sorted(m["id"] for m in server.snapshot()["messages"]
                  if m["cid"] == GENERAL and not m["deleted"]
                  and (author is None or m.get("user_id") == author))


async def run_session(ops: list[tuple[Any, ...]], directory: str) -> None:
    async with online(directory) as (server, store, client):
        await client.run_once()
        commands: list[str] = []
        for n, op in enumerate(ops):
            kind = op[0]
            try:
                if kind == "send":
                    commands.append(store.send_message(op[1], f"s{n}", id=f"p-{n}"))
                elif kind in ("edit", "delete"):
                    own = _ids(store, own=True)
                    if own:
                        target = own[op[1] % len(own)]
                        commands.append(store.update_message(target, f"e{n}") if kind == "edit"
                                        else store.delete_message(target, hard=op[2] == "hard"))
                elif kind in ("react", "unreact"):
                    every = _ids(store, own=False)
                    if every:
                        target = every[op[1] % len(every)]
                        commands.append(store.send_reaction(target, op[2]) if kind == "react"
                                        else store.delete_reaction(target, op[2]))
                elif kind == "mark_read":
                    commands.append(store.mark_read(op[1]))
                elif kind == "other_send":
                    server.act(op[1], "send_message", cid=GENERAL, text=f"o{n}", id=f"o-{n}")
                elif kind in ("other_edit", "other_delete"):
                    theirs = _server_ids(server, "bob")
                    if theirs:
                        target = theirs[op[1] % len(theirs)]
                        if kind == "other_edit":
                            server.act("bob", "update_message", message_id=target, text=f"b{n}")
                        else:
                            server.act("bob", "delete_message", message_id=target)
                elif kind == "other_react":
                    every = _server_ids(server)
                    if every:
                        server.act("carol", "send_reaction", message_id=every[op[1] % len(every)],
                                   type=op[2])
                elif kind == "sync":
                    await client.run_once()
            except (CommandError, ApiError):
                pass  # a refusal the store or server gives for this action: fine
        for _ in range(5):
            await client.run_once()
            if not store.outbox.pending():
                break
        await client.run_once()  # and what the replay made others do arrives
        assert store.outbox.pending() == []
        statuses = {c.id: c for c in store.outbox.list()}
        assert set(commands) <= set(statuses)
        assert {c.status for c in statuses.values()} <= FINISHED
        snapshot = server.snapshot()
        assert stored_twice(snapshot) == []
        rejected = [c for c in statuses.values() if c.status == CommandStatus.REJECTED]
        for command in rejected:
            # Only a conflict a real server gives too: acting on what another user deleted.
            assert command.last_error and command.last_error.get("status") in (400, 404), \
                (command.kind, command.reason)
            if store.outbox.get(command.id).status == CommandStatus.REJECTED:
                store.outbox.cancel(command.id)
        if rejected:
            await client.run_once()
            snapshot = server.snapshot()
        assert differences(store, snapshot) == []
        assert store.verify() == []


def test_a_reaction_replayed_after_a_hard_delete_is_not_kept(tmp_path) -> None:
    """A hard delete removes the message *and its reactions* (docs/wire.md, "Events"). After a reconnect,
    `/sync` replays the older `reaction.new` once the row is gone; the reaction must not stay
    behind as an orphan (found by test_random_offline_sessions_converge: react to an own
    message, hard-delete it, sync)."""
    from fixtures import event, message, message_new, user

    store = ChatStore.open(tmp_path, "alice")
    try:
        store.ingest(message_new(mid="m1"))
        deleted = event("message.deleted", hard_delete=True, message=message("m1", uid="alice"))
        reaction = event("reaction.new", reaction={"message_id": "m1", "user_id": "alice",
                                                   "type": "like", "score": 1},
                         message=message("m1", uid="alice"), user=user("alice"))
        store.ingest(deleted)
        store.ingest_sync(b'{"events":[' + reaction + b"," + deleted + b"]}")
        with store.log.datastore.transaction(commit=False) as c:
            orphans = c.execute("SELECT message_id, user_id, type FROM reactions "
                                "WHERE message_id NOT IN (SELECT id FROM messages)").fetchall()
        assert orphans == []
    finally:
        store.close()


@settings(max_examples=scaled(25, 200), deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(st.lists(OPS, min_size=1, max_size=25))
def test_random_offline_sessions_converge(ops: list[tuple[Any, ...]]) -> None:
    with tempfile.TemporaryDirectory() as directory:
        run_async(run_session(ops, directory), 60)
