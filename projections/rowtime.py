"""Server times as the read tables keep them: epoch microseconds, None for absent or unset."""

from __future__ import annotations

from chatledger.eventstore.wire import WireError, parse_time

__all__ = ["epoch_us", "newest"]

_TIMES: dict[str, int | None] = {}
_TIMES_MAX = 65_536
_MISSING = object()


def epoch_us(value: str | None) -> int | None:
    """RFC 3339 text to epoch microseconds; None for absent, unset (Go's zero time) or
    unreadable text: a time the backend did not really give orders nothing."""
    if not value:
        return None
    # One event repeats the same instant several times (created_at, updated_at, the message's).
    cached = _TIMES.get(value, _MISSING)
    if cached is not _MISSING:
        return cached  # type: ignore[return-value]
    try:
        result: int | None = parse_time(value)
    except WireError:
        result = None
    if len(_TIMES) >= _TIMES_MAX:
        _TIMES.clear()
    _TIMES[value] = result
    return result


def newest(*times: int | None) -> int | None:
    """The latest of the server times given (None when none is)."""
    known = [moment for moment in times if moment is not None]
    return max(known) if known else None
