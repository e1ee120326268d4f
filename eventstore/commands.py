"""Local actions as commands: `eventsourcing` aggregates with a lifecycle, and their codec.

Every action of the user (send, edit, delete, react, mark read, draft) is a `Command`: an aggregate
whose id the client chooses (a send's is derived from the message id, so sending the same message
again after a crash names the same command). Its events say what happened to it:

    Requested -> [Amended] -> AttemptStarted -> AttemptFailed -> AttemptStarted -> Succeeded
                                                                               \\-> Rejected
    (any unfinished, or rejected) -> Cancelled;  (rejected or failed) -> Retried -> pending again

The commands that are neither succeeded, rejected nor cancelled are the retry stream.

Events are stored in the log as source-0 rows (the library's own aggregates), encoded by
`command_codec.CommandMapper` with msgspec: a typed struct per event, no per-field Python work.
A `Succeeded` keeps the server's answer as the exact bytes that arrived (`msgspec.Raw`, never
re-encoded).
"""

from __future__ import annotations

import base64
import dataclasses
import time
from datetime import datetime
from enum import StrEnum
from typing import Any, cast

import msgspec
from eventsourcing.domain import (
    BaseAggregate,
    CanInitAggregate,
    CanMutateAggregate,
    TZINFO,
    MetaDomainEvent,
)

from chatledger.errors import CommandError, InvalidTransition, UnknownCommand
from chatledger.eventstore.ids import time_ordered_uuid


class CommandKind(StrEnum):
    SEND_MESSAGE = "send_message"
    UPDATE_MESSAGE = "update_message"
    PARTIAL_UPDATE_MESSAGE = "partial_update_message"
    DELETE_MESSAGE = "delete_message"
    SEND_REACTION = "send_reaction"
    DELETE_REACTION = "delete_reaction"
    MARK_READ = "mark_read"
    MARK_UNREAD = "mark_unread"
    SAVE_DRAFT = "save_draft"
    DELETE_DRAFT = "delete_draft"


class CommandStatus(StrEnum):
    PENDING = "pending"        # requested (or retried), not tried yet
    IN_FLIGHT = "in_flight"    # an attempt started and has no outcome yet
    FAILED = "failed"          # the last attempt failed; waiting for the next try
    SUCCEEDED = "succeeded"
    REJECTED = "rejected"      # the backend refused it for good: a conflict the user can see
    CANCELLED = "cancelled"


UNFINISHED: frozenset[str] = frozenset(
    {CommandStatus.PENDING, CommandStatus.IN_FLIGHT, CommandStatus.FAILED})
FINISHED: frozenset[str] = frozenset(
    {CommandStatus.SUCCEEDED, CommandStatus.REJECTED, CommandStatus.CANCELLED})

# Kinds whose optimistic effect is a message object of their own (the row points at it).
MESSAGE_KINDS: frozenset[str] = frozenset(
    {CommandKind.SEND_MESSAGE, CommandKind.UPDATE_MESSAGE, CommandKind.PARTIAL_UPDATE_MESSAGE})


def send_command_id(message_id: str) -> str:
    """The id of the command that sends a message: derived from the message id, so a resend
    (after a crash or a lost answer) is the same command, never a second one."""
    return f"{CommandKind.SEND_MESSAGE}:{message_id}"


def new_command_id(kind: str) -> str:
    """A fresh id for every other kind (each edit, reaction, read is its own command)."""
    return f"{kind}:{time_ordered_uuid().hex}"


def now_s() -> float:
    return time.time()


# -- settlements: what the replayer hands back --------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class Delivered:
    """The backend applied the command; `response` is its answer, as the bytes that arrived.
    A send answered "already exists" is delivered too (its error body is the response)."""

    command_id: str
    response: bytes


@dataclasses.dataclass(frozen=True, slots=True)
class Failed:
    """The attempt failed in a way worth retrying; try again at `next_try_at` (unix seconds).
    `error` is {status, code, message, retry_at} (see `sync.backend.BackendError.as_dict`)."""

    command_id: str
    error: dict[str, Any]
    next_try_at: float


@dataclasses.dataclass(frozen=True, slots=True)
class Refused:
    """The backend refused the command for good (or the replayer gave up on it)."""

    command_id: str
    reason: str
    error: dict[str, Any] | None = None


