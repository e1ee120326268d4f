"""`store.outbox`: the local commands, what the replayer works through, and what the user sees.

- `pending()` is the retry stream: every unfinished command (pending, in flight, failed), in the
  order the user asked for them, with the exact keyword arguments of its backend call.
- `start()` and `settle()` record attempts and outcomes, many in one transaction.
- `retry()`, `cancel()`, `conflicts()`, `list()`, `get()` are for the user.

Every change is a command event recorded in the log; the read tables (the `outbox` table and the
optimistic rows) change in the same transaction. The aggregate of a command is restored from its
outbox row, which the same transactions keep in step with its events.
"""

from __future__ import annotations

import base64
import builtins
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

import apsw
import msgspec

from chatledger.eventstore import commands as cmd
from chatledger.eventstore.command_codec import MAPPER
from chatledger.eventstore.commands import (
    Command,
    CommandStatus,
    Delivered,
    Failed,
    Refused,
    Settlement,
    UnknownCommand,
)

if TYPE_CHECKING:
    from chatledger.eventstore.log import EventLog


# The statuses of commands that still wait for someone (see `Outbox.waiting`).
WAITING = (CommandStatus.PENDING, CommandStatus.IN_FLIGHT, CommandStatus.FAILED,
           CommandStatus.REJECTED)


class PendingCommand(msgspec.Struct, frozen=True):
    """An unfinished command, as the replayer needs it. `request` holds exactly the keyword
    arguments of the `sync.backend.Backend` method named by `kind`."""

    id: str
    kind: str
    cid: str | None
    message_id: str | None
    request: dict[str, Any]
    status: str
    attempts: int
    next_try_at: float | None
    depends_on: str | None
    last_error: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class CommandEvent:
    """One event of a command's lifecycle, as the log holds it."""

    position: int
    name: str          # requested, amended, attempt_started, attempt_failed, succeeded, ...
    received_at: int   # epoch microseconds
    data: dict[str, Any]


@dataclass(frozen=True, slots=True)
class CommandInfo:
    """A command as the outbox knows it; `history` is filled by `Outbox.get`."""

    id: str
    kind: str
    cid: str | None
    message_id: str | None
    status: str
    attempts: int
    next_try_at: float | None
    depends_on: str | None
    last_error: dict[str, Any] | None
    reason: str | None
    created_at: int
    updated_at: int
    request: dict[str, Any]
    response: bytes | None = None
    history: list[CommandEvent] = field(default_factory=list)

    @property
    def unfinished(self) -> bool:
        return self.status in cmd.UNFINISHED

    @property
    def standing_error(self) -> dict[str, Any] | None:
        """The error that still stands: the last failed attempt's, while the command is not
        done (or was refused); None once it succeeded or was cancelled, whatever earlier
        attempts met (those stay in `last_error` and in its history)."""
        if self.status in (CommandStatus.SUCCEEDED, CommandStatus.CANCELLED):
            return None
        return self.last_error


class _Held(msgspec.Struct, gc=False):
    """What the entry at an outbox row's `position` (requested or amended) holds."""

    request: dict[str, Any] = {}
    message: dict[str, Any] | None = None


class _Answer(msgspec.Struct, gc=False):
    response: msgspec.Raw = msgspec.Raw()
    unreadable: str | None = None  # an answer that was not JSON, base64-encoded

    def answer(self) -> bytes:
        """The backend's answer exactly as it arrived."""
        if self.unreadable is not None:
            return base64.b64decode(self.unreadable)
        return bytes(self.response)


class _RequestOnly(msgspec.Struct, gc=False):
    request: dict[str, Any] = {}


_HELD = msgspec.json.Decoder(_Held)
_REQUEST_ONLY = msgspec.json.Decoder(_RequestOnly)  # the retry stream needs no message object
_ANSWER = msgspec.json.Decoder(_Answer)

# A command's outbox row with the entry at its `position` (requested or amended): `_InfoRow`.
_COLUMNS = ("o.id, o.kind, o.cid, o.message_id, o.status, o.attempts, o.next_try_at, "
            "o.depends_on, o.last_error, o.reason, o.created_at, o.updated_at, o.version, "
            "o.position, e.codec, e.state")
_InfoRow = tuple[str, str, "str | None", "str | None", str, int, "float | None", "str | None",
                 "str | None", "str | None", int, int, int, int, "int | None", "bytes | None"]
