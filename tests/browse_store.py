"""A generated store for the browse tests: the demo's whole story (live events, offline actions,
a lost answer, a 500, a refusal, catch-up), then a command left pending, and a few hours of
another channel's messages; then the compression dictionary is trained, so every payload the
browser decodes is zstd with the file's dictionary."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path

from fixtures import message_new

from chatledger import ChatStore
from chatledger.eventstore.wire import format_time
from chatledger.sync.demo import run_demo

GENERAL = "messaging:general"
HOURLY = "messaging:hourly"
KNOWN_TEXT = "Morning! Stand-up in 5"  # sent by bob in the demo, received live
PENDING_TEXT = "Still waiting for the network"
HOURS = 4
PER_HOUR = 30
HOUR_US = 3_600_000_000


@dataclass(frozen=True)
class BrowseStore:
    data_dir: Path
    path: Path
    traced_message: str  # the demo's message with the richest history
    pending_message: str
    pending_command: str


def make_store(data_dir: Path) -> BrowseStore:
    with ChatStore.open(data_dir, "alice") as store:
        result = asyncio.run(run_demo(store, narrate=lambda _: None))
        pending_message = "browse-pending-1"
        store.send_message(GENERAL, PENDING_TEXT, id=pending_message)
        pending_command = store.outbox.pending()[0].id
        # The hours before the demo's, so that the charts show one stretch of time.
        first_hour = (time.time_ns() // 1000 // HOUR_US - HOURS) * HOUR_US
        store.ingest_many([
            message_new(HOURLY, f"hourly-{hour}-{n}", f"message {n} of hour {hour}",
                        at=format_time(first_hour + hour * HOUR_US + n * 60_000_000), uid="carol")
            for hour in range(HOURS) for n in range(PER_HOUR)
        ])
        assert store.log.train_dictionary() is not None
        path = store.path
    assert result.traced_message is not None and path is not None
    return BrowseStore(data_dir, path, result.traced_message, pending_message, pending_command)