Settlement = Delivered | Failed | Refused


# -- the aggregate --------------------------------------------------------------------------------


class Command(BaseAggregate[str]):
    """One local action and what became of it. Create with `Command.request(...)`."""

    # Explicit topics: the stored events stay readable whatever module the classes move to.
    TOPIC = "chatledger/command"

    # The library's `DomainEvent` insists on UUID ids; this base is the same frozen dataclass
    # with a client-chosen text id.
    class Event(CanMutateAggregate[str], metaclass=MetaDomainEvent):
        TOPIC = "chatledger/command.event"
        originator_id: str
        originator_version: int
        timestamp: datetime

    class Requested(Event, CanInitAggregate[str]):
        TOPIC = "chatledger/command.requested"
        originator_topic: str
        kind: str
        cid: str | None
        message_id: str | None
        request: dict[str, Any]      # the backend call's keyword arguments (see `request_of`)
        message: dict[str, Any] | None  # the optimistic message object (sends and edits)
        depends_on: str | None

        def mutate(self, aggregate: Any) -> Any:
            # The library's generic version inspects __init__'s signature on every call; a
            # command's fields are known, so it is built directly (same result, a third the cost).
            assert aggregate is None
            command = Command.__new__(Command)
            command.__base_init__(self.originator_id, self.originator_version, self.timestamp)
            command.__init__(self.kind, self.cid, self.message_id, self.request,  # type: ignore[misc]
                             self.message, self.depends_on)
            return command

    class Amended(Event):
        TOPIC = "chatledger/command.amended"
        request: dict[str, Any]
        message: dict[str, Any] | None

        def apply(self, aggregate: Command) -> None:
            aggregate.request = self.request
            aggregate.message = self.message

    class AttemptStarted(Event):
        TOPIC = "chatledger/command.attempt_started"
        attempt: int

        def apply(self, aggregate: Command) -> None:
            aggregate.status = CommandStatus.IN_FLIGHT
            aggregate.attempts = self.attempt

    class AttemptFailed(Event):
        TOPIC = "chatledger/command.attempt_failed"
        attempt: int
        error: dict[str, Any]
        next_try_at: float

        def apply(self, aggregate: Command) -> None:
            aggregate.status = CommandStatus.FAILED
            aggregate.attempts = self.attempt  # its own start may be folded into it (see below)
            aggregate.last_error = self.error
            aggregate.next_try_at = self.next_try_at

    class Succeeded(Event):
        TOPIC = "chatledger/command.succeeded"
        response: msgspec.Raw  # the server's answer, exactly as it arrived, when it is JSON
        # An answer that is not JSON (an empty body, a proxy's HTML page) cannot sit inside the
        # event's JSON: it is kept here instead, base64-encoded, and `response` is null.
        unreadable: str | None = None
        # The attempt this outcome ends, when its start was folded into it (recorded in the
        # same transaction, so an `AttemptStarted` would say nothing more); None when the
        # attempt has an `AttemptStarted` of its own.
        attempt: int | None = None

        def apply(self, aggregate: Command) -> None:
            if self.attempt is not None:
                aggregate.attempts = self.attempt
            aggregate.status = CommandStatus.SUCCEEDED
            aggregate.response = self.response
            aggregate.next_try_at = None

    class Rejected(Event):
        TOPIC = "chatledger/command.rejected"
        reason: str
        error: dict[str, Any] | None
        attempt: int | None = None  # as `Succeeded.attempt`

        def apply(self, aggregate: Command) -> None:
            if self.attempt is not None:
                aggregate.attempts = self.attempt
            aggregate.status = CommandStatus.REJECTED
            aggregate.reason = self.reason
            if self.error is not None:
                aggregate.last_error = self.error
            aggregate.next_try_at = None

    class Cancelled(Event):
        TOPIC = "chatledger/command.cancelled"
        reason: str

        def apply(self, aggregate: Command) -> None:
            aggregate.status = CommandStatus.CANCELLED
            aggregate.reason = self.reason
            aggregate.next_try_at = None

    class Retried(Event):
        TOPIC = "chatledger/command.retried"
        next_try_at: float

        def apply(self, aggregate: Command) -> None:
            aggregate.status = CommandStatus.PENDING
            aggregate.reason = None
            aggregate.next_try_at = self.next_try_at

    def __init__(
        self, kind: str, cid: str | None, message_id: str | None, request: dict[str, Any],
        message: dict[str, Any] | None, depends_on: str | None,
    ) -> None:
        self.kind = kind
        self.cid = cid
        self.message_id = message_id
        self.request = request
        self.message = message
        self.depends_on = depends_on
        self.status: str = CommandStatus.PENDING
        self.attempts = 0
        self.next_try_at: float | None = None
        self.last_error: dict[str, Any] | None = None
        self.reason: str | None = None
        self.response: msgspec.Raw | None = None

    @classmethod
    def request_command(
        cls, command_id: str, kind: str, *, cid: str | None, message_id: str | None,
        request: dict[str, Any], message: dict[str, Any] | None = None,
        depends_on: str | None = None,
    ) -> Command:
        event = cls.Requested(  # type: ignore[call-arg]
            originator_id=command_id, originator_version=cls.INITIAL_VERSION,
            timestamp=cls.Requested.create_timestamp(), originator_topic=cls.TOPIC,
            kind=str(kind), cid=cid, message_id=message_id, request=request, message=message,
            depends_on=depends_on)
        command: Command = event.mutate(None)
        command.pending_events.append(event)
        return command

    @classmethod
    def restore(
        cls, command_id: str, version: int, *, kind: str, cid: str | None,
        message_id: str | None, status: str, attempts: int, depends_on: str | None,
        next_try_at: float | None = None, last_error: dict[str, Any] | None = None,
        reason: str | None = None, request: dict[str, Any] | None = None,
        message: dict[str, Any] | None = None, modified_on: datetime | None = None,
    ) -> Command:
        """The command as a snapshot of it says (the outbox row holds one): what its next
        event needs, without reading its whole stream. `replay` rebuilds it from the events."""
        aggregate = cls.__new__(cls)
        aggregate.__base_init__(command_id, version, modified_on or datetime.now(TZINFO))
        aggregate.__init__(kind, cid, message_id, request or {}, message, depends_on)  # type: ignore[misc]
        aggregate.status = status
        aggregate.attempts = attempts
        aggregate.next_try_at = next_try_at
        aggregate.last_error = last_error
        aggregate.reason = reason
        return aggregate

    def trigger_event(self, event_class: Any, **kwargs: Any) -> None:
        """The library's `trigger_event`, minus what it re-checks on every call (the explicit
        topics were registered when the classes were made): the next event in sequence,
        applied, and pending.

        The event is built as the codec rebuilds stored ones (its fields set at once, in their
        declared order, defaults included), not through the frozen dataclass's `__init__`,
        which sets them one `object.__setattr__` at a time: the same object, a third the cost.
        """
        state = dict(_FIELDS[event_class])
        state.update(originator_id=self.id, originator_version=self.version + 1,
                     timestamp=datetime.now(TZINFO), **kwargs)
        if len(state) != len(_FIELDS[event_class]) or _REQUIRED in state.values():
            raise TypeError(f"{event_class.__name__} takes the fields "
                            f"{list(_FIELDS[event_class])}, not {sorted(kwargs)}")
        event = object.__new__(event_class)
        object.__setattr__(event, "__dict__", state)
        event.apply(self)
        self.version = event.originator_version
        self.modified_on = event.timestamp
        self._pending_events.append(event)

    # -- transitions (each checks that it is allowed, then triggers its event) -------------------

    @property
    def unfinished(self) -> bool:
        return self.status in UNFINISHED

    def _refuse(self, action: str) -> InvalidTransition:
        return InvalidTransition(f"cannot {action} command {self.id}: it is {self.status}")

    def amend(self, request: dict[str, Any], message: dict[str, Any] | None) -> None:
        # Rejected too: fixing what the backend refused (then retrying it) is the way out of a
        # conflict. In flight, it is too late: the backend may have it as it was.
        if self.status not in (CommandStatus.PENDING, CommandStatus.FAILED,
                               CommandStatus.REJECTED):
            raise self._refuse("amend")
        self.trigger_event(self.Amended, request=request, message=message)

    def start_attempt(self) -> None:
        # In flight already: the process died during the attempt, this is the next one.
        if not self.unfinished:
            raise self._refuse("start")
        self.trigger_event(self.AttemptStarted, attempt=self.attempts + 1)

    # The outcomes take `started=True` when the attempt they end has no `AttemptStarted` event
    # of its own: its start is folded into the outcome, which then carries the attempt number
    # (`Outbox.record` does this when both are recorded in one transaction).

    def _attempt_of(self, started: bool) -> int | None:
        if started and not self.unfinished:
            raise self._refuse("start")
        return self.attempts + 1 if started else None

    def fail_attempt(self, error: dict[str, Any], next_try_at: float, *,
                     started: bool = False) -> None:
        if not self.unfinished:
            raise self._refuse("fail")
        attempt = self._attempt_of(started) or self.attempts
        self.trigger_event(self.AttemptFailed, attempt=attempt, error=dict(error),
                           next_try_at=float(next_try_at))

    def succeed(self, response: bytes, *, started: bool = False) -> None:
        # A cancelled command can still have reached the backend (cancelled while in flight):
        # the backend's word is what happened, so it is recorded.
        if not (self.unfinished or self.status == CommandStatus.CANCELLED):
            raise self._refuse("settle")
        attempt = self._attempt_of(started)
        answer = bytes(response)
        if _is_json(answer):
            self.trigger_event(self.Succeeded, response=msgspec.Raw(answer), attempt=attempt)
        else:
            self.trigger_event(self.Succeeded, response=msgspec.Raw(b"null"),
                               unreadable=base64.b64encode(answer).decode("ascii"),
                               attempt=attempt)

    def reject(self, reason: str, error: dict[str, Any] | None = None, *,
               started: bool = False) -> None:
        if not self.unfinished:
            raise self._refuse("reject")
        self.trigger_event(self.Rejected, reason=reason,
                           error=dict(error) if error is not None else None,
                           attempt=self._attempt_of(started))

    def cancel(self, reason: str) -> None:
        if not (self.unfinished or self.status == CommandStatus.REJECTED):
            raise self._refuse("cancel")
        self.trigger_event(self.Cancelled, reason=reason)

    def retry(self, now: float | None = None) -> None:
        if self.status not in (CommandStatus.REJECTED, CommandStatus.FAILED):
            raise self._refuse("retry")
        self.trigger_event(self.Retried, next_try_at=now_s() if now is None else now)