_SELECT = f"SELECT {_COLUMNS} FROM outbox o LEFT JOIN stored_events e ON e.rowid = o.position"
_SELECT_ONE = f"{_SELECT} WHERE o.id=?"
_LIST_ALL = f"{_SELECT} ORDER BY o.seq"
_LIST_BY_STATUS = f"{_SELECT} WHERE o.status IN ({{marks}}) ORDER BY o.seq"  # marks: one ? each
_RETRY_STREAM = (f"SELECT {_COLUMNS} FROM retry_stream r JOIN outbox o ON o.id = r.id "
                 "LEFT JOIN stored_events e ON e.rowid = o.position")
_PENDING = f"{_RETRY_STREAM} ORDER BY r.seq"
_PENDING_IN_CHANNEL = f"{_RETRY_STREAM} WHERE o.cid=? ORDER BY r.seq"

_RETRY_STREAM_IDS = "SELECT id FROM retry_stream"
_RECEIVED_AT = "SELECT rowid, received_at FROM stored_events WHERE originator_id=? AND source=0"
_ENTRY = "SELECT codec, state FROM stored_events WHERE rowid=?"

# What the actions ask of a command (`Outbox.row`): `_ActionRow`.
_ACTION_ROW = ("SELECT kind, cid, message_id, status, attempts, last_error, position FROM outbox "
               "WHERE id=?")
_ActionRow = tuple[str, "str | None", "str | None", str, int, "str | None", int]

# What a command is restored from (`Outbox.load`): `_LoadRow`.
_LOAD = ("SELECT o.kind, o.cid, o.message_id, o.status, o.attempts, o.depends_on, o.version, "
         "o.next_try_at, o.last_error, o.reason, o.position, o.id FROM outbox o")
_LoadRow = tuple[str, "str | None", "str | None", str, int, "str | None", int, "float | None",
                 "str | None", "str | None", int, str]
_LOAD_ONE = f"{_LOAD} WHERE o.id=?"
_LOAD_MANY = f"{_LOAD} WHERE o.id IN (SELECT value FROM json_each(?))"

# The commands waiting for one (`Outbox.cascade`): to retry with it, or still unfinished.
_WAITING_REJECTED = ("SELECT id FROM outbox WHERE depends_on=? AND status='rejected' AND reason=? "
                     "ORDER BY seq")
_WAITING_NOT_CANCELLED = ("SELECT id FROM outbox WHERE depends_on=? AND status NOT IN "
                          "('succeeded', 'cancelled') ORDER BY seq")
_WAITING_NOT_REJECTED = ("SELECT id FROM outbox WHERE depends_on=? AND status NOT IN "
                         "('succeeded', 'cancelled', 'rejected') ORDER BY seq")

# PayloadCodec.decode: (codec, stored bytes, position) -> payload.
_Decode = Callable[[int, bytes, "int | None"], bytes]


# The answers that prove a request was refused before it took effect: the 4xx statuses, but for
# 408 (the server gave up waiting, possibly after the write).
_REFUSED_FIRST, _REFUSED_END, _TIMED_OUT = 400, 500, 408


def _json(text: str | None) -> Any:
    return msgspec.json.decode(text) if text else None


def surely_unsent(status: str, attempts: int, last_error: dict[str, Any] | None) -> bool:
    """Whether a command (unfinished, or rejected) certainly never took effect at the backend:
    never tried, or its last try was refused (a 4xx answer: a rejection, an expired token, a
    rate limit). A try that got no answer, a 5xx or a timeout (a gateway's 502 can come after
    the backend applied the write) or a 2xx that could not be read may have been applied, so a
    command tried that way is treated as sent: folding an edit into it would be answered
    "already exists" on the resend, and the edit lost."""
    if status not in (CommandStatus.PENDING, CommandStatus.FAILED, CommandStatus.REJECTED):
        return False
    if attempts == 0:
        return True
    answered = last_error.get("status") if last_error is not None else None
    return (isinstance(answered, int) and _REFUSED_FIRST <= answered < _REFUSED_END
            and answered != _TIMED_OUT)


