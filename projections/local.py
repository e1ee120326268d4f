"""What the events of local commands do to the read tables: the outbox, and the optimistic rows.

Called by `Projector.apply` (`projections.projector`) for the command topics
(`eventstore.commands`), in the transaction that recorded the event, and again, in the same
order, by a rebuild. The tables change only through the row writers of `projections.rows`.
Everything here depends only on the tables and the payloads, never on the clock or on memory,
so a rebuild agrees.

The optimistic change of a command is applied when it is requested and confirmed, flagged or
undone by its outcome:

- requested: the message row shows the intent at once (`local_state` sending, updating,
  deleting; `local_command` the command); reactions, reads and drafts change likewise.
- succeeded: the server's answer becomes the row (`slot` SLOT_RESPONSE), state cleared.
- rejected: the row keeps the intent, flagged `send_failed` / `update_failed` / `delete_failed`.
- cancelled: the intent is undone (a send's row goes; an edit or delete gets back the row it
  replaced, kept in `outbox.undo`).

A later command on the same message takes the row over (`local_command`); an earlier command's
outcome then leaves the row to it, so the row always shows the newest local intent.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import apsw
import msgspec

from chatledger.eventstore import commands
from chatledger.eventstore.commands import CommandKind, CommandStatus
from chatledger.projections import payloads
from chatledger.projections.item import Item
from chatledger.projections.local_outcomes import REACTION_KINDS
from chatledger.projections.rows import Rows
from chatledger.projections.rows.messages import SENT_FROM_HERE
from chatledger.projections.rows.outbox import OutboxRow
from chatledger.projections.rowtime import epoch_us
from chatledger.projections.schema import SLOT_EVENT, SLOT_RESPONSE

__all__ = ["IN_PROGRESS", "LocalHandlers", "REFUSED"]

NO_RAW = msgspec.Raw()

# local_state while a command is on its way, and once it was refused.
IN_PROGRESS: dict[str, str] = {
    CommandKind.SEND_MESSAGE: "sending", CommandKind.UPDATE_MESSAGE: "updating",
    CommandKind.PARTIAL_UPDATE_MESSAGE: "updating", CommandKind.DELETE_MESSAGE: "deleting"}
REFUSED: dict[str, str] = {
    CommandKind.SEND_MESSAGE: "send_failed", CommandKind.UPDATE_MESSAGE: "update_failed",
    CommandKind.PARTIAL_UPDATE_MESSAGE: "update_failed",
    CommandKind.DELETE_MESSAGE: "delete_failed"}
EDIT_KINDS = (CommandKind.UPDATE_MESSAGE, CommandKind.PARTIAL_UPDATE_MESSAGE)

# How the handler of the backend's `message.new` is called: a send is filed exactly as its echo.
FileNewMessage = Callable[[apsw.Cursor, Item, payloads.Event], None]


class _Requested(msgspec.Struct, gc=False):
    kind: str
    request: msgspec.Raw
    cid: str | None = None
    message_id: str | None = None
    depends_on: str | None = None
    message: msgspec.Raw = NO_RAW


class _Lifecycle(msgspec.Struct, gc=False):
    """Any later event of a command: the fields each kind of event may carry."""

    attempt: int | None = None
    error: msgspec.Raw = NO_RAW
    next_try_at: float | None = None
    reason: str | None = None
    message: msgspec.Raw = NO_RAW
    response: msgspec.Raw = NO_RAW


class _Request(msgspec.Struct, gc=False):
    """The request fields the read tables use (the rest is for the backend)."""

    message_id: str | None = None
    hard: bool = False
    for_me: bool = False
    reaction: payloads.Reaction | None = None
    reaction_type: str | None = None
    enforce_unique: bool = False
    parent_id: str | None = None
    thread_id: str | None = None


_REQUESTED = msgspec.json.Decoder(_Requested)
_LIFECYCLE = msgspec.json.Decoder(_Lifecycle)
_REQUEST = msgspec.json.Decoder(_Request)
_MESSAGE = msgspec.json.Decoder(payloads.Message)
_encode = msgspec.json.Encoder(order="sorted").encode


class LocalHandlers:
    """The handlers of command events but `Succeeded` (`projections.local_outcomes`), by topic
    (`by_topic`), writing through `rows`; `file_new_message` files a send as the backend's
    `message.new` for it would."""

    def __init__(self, rows: Rows, own_user_id: str | None,
                 file_new_message: FileNewMessage) -> None:
        self.rows = rows
        self.own = own_user_id
        self.file_new_message = file_new_message
        self.by_topic: dict[str, Callable[[apsw.Cursor, Item], None]] = {
            commands.REQUESTED: self.requested,
            commands.AMENDED: self.amended,
            commands.ATTEMPT_STARTED: self.attempt_started,
            commands.ATTEMPT_FAILED: self.attempt_failed,
            commands.REJECTED: self.rejected,
            commands.CANCELLED: self.cancelled,
            commands.RETRIED: self.retried,
        }

    # -- requested -------------------------------------------------------------------------------

    def requested(self, cursor: apsw.Cursor, item: Item) -> None:
        requested = _REQUESTED.decode(item.payload)
        # The time the request was recorded (the row's envelope): as exact as the event's own
        # timestamp, and already an integer.
        when = item.received_at
        request = _REQUEST.decode(requested.request)
        undo = self._optimistic(cursor, item, requested, request, when)
        self.rows.outbox.record(cursor, item.stream, item.position, requested.kind,
                                requested.cid, requested.message_id, requested.depends_on, when,
                                _encode(undo).decode() if undo is not None else None)

    def _optimistic(
        self, cursor: apsw.Cursor, item: Item, requested: _Requested, request: _Request,
        when: int,
    ) -> dict[str, Any] | None:
        """Apply a request's optimistic change; returns what it replaced (for an undo)."""
        kind, message_id, cid = requested.kind, requested.message_id, requested.cid
        if kind == CommandKind.SEND_MESSAGE:
            return self._send(cursor, item, requested)
        if kind in EDIT_KINDS:
            return self._edit(cursor, item, requested, message_id, when)
        if kind == CommandKind.DELETE_MESSAGE:
            return self._delete(cursor, item, message_id, request, when)
        if kind in REACTION_KINDS:
            return self._react(cursor, item, kind, message_id, request, when)
        reads, drafts = self.rows.reads, self.rows.drafts
        # Read marks and drafts keep the row before and after the change: a cancel puts the
        # row back only if it is still as the command left it (nothing newer came since).
        if kind == CommandKind.MARK_READ and cid and self.own and not request.thread_id:
            was = reads.own_row(cursor, cid)
            self._mark_read(cursor, cid, message_id, when)
            return {"read": [cid, was, reads.own_row(cursor, cid)]}
        if kind == CommandKind.MARK_UNREAD and cid and self.own and message_id:
            was = reads.own_row(cursor, cid)
            self._mark_unread(cursor, cid, message_id)
            return {"read": [cid, was, reads.own_row(cursor, cid)]}
        if kind == CommandKind.SAVE_DRAFT and cid:
            # A draft's thread is named inside its message, as the backend's draft body has it.
            parent = request.parent_id or (_MESSAGE.decode(requested.message).parent_id
                                           if requested.message else None) or ""
            was = drafts.row(cursor, cid, parent)
            self.rows.channels.ensure(cursor, cid)
            drafts.save(cursor, cid, parent, when, item.position)
            return {"draft": [cid, parent, was, [when, item.position]]}
        if kind == CommandKind.DELETE_DRAFT and cid:
            parent = request.parent_id or ""
            was = drafts.row(cursor, cid, parent)
            drafts.delete(cursor, cid, parent)
            return {"draft": [cid, parent, was, None]}
        return None

    def _send(self, cursor: apsw.Cursor, item: Item,
              requested: _Requested) -> dict[str, Any] | None:
        if not requested.message:
            return None
        message = _MESSAGE.decode(requested.message)
        if not message.id:
            return None
        cid = message.cid or requested.cid
        last_message_at = was_read = None
        if cid:
            last_message_at = self.rows.channels.last_message_at(cursor, cid)
            was_read = self.rows.reads.own_row(cursor, cid) if self.own else None
        # Filed exactly as the backend's `message.new` for it would be: channel, thread, reads.
        self.file_new_message(cursor, item, payloads.Event(type="message.new",
                                                           cid=requested.cid, message=message))
        self.rows.messages.show_sending(cursor, message.id, item.stream)
        if not cid:
            return None
        # For a cancel: the channel's last message time and the own read mark it moved.
        undo: dict[str, Any] = {
            "channel": [cid, last_message_at, epoch_us(message.created_at)]}
        if self.own:
            undo["read"] = [cid, was_read, self.rows.reads.own_row(cursor, cid)]
        return undo

    def _edit(self, cursor: apsw.Cursor, item: Item, requested: _Requested,
              message_id: str | None, when: int) -> dict[str, Any] | None:
        before = self.rows.messages.undo_state(cursor, message_id)
        if before is None:
            return None
        message = (_MESSAGE.decode(requested.message) if requested.message
                   else payloads.Message())
        self.rows.messages.show_edit(cursor, message_id, item.stream,
                                     epoch_us(message.updated_at) or when, item.position,
                                     SLOT_EVENT)
        return {"message": before}

    def _delete(self, cursor: apsw.Cursor, item: Item, message_id: str | None,
                request: _Request, when: int) -> dict[str, Any] | None:
        mode = "for_me" if request.for_me else "hard" if request.hard else "soft"
        before = self.rows.messages.undo_state(cursor, message_id)
        if before is None:
            return {"mode": mode}
        self.rows.messages.show_delete(cursor, message_id, item.stream, mode, when)
        return {"message": before, "mode": mode}

    def _react(self, cursor: apsw.Cursor, item: Item, kind: str, message_id: str | None,
               request: _Request, when: int) -> dict[str, Any] | None:
        if not message_id or not self.own:
            return None
        reactions = self.rows.reactions
        before = reactions.own_of_message(cursor, message_id, self.own)
        if kind == CommandKind.SEND_REACTION:
            reaction = request.reaction
            if reaction is None or not reaction.type:
                return None
            reactions.put_own(cursor, message_id, self.own, reaction.type,
                              reaction.score if reaction.score is not None else 1, when,
                              item.position, unique=request.enforce_unique)
        else:
            reactions.delete_own(cursor, message_id, self.own, request.reaction_type)
        return {"reactions": before}

    def _mark_read(self, cursor: apsw.Cursor, cid: str, message_id: str | None,
                   when: int) -> None:
        assert self.own is not None
        if message_id is None:
            message_id = self.rows.messages.newest_in_channel(cursor, cid)
        self.rows.channels.ensure(cursor, cid)
        self.rows.reads.set(cursor, cid, self.own, last_read=when, unread=0,
                            last_read_message_id=message_id)

    def _mark_unread(self, cursor: apsw.Cursor, cid: str, message_id: str) -> None:
        """Unread from `message_id` on: the messages of others from it, as the backend counts
        them."""
        assert self.own is not None
        messages = self.rows.messages
        created_at = messages.created_at(cursor, message_id)
        if created_at is None:
            return
        unread = messages.unread_from(cursor, cid, created_at, message_id, self.own)
        before = messages.shown_before(cursor, cid, created_at, message_id)
        self.rows.channels.ensure(cursor, cid)
        self.rows.reads.set(cursor, cid, self.own, last_read=created_at - 1, unread=unread,
                            last_read_message_id=before, first_unread_message_id=message_id)

    # -- the lifecycle ---------------------------------------------------------------------------

    def _start(self, cursor: apsw.Cursor,
               item: Item) -> tuple[_Lifecycle, OutboxRow] | None:
        """The event, decoded, and its command's outbox row; None for an event of a command
        this version never saw requested."""
        row = self.rows.outbox.row(cursor, item.stream)
        if row is None:
            return None
        return _LIFECYCLE.decode(item.payload), row

    def amended(self, cursor: apsw.Cursor, item: Item) -> None:
        if (found := self._start(cursor, item)) is None:
            return
        lifecycle, row = found
        self.rows.outbox.amended(cursor, item.stream, item.position, item.received_at)
        if row.kind in commands.MESSAGE_KINDS and lifecycle.message:
            self.rows.messages.point_at_amendment(cursor, row.message_id, item.stream,
                                                  item.position, SLOT_EVENT)

    # Attempts change only the outbox row (an event of an unknown command updates nothing).

    def attempt_started(self, cursor: apsw.Cursor, item: Item) -> None:
        lifecycle = _LIFECYCLE.decode(item.payload)
        self.rows.outbox.attempt_started(cursor, item.stream, lifecycle.attempt or 0,
                                         item.received_at)

    def attempt_failed(self, cursor: apsw.Cursor, item: Item) -> None:
        lifecycle = _LIFECYCLE.decode(item.payload)
        self.rows.outbox.attempt_failed(
            cursor, item.stream, lifecycle.attempt,
            bytes(lifecycle.error).decode() if lifecycle.error else None, lifecycle.next_try_at,
            item.received_at)

    def rejected(self, cursor: apsw.Cursor, item: Item) -> None:
        if (found := self._start(cursor, item)) is None:
            return
        lifecycle, row = found
        error = lifecycle.error
        self.rows.outbox.rejected(
            cursor, item.stream, row.seq, lifecycle.attempt, lifecycle.reason,
            bytes(error).decode() if error and bytes(error) != b"null" else None,
            item.received_at)
        if row.kind in REFUSED:
            self.rows.messages.set_state_of_command(cursor, row.message_id, item.stream,
                                                    REFUSED[row.kind])

    def retried(self, cursor: apsw.Cursor, item: Item) -> None:
        if (found := self._start(cursor, item)) is None:
            return
        lifecycle, row = found
        self.rows.outbox.retried(cursor, item.stream, row.seq, lifecycle.next_try_at,
                                 item.received_at)
        if row.kind in IN_PROGRESS:
            self.rows.messages.set_state_of_command(cursor, row.message_id, item.stream,
                                                    IN_PROGRESS[row.kind])

    def cancelled(self, cursor: apsw.Cursor, item: Item) -> None:
        if (found := self._start(cursor, item)) is None:
            return
        lifecycle, row = found
        rows = self.rows
        message_id = row.message_id
        rows.outbox.cancelled(cursor, item.stream, row.seq, lifecycle.reason, item.received_at)
        before = msgspec.json.decode(row.undo) if row.undo else {}
        if row.kind == CommandKind.SEND_MESSAGE:
            # Never sent (or refused): the message exists only here. A row the backend has
            # confirmed meanwhile (its echo arrived) stays: the backend has the message.
            rows.messages.hard_delete(cursor, SENT_FROM_HERE, (message_id,))
            if cursor.connection.changes() and "channel" in before:
                cid, was, sent_at = before["channel"]
                rows.channels.restore_last_message_at(cursor, cid, was, sent_at)
            else:
                before.pop("read", None)  # the backend has the message: it read the channel
        if "message" in before:
            self._restore_message(cursor, item.stream, message_id, before["message"])
        if "reactions" in before and message_id and self.own:
            rows.reactions.restore_own(cursor, message_id, self.own, row.seq,
                                       before["reactions"],
                                       rows.messages.is_on_file(cursor, message_id))
        if "read" in before and self.own:
            cid, was, now = before["read"]
            if rows.reads.own_row(cursor, cid) == now:
                rows.reads.restore_own(cursor, cid, was)
        if "draft" in before:
            cid, parent, was, now = before["draft"]
            if rows.drafts.row(cursor, cid, parent) == now:
                rows.drafts.restore(cursor, cid, parent, was)

    def _restore_message(self, cursor: apsw.Cursor, command_id: str, message_id: str | None,
                         before: list[Any]) -> None:
        kind, deleted_at, for_me, updated_at, state, owner, position, slot = before
        if owner is not None:
            # The command it took the row from may have finished meanwhile.
            outcome = self.rows.outbox.outcome_of(cursor, owner)
            if outcome is not None and outcome.status in commands.FINISHED:
                if outcome.status == CommandStatus.REJECTED:
                    state = REFUSED.get(outcome.kind, state)
                else:
                    state, owner = None, None
                    if (outcome.status == CommandStatus.SUCCEEDED
                            and outcome.response_position is not None):
                        position, slot = outcome.response_position, SLOT_RESPONSE
        self.rows.messages.restore(cursor, message_id, command_id, [
            kind, deleted_at, for_me, updated_at, state, owner, position, slot])
