"""The demo story: one user's client against the local development server, offline and back.

`run_demo` drives a real `SyncClient` over HTTP and WebSocket on loopback; nothing is simulated
inside the client. The server plays the other people in the channels and, on cue, the network:
it refuses connections while the user is "offline", drops one answer after applying the write,
and fails one call with a 500, so the replay has something to retry. A send into a channel the
user is not a member of is refused (403): that is the conflict the outbox keeps.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from chatledger.sync.client import SyncClient
from chatledger.sync.devserver import DevServer
from chatledger.sync.diff import DiffReport
from chatledger.sync.outcomes import Backoff
from chatledger.sync.stream import StreamBackend

if TYPE_CHECKING:
    from chatledger.projections.store import ChatStore

GENERAL = "messaging:general"
DIRECT = "messaging:alice-bob"
Narrate = Callable[[str], None]


@dataclass
class DemoResult:
    url: str = ""
    channels: int = 0
    received: int = 0
    offline_actions: int = 0
    missed: int = 0
    delivered: int = 0
    rejected: int = 0
    seconds: float = 0.0
    traced_message: str | None = None  # a message with an interesting history, for `explain`
    diff: DiffReport | None = None  # the store against the server, at the end
    notes: list[str] = field(default_factory=list)


async def run_demo(store: ChatStore, narrate: Narrate = print, *, user: str = "alice",
                   timeout: float = 20.0) -> DemoResult:
    """Tell the whole story with `store` as the user's store; returns what happened."""
    began = time.perf_counter()
    result = DemoResult()
    fast = Backoff(base=0.05, factor=2.0, cap=0.5)
    async with DevServer(seed="demo", health_interval=1.0) as server:
        result.url = server.url
        # A channel the user may read about but not post in: the source of the conflict.
        server.seed(channels=[{"type": "messaging", "id": "announcements",
                               "name": "Announcements", "members": ["bob", "carol"]}])
        narrate(f"Started the development server at {server.url} (seeded: 4 users, "
                f"{len(server.state.channels)} channels).")
        backend = StreamBackend(server.url, server.api_key, server.make_token(user), user,
                                timeout=2.0, health_interval=1.0, dead_after=3.0)
        client = SyncClient(store, backend, backoff=fast, reconnect_backoff=fast)
        stop = asyncio.Event()
        running = asyncio.create_task(client.run(stop), name="demo-client")
        try:
            await _until(lambda: client.status.state == "online", timeout)
            result.channels = len(store.channels(limit=100))
            narrate(f"Connected as {user} (connection {client.status.connection_id}); "
                    f"loaded {result.channels} channels.")

            frames = client.status.frames
            for author, text in [("bob", "Morning! Stand-up in 5"), ("carol", "On my way"),
                                 ("bob", "Alice, can you share the notes?")]:
                server.act(author, "send_message", cid=GENERAL, text=text)
            server.act("bob", "send_reaction", message_id="demo-welcome", type="like")
            await _until(lambda: client.status.frames >= frames + 4, timeout)
            result.received = client.status.frames - frames
            narrate(f"Received {result.received} live events over the WebSocket.")

            # Offline: the network refuses every connection until we say otherwise.
            server.faults.add("connect", "refuse", probability=1.0)
            server.faults.add("*", "refuse", probability=1.0)
            await server.close_websockets()
            await _until(lambda: client.status.state != "online", timeout)
            narrate("Went offline (the server now refuses every connection).")

            draft_id = str(uuid.uuid4())
            store.send_message(GENERAL, "Notes are in the shared folder", id=draft_id)
            store.update_message(draft_id, "Notes are in the shared folder (v2)")
            store.send_message(GENERAL, "Lunch at noon?", parent_id="demo-welcome")
            store.send_reaction(draft_id, "thumbsup")
            oops = str(uuid.uuid4())
            store.send_message(GENERAL, "sent to the wrong channel", id=oops)
            store.delete_message(oops)
            store.update_message("demo-welcome", "Welcome to the dev server! (edited offline)")
            store.send_message(DIRECT, "Bob, see you at 3?")
            store.send_message("messaging:announcements", "Can I post here?")
            store.mark_read(GENERAL)
            result.offline_actions = 9
            pending = store.outbox.pending()
            narrate(f"Made {result.offline_actions} changes offline: {len(pending)} commands "
                    "queued (an edit of an unsent message folded into its send, a deleted "
                    "unsent message cancelled locally); every one shows at once in the tables.")
            result.traced_message = draft_id

            for text in ("Did everyone see the release notes?", "Deploy went fine"):
                server.act("bob", "send_message", cid=GENERAL, text=text)
            server.act("carol", "send_message", cid=GENERAL,
                       text="Alice is offline, I'll ping her later")
            result.missed = 3
            narrate(f"Meanwhile the others sent {result.missed} messages that {user} missed.")

            # Back online, on a flaky network: one answer lost after the write, one 500.
            server.faults.clear()
            server.faults.add("send_message", "drop", times=1)
            server.faults.add("send_reaction", "error5xx", times=1)
            delivered = client.status.delivered
            await _until(lambda: client.status.state == "online"
                         and not store.outbox.pending(), timeout)
            result.delivered = client.status.delivered - delivered
            result.rejected = len(store.outbox.conflicts())
            retried = sum(1 for c in store.outbox.list()
                          if c.status == "succeeded" and c.attempts > 1)
            narrate(f"Back online: replayed the outbox ({result.delivered} delivered, {retried} "
                    f"of them after a lost answer or a 500; {result.rejected} refused by the "
                    f"server) and caught up with what was missed; the store now holds every "
                    f"event up to {store.last_sync_at()}.")

            # Offline for good, then the store against the server: what still differs, and why.
            stop.set()
            await asyncio.wait_for(running, timeout)
            result.diff = await client.diff(messages=10)
            counts = ", ".join(f"{count} {cause}" for cause, count in
                               result.diff.counts().items() if count) or "none"
            narrate(f"Compared the store with the server ({result.diff.channels} channels, "
                    f"{result.diff.messages} messages): differences: {counts}.")
        finally:
            stop.set()
            await asyncio.wait_for(running, timeout)
            await backend.close()
    result.seconds = time.perf_counter() - began
    return result


async def _until(check: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError("the demo waited too long for the client; is the machine busy?")
        await asyncio.sleep(0.02)
