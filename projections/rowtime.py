"""Server times as the read tables keep them: epoch microseconds, None for absent or unset."""

from __future__ import annotations

from chatledger.eventstore.wire import WireError, parse_time


def epoch_us(value: str | None) -> int | None:
    """RFC 3339 text to epoch microseconds; None for absent, unset (Go's zero time) or
    unreadable text: a time the backend did not really give orders nothing."""
    if not value:
        return None
    try:
        return parse_time(value)
    except WireError:
        return None
