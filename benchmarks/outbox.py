"""`python -m benchmarks outbox`: what local commands cost the store, queued and replayed.

`--actions` actions (default 10,000) of a realistic mix over `--channels` channels are queued
offline (sends, edits, reactions, deletes, read marks), then the replayer sends them to a backend
that answers at once, in process, with what the real one would. Two figures per run:

- queueing: the cost of one action (the command's "requested" event, the optimistic change to the
  read tables, and the transaction), in µs;
- replay: wall time per command, and the store's own share of it (reading the retry stream,
  recording "attempt started" and the outcome, and checkpointing the pages written: see
  `replay_all`), in µs per command. The target is at most 100 µs.

Baselines in the same run, on the same number of lifecycle events: raw APSW appends of the same
bytes (the commands' stored events) in the replayer's batches, and the `eventsourcing` library's
stock SQLite module saving an equivalent aggregate, one save per lifecycle step.

Last stdout line: `store_us_per_command`, `replay_commands_per_s`, `queue_us_per_action`, and the
baseline figures.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from pathlib import Path
from typing import Any

import click
import msgspec

from benchmarks.common import (
    emit_json, environment, fmt_rate, gc_paused, median, progress, scratch_dir,
)

T = "2026-11-25T12:00:00.000000Z"


class InstantBackend:
    """Answers every call at once with a body shaped like the real one (no network)."""

    def __init__(self) -> None:
        self.calls = 0
        self.seconds = 0.0

    def _answer(self, body: dict[str, Any]) -> bytes:
        self.calls += 1
        return msgspec.json.encode(body)

    async def send_message(self, cid: str, message: dict[str, Any], *, skip_push: bool = False) -> bytes:
        t0 = time.perf_counter()
        out = self._answer({"message": {**message, "cid": cid, "type": "regular",
                                        "user": {"id": "alice"}, "created_at": T,
                                        "updated_at": T}, "duration": "1ms"})
        self.seconds += time.perf_counter() - t0
        return out

    async def update_message(self, message: dict[str, Any]) -> bytes:
        return self._answer({"message": {**message, "user": {"id": "alice"}, "updated_at": T}})

    async def partial_update_message(self, message_id: str, *, set: dict[str, Any], unset: Any) -> bytes:
        return self._answer({"message": {"id": message_id, **set}})

    async def delete_message(self, message_id: str, *, hard: bool = False, for_me: bool = False) -> bytes:
        return self._answer({"message": {"id": message_id, "type": "deleted", "deleted_at": T}})

    async def send_reaction(self, message_id: str, reaction: dict[str, Any], *,
                            enforce_unique: bool = False) -> bytes:
        return self._answer({"message": {"id": message_id, "reaction_counts": {reaction["type"]: 1}},
                             "reaction": {**reaction, "message_id": message_id, "user_id": "alice",
                                          "created_at": T}})

    async def delete_reaction(self, message_id: str, reaction_type: str) -> bytes:
        return self._answer({"message": {"id": message_id}, "reaction": {"type": reaction_type}})

    async def mark_read(self, cid: str, *, message_id: str | None = None,
                        thread_id: str | None = None) -> bytes:
        return self._answer({"event": {"type": "message.read", "cid": cid, "created_at": T}})

    async def mark_unread(self, cid: str, *, message_id: str) -> bytes:
        return self._answer({})

    async def save_draft(self, cid: str, message: dict[str, Any]) -> bytes:
        return self._answer({"draft": {"channel_cid": cid, "message": message}})

    async def delete_draft(self, cid: str, *, parent_id: str | None = None) -> bytes:
        return self._answer({})

    def set_token(self, token: str) -> None:
        pass


def queue_actions(store: Any, actions: int, channels: int, seed: int) -> tuple[float, int]:
    """Queue a realistic mix of actions; returns (seconds, commands queued)."""
    rng = random.Random(seed)
    cids = [f"messaging:bench-{i}" for i in range(channels)]
    sent: list[str] = []
    words = "the quick brown fox jumps over a lazy dog while offline chat keeps going".split()
    t0 = time.perf_counter()
    for _ in range(actions):
        roll = rng.random()
        if roll < 0.6 or not sent:
            mid = str(uuid.UUID(int=rng.getrandbits(128)))
            text = " ".join(rng.choices(words, k=rng.randint(3, 25)))
            store.send_message(rng.choice(cids), text, id=mid)
            sent.append(mid)
        elif roll < 0.7:
            store.update_message(rng.choice(sent), "edited: " + " ".join(rng.choices(words, k=8)))
        elif roll < 0.85:
            store.send_reaction(rng.choice(sent), rng.choice(["like", "love", "haha", "wow"]))
        elif roll < 0.9:
            mid = sent.pop(rng.randrange(len(sent)))
            store.delete_message(mid)
        else:
            store.mark_read(rng.choice(cids))
    seconds = time.perf_counter() - t0
    return seconds, len(store.outbox.pending())


def replay_all(store: Any) -> tuple[float, Any, float]:
    """Replay the whole retry stream; returns (wall seconds, report, store seconds).

    The store's cost: reading the retry stream and writing the lifecycle (the replayer's own
    count), reading the retry stream again (what a next pass reads), and checkpointing the
    pages the replay wrote into the database file, which SQLite does once the WAL is long
    enough (the queueing's pages are checkpointed before the clock starts: they are its cost,
    and would otherwise land in the replay or not, by the WAL's length).
    """
    from chatledger.sync.replayer import Replayer

    store.log.datastore.checkpoint()
    backend = InstantBackend()
    replayer = Replayer(store, backend, concurrency=8)
    t0 = time.perf_counter()
    report = asyncio.run(replayer.replay())
    t1 = time.perf_counter()
    store.outbox.pending()
    store.log.datastore.checkpoint()
    after = time.perf_counter() - t1
    return t1 - t0 + after, report, report.store_seconds + after


def stored_command_rows(path: Path) -> list[tuple[str, str, bytes]]:
    import apsw

    conn = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        return [(o, t, bytes(s)) for o, t, s in conn.execute(
            "SELECT originator_id, topic, state FROM stored_events WHERE source = 0 ORDER BY rowid")]
    finally:
        conn.close()


def _stock_command_class() -> type:
    """An aggregate with the same three lifecycle steps as a chatledger command (made once: the
    library registers each class under its topic)."""
    global _STOCK_COMMAND
    if _STOCK_COMMAND is None:
        from eventsourcing.domain import Aggregate, event

        class StockCommand(Aggregate):
            @event("Requested")
            def __init__(self, kind: str, cid: str, request: dict[str, Any]) -> None:
                self.kind, self.cid, self.request = kind, cid, request
                self.attempts = 0

            @event("AttemptStarted")
            def start(self) -> None:
                self.attempts += 1

            @event("Succeeded")
            def succeed(self, response: str) -> None:
                self.response = response

        _STOCK_COMMAND = StockCommand
    return _STOCK_COMMAND


_STOCK_COMMAND: type | None = None


def stock_lifecycle(path: Path, commands: int) -> float:
    """The `eventsourcing` stock SQLite module: an aggregate per command with the same three
    lifecycle steps (requested, attempt started, succeeded), one save each."""
    import os

    from eventsourcing.application import Application

    command_class = _stock_command_class()
    os.environ["PERSISTENCE_MODULE"] = "eventsourcing.sqlite"
    os.environ["SQLITE_DBNAME"] = str(path)
    try:
        app = Application()
        body = {"id": "x", "text": "the quick brown fox " * 3}
        with gc_paused():
            t0 = time.perf_counter()
            for i in range(commands):
                command = command_class("send_message", f"messaging:bench-{i % 50}", body)
                app.save(command)
                command.start()
                app.save(command)
                command.succeed('{"message": {}}')
                app.save(command)
            return time.perf_counter() - t0
    finally:
        del os.environ["PERSISTENCE_MODULE"], os.environ["SQLITE_DBNAME"]


@click.command()
@click.option("--actions", type=click.IntRange(min=100), default=10_000, show_default=True)
@click.option("--channels", type=click.IntRange(min=1), default=50, show_default=True)
@click.option("--reps", type=click.IntRange(min=1), default=3, show_default=True,
              help="Runs; the median is reported.")
@click.option("--seed", type=int, default=7, show_default=True)
@click.option("--dir", "directory", type=click.Path(file_okay=False), default=None,
              help="Where the scratch files go (default: the system temp dir).")
def command(actions: int, channels: int, reps: int, seed: int, directory: str | None) -> None:
    """Local commands: queue a mix of actions offline, replay them against an instant backend."""
    from benchmarks.baselines import raw_apsw_append
    from chatledger import ChatStore

    queue_us, store_us, wall_us, commands_seen = [], [], [], 0
    raw_us, stock_us = [], []
    with scratch_dir(directory) as scratch:
        for rep in range(reps):
            progress(f"run {rep + 1}/{reps}: queueing {actions:,} actions")
            store = ChatStore.open(scratch / f"run{rep}", "alice")
            try:
                with gc_paused():
                    seconds, queued = queue_actions(store, actions, channels, seed)
                queue_us.append(seconds / actions * 1e6)
                progress(f"run {rep + 1}/{reps}: replaying {queued:,} commands")
                with gc_paused():
                    wall, report, store_seconds = replay_all(store)
                assert report.delivered + report.rejected == queued, report
                assert not store.outbox.pending()
                commands_seen = queued
                store_us.append(store_seconds / queued * 1e6)
                wall_us.append(wall / queued * 1e6)
                path = store.path
            finally:
                store.close()
            rows = stored_command_rows(path)
            lifecycle = [r for r in rows if not r[1].endswith(("requested", "amended", "cancelled"))]
            raw = raw_apsw_append(scratch / f"raw{rep}", lifecycle, 500)
            raw_us.append(raw / commands_seen * 1e6)
            progress(f"run {rep + 1}/{reps}: stock eventsourcing, {commands_seen:,} commands")
            stock_us.append(stock_lifecycle(scratch / f"stock{rep}.sqlite", commands_seen) / commands_seen * 1e6)

    result = {
        "benchmark": "outbox",
        "actions": actions,
        "commands": commands_seen,
        "channels": channels,
        "queue_us_per_action": round(median(queue_us), 1),
        "store_us_per_command": round(median(store_us), 1),
        "replay_us_per_command": round(median(wall_us), 1),
        "replay_commands_per_s": round(1e6 / median(wall_us)),
        "raw_apsw_us_per_command": round(median(raw_us), 1),
        "stock_eventsourcing_us_per_command": round(median(stock_us), 1),
        "target_store_us_per_command": 100,
        "environment": environment(),
    }
    result["vs_raw"] = round(result["raw_apsw_us_per_command"] / result["store_us_per_command"], 3)
    result["vs_stock"] = round(result["stock_eventsourcing_us_per_command"]
                               / result["store_us_per_command"], 2)
    click.echo(f"queued {actions:,} actions -> {commands_seen:,} commands over {channels} channels")
    click.echo(f"  queueing:  {result['queue_us_per_action']} µs per action")
    click.echo(f"  replay:    {result['replay_us_per_command']} µs per command wall "
               f"({fmt_rate(result['replay_commands_per_s'])} commands/s)")
    click.echo(f"  store:     {result['store_us_per_command']} µs per command "
               f"(target <= 100)")
    click.echo(f"  raw APSW appends of the same lifecycle rows: "
               f"{result['raw_apsw_us_per_command']} µs per command ({result['vs_raw']}x)")
    click.echo(f"  stock eventsourcing SQLite, one save per step: "
               f"{result['stock_eventsourcing_us_per_command']} µs per command "
               f"(chatledger {result['vs_stock']}x faster)")
    emit_json(result)
