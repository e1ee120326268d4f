"""The process tests/test_crash.py kills: it ingests, acts and replays until it is killed.

    python tests/crash_worker.py DATA_DIR URL API_KEY TOKEN SEED [final]

Every append and every action it has been told is committed is reported on stdout, flushed, one
line each, *after* the call returned (so a line is a promise the store made):

    READY                       the store is open
    A <position> <sha256>       an ingested event, at that log position, with those payload bytes
    C <command id>              a queued action (a command of the outbox)
    R                           a replay against the server finished

With `final` it does one clean sync (replay + catch-up) until the outbox is empty, then exits.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import sys

import msgspec

from chatledger import ChatStore
from chatledger.eventstore.commands import CommandError
from chatledger.sync.backend import BackendError
from chatledger.sync.client import SyncClient
from chatledger.sync.outcomes import Backoff
from chatledger.sync.stream import StreamBackend

GENERAL, DIRECT = "messaging:general", "messaging:alice-bob"
# Events ingested from "elsewhere" go to a channel the server does not have, so that they never
# disagree with the server's state (tests/convergence.py compares only the server's channels).
LOCAL = "messaging:crash-local"
FAST = Backoff(base=0.01, factor=2, cap=0.05)


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def local_event(mid: str, text: str) -> bytes:
    at = "2026-11-25T10:00:00.000000Z"
    user = {"id": "zed", "name": "Zed"}
    return msgspec.json.encode({
        "type": "message.new", "cid": LOCAL, "channel_type": "messaging",
        "channel_id": LOCAL.split(":")[1], "created_at": at, "message_id": mid, "user": user,
        "message": {"id": mid, "cid": LOCAL, "text": text, "type": "regular", "user": user,
                    "created_at": at, "updated_at": at},
    })


async def sync_once(store: ChatStore, url: str, key: str, token: str) -> None:
    backend = StreamBackend(url, key, token, "alice", timeout=2.0, health_interval=0.5,
                            dead_after=3.0)
    try:
        client = SyncClient(store, backend, backoff=FAST, reconnect_backoff=FAST)
        await client.run_once()
    finally:
        await backend.close()


def own_messages(store: ChatStore) -> list[str]:
    with store.log.datastore.transaction(commit=False) as c:
        return [r[0] for r in c.execute(
            "SELECT id FROM messages WHERE cid IN (?, ?) AND user_id = 'alice' "
            "AND deleted_at IS NULL ORDER BY id", (GENERAL, DIRECT))]


def any_messages(store: ChatStore) -> list[str]:
    with store.log.datastore.transaction(commit=False) as c:
        return [r[0] for r in c.execute(
            "SELECT id FROM messages WHERE cid IN (?, ?) AND deleted_at IS NULL "
            "AND type != 'deleted' ORDER BY id", (GENERAL, DIRECT))]


def act(store: ChatStore, rng: random.Random, tag: str) -> str | None:
    """One random action; its command id, or None when the store refused it (a clean refusal)."""
    choice = rng.random()
    try:
        if choice < 0.45:
            return store.send_message(rng.choice([GENERAL, DIRECT]), f"crash {tag}", id=f"c-{tag}")
        own, everyone = own_messages(store), any_messages(store)
        if choice < 0.6 and own:
            return store.update_message(rng.choice(own), f"edited {tag}")
        if choice < 0.68 and own:
            return store.delete_message(rng.choice(own))
        if choice < 0.85 and everyone:
            return store.send_reaction(rng.choice(everyone), rng.choice(["like", "love"]))
        if choice < 0.92 and everyone:
            return store.delete_reaction(rng.choice(everyone), "like")
        return store.mark_read(rng.choice([GENERAL, DIRECT]))
    except CommandError:
        return None


def main() -> None:
    data_dir, url, key, token, seed = sys.argv[1:6]
    final = sys.argv[6:7] == ["final"]
    rng = random.Random(int(seed))
    store = ChatStore.open(data_dir, "alice")
    say("READY")
    if final:
        for _ in range(50):
            asyncio.run(sync_once(store, url, key, token))
            if not store.outbox.pending():
                break
        store.close()
        say("DONE")
        return
    n = 0
    while True:  # until killed
        n += 1
        tag = f"{seed}-{n}"
        roll = rng.random()
        if roll < 0.35:
            batch = [local_event(f"e-{tag}-{i}", f"event {i}") for i in range(rng.randint(1, 20))]
            if len(batch) == 1:
                say(f"A {store.ingest(batch[0])} {hashlib.sha256(batch[0]).hexdigest()}")
            else:
                result = store.ingest_many(batch)
                for raw, position in zip(batch, result.positions):
                    say(f"A {position} {hashlib.sha256(raw).hexdigest()}")
        elif roll < 0.85:
            command = act(store, rng, tag)
            if command is not None:
                say(f"C {command}")
        else:
            try:
                asyncio.run(sync_once(store, url, key, token))
            except BackendError as e:  # the server may be slow; the next round tries again
                say(f"E {type(e).__name__}")
            else:
                say("R")


if __name__ == "__main__":
    main()
