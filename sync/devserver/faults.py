"""Fault injection: rules that make the next calls to an endpoint fail in a chosen way.

A rule names an endpoint (or `*`), a kind, and when it fires: `times` (the next N matching
calls), `probability` (each matching call, drawn from a seeded RNG so a run is repeatable),
both (at most N times, each with probability p), or neither (every matching call until
cleared). The first rule that fires wins. Rules are changed from any thread: a lock guards them.

The compact spec syntax (command line, `POST /_dev/faults {"spec": ...}`):

    ENDPOINT:KIND[=VALUE][:OPTION=VALUE]...

    send_message:error5xx:times=3      the next 3 sends answer 500 code -1
    *:delay=0.5:p=0.2                  any call, with probability 0.2, waits 0.5 s first
    sync:rate_limit=10                 every sync answers 429, resetting in 10 s
    send_reaction:reject=404:code=16   permanent 404 code 16
    connect:refuse:times=2             the next 2 WebSocket connects are cut
    ws_event:drop:times=1              the next event pushed to a WebSocket is lost on the
                                       way (it stays in the history `/sync` draws from)

VALUE is the seconds for delay, timeout and rate_limit, the HTTP status for error5xx and
reject. OPTIONs: times (n), p (probability), seconds, status, code, message.
"""

from __future__ import annotations

import random
import threading
from dataclasses import asdict, dataclass
from typing import Any

KINDS = ("refuse", "delay", "drop", "error5xx", "rate_limit", "timeout", "reject", "close_ws")
ENDPOINTS = ("send_message", "update_message", "partial_update_message", "delete_message",
             "send_reaction", "delete_reaction", "mark_read", "mark_unread", "save_draft",
             "delete_draft", "query_channels", "query_channel", "sync", "connect", "ws_event",
             "*")
# `ws_event` is no REST call: it stands for the events the server pushes over the WebSockets.
# Only `drop` applies to it (the frame is lost on the way, the event stays in the history
# `/sync` draws from: a WebSocket event the client never gets), and `*` never matches it, so a
# rule for every call leaves the pushed events alone.
PUSHED = "ws_event"
PUSHED_KINDS = ("drop",)
DEFAULT_SECONDS = {"delay": 1.0, "timeout": 30.0, "rate_limit": 1.0}
DEFAULT_ANSWER = {"error5xx": (500, -1, "internal error (injected fault)"),
                  "reject": (403, 17, "not allowed (injected fault)")}


class FaultSpecError(ValueError):
    """A fault spec or rule that cannot be understood."""


@dataclass
class Fault:
    endpoint: str
    kind: str
    times: int | None = None
    probability: float | None = None
    seconds: float | None = None
    status: int | None = None
    code: int | None = None
    message: str | None = None
    fired: int = 0
    id: int = 0

    def answer(self) -> tuple[int, int, str]:
        """(HTTP status, Stream code, message) of an error5xx or reject fault."""
        status, code, message = DEFAULT_ANSWER[self.kind]
        return (self.status or status, code if self.code is None else self.code,
                self.message or message)

    @property
    def duration(self) -> float:
        return DEFAULT_SECONDS.get(self.kind, 0.0) if self.seconds is None else self.seconds

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _check(fault: Fault) -> Fault:
    if fault.endpoint not in ENDPOINTS:
        raise FaultSpecError(f"unknown endpoint {fault.endpoint!r}; one of: {', '.join(ENDPOINTS)}")
    if fault.kind not in KINDS:
        raise FaultSpecError(f"unknown fault kind {fault.kind!r}; one of: {', '.join(KINDS)}")
    if fault.endpoint == PUSHED and fault.kind not in PUSHED_KINDS:
        raise FaultSpecError(f"{PUSHED} takes only: {', '.join(PUSHED_KINDS)}")
    if fault.times is not None and fault.times < 1:
        raise FaultSpecError("times must be at least 1")
    if fault.probability is not None and not 0.0 <= fault.probability <= 1.0:
        raise FaultSpecError("probability must be between 0 and 1")
    if fault.seconds is not None and fault.seconds < 0:
        raise FaultSpecError("seconds must not be negative")
    if fault.status is not None:
        low, high = (500, 599) if fault.kind == "error5xx" else (400, 499)
        if not low <= fault.status <= high:
            raise FaultSpecError(f"{fault.kind} status must be {low}-{high}")
    return fault


_OPTION_NAMES = {"times": "times", "n": "times", "p": "probability",
                 "probability": "probability", "seconds": "seconds", "s": "seconds",
                 "status": "status", "code": "code", "message": "message"}


