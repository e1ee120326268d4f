"""Kill the process at any moment: the log is intact, the tables equal a fresh rebuild, and no
pending action is lost or sent twice (docs/reliability.md).

A worker process (tests/crash_worker.py) ingests events, queues actions and replays them
against a development server running in this process, and reports every append and action the
store acknowledged. The test kills it with SIGKILL at a random moment, many times over, and
after each kill reopens the store and checks what it promised. At the end a clean sync must
leave the server with every message once and the same state as the local tables.

CI mode kills it 50 times; `pytest --long` 300 times, in rounds of 50 (each with a fresh store
and server, so that the checks after each kill stay quick).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from chatledger import ChatStore
from chatledger.eventstore.commands import CommandStatus
from chatledger.sync.client import SyncClient
from chatledger.sync.devserver import ThreadedDevServer
from chatledger.sync.outcomes import Backoff
from chatledger.sync.stream import StreamBackend
from convergence import differences, stored_twice
from reliability import integrity, no_rate_limits, scaled

KILLS = scaled(50, 300)
ROUND = 50
WORKER = Path(__file__).with_name("crash_worker.py")
GENERAL = "messaging:general"
FINISHED = {CommandStatus.SUCCEEDED, CommandStatus.REJECTED, CommandStatus.CANCELLED}


class Worker:
    """One run of the worker; its stdout lines are collected by a thread as they arrive."""

    def __init__(self, data: Path, server: ThreadedDevServer, seed: int, *extra: str) -> None:
        self.lines: list[str] = []
        self.ready = threading.Event()
        self.proc = subprocess.Popen(
            [sys.executable, str(WORKER), str(data), server.url, server.api_key,
             server.make_token("alice"), str(seed), *extra],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=str(WORKER.parent),
            env={**os.environ, "PYTHONPATH": str(WORKER.parent)})
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            line = raw.decode().rstrip("\n")
            self.lines.append(line)
            if line == "READY":
                self.ready.set()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.wait()

    def wait(self, timeout: float = 60) -> int:
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait(10)
        self._reader.join(10)
        return code

    def stderr(self) -> str:
        assert self.proc.stderr is not None
        return self.proc.stderr.read().decode(errors="replace")


def check_after_kill(path: Path, appended: dict[int, str], commands: set[str]) -> None:
    assert integrity(path) == "ok"
    store = ChatStore.open(path.parent, "alice", create=False)
    try:
        assert store.verify() == [], "the read tables differ from a fresh rebuild"
        chain = store.verify_chain()
        assert chain.ok, f"the log's chain breaks after a kill: {chain.broken}"
        stored = {e.position: hashlib.sha256(e.payload).hexdigest()
                  for e in store.history(cid="messaging:crash-local")}
        lost = {p: h for p, h in appended.items() if stored.get(p) != h}
        assert not lost, f"acknowledged appends lost: {sorted(lost)[:10]}"
        outbox = {c.id: c.status for c in store.outbox.list()}
        unfinished = {c.id for c in store.outbox.pending()}
        missing = sorted(c for c in commands if c not in outbox)
        assert not missing, f"acknowledged actions lost: {missing[:10]}"
        for command in commands:
            assert outbox[command] in FINISHED or command in unfinished, (command, outbox[command])
    finally:
        store.close()


async def final_sync(store: ChatStore, server: ThreadedDevServer) -> None:
    backend = StreamBackend(server.url, server.api_key, server.make_token("alice"), "alice",
                            timeout=5.0, health_interval=0.5, dead_after=3.0)
    fast = Backoff(base=0.01, factor=2, cap=0.05)
    try:
        client = SyncClient(store, backend, backoff=fast, reconnect_backoff=fast)
        for _ in range(20):
            await client.run_once()
            if not store.outbox.pending():
                break
            await asyncio.sleep(0.05)
    finally:
        await backend.close()


def test_kill_at_any_moment_loses_nothing_and_sends_nothing_twice(tmp_path: Path) -> None:
    # Rounds of at most 50 kills, each with a fresh store and server, so that a long run stays
    # linear (every check after a kill verifies the whole store).
    done = 0
    for round_ in range((KILLS + ROUND - 1) // ROUND):
        kills = min(ROUND, KILLS - done)
        crash_round(tmp_path / f"round{round_}", kills, seed=20261126 + round_)
        done += kills


def crash_round(root: Path, kills: int, seed: int) -> None:
    data = root / "data"
    rng = random.Random(seed)
    appended: dict[int, str] = {}
    commands: set[str] = set()
    replays = 0
    with ThreadedDevServer(seed="demo", health_interval=0.5,
                           rate_limits=no_rate_limits()) as server:
        # A first sync, so the worker has channels and messages to act on.
        store = ChatStore.open(data, "alice")
        asyncio.run(final_sync(store, server))
        store.close()
        path = data / "alice.chatledger"
        for kill in range(kills):
            if kill % 3 == 0:  # the others keep talking meanwhile
                server.act(rng.choice(["bob", "carol"]), "send_message", cid=GENERAL,
                           text=f"meanwhile {kill}", id=f"other-{kill}")
            worker = Worker(data, server, seed=seed * 1000 + kill)
            try:
                # Most kills land while it works; some while it opens (and recovers) the store.
                if rng.random() < 0.15:
                    time.sleep(rng.uniform(0.0, 1.0))
                else:
                    if not worker.ready.wait(60):
                        raise AssertionError("the worker did not start: " + worker.stderr())
                    time.sleep(rng.uniform(0.02, 0.6))
            finally:
                worker.kill()
            for line in worker.lines:
                kind, _, rest = line.partition(" ")
                if kind == "A":
                    position, digest = rest.split()
                    appended[int(position)] = digest
                elif kind == "C":
                    commands.add(rest)
                elif kind == "R":
                    replays += 1
            if worker.proc.returncode != -signal.SIGKILL:
                raise AssertionError(f"the worker ended on its own ({worker.proc.returncode}): "
                                     + worker.stderr()[-3000:])
            check_after_kill(path, appended, commands)
        print(f"crash round: {kills} kills, {len(appended)} acknowledged appends, "
              f"{len(commands)} acknowledged actions, {replays} finished replays")
        # Sanity: the kills hit real work, not just start-up.
        assert len(appended) > kills and len(commands) > kills // 2 and replays > 0

        # A clean run replays what is left: every action reaches an outcome, nothing twice.
        worker = Worker(data, server, 0, "final")
        code = worker.wait(120)
        assert code == 0, worker.stderr()[-3000:]
        store = ChatStore.open(data, "alice", create=False)
        try:
            asyncio.run(final_sync(store, server))  # and catch up with the last events
            assert store.outbox.pending() == []
            statuses = {c.id: c.status for c in store.outbox.list()}
            assert all(statuses[c] in FINISHED for c in commands)
            assert not [c for c in commands if statuses[c] == CommandStatus.REJECTED]
            snapshot = server.snapshot()
            assert stored_twice(snapshot) == []
            assert all(n <= 1 for n in snapshot["send_applied"].values())
            sent = {c.message_id for c in store.outbox.list()
                    if c.kind == "send_message" and statuses[c.id] == CommandStatus.SUCCEEDED}
            assert sent <= set(snapshot["send_applied"])
            assert differences(store, snapshot) == []
            assert store.verify() == []
        finally:
            store.close()
    assert integrity(path) == "ok"
