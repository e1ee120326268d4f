"""The local actions of `ChatStore`: each records a command and changes the read tables at once.

Every action is one write transaction: it reads what it needs (the message as stored, the
outbox), decides, records the command's events in the log, and the read tables follow in the
same transaction. Each returns the id of the command that carries it.

Folding (an action on a message whose send is still unfinished):

- an edit of a message never sent amends the send (no command of its own); of a message whose
  send is in flight (or may have reached the backend), it is queued, waiting for the send;
- a delete of a message never sent cancels the send (and what waits for it) locally; of one in
  flight, it is queued, waiting for the send;
- a reaction, read mark or reaction removal on such a message waits for the send.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, NamedTuple, cast

import apsw

from chatledger.errors import UnknownMessage, UnknownTarget
from chatledger.eventstore.commands import (
    Command,
    CommandError,
    CommandKind,
    CommandStatus,
    new_command_id,
    send_command_id,
)
from chatledger.eventstore.ids import time_ordered_uuid
from chatledger.eventstore.wire import decode_stored, unstorable_reason
from chatledger.projections.outbox import Outbox, surely_unsent
from chatledger.projections.queries import ReadModel

if TYPE_CHECKING:
    from chatledger.eventstore.log import EventLog

# Fields of a stored message that the backend computes: never part of an update's body.


_SERVER_FIELDS = frozenset({
    "cid", "user", "type", "html", "created_at", "updated_at", "deleted_at", "reply_count",
    "deleted_reply_count", "reaction_counts", "reaction_scores", "reaction_groups",
    "latest_reactions", "own_reactions", "quoted_message", "pinned_by", "thread_participants",
    "i18n", "channel", "command", "args", "member", "reminder", "poll", "shadowed",
    "message_text_updated_at", "pinned_at",
})


# Whether the store has seen a channel: its row, or any message in it (a local send included).
_CHANNEL_SEEN = ("SELECT 1 FROM channels WHERE cid=? "
                 "UNION ALL SELECT 1 FROM messages WHERE cid=? LIMIT 1")
_MESSAGE_SEEN = "SELECT 1 FROM messages WHERE id=?"
_MESSAGE_CID = "SELECT cid FROM messages WHERE id=?"
# A stored message's channel, and the log entry its object is read from (none for a local send
# whose entry is gone): `_StoredRow`.
_STORED_MESSAGE = ("SELECT m.cid, m.slot, e.codec, e.state, m.position FROM messages m "
                   "LEFT JOIN stored_events e ON e.rowid = m.position WHERE m.id=?")
_StoredRow = tuple[str, int, "int | None", "bytes | None", int]
# The edits queued behind a send, newest first.
_EDITS_WAITING = ("SELECT id FROM outbox WHERE depends_on=? AND kind IN (?, ?) "
                  "AND status NOT IN ('succeeded', 'cancelled') ORDER BY seq DESC")


class _Send(NamedTuple):
    """A message's send command, as `Outbox.row` shows it."""

    command_id: str
    status: str
    attempts: int
    last_error: dict[str, Any] | None

    def surely_unsent(self) -> bool:
        return surely_unsent(self.status, self.attempts, self.last_error)


def _require_channel(cursor: apsw.Cursor, cid: str, known_only: bool) -> None:
    if known_only and cursor.execute(_CHANNEL_SEEN, (cid, cid)).fetchone() is None:
        raise UnknownTarget("channel", cid)


def _require_message(cursor: apsw.Cursor, message_id: str, known_only: bool) -> None:
    if known_only and cursor.execute(_MESSAGE_SEEN, (message_id,)).fetchone() is None:
        raise UnknownTarget("message", message_id)


def _message_cid(cursor: apsw.Cursor, message_id: str) -> str | None:
    """The channel of a stored message; None for one the store has not seen."""
    row = cast("tuple[str] | None", cursor.execute(_MESSAGE_CID, (message_id,)).fetchone())
    if row is None:
        return None
    (cid,) = row
    return cid


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _check_cid(cid: str) -> str:
    kind, sep, ident = cid.partition(":") if isinstance(cid, str) else ("", "", "")
    if not (kind and sep and ident):
        raise CommandError(f"not a channel id: {cid!r} (expected TYPE:ID, e.g. messaging:general)")
    return cid


def wire_message(message: dict[str, Any]) -> dict[str, Any]:
    """A stored message object as an update's body: what the client may set, mentions as ids."""
    body = {k: v for k, v in message.items() if k not in _SERVER_FIELDS}
    mentioned = body.get("mentioned_users")
    if isinstance(mentioned, list):
        body["mentioned_users"] = [user.get("id") if isinstance(user, dict) else user
                                   for user in mentioned]
    return body


