"""Server times as the read tables keep them: epoch microseconds, None for absent or unset."""

from __future__ import annotations

from collections.abc import Callable

from chatledger.eventstore.wire import WireError, parse_time

__all__ = ["epoch_us", "newest"]

_TIMES_MAX = 65_536


class _ParsedTimes(dict[str | None, int | None]):
    """RFC 3339 text to epoch microseconds, parsed once: one event repeats the same instant
    several times (created_at, updated_at, the message's), and each handler converts it where a
    row needs it. A lookup that hits is a dictionary subscript, with no Python frame: a rebuild
    of 100,000 events converts ~880,000 times, most of them hits or absent times."""

    def __missing__(self, value: str | None) -> int | None:
        if not value:
            return None
        try:
            result: int | None = parse_time(value)
        except WireError:
            result = None
        if len(self) >= _TIMES_MAX:
            self.clear()  # a bound on memory
            self.update(_ABSENT)
        self[value] = result
        return result


# Absent and empty: answered by the lookup itself.
_ABSENT: dict[str | None, int | None] = {None: None, "": None}
_TIMES = _ParsedTimes(_ABSENT)

epoch_us: Callable[[str | None], int | None] = _TIMES.__getitem__
"""RFC 3339 text to epoch microseconds; None for absent, unset (Go's zero time) or unreadable
text: a time the backend did not really give orders nothing."""


def newest(*times: int | None) -> int | None:
    """The latest of the server times given (None when none is)."""
    latest = None
    for moment in times:
        if moment is not None and (latest is None or moment > latest):
            latest = moment
    return latest