class Outbox:
    """The local commands of one store (see the module doc)."""

    def __init__(self, log: EventLog) -> None:
        self._log = log
        # Commands a replayer is sending whose start it has not recorded yet (it records starts
        # with their outcomes, in batches): command id -> starts outstanding. See `sending`.
        self._sending: dict[str, int] = {}
        self._sending_lock = threading.Lock()  # marked on the event loop, cleared by the writer

    # -- reading -------------------------------------------------------------------------------

    def retry_stream_ids(self) -> list[str]:
        """The ids of the unfinished commands, and nothing else: a cheap look at the retry
        stream, for a running sync to notice commands another process queued."""
        with self._log.datastore.transaction(commit=False) as cursor:
            return [command_id for (command_id,) in cursor.execute(_RETRY_STREAM_IDS)]

    def pending(self, *, cid: str | None = None) -> list[PendingCommand]:
        """The retry stream: unfinished commands (including those in flight when the process
        stopped), in request order; only one channel's with `cid`."""
        decode = self._log.datastore.codec.decode
        with self._log.datastore.transaction(commit=False) as cursor:
            found = (cursor.execute(_PENDING) if cid is None
                     else cursor.execute(_PENDING_IN_CHANNEL, (cid,)))
            rows = cast("list[_InfoRow]", found.fetchall())
        request_of = _REQUEST_ONLY.decode
        return [
            PendingCommand(command_id, kind, channel, message_id,
                           request_of(decode(codec, state, position)).request
                           if codec is not None and state is not None else {},
                           status, attempts, next_try_at, depends_on, _json(last_error))
            for (command_id, kind, channel, message_id, status, attempts, next_try_at,
                 depends_on, last_error, _, _, _, _, position, codec, state) in rows
        ]

    @staticmethod
    def _info(decode: _Decode, row: _InfoRow) -> CommandInfo:
        (command_id, kind, cid, message_id, status, attempts, next_try_at, depends_on,
         last_error, reason, created_at, updated_at, _, position, codec, state) = row
        held = (_HELD.decode(decode(codec, state, position))
                if codec is not None and state is not None else _Held())
        return CommandInfo(
            id=command_id, kind=kind, cid=cid, message_id=message_id, status=status,
            attempts=attempts, next_try_at=next_try_at, depends_on=depends_on,
            last_error=_json(last_error), reason=reason, created_at=created_at,
            updated_at=updated_at, request=held.request)

    def list(self, status: str | Iterable[str] | None = None) -> builtins.list[CommandInfo]:
        """Commands in request order: all, or those with the given status(es)."""
        statuses = [status] if isinstance(status, str) else [*(status or ())]
        decode = self._log.datastore.codec.decode
        with self._log.datastore.transaction(commit=False) as cursor:
            if statuses:
                marks = ",".join("?" * len(statuses))
                found = cursor.execute(_LIST_BY_STATUS.format(marks=marks), statuses)
            else:
                found = cursor.execute(_LIST_ALL)
            rows = cast("builtins.list[_InfoRow]", found.fetchall())
        return [self._info(decode, row) for row in rows]

    def waiting(self) -> builtins.list[CommandInfo]:
        """The commands that wait, in request order: for the backend (pending, in flight,
        failed: the retry stream) or for the user (rejected: the conflicts, to retry or to
        cancel). What `chatledger outbox` lists."""
        return self.list(WAITING)

    def conflicts(self) -> builtins.list[CommandInfo]:
        """Rejected commands (with the reason), each with its lifecycle events."""
        return [self.get(info.id) for info in self.list(CommandStatus.REJECTED)]

    def get(self, command_id: str) -> CommandInfo:
        """One command with its whole lifecycle (`history`) and the server's answer."""
        decode = self._log.datastore.codec.decode
        with self._log.datastore.transaction(commit=False) as cursor:
            row = cast("_InfoRow | None", cursor.execute(_SELECT_ONE, (command_id,)).fetchone())
            if row is None:
                raise UnknownCommand(f"no command {command_id!r} in the outbox")
            events = self._log.select_local(cursor, command_id)
            received = dict(cast("Iterable[tuple[int, int]]",
                                 cursor.execute(_RECEIVED_AT, (command_id,))))
        info = self._info(decode, row)
        history: builtins.list[CommandEvent] = []
        response: bytes | None = None
        for position, stored in events:
            data = msgspec.json.decode(stored.state)
            data.pop("originator_topic", None)
            if stored.topic == cmd.SUCCEEDED:
                response = _ANSWER.decode(stored.state).answer()
            history.append(CommandEvent(position, stored.topic.rsplit(".", 1)[-1],
                                        received[position], data))
        return CommandInfo(**{**_fields(info), "response": response, "history": history})

    # -- the replayer's side -------------------------------------------------------------------

    def sending(self, command_id: str) -> None:
        """A replayer is sending the command now and will `record` the start later, with its
        outcome. Until then the actions treat the command as in flight: an edit or a delete
        of a message whose send is on its way must not fold into that send (the backend may
        have it as it was). Kept in memory: after a crash, the command is what the log says."""
        with self._sending_lock:
            self._sending[command_id] = self._sending.get(command_id, 0) + 1

    def start(self, command_ids: Sequence[str]) -> None:
        """An attempt starts for each command (one transaction). An id given twice starts two
        attempts, one after the other; a command that has finished meanwhile (cancelled by the
        user since `pending()`) is left as it is. An unknown id raises `UnknownCommand`."""
        self.record(command_ids)

    def settle(self, results: Sequence[Settlement]) -> None:
        """Record the outcomes of attempts (one transaction): `Delivered` (the server's answer,
        kept verbatim), `Failed` (try again at `next_try_at`), `Refused` (rejected for good;
        the commands waiting for it are rejected with it).

        An outcome for a command that has finished already is a late duplicate and changes
        nothing, except a delivery of a cancelled command: the backend has it, so it counts.
        """
        self.record(results)

    def record(self, records: Sequence[str | Settlement]) -> None:
        """Starts (a command id) and outcomes (a `Settlement`) in the order they happened, in
        one transaction: what `start` and `settle` do, for a batch that mixes them.

        A start whose outcome is in the same batch is folded into it: the outcome's event
        carries the attempt number, and no `AttemptStarted` is recorded for it. Nothing is lost
        by that: both would be committed together, with the same time, and no reader could
        ever see the command in flight in between. A start without its outcome is recorded as
        it is (the command is in flight until a later batch settles it)."""
        fold = _foldable(records)
        try:
            self._record_batch(records, fold)
        finally:
            with self._sending_lock:
                for record in records:
                    if isinstance(record, str) and record in self._sending:
                        if self._sending[record] > 1:
                            self._sending[record] -= 1
                        else:
                            del self._sending[record]

    def _record_batch(self, records: Sequence[str | Settlement], fold: set[int]) -> None:
        with self._log.write_transaction() as cursor:
            # Each command is loaded once and its events are recorded together at the end (one
            # pass of the projections, one tracking update), except before carrying a rejection
            # over to the commands waiting for it, which reads what was recorded so far.
            loaded = self._load_many(cursor, [r if isinstance(r, str) else r.command_id
                                         for r in records])
            events: builtins.list[Any] = []  # in the order they happened, across commands
            started: set[str] = set()  # folded starts, waiting for their outcome
            for index, record in enumerate(records):
                command_id = record if isinstance(record, str) else record.command_id
                command = loaded.get(command_id)
                if command is None:
                    command = loaded[command_id] = self.load(cursor, command_id)
                if isinstance(record, str):
                    # Finished meanwhile (the user cancelled it between `pending()` and here):
                    # nothing to start, and no reason to fail the whole batch over it.
                    rejected = False
                    if not command.unfinished:
                        continue
                    if index in fold:
                        started.add(command_id)
                        continue
                    command.start_attempt()
                else:
                    rejected = self._settle(command, record, command_id in started)
                    started.discard(command_id)
                events += command.collect_events()
                if rejected:
                    self._record(cursor, events)
                    events = []
                    self.cascade(cursor, command.id, "reject")
                    loaded.clear()  # the cascade may have moved commands on: load them again
            self._record(cursor, events)

    def _record(self, cursor: apsw.Cursor, events: builtins.list[Any]) -> None:
        self._log.record(cursor, [MAPPER.to_stored_event(e) for e in events])

    @staticmethod
    def _settle(command: Command, result: Settlement, started: bool = False) -> bool:
        """Apply one outcome to the command (`started`: its attempt's start is folded into it);
        True when it was rejected (to be carried over)."""
        if isinstance(result, Delivered):
            if command.unfinished or command.status == CommandStatus.CANCELLED:
                command.succeed(result.response, started=started)
        elif isinstance(result, Failed):
            if command.unfinished:
                command.fail_attempt(result.error, result.next_try_at, started=started)
        elif isinstance(result, Refused):
            if command.unfinished:
                command.reject(result.reason, result.error, started=started)
                return True
        else:
            raise TypeError(f"not a settlement: {result!r}")
        return False

    # -- the user's side -----------------------------------------------------------------------

    def retry(self, command_id: str) -> None:
        """Try a rejected or failed command again, now (and what was rejected with it)."""
        with self._log.write_transaction() as cursor:
            command = self.load(cursor, command_id)
            command.retry()
            self.save(cursor, command)
            self.cascade(cursor, command_id, "retry")

    def cancel(self, command_id: str, *, reason: str = "cancelled by the user") -> None:
        """Give up on an unfinished or rejected command, undoing its optimistic change where
        possible (a cancelled send removes the local message); commands waiting for it are
        cancelled with it."""
        with self._log.write_transaction() as cursor:
            command = self.load(cursor, command_id)
            command.cancel(reason)
            self.save(cursor, command)
            self.cascade(cursor, command_id, "cancel")

    # -- shared with the actions (inside their transaction) ------------------------------------

    def row(self, cursor: apsw.Cursor, command_id: str) -> tuple[Any, ...] | None:
        """(kind, cid, message_id, status, attempts, last_error, position) or None; the status
        is `in_flight` for a command being sent whose start is not recorded yet (`sending`)."""
        row = cast("_ActionRow | None", cursor.execute(_ACTION_ROW, (command_id,)).fetchone())
        if row is None:
            return None
        kind, cid, message_id, status, attempts, last_error, position = row
        if command_id in self._sending and status in (CommandStatus.PENDING,
                                                      CommandStatus.FAILED):
            status = CommandStatus.IN_FLIGHT
        return (kind, cid, message_id, status, attempts, _json(last_error), position)

    def load(self, cursor: apsw.Cursor, command_id: str, *, with_request: bool = False) -> Command:
        """The command as its outbox row (a snapshot kept in step with its events) says."""
        row = cast("_LoadRow | None", cursor.execute(_LOAD_ONE, (command_id,)).fetchone())
        if row is None:
            raise UnknownCommand(f"no command {command_id!r} in the outbox")
        *_, position, _command_id = row
        held = self.held(cursor, position) if with_request else _Held()
        return self._restore(row, held)

    def _load_many(self, cursor: apsw.Cursor, command_ids: Sequence[str]) -> dict[str, Command]:
        """Several commands in one query (unknown ids are left out: `load` names them)."""
        rows = cast("builtins.list[_LoadRow]", cursor.execute(
            _LOAD_MANY, (msgspec.json.encode([*dict.fromkeys(command_ids)]),)).fetchall())
        commands: dict[str, Command] = {}
        for row in rows:
            *_, command_id = row
            commands[command_id] = self._restore(row, _Held())
        return commands

    @staticmethod
    def _restore(row: _LoadRow, held: _Held) -> Command:
        (kind, cid, message_id, status, attempts, depends_on, version, next_try_at, last_error,
         reason, _, command_id) = row
        return Command.restore(
            command_id, version, kind=kind, cid=cid, message_id=message_id, status=status,
            attempts=attempts, depends_on=depends_on, next_try_at=next_try_at,
            last_error=_json(last_error), reason=reason, request=held.request,
            message=held.message)

    def held(self, cursor: apsw.Cursor, position: int) -> _Held:
        row = cast("tuple[int, bytes] | None", cursor.execute(_ENTRY, (position,)).fetchone())
        if row is None:
            return _Held()
        codec, state = row
        return _HELD.decode(self._log.datastore.codec.decode(codec, state, position))

    def save(self, cursor: apsw.Cursor, *commands: Command) -> builtins.list[int]:
        stored = [MAPPER.to_stored_event(event) for command in commands
                  for event in command.collect_events()]
        return self._log.record(cursor, stored)

    def cascade(self, cursor: apsw.Cursor, command_id: str, action: str) -> None:
        """Carry an outcome over to the commands that wait for `command_id` (and theirs)."""
        if action == "retry":
            reason = f"depends on rejected {command_id}"
            found = cursor.execute(_WAITING_REJECTED, (command_id, reason))
        elif action == "cancel":
            found = cursor.execute(_WAITING_NOT_CANCELLED, (command_id,))
        else:
            found = cursor.execute(_WAITING_NOT_REJECTED, (command_id,))
        waiting = [cast(str, waiting_id) for (waiting_id,) in found]
        for dependent in waiting:
            command = self.load(cursor, dependent)
            if action == "reject":
                command.reject(f"depends on rejected {command_id}")
            elif action == "cancel":
                command.cancel(f"depends on cancelled {command_id}")
            else:
                command.retry()
            self.save(cursor, command)
            self.cascade(cursor, dependent, action)


def _foldable(records: Sequence[str | Settlement]) -> set[int]:
    """The indexes of the starts that can be folded into their outcome: the next record of the
    same command is its outcome, and no rejection comes in between (a rejection is carried over
    to the commands waiting for it, which could finish the started command meanwhile)."""
    fold: set[int] = set()
    open_starts: dict[str, int] = {}  # command id -> index of its latest start
    for index, record in enumerate(records):
        if isinstance(record, str):
            open_starts[record] = index  # a start again: the earlier one stays as it is
            continue
        start = open_starts.pop(record.command_id, None)
        if start is not None:
            fold.add(start)
        if isinstance(record, Refused):
            open_starts.clear()
    return fold


def _fields(info: CommandInfo) -> dict[str, Any]:
    return {name: getattr(info, name) for name in CommandInfo.__dataclass_fields__}


__all__ = ["CommandEvent", "CommandInfo", "Outbox", "PendingCommand", "surely_unsent",
           "Delivered", "Failed", "Refused"]
