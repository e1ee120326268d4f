"""What a replay does with an answer: the backend's errors (docs/backend.md, "When a call
fails"), as code.

`classify(kind, error)` maps a `BackendError` raised by a command's call to one `Outcome`. The
table is the only place that knows which status and code mean what, so the replayer, the
adapter's tests and the development server agree on it.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from enum import Enum

from chatledger.sync.backend import BackendError, NoResponse, TimedOut, UnusableAnswer


class Outcome(Enum):
    DELIVERED = "delivered"          # success, or the backend already had it
    RETRY = "retry"                  # transient: try again after a backoff (or `retry_at`)
    REFRESH_TOKEN = "refresh_token"  # ask the application for a fresh token, then retry
    REJECT = "reject"                # permanent: record the reason as a conflict
    STOP = "stop"                    # the app is suspended: stop replaying, keep everything


# Command kinds that remove something: "does not exist" means the removal already happened.
REMOVALS = frozenset({"delete_message", "delete_reaction", "delete_draft"})
SENDS = frozenset({"send_message"})

TOKEN_CODES = frozenset({2, 5, 40, 41, 42, 43})
NOT_FOUND_CODE = 16  # Stream's "does not exist"


def classify(kind: str, error: BackendError) -> Outcome:
    """The outcome of `error` for a command of `kind` (a `CommandKind` value)."""
    if isinstance(error, (NoResponse, UnusableAnswer)) or error.status is None:
        # An unusable 2xx says nothing either way (the replayer bounds how often it retries).
        return Outcome.RETRY
    status, code = error.status, error.code
    if status == 400:
        if code == 4 and kind in SENDS and "already exists" in error.message.lower():
            return Outcome.DELIVERED
        return Outcome.REJECT
    if status == 401 or code in TOKEN_CODES:
        return Outcome.REFRESH_TOKEN
    if status == 403:
        if code == 60:
            return Outcome.RETRY  # slow mode: wait for the cooldown
        if code == 99:
            return Outcome.STOP
        return Outcome.REJECT
    if status == 404:
        # "Already gone" is Stream's own answer (code 16), never a bare 404: a proxy's page or a
        # wrong base URL answers 404 too, and the removal has then not reached the backend.
        if kind in REMOVALS and code == NOT_FOUND_CODE:
            return Outcome.DELIVERED
        return Outcome.REJECT
    if status in (408, 429) or status >= 500:
        return Outcome.RETRY
    return Outcome.REJECT  # any other 4xx: the request itself is wrong


def failure_kind(error: BackendError) -> str:
    """Which of the ways a backend fails `error` is, for a person (and an exit status):

    - "slow": no complete answer in time (`TimedOut`: a server sending a byte a second);
    - "unreachable": no answer at all (refused, reset, DNS, TLS);
    - "credentials": the token or API key refused (HTTP 401, Stream codes 2, 5, 40-43);
    - "unusable": a 2xx answer that cannot be used (`UnusableAnswer`: a captive portal's page,
      an error object in the body, the wrong shape, over the size cap);
    - "error": any other error the backend answered with (5xx, 403, ...).
    """
    if isinstance(error, TimedOut):
        return "slow"
    if isinstance(error, NoResponse):
        return "unreachable"
    if isinstance(error, UnusableAnswer):
        return "unusable"
    if error.status == 401 or error.code in TOKEN_CODES:
        return "credentials"
    return "error"


# The longest a time named by the backend (`Retry-After`, `X-RateLimit-Reset`) may hold a
# command back. Stream's limits reset every minute and a slow-mode cooldown is shorter; a later
# time is a broken or hostile header (a reset in milliseconds is 50,000 years away), and
# honouring it would park the command for good, which is losing it.
MAX_BACKEND_WAIT = 3600.0


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff with full jitter: attempt n waits uniformly in [0, min(cap, base * factor**(n-1))]."""

    base: float = 0.5
    factor: float = 2.0
    cap: float = 60.0
    max_backend_wait: float = MAX_BACKEND_WAIT

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        ceiling = min(self.cap, self.base * self.factor ** max(0, attempt - 1))
        return (rng or random).uniform(0.0, ceiling)

    def next_try(self, attempt: int, now: float, error: BackendError | None = None,
                 rng: random.Random | None = None) -> float:
        """When to try again (unix time): after the jittered delay, and never before the time
        the backend named (rate-limit reset, `Retry-After`, cooldown)."""
        at = now + self.delay(attempt, rng)
        retry_at = error.retry_at if error is not None else None
        # Any backend's error may carry it: only a finite time counts, and at most
        # `max_backend_wait` ahead (NaN and infinity would not even survive being stored).
        if retry_at is not None and math.isfinite(retry_at):
            at = max(at, min(retry_at, now + self.max_backend_wait))
        return at
