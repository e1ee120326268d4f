"""Per endpoint, per user, per minute limits, with the headers Stream sends.

Windows are fixed and start at a user's first call to an endpoint (not at the wall-clock
minute), so a test that makes 6 calls against a limit of 5 sees the 6th refused however close
to a minute boundary it runs.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

WINDOW = 60.0

# The backend's limits per endpoint: 1,000/min for message and reaction writes, 10,000/min for
# query channels and mark read. The other endpoints get generous limits so benchmarks are not throttled by accident.
DEFAULT_LIMITS: dict[str, int | None] = {
    "send_message": 1000, "update_message": 1000, "partial_update_message": 1000,
    "delete_message": 1000, "send_reaction": 1000, "delete_reaction": 1000,
    "query_channels": 10000, "mark_read": 10000,
    "mark_unread": 1000, "save_draft": 1000, "delete_draft": 1000,
    "query_channel": 10000, "sync": 10000, "connect": 10000,
}


@dataclass
class Verdict:
    allowed: bool
    limit: int
    remaining: int
    reset: int            # unix seconds when the window ends
    retry_after: int      # whole seconds to wait when refused

    def headers(self) -> dict[str, str]:
        headers = {"X-RateLimit-Limit": str(self.limit),
                   "X-RateLimit-Remaining": str(self.remaining),
                   "X-RateLimit-Reset": str(self.reset)}
        if not self.allowed:
            headers["Retry-After"] = str(self.retry_after)
        return headers


class RateLimiter:
    """`rate_limits` overrides the defaults per endpoint; None means no limit."""

    def __init__(self, rate_limits: Mapping[str, int | None] | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.limits: dict[str, int | None] = {**DEFAULT_LIMITS, **(rate_limits or {})}
        self._clock = clock
        self._windows: dict[tuple[str, str], tuple[float, int]] = {}  # -> (start, count)

    def check(self, endpoint: str, user_id: str) -> Verdict | None:
        """Count one call; None when the endpoint is unlimited."""
        limit = self.limits.get(endpoint)
        if limit is None:
            return None
        now = self._clock()
        start, count = self._windows.get((endpoint, user_id), (now, 0))
        if now - start >= WINDOW:
            start, count = now, 0
        reset_at = start + WINDOW
        if count >= limit:
            self._windows[(endpoint, user_id)] = (start, count)
            return Verdict(False, limit, 0, math.ceil(reset_at),
                           max(1, math.ceil(reset_at - now)))
        count += 1
        self._windows[(endpoint, user_id)] = (start, count)
        return Verdict(True, limit, limit - count, math.ceil(reset_at), 0)
