"""Ids this client chooses: UUIDs whose leading bits are the time (UUID version 7, RFC 9562).

Command ids and the ids of messages the application leaves to us are keys of B-tree indexes (the
log's index of command streams, the outbox, messages by id). Random UUIDs put each new key on a
page of its own, so every commit rewrites pages all over the index; ids that grow with time land
next to each other, on the index's last pages.
"""

from __future__ import annotations

import os
import time
import uuid

_RANDOM_BITS = 74  # what is left of 128 after 48 bits of milliseconds, the version and variant


def time_ordered_uuid() -> uuid.UUID:
    """A new UUID version 7: Unix milliseconds, then random bits."""
    millis = time.time_ns() // 1_000_000 & (1 << 48) - 1
    rand = int.from_bytes(os.urandom(10), "big") & (1 << _RANDOM_BITS) - 1
    # 48 bits of time | version 7 (4 bits) | 12 random bits | variant 0b10 | 62 random bits
    value = (millis << 80) | (0x7 << 76) | ((rand >> 62) << 64) | (0b10 << 62) \
        | (rand & (1 << 62) - 1)
    return uuid.UUID(int=value)