def _is_json(data: bytes) -> bool:
    """Whether `data` is one JSON document, which can sit verbatim inside an event's JSON.
    (A full decode: skipping the value as `msgspec.Raw` is cheaper, but lets through floats
    beyond a double's range and strings that are not UTF-8, and a pattern to catch those costs
    more than the decode.)"""
    try:
        msgspec.json.decode(data)
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        return False
    return True


EVENT_CLASSES: tuple[type[Command.Event], ...] = (
    Command.Requested, Command.Amended, Command.AttemptStarted, Command.AttemptFailed,
    Command.Succeeded, Command.Rejected, Command.Cancelled, Command.Retried,
)
TOPICS: dict[str, type[Command.Event]] = {cls.TOPIC: cls for cls in EVENT_CLASSES}

# Each event class's fields in their declared order, with their defaults (`trigger_event`).
_REQUIRED = object()
_FIELDS: dict[type, dict[str, Any]] = {
    cls: {f.name: _REQUIRED if f.default is dataclasses.MISSING else f.default
          for f in dataclasses.fields(cast(Any, cls))}  # the library makes them dataclasses
    for cls in EVENT_CLASSES
}

REQUESTED = Command.Requested.TOPIC
AMENDED = Command.Amended.TOPIC
ATTEMPT_STARTED = Command.AttemptStarted.TOPIC
ATTEMPT_FAILED = Command.AttemptFailed.TOPIC
SUCCEEDED = Command.Succeeded.TOPIC
REJECTED = Command.Rejected.TOPIC
CANCELLED = Command.Cancelled.TOPIC
RETRIED = Command.Retried.TOPIC


__all__ = [
    "Command", "CommandError", "CommandKind", "CommandStatus", "Delivered",
    "FINISHED", "Failed", "InvalidTransition", "MESSAGE_KINDS", "Refused", "Settlement",
    "UNFINISHED", "UnknownCommand", "new_command_id", "send_command_id",
]
