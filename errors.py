"""Every error chatledger raises, in one tree: `except ChatledgerError` catches them all.

The classes keep the built-in bases callers already rely on: a bad value is still a
`ValueError` (`WireError`, `FilterError`, `RejectedInput`, ...), an unknown command still a
`KeyError`, and a write lock held too long still the `eventsourcing` library's
`OperationalError`. Each module that raises one imports it from here, and the package root
re-exports them all (`from chatledger import StoreError`).

    ChatledgerError
    ├── StoreError                   a store that cannot be opened or used as asked
    │   ├── KeyRequired              a sealed store opened without its key
    │   ├── DestinationExists        a backup's destination exists
    │   ├── WriterClosed             work for a background writer that is closed
    │   ├── ExportError              an export that cannot be made
    │   ├── ImportInterrupted        an import stopped part-way (a full disk)
    │   ├── AlreadyImported          the same input was imported whole already
    │   ├── NothingToResume          `resume=True` with nothing to resume
    │   ├── ArchiveError             the PostgreSQL archive cannot be used as asked
    │   └── CommandError             a local action that cannot be done as asked
    │       ├── UnknownCommand       (also a KeyError)
    │       ├── InvalidTransition
    │       ├── UnknownMessage       an action that needs a message the store lacks
    │       └── UnknownTarget        with `known_only=True`: a channel or message never seen
    ├── WriteLockTimeout             (also eventsourcing's OperationalError)
    ├── UserIdError                  (ValueError) a user id that cannot name a store
    ├── WireError                    (ValueError) a payload the log cannot accept
    ├── RejectedInput                (ValueError) an item refused and quarantined
    ├── FilterError                  (ValueError) a filter or sort that cannot be evaluated
    ├── AmbiguousId                  (ValueError) an id prefix several ids start with
    └── BackendError                 the chat backend answered with an error
        ├── NoResponse               no answer (refused, reset, DNS)
        │   ├── TimedOut             no complete answer in time
        │   └── ConnectionLost       the event stream ended
        └── UnusableAnswer           a 2xx answer that cannot be used

`ImportStopped` (Ctrl-C during an import) stays a `KeyboardInterrupt`, outside the tree, so
that `except Exception` never swallows an interrupt.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from eventsourcing.persistence import OperationalError

__all__ = [
    "ChatledgerError", "StoreError", "KeyRequired", "DestinationExists", "WriterClosed",
    "ExportError",
    "ImportInterrupted", "AlreadyImported", "NothingToResume", "ImportStopped", "ArchiveError",
    "CommandError", "UnknownCommand", "InvalidTransition", "UnknownMessage", "UnknownTarget",
    "WriteLockTimeout", "UserIdError", "WireError", "RejectedInput", "FilterError",
    "AmbiguousId", "BackendError", "NoResponse", "TimedOut", "ConnectionLost", "UnusableAnswer",
]


class ChatledgerError(Exception):
    """The root of every error chatledger raises (see the module's tree)."""


# -- the store ------------------------------------------------------------------------------------


class StoreError(ChatledgerError):
    """A store that cannot be opened or used as asked; the message says why."""


class KeyRequired(StoreError):
    """A sealed store opened without a key, or with another one than it was sealed with."""


class DestinationExists(StoreError):
    """The backup's destination exists and overwriting was not asked for."""


class WriterClosed(StoreError):
    """Work was submitted to a background writer that is closed (or closing)."""


class WriteLockTimeout(ChatledgerError, OperationalError):
    """Another connection held the file's write lock for longer than `lock_timeout` seconds."""


class ExportError(StoreError):
    """An export that cannot be made (a channel that is not stored, a bad limit)."""


class ArchiveError(StoreError):
    """The archive cannot be reached or used as asked; the message is one line, without secrets."""


class UserIdError(ChatledgerError, ValueError):
    """A user id that cannot name a store."""


# -- importing ------------------------------------------------------------------------------------


class ImportInterrupted(StoreError):
    """An import that stopped part-way (a full disk): what its committed batches stored
    (`report`, an `ImportReport`), and the last line they covered. Running the same import again
    continues after that line. `cause` says why it stopped, in words."""

    def __init__(self, report: Any, committed_line: int, error: BaseException,
                 cause: str) -> None:
        self.report = report
        self.committed_line = committed_line
        self.error = error
        super().__init__(
            f"the import stopped: {cause}; {report.stored:,} of its items were stored "
            f"(up to line {committed_line:,}); run the same import again to continue after "
            f"line {committed_line:,}")


class AlreadyImported(StoreError):
    """The whole input is in the store already: an earlier import of the same bytes finished
    (`point`, a `ResumePoint`, says when and how many lines). Nothing was stored; `again=True`
    stores it again. The log stays an honest record of what arrived: events the backend really
    sent twice are stored twice; a file read twice is not."""

    def __init__(self, point: Any) -> None:
        self.point = point
        super().__init__(
            f"this input is in the store already: an import of the same {point.lines:,} "
            f"lines ({point.bytes:,} bytes) finished at {point.at or 'an unknown time'}; "
            "nothing was stored")


class NothingToResume(StoreError):
    """`resume=True`, but no earlier import of this input stopped part-way."""


class ImportStopped(KeyboardInterrupt):
    """Ctrl-C during an import (still a KeyboardInterrupt): what the committed batches
    stored (`report`), and the last line they covered. Running the same import again continues
    after it."""

    def __init__(self, report: Any, committed_line: int) -> None:
        super().__init__(f"{report.stored:,} items stored, up to line {committed_line:,}")
        self.report = report
        self.committed_line = committed_line


# -- input ----------------------------------------------------------------------------------------


class WireError(ChatledgerError, ValueError):
    """A payload the store cannot accept; `reason` is a short sentence for logs and quarantine."""

    reason: str

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class RejectedInput(ChatledgerError, ValueError):
    """An item the store refused; it is kept in the quarantine table with `reason`."""

    def __init__(self, reason: str, quarantine_id: int) -> None:
        super().__init__(reason)
        self.reason = reason
        self.quarantine_id = quarantine_id


class FilterError(ChatledgerError, ValueError):
    """A filter or sort the store cannot evaluate; the message names the operator, field, value."""


class AmbiguousId(ChatledgerError, ValueError):
    """A prefix that more than one id starts with; `candidates` lists some of them."""

    def __init__(self, kind: str, prefix: str, candidates: list[str]) -> None:
        shown = ", ".join(candidates[:10]) + (", ..." if len(candidates) > 10 else "")
        super().__init__(f"{kind} id prefix {prefix!r} is ambiguous: {shown} all start with it")
        self.kind = kind
        self.prefix = prefix
        self.candidates = candidates


# -- local actions --------------------------------------------------------------------------------


class CommandError(StoreError):
    """A command that cannot be found or cannot do what was asked; the message says why."""


class UnknownCommand(CommandError, KeyError):
    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else "unknown command"


class InvalidTransition(CommandError):
    """A lifecycle step the command's state does not allow (retrying a delivered one, say)."""


class UnknownMessage(CommandError):
    """An action needs a message the store does not have."""


class UnknownTarget(CommandError):
    """With `known_only=True`: an action on a channel or message the store has never seen
    (most often a typo); it would be queued and refused by the backend at the next sync."""

    def __init__(self, kind: str, ident: str) -> None:
        super().__init__(f"the store has never seen {kind} {ident!r}")
        self.kind = kind
        self.ident = ident


# -- the backend ----------------------------------------------------------------------------------


class BackendError(ChatledgerError):
    """The backend answered with an error (or, for `NoResponse`, did not answer).

    `status` is the HTTP status, `code` Stream's error code from the body, `retry_at` the unix
    time before which a retry is pointless (from `Retry-After` or `X-RateLimit-Reset`), and
    `body` the error body as it arrived.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: int | None = None,
        retry_at: float | None = None,
        body: bytes | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.retry_at = retry_at
        self.body = body

    def as_dict(self) -> dict[str, Any]:
        """What the log records of the error."""
        return {"status": self.status, "code": self.code, "message": self.message,
                "retry_at": self.retry_at}

    def redacted(self, redact: Callable[[str], str]) -> BackendError:
        """This error with `redact` applied to its message (credentials out of what is shown,
        logged or recorded). Changes the error in place and returns it."""
        self.message = redact(self.message)
        self.args = (self.message,)
        return self

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.message!r}, status={self.status!r}, "
                f"code={self.code!r})")


class NoResponse(BackendError):
    """No answer: connection refused or reset, timeout, DNS failure. The request may or may not
    have been applied; the client-chosen id makes sending it again safe."""


class TimedOut(NoResponse):
    """An answer did not arrive complete in time: the backend (or the way to it) is too slow,
    e.g. a server sending its body a byte a second. Transient, like any `NoResponse`."""


class ConnectionLost(NoResponse):
    """The event stream ended: closed by the server, or silent past the health-check deadline."""


class UnusableAnswer(BackendError):
    """A 2xx answer that cannot be used: not JSON, an HTML page, an error object in the body,
    the wrong shape for the call, or over the size cap. The request may or may not have been
    applied; nothing is to be concluded from the answer, so it is a failed attempt (retried
    like a transient error), never a success. `status` is the 2xx status that came with it;
    `body` holds the answer (its head only, when it was over the cap); `quarantine_id` says
    where the store keeps it, once it does."""

    quarantine_id: int | None = None

    def quarantined_as(self, quarantine_id: int) -> UnusableAnswer:
        """Note where the store keeps the answer (and say so in the message)."""
        self.quarantine_id = quarantine_id
        self.message = f"{self.message} (quarantined as #{quarantine_id})"
        self.args = (self.message,)
        return self
