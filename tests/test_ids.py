"""The ids this client chooses grow with time (UUID version 7)."""

from __future__ import annotations

import time
import uuid

from chatledger.eventstore.commands import new_command_id
from chatledger.eventstore.ids import time_ordered_uuid


def test_a_time_ordered_uuid_is_version_7_with_the_time_in_front() -> None:
    before = time.time_ns() // 1_000_000
    value = time_ordered_uuid()
    after = time.time_ns() // 1_000_000
    assert value.version == 7 and value.variant == uuid.RFC_4122
    assert before <= value.int >> 80 <= after
    assert uuid.UUID(str(value)) == value


def test_ids_made_in_later_milliseconds_sort_later_and_never_repeat() -> None:
    ids = []
    for _ in range(5):
        ids.append(time_ordered_uuid())
        time.sleep(0.002)
    assert ids == sorted(ids)
    assert len({time_ordered_uuid() for _ in range(10_000)}) == 10_000


def test_command_ids_of_later_actions_sort_later() -> None:
    first = new_command_id("send_reaction")
    time.sleep(0.002)
    second = new_command_id("send_reaction")
    assert first.split(":")[1] < second.split(":")[1]
