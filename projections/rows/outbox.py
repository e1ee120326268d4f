"""The one writer of `outbox` (each local command's row) and `retry_stream` (the commands
still to be sent, in order)."""

from __future__ import annotations

from typing import NamedTuple

import apsw

from chatledger.eventstore.commands import CommandStatus

__all__ = ["OutboxRow", "OutboxRows", "OutcomeOf"]

RECORD = (
    "INSERT INTO outbox (id, seq, kind, cid, message_id, status, attempts, depends_on, "
    "created_at, updated_at, version, position, undo) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?) "
    "ON CONFLICT (id) DO NOTHING")
ROW = "SELECT kind, cid, message_id, status, seq, undo, attempts FROM outbox WHERE id=?"
OUTCOME_OF = "SELECT kind, status, response_position FROM outbox WHERE id=?"
RETRY = "INSERT OR IGNORE INTO retry_stream (seq, id) VALUES (?, ?)"
SETTLED = "DELETE FROM retry_stream WHERE seq=?"
# Each later event of a command moves its row on: `version` counts the changes; ?last two:
# the event's time, the command's id.
_MOVE = "UPDATE outbox SET {}, version=version+1, updated_at=? WHERE id=?"
AMENDED = _MOVE.format("position=?")
ATTEMPT_STARTED = _MOVE.format("status=?, attempts=?")
# The attempt number too: the attempt's start may be folded into its failure (the number is
# the one its `AttemptStarted` set, when there is one).
ATTEMPT_FAILED = _MOVE.format(
    "status=?, attempts=coalesce(?, attempts), last_error=?, next_try_at=?")
REJECTED = _MOVE.format("status=?, attempts=coalesce(?, attempts), reason=?, "
                        "last_error=coalesce(?, last_error), next_try_at=NULL")
RETRIED = _MOVE.format("status=?, reason=NULL, next_try_at=?")
CANCELLED = _MOVE.format("status=?, reason=?, next_try_at=NULL")
# By `seq`, the rowid, which the lookup before it found. (Not one `UPDATE ... RETURNING`:
# SQLite runs that several times slower than the two statements.)
SUCCEEDED = ("UPDATE outbox SET status=?, attempts=coalesce(?, attempts), next_try_at=NULL, "
             "response_position=?, version=version+1, updated_at=? WHERE seq=?")


class OutboxRow(NamedTuple):
    """What a command's later events need of its row."""

    kind: str
    cid: str | None
    message_id: str | None
    status: str
    seq: int
    undo: str | None
    attempts: int


class OutcomeOf(NamedTuple):
    kind: str
    status: str
    response_position: int | None


class OutboxRows:
    """Writes `outbox` and `retry_stream`."""

    @staticmethod
    def record(cursor: apsw.Cursor, command_id: str, seq: int, kind: str, cid: str | None,
               message_id: str | None, depends_on: str | None, at: int, undo: str | None) -> None:
        """A command was requested (its first event, at log position `seq`): pending, and in
        the retry stream."""
        cursor.execute(RECORD, (command_id, seq, kind, cid, message_id, CommandStatus.PENDING,
                                0, depends_on, at, at, 1, seq, undo))
        cursor.execute(RETRY, (seq, command_id))

    @staticmethod
    def row(cursor: apsw.Cursor, command_id: str) -> OutboxRow | None:
        found = cursor.execute(ROW, (command_id,)).fetchone()
        return OutboxRow(*found) if found is not None else None

    @staticmethod
    def outcome_of(cursor: apsw.Cursor, command_id: str) -> OutcomeOf | None:
        found = cursor.execute(OUTCOME_OF, (command_id,)).fetchone()
        return OutcomeOf(*found) if found is not None else None

    @staticmethod
    def amended(cursor: apsw.Cursor, command_id: str, position: int, at: int) -> None:
        cursor.execute(AMENDED, (position, at, command_id))

    @staticmethod
    def attempt_started(cursor: apsw.Cursor, command_id: str, attempt: int, at: int) -> None:
        cursor.execute(ATTEMPT_STARTED, (CommandStatus.IN_FLIGHT, attempt, at, command_id))

    @staticmethod
    def attempt_failed(cursor: apsw.Cursor, command_id: str, attempt: int | None,
                       error: str | None, next_try_at: float | None, at: int) -> None:
        cursor.execute(ATTEMPT_FAILED, (CommandStatus.FAILED, attempt, error, next_try_at, at,
                                        command_id))

    @staticmethod
    def rejected(cursor: apsw.Cursor, command_id: str, seq: int, attempt: int | None,
                 reason: str | None, error: str | None, at: int) -> None:
        cursor.execute(SETTLED, (seq,))
        cursor.execute(REJECTED, (CommandStatus.REJECTED, attempt, reason, error, at,
                                  command_id))

    @staticmethod
    def retried(cursor: apsw.Cursor, command_id: str, seq: int, next_try_at: float | None,
                at: int) -> None:
        cursor.execute(RETRY, (seq, command_id))
        cursor.execute(RETRIED, (CommandStatus.PENDING, next_try_at, at, command_id))

    @staticmethod
    def cancelled(cursor: apsw.Cursor, command_id: str, seq: int, reason: str | None,
                  at: int) -> None:
        cursor.execute(SETTLED, (seq,))
        cursor.execute(CANCELLED, (CommandStatus.CANCELLED, reason, at, command_id))

    @staticmethod
    def succeeded(cursor: apsw.Cursor, seq: int, attempt: int | None,
                  response_position: int | None, at: int) -> None:
        cursor.execute(SUCCEEDED, (CommandStatus.SUCCEEDED, attempt, response_position, at, seq))
        cursor.execute(SETTLED, (seq,))