def parse_spec(spec: str) -> Fault:
    """Parse `ENDPOINT:KIND[=VALUE][:OPTION=VALUE]...` into a `Fault` (see the module doc)."""
    parts = spec.strip().split(":")
    if len(parts) < 2 or not parts[0] or not parts[1]:
        raise FaultSpecError(
            f"fault spec {spec!r}: expected ENDPOINT:KIND[=VALUE][:OPTION=VALUE]...")
    fields: dict[str, Any] = {"endpoint": parts[0].strip()}
    kind, _, value = parts[1].partition("=")
    fields["kind"] = kind.strip()
    options = [("seconds" if fields["kind"] in DEFAULT_SECONDS else "status", value)] \
        if value else []
    for option in parts[2:]:
        name, eq, raw = option.partition("=")
        if not eq or name.strip() not in _OPTION_NAMES:
            raise FaultSpecError(f"fault spec {spec!r}: unknown option {option!r}; "
                                 f"options: {', '.join(sorted(set(_OPTION_NAMES)))}")
        options.append((_OPTION_NAMES[name.strip()], raw))
    for name, raw in options:
        try:
            fields[name] = (int(raw) if name in ("times", "status", "code")
                            else float(raw) if name in ("probability", "seconds") else raw)
        except ValueError:
            raise FaultSpecError(f"fault spec {spec!r}: bad value for {name}: {raw!r}") from None
    return _check(Fault(**fields))


def fault_from_dict(data: dict[str, Any]) -> Fault:
    """A rule from JSON: `{"spec": "..."}` or `{"endpoint", "kind", "times", "probability",
    "seconds", "status", "code", "message"}` (`p` is accepted for `probability`)."""
    if not isinstance(data, dict):
        raise FaultSpecError("a fault must be an object")
    if "spec" in data:
        return parse_spec(str(data["spec"]))
    known = {"endpoint", "kind", "times", "probability", "seconds", "status", "code", "message"}
    data = {("probability" if k == "p" else k): v for k, v in data.items()}
    unknown = set(data) - known
    if unknown:
        raise FaultSpecError(f"unknown fault fields: {', '.join(sorted(unknown))}")
    if "kind" not in data:
        raise FaultSpecError("a fault needs a kind")
    try:
        return _check(Fault(endpoint=str(data.get("endpoint", "*")), kind=str(data["kind"]),
                            times=None if data.get("times") is None else int(data["times"]),
                            probability=None if data.get("probability") is None
                            else float(data["probability"]),
                            seconds=None if data.get("seconds") is None else float(data["seconds"]),
                            status=None if data.get("status") is None else int(data["status"]),
                            code=None if data.get("code") is None else int(data["code"]),
                            message=data.get("message")))
    except (TypeError, ValueError) as error:
        raise FaultSpecError(f"bad fault: {error}") from None


class FaultSet:
    """The active rules, in the order added."""

    def __init__(self, rng_seed: int = 0) -> None:
        self._lock = threading.Lock()
        self._rules: list[Fault] = []
        self._rng = random.Random(rng_seed)
        self._next_id = 1

    def add(self, endpoint: str = "*", kind: str = "error5xx", *, times: int | None = None,
            probability: float | None = None, seconds: float | None = None,
            status: int | None = None, code: int | None = None, message: str | None = None
            ) -> Fault:
        return self.add_fault(Fault(endpoint, kind, times, probability, seconds, status, code,
                                    message))

    def add_spec(self, spec: str) -> Fault:
        return self.add_fault(parse_spec(spec))

    def add_fault(self, fault: Fault) -> Fault:
        _check(fault)
        with self._lock:
            fault.id = self._next_id
            self._next_id += 1
            self._rules.append(fault)
        return fault

    def clear(self, endpoint: str | None = None) -> int:
        """Remove every rule (or those of one endpoint); returns how many went."""
        with self._lock:
            before = len(self._rules)
            self._rules = [] if endpoint is None else [
                f for f in self._rules if f.endpoint != endpoint]
            return before - len(self._rules)

    def reseed(self, rng_seed: int) -> None:
        with self._lock:
            self._rng = random.Random(rng_seed)

    def list(self) -> list[dict[str, Any]]:
        with self._lock:
            return [f.as_dict() for f in self._rules]

    def __len__(self) -> int:
        return len(self._rules)

    def pick(self, endpoint: str) -> Fault | None:
        """The rule that fires for this call, if any; a `times` rule is used up as it fires."""
        with self._lock:
            for fault in self._rules:
                if fault.endpoint != endpoint and (fault.endpoint != "*" or endpoint == PUSHED):
                    continue
                if fault.probability is not None and self._rng.random() >= fault.probability:
                    continue
                fault.fired += 1
                if fault.times is not None:
                    fault.times -= 1
                    if fault.times == 0:
                        self._rules.remove(fault)
                return fault
        return None