class ActionsMixin:
    """The action methods of `ChatStore` (which provides `log`, `user_id` and `outbox`)."""

    log: EventLog
    user_id: str | None
    outbox: Outbox

    # -- helpers -------------------------------------------------------------------------------

    def _own(self) -> str:
        if not self.user_id:
            raise CommandError("this store has no user id: open it with ChatStore.open(dir, user)")
        return self.user_id

    def _stored_message(self, cursor: apsw.Cursor,
                        message_id: str) -> tuple[str, dict[str, Any]] | None:
        """(cid, message object) of a stored message, read in the action's transaction."""
        row = cast("_StoredRow | None", cursor.execute(_STORED_MESSAGE, (message_id,)).fetchone())
        if row is None:
            return None
        cid, slot, codec, state, position = row
        obj: dict[str, Any] = {}
        if codec is not None and state is not None:
            raw = ReadModel.message_bytes(
                self.log.datastore.codec.decode(codec, state, position), slot)
            decoded = decode_stored(raw) if raw else {}
            obj = decoded if isinstance(decoded, dict) else {}
        return cid, {**obj, "id": message_id}

    def _status(self, cursor: apsw.Cursor, command_id: str) -> str | None:
        """A command's status as `Outbox.row` shows it; None for a command not recorded."""
        row = self.outbox.row(cursor, command_id)
        if row is None:
            return None
        _kind, _cid, _message_id, status, *_ = row
        return status

    def _send_of(self, cursor: apsw.Cursor, message_id: str) -> _Send | None:
        """The message's send command, while it is not succeeded or cancelled."""
        send_id = send_command_id(message_id)
        row = self.outbox.row(cursor, send_id)
        if row is None:
            return None
        _kind, _cid, _message_id, status, attempts, last_error, _position = row
        if status in (CommandStatus.SUCCEEDED, CommandStatus.CANCELLED):
            return None
        return _Send(send_id, status, attempts, last_error)

    def _request(
        self, cursor: apsw.Cursor, kind: CommandKind, *, cid: str | None, message_id: str | None,
        request: dict[str, Any], message: dict[str, Any] | None = None,
        depends_on: str | None = None, command_id: str | None = None,
    ) -> str:
        # What the log would refuse from the backend is refused here too, with the reason:
        # a reader must be able to show every action back (and an SQLite column hold it).
        if reason := unstorable_reason(request) or unstorable_reason(message):
            raise CommandError(f"the action's data cannot be stored: {reason}")
        command_id = command_id or new_command_id(kind)
        command = Command.request_command(command_id, kind, cid=cid, message_id=message_id,
                                          request=request, message=message,
                                          depends_on=depends_on)
        if depends_on is not None:
            if self._status(cursor, depends_on) == CommandStatus.REJECTED:
                # Waiting for something that was refused: refused with it (and retried with it).
                command.reject(f"depends on rejected {depends_on}")
        try:
            self.outbox.save(cursor, command)
        except UnicodeEncodeError:
            # A lone surrogate (from text decoded with errors="surrogateescape") is not text:
            # refused here, with the reason, before anything is stored.
            raise CommandError("the action holds text that is not valid (a lone surrogate)") from None
        except RecursionError:
            raise CommandError("the action's data is nested too deeply") from None
        return command_id

    def _waits_for(self, cursor: apsw.Cursor, message_id: str) -> str | None:
        send = self._send_of(cursor, message_id)
        return send.command_id if send is not None else None

    def _edit(self, message_id: str, kind: CommandKind, request: dict[str, Any],
              change: Callable[[dict[str, Any]], dict[str, Any]]) -> str:
        """An edit (full or partial): fold into a send never sent, else a command of its own.
        `change(obj)` gives the edited message object."""
        self._own()
        with self.log.write_transaction() as cursor:
            send = self._send_of(cursor, message_id)
            stored = self._stored_message(cursor, message_id)
            if send is not None and send.surely_unsent():
                command = self.outbox.load(cursor, send.command_id, with_request=True)
                # The row shows the newest intent (edits queued earlier included): the send
                # takes all of it, and those edits have nothing left to do.
                if stored is not None:
                    _cid, current = stored
                else:
                    current = dict(command.message or {})
                message = change(current)
                body = {**command.request, "message": wire_message(message)}
                self._supersede_edits(cursor, send.command_id)
                command.amend(body, message)
                self.outbox.save(cursor, command)
                return send.command_id
            if stored is None:
                raise UnknownMessage(f"no message {message_id!r} is stored")
            cid, current = stored
            message = change(current)
            if kind == CommandKind.UPDATE_MESSAGE:
                request = {"message": wire_message(message)}
            return self._request(cursor, kind, cid=cid, message_id=message_id, request=request,
                                 message=message,
                                 depends_on=send.command_id if send else None)

    def _supersede_edits(self, cursor: apsw.Cursor, send_id: str) -> None:
        """Cancel the edits queued behind a send that now carries their changes itself."""
        edits = cast("list[tuple[str]]", cursor.execute(
            _EDITS_WAITING,
            (send_id, CommandKind.UPDATE_MESSAGE, CommandKind.PARTIAL_UPDATE_MESSAGE),
        ).fetchall())
        for (edit_id,) in edits:
            command = self.outbox.load(cursor, edit_id)
            command.cancel("superseded: the unsent message carries the edit")
            self.outbox.save(cursor, command)

    # -- messages ------------------------------------------------------------------------------

    def send_message(
        self, cid: str, text: str | None = None, *, id: str | None = None,
        attachments: Iterable[dict[str, Any]] = (), parent_id: str | None = None,
        show_in_channel: bool | None = None, quoted_message_id: str | None = None,
        mentioned_users: Iterable[str] = (), silent: bool = False, skip_push: bool = False,
        known_only: bool = False, **custom: Any,
    ) -> str:
        """Send a message (shown at once as `sending`). `id` is the message id (when not given,
        a new UUID that grows with time); the command id is derived from it, so sending the
        same id again is the same command. Custom fields go on the message as given.
        `known_only=True` raises `UnknownTarget` for a channel the store has never seen."""
        own = self._own()
        _check_cid(cid)
        message_id = id or str(time_ordered_uuid())
        command_id = send_command_id(message_id)
        wire: dict[str, Any] = {"id": message_id, "text": text or "",
                                "attachments": [dict(attachment) for attachment in attachments],
                                "mentioned_users": list(mentioned_users), "silent": silent}
        if parent_id is not None:
            wire["parent_id"] = parent_id
        if show_in_channel is not None:
            wire["show_in_channel"] = show_in_channel
        if quoted_message_id is not None:
            wire["quoted_message_id"] = quoted_message_id
        wire.update(custom)
        now = _now()
        message = {**wire, "cid": cid, "type": "reply" if parent_id else "regular",
                   "user": {"id": own}, "created_at": now, "updated_at": now}
        with self.log.write_transaction() as cursor:
            sent_before = self._status(cursor, command_id)
            if sent_before is not None:
                if sent_before == CommandStatus.CANCELLED:
                    raise CommandError(f"the send of message {message_id!r} was cancelled; "
                                       "send it again with a new id")
                return command_id  # sent before: the same command, nothing new to record
            if cursor.execute(_MESSAGE_SEEN, (message_id,)).fetchone():
                raise CommandError(f"a message with id {message_id!r} is stored already")
            _require_channel(cursor, cid, known_only)
            depends_on = self._waits_for(cursor, parent_id) if parent_id else None
            return self._request(
                cursor, CommandKind.SEND_MESSAGE, cid=cid, message_id=message_id,
                request={"cid": cid, "message": wire, "skip_push": skip_push},
                message=message, depends_on=depends_on, command_id=command_id)

    def update_message(
        self, message_id: str, text: str | None = None, *,
        attachments: Sequence[dict[str, Any]] | None = None, **custom: Any,
    ) -> str:
        """Replace a message's text (and attachments, custom fields); the body sent is the
        whole message, as the backend's full update wants it."""
        changes: dict[str, Any] = dict(custom)
        if text is not None:
            changes["text"] = text
        if attachments is not None:
            changes["attachments"] = [dict(attachment) for attachment in attachments]

        def change(obj: dict[str, Any]) -> dict[str, Any]:
            return {**obj, **changes, "updated_at": _now()}

        return self._edit(message_id, CommandKind.UPDATE_MESSAGE, {}, change)

    def partial_update_message(
        self, message_id: str, *, set: dict[str, Any] | None = None, unset: Iterable[str] = (),
    ) -> str:
        """Set some top-level fields of a message and remove others."""
        to_set = dict(set or {})
        to_unset = [field for field in unset if field != "id"]

        def change(obj: dict[str, Any]) -> dict[str, Any]:
            edited = {field: value for field, value in {**obj, **to_set}.items()
                      if field not in to_unset}
            edited["updated_at"] = _now()
            return edited

        request = {"message_id": message_id, "set": to_set, "unset": to_unset}
        return self._edit(message_id, CommandKind.PARTIAL_UPDATE_MESSAGE, request, change)

    def delete_message(self, message_id: str, *, hard: bool = False, for_me: bool = False,
                       known_only: bool = False) -> str:
        """Delete a message: soft (it stays as deleted), `hard` (it goes), or `for_me`. A
        message never sent is not sent at all: its send is cancelled (and its id returned).
        `known_only=True` raises `UnknownTarget` for a message the store has never seen."""
        self._own()
        with self.log.write_transaction() as cursor:
            _require_message(cursor, message_id, known_only)
            send = self._send_of(cursor, message_id)
            if send is not None and send.surely_unsent():
                command = self.outbox.load(cursor, send.command_id)
                command.cancel("deleted before it was sent")
                self.outbox.save(cursor, command)
                self.outbox.cascade(cursor, send.command_id, "cancel")
                return send.command_id
            return self._request(
                cursor, CommandKind.DELETE_MESSAGE, cid=_message_cid(cursor, message_id),
                message_id=message_id,
                request={"message_id": message_id, "hard": hard, "for_me": for_me},
                depends_on=send.command_id if send else None)

    # -- reactions -----------------------------------------------------------------------------

    def _on_message(self, kind: CommandKind, message_id: str, request: dict[str, Any],
                    known_only: bool = False) -> str:
        self._own()
        with self.log.write_transaction() as cursor:
            _require_message(cursor, message_id, known_only)
            return self._request(cursor, kind, cid=_message_cid(cursor, message_id),
                                 message_id=message_id, request=request,
                                 depends_on=self._waits_for(cursor, message_id))

    def send_reaction(
        self, message_id: str, type: str, *, score: int = 1, enforce_unique: bool = False,
        known_only: bool = False, **custom: Any,
    ) -> str:
        """React to a message (replacing the own reaction of that type; with `enforce_unique`,
        all the own reactions on it). `known_only=True` raises `UnknownTarget` for a message
        the store has never seen."""
        if not type:
            raise CommandError("a reaction needs a type")
        return self._on_message(CommandKind.SEND_REACTION, message_id, {
            "message_id": message_id, "reaction": {"type": type, "score": score, **custom},
            "enforce_unique": enforce_unique}, known_only)

    def delete_reaction(self, message_id: str, type: str, *, known_only: bool = False) -> str:
        """Remove the own reaction of `type` from a message (`known_only`: as `send_reaction`)."""
        return self._on_message(CommandKind.DELETE_REACTION, message_id,
                                {"message_id": message_id, "reaction_type": type}, known_only)

    # -- reads and drafts ----------------------------------------------------------------------

    def _on_channel(self, kind: CommandKind, cid: str, request: dict[str, Any],
                    message_id: str | None = None, known_only: bool = False) -> str:
        self._own()
        _check_cid(cid)
        with self.log.write_transaction() as cursor:
            _require_channel(cursor, cid, known_only)
            depends_on = self._waits_for(cursor, message_id) if message_id else None
            return self._request(cursor, kind, cid=cid, message_id=message_id, request=request,
                                 depends_on=depends_on)

    def mark_read(self, cid: str, *, message_id: str | None = None,
                  thread_id: str | None = None, known_only: bool = False) -> str:
        """Mark a channel (or a thread) read, up to `message_id` or entirely.
        `known_only=True` raises `UnknownTarget` for a channel the store has never seen."""
        return self._on_channel(CommandKind.MARK_READ, cid,
                                {"cid": cid, "message_id": message_id, "thread_id": thread_id},
                                message_id, known_only)

    def mark_unread(self, cid: str, *, message_id: str) -> str:
        """Mark a channel unread from `message_id` on."""
        return self._on_channel(CommandKind.MARK_UNREAD, cid,
                                {"cid": cid, "message_id": message_id}, message_id)

    def save_draft(self, cid: str, text: str, *, parent_id: str | None = None,
                   **custom: Any) -> str:
        """Save the draft of a channel (or of a thread, with `parent_id`)."""
        message: dict[str, Any] = {"text": text, **custom}
        if parent_id is not None:
            message["parent_id"] = parent_id
        self._own()
        _check_cid(cid)
        with self.log.write_transaction() as cursor:
            return self._request(cursor, CommandKind.SAVE_DRAFT, cid=cid, message_id=None,
                                 request={"cid": cid, "message": message}, message=message)

    def delete_draft(self, cid: str, *, parent_id: str | None = None) -> str:
        """Delete the draft of a channel (or of a thread)."""
        return self._on_channel(CommandKind.DELETE_DRAFT, cid,
                                {"cid": cid, "parent_id": parent_id})
