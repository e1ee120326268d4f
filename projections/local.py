"""What the events of local commands do to the read tables: the outbox, and the optimistic rows.

Called by `Projector.apply` for the command topics (`eventstore.commands`), in the transaction
that recorded the event, and again, in the same order, by a rebuild. Everything here depends only
on the tables and the payloads, never on the clock or on memory, so a rebuild agrees.

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
from typing import TYPE_CHECKING, Any

import apsw
import msgspec

from chatledger.eventstore import commands as cmd
from chatledger.eventstore.commands import CommandKind as K
from chatledger.projections import payloads as p
from chatledger.projections.rowtime import epoch_us as t
from chatledger.projections.local_outcomes import REACTION_KINDS, OutcomeHandlers
from chatledger.projections.schema import SLOT_EVENT, SLOT_RESPONSE

if TYPE_CHECKING:
    from chatledger.projections.apply import Item, Projector

NO_RAW = msgspec.Raw()

# local_state while a command is on its way, and once it was refused.
IN_PROGRESS = {K.SEND_MESSAGE: "sending", K.UPDATE_MESSAGE: "updating",
               K.PARTIAL_UPDATE_MESSAGE: "updating", K.DELETE_MESSAGE: "deleting"}
REFUSED = {K.SEND_MESSAGE: "send_failed", K.UPDATE_MESSAGE: "update_failed",
           K.PARTIAL_UPDATE_MESSAGE: "update_failed", K.DELETE_MESSAGE: "delete_failed"}


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
    reaction: p.Reaction | None = None
    reaction_type: str | None = None
    enforce_unique: bool = False
    parent_id: str | None = None
    thread_id: str | None = None


_REQUESTED = msgspec.json.Decoder(_Requested)
_LIFECYCLE = msgspec.json.Decoder(_Lifecycle)
_REQUEST = msgspec.json.Decoder(_Request)
_MESSAGE = msgspec.json.Decoder(p.Message)
_encode = msgspec.json.Encoder(order="sorted").encode

_READ_COLUMNS = ("last_read, unread_messages, last_read_message_id, first_unread_message_id, "
                 "last_delivered_at, last_delivered_message_id, state_at")
_RESTORE_READ = f"INSERT INTO reads (cid, user_id, {_READ_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?)"
# A message sent from here has no server time until the backend answers: any state the
# backend sends of it is newer than this one.
_SENDING = "UPDATE messages SET local_state=?, local_command=?, state_at=NULL WHERE id=?"
_OUTBOX_ROW = ("SELECT kind, cid, message_id, status, seq, undo, attempts FROM outbox "
               "WHERE id=?")


class LocalProjector(OutcomeHandlers):
    """The handlers of command events, for one `Projector` (whose row helpers it shares)."""

    def __init__(self, projector: Projector) -> None:
        self.p = projector
        self.handlers: dict[str, Callable[[apsw.Cursor, Item], None]] = {
            cmd.REQUESTED: self.requested,
            cmd.AMENDED: self.amended,
            cmd.ATTEMPT_STARTED: self.attempt_started,
            cmd.ATTEMPT_FAILED: self.attempt_failed,
            cmd.SUCCEEDED: self.succeeded,
            cmd.REJECTED: self.rejected,
            cmd.CANCELLED: self.cancelled,
            cmd.RETRIED: self.retried,
        }

    # -- requested ---------------------------------------------------------------------------

    def requested(self, c: apsw.Cursor, item: Item) -> None:
        r = _REQUESTED.decode(item.payload)
        # The time the request was recorded (the row's envelope): as exact as the event's own
        # timestamp, and already an integer.
        when = item.received_at
        request = _REQUEST.decode(r.request)
        undo = self._optimistic(c, item, r, request, when)
        c.execute(
            "INSERT INTO outbox (id, seq, kind, cid, message_id, status, attempts, depends_on, "
            "created_at, updated_at, version, position, undo) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?) "
            "ON CONFLICT (id) DO NOTHING",
            (item.stream, item.position, r.kind, r.cid, r.message_id, cmd.CommandStatus.PENDING,
             0, r.depends_on, when, when, 1, item.position,
             _encode(undo).decode() if undo is not None else None),
        )
        c.execute("INSERT OR IGNORE INTO retry_stream (seq, id) VALUES (?, ?)",
                  (item.position, item.stream))

    def _optimistic(
        self, c: apsw.Cursor, item: Item, r: _Requested, request: _Request, when: int,
    ) -> dict[str, Any] | None:
        """Apply a request's optimistic change; returns what it replaced (for an undo)."""
        kind, mid = r.kind, r.message_id
        if kind == K.SEND_MESSAGE:
            return self._send(c, item, r)
        if kind in (K.UPDATE_MESSAGE, K.PARTIAL_UPDATE_MESSAGE):
            return self._edit(c, item, r, mid, when)
        if kind == K.DELETE_MESSAGE:
            return self._delete(c, item, mid, request, when)
        if kind in REACTION_KINDS:
            return self._react(c, item, kind, mid, request, when)
        # Read marks and drafts keep the row before and after the change: a cancel puts the
        # row back only if it is still as the command left it (nothing newer came since).
        if kind == K.MARK_READ and r.cid and self.own and not request.thread_id:
            was = self._read_row(c, r.cid)
            self._mark_read(c, r.cid, mid, when)
            return {"read": [r.cid, was, self._read_row(c, r.cid)]}
        if kind == K.MARK_UNREAD and r.cid and self.own and mid:
            was = self._read_row(c, r.cid)
            self._mark_unread(c, r.cid, mid)
            return {"read": [r.cid, was, self._read_row(c, r.cid)]}
        if kind == K.SAVE_DRAFT and r.cid:
            # A draft's thread is named inside its message, as the backend's draft body has it.
            parent = request.parent_id or (_MESSAGE.decode(r.message).parent_id
                                           if r.message else None) or ""
            was = self._draft_row(c, r.cid, parent)
            self.p.ensure_channel(c, r.cid)
            c.execute(
                "INSERT INTO drafts (cid, parent_id, created_at, position) VALUES (?,?,?,?) "
                "ON CONFLICT (cid, parent_id) DO UPDATE SET created_at=excluded.created_at, "
                "position=excluded.position",
                (r.cid, parent, when, item.position))
            return {"draft": [r.cid, parent, was, [when, item.position]]}
        if kind == K.DELETE_DRAFT and r.cid:
            parent = request.parent_id or ""
            was = self._draft_row(c, r.cid, parent)
            c.execute("DELETE FROM drafts WHERE cid=? AND parent_id=?", (r.cid, parent))
            return {"draft": [r.cid, parent, was, None]}
        return None

    def _read_row(self, c: apsw.Cursor, cid: str) -> list[Any] | None:
        row = c.execute(f"SELECT {_READ_COLUMNS} FROM reads WHERE cid=? AND user_id=?",
                        (cid, self.own)).fetchone()
        return list(row) if row is not None else None

    @staticmethod
    def _draft_row(c: apsw.Cursor, cid: str, parent: str) -> list[Any] | None:
        row = c.execute("SELECT created_at, position FROM drafts WHERE cid=? AND parent_id=?",
                        (cid, parent)).fetchone()
        return list(row) if row is not None else None

    def _send(self, c: apsw.Cursor, item: Item, r: _Requested) -> dict[str, Any] | None:
        if not r.message:
            return None
        m = _MESSAGE.decode(r.message)
        if not m.id:
            return None
        cid = m.cid or r.cid
        row = was_read = None
        if cid:
            row = c.execute("SELECT last_message_at FROM channels WHERE cid=?", (cid,)).fetchone()
            was_read = self._read_row(c, cid) if self.own else None
        # Filed exactly as the backend's `message.new` for it would be: channel, thread, reads.
        self.p.message_new(c, item, p.Event(type="message.new", cid=r.cid, message=m))
        c.execute(_SENDING, ("sending", item.stream, m.id))
        if not cid:
            return None
        # For a cancel: the channel's last message time and the own read mark it moved.
        undo: dict[str, Any] = {"channel": [cid, row[0] if row else None, t(m.created_at)]}
        if self.own:
            undo["read"] = [cid, was_read, self._read_row(c, cid)]
        return undo

    def _row_undo(self, c: apsw.Cursor, mid: str | None) -> list[Any] | None:
        if not mid:
            return None
        row = c.execute(
            "SELECT type, deleted_at, deleted_for_me, updated_at, local_state, local_command, "
            "position, slot FROM messages WHERE id=?", (mid,)).fetchone()
        return list(row) if row is not None else None

    def _edit(self, c: apsw.Cursor, item: Item, r: _Requested, mid: str | None,
              when: int) -> dict[str, Any] | None:
        before = self._row_undo(c, mid)
        if before is None:
            return None
        m = _MESSAGE.decode(r.message) if r.message else p.Message()
        c.execute(
            "UPDATE messages SET updated_at=?, local_state=?, local_command=?, position=?, slot=? "
            "WHERE id=?",
            (t(m.updated_at) or when, "updating", item.stream, item.position, SLOT_EVENT, mid))
        return {"message": before}

    def _delete(self, c: apsw.Cursor, item: Item, mid: str | None, request: _Request,
                when: int) -> dict[str, Any] | None:
        mode = "for_me" if request.for_me else "hard" if request.hard else "soft"
        before = self._row_undo(c, mid)
        if before is None:
            return {"mode": mode}
        if mode == "for_me":
            c.execute("UPDATE messages SET deleted_for_me=1, local_state=?, local_command=? "
                      "WHERE id=?", ("deleting", item.stream, mid))
        elif mode == "hard":
            # The row stays (flagged) until the backend confirms: a refused hard delete would
            # otherwise lose the message from the screen for nothing.
            c.execute("UPDATE messages SET local_state=?, local_command=? WHERE id=?",
                      ("deleting", item.stream, mid))
        else:
            c.execute("UPDATE messages SET type='deleted', deleted_at=coalesce(deleted_at, ?), "
                      "local_state=?, local_command=? WHERE id=?",
                      (when, "deleting", item.stream, mid))
        return {"message": before, "mode": mode}

    def _own_reactions(self, c: apsw.Cursor, mid: str) -> list[list[Any]]:
        return [list(r) for r in c.execute(
            "SELECT type, score, created_at, updated_at, position FROM reactions "
            "WHERE message_id=? AND user_id=? ORDER BY type", (mid, self.own))]

    def _react(self, c: apsw.Cursor, item: Item, kind: str, mid: str | None, request: _Request,
               when: int) -> dict[str, Any] | None:
        if not mid or not self.own:
            return None
        before = self._own_reactions(c, mid)
        if kind == K.SEND_REACTION:
            reaction = request.reaction
            if reaction is None or not reaction.type:
                return None
            if request.enforce_unique:
                c.execute("DELETE FROM reactions WHERE message_id=? AND user_id=?",
                          (mid, self.own))
            c.execute(
                "INSERT INTO reactions (message_id, user_id, type, score, created_at, updated_at, "
                "position) VALUES (?,?,?,?,?,?,?) ON CONFLICT (message_id, user_id, type) DO "
                "UPDATE SET score=excluded.score, updated_at=excluded.updated_at, "
                "position=excluded.position",
                (mid, self.own, reaction.type,
                 reaction.score if reaction.score is not None else 1, when, when, item.position))
        else:
            c.execute("DELETE FROM reactions WHERE message_id=? AND user_id=? AND type=?",
                      (mid, self.own, request.reaction_type))
        return {"reactions": before}

    def _mark_read(self, c: apsw.Cursor, cid: str, mid: str | None, when: int) -> None:
        assert self.own is not None
        if mid is None:
            row = c.execute(
                "SELECT id FROM messages WHERE cid=? AND (parent_id IS NULL OR show_in_channel=1)"
                " ORDER BY created_at DESC, id DESC LIMIT 1", (cid,)).fetchone()
            mid = row[0] if row else None
        self.p.ensure_channel(c, cid)
        self.p.set_read(c, cid, self.own, last_read=when, unread=0, last_read_message_id=mid)

    def _mark_unread(self, c: apsw.Cursor, cid: str, mid: str) -> None:
        """Unread from `mid` on: the messages of others from it, as the backend counts them."""
        assert self.own is not None
        at = c.execute("SELECT created_at FROM messages WHERE id=?", (mid,)).fetchone()
        if at is None:
            return
        unread = c.execute(
            "SELECT count(*) FROM messages WHERE cid=? AND (created_at, id) >= (?, ?) "
            "AND (parent_id IS NULL OR show_in_channel=1) AND coalesce(user_id, '') != ? "
            "AND type NOT IN ('system', 'ephemeral', 'error', 'deleted') AND silent=0",
            (cid, at[0], mid, self.own)).fetchone()[0]
        before = c.execute(
            "SELECT id FROM messages WHERE cid=? AND (created_at, id) < (?, ?) "
            "AND (parent_id IS NULL OR show_in_channel=1) ORDER BY created_at DESC, id DESC "
            "LIMIT 1", (cid, at[0], mid)).fetchone()
        self.p.ensure_channel(c, cid)
        self.p.set_read(c, cid, self.own, last_read=at[0] - 1, unread=unread,
                        last_read_message_id=before[0] if before else None,
                        first_unread_message_id=mid)

    # -- the lifecycle -------------------------------------------------------------------------

    def _advance(self, c: apsw.Cursor, item: Item, sets: str, values: tuple[Any, ...],
                 when: int) -> None:
        c.execute(f"UPDATE outbox SET {sets}, version=version+1, updated_at=? WHERE id=?",
                  (*values, when, item.stream))

    def _start(self, c: apsw.Cursor, item: Item) -> tuple[_Lifecycle, tuple[Any, ...], int] | None:
        row = c.execute(_OUTBOX_ROW, (item.stream,)).fetchone()
        if row is None:
            return None  # an event of a command this version never saw requested
        e = _LIFECYCLE.decode(item.payload)
        return e, row, item.received_at

    def amended(self, c: apsw.Cursor, item: Item) -> None:
        if (found := self._start(c, item)) is None:
            return
        e, (kind, _, mid, *_), when = found
        self._advance(c, item, "position=?", (item.position,), when)
        if kind in cmd.MESSAGE_KINDS and e.message:
            c.execute("UPDATE messages SET position=?, slot=? WHERE id=? AND local_command=?",
                      (item.position, SLOT_EVENT, mid, item.stream))

    # Attempts change only the outbox row (an event of an unknown command updates nothing).

    def attempt_started(self, c: apsw.Cursor, item: Item) -> None:
        e = _LIFECYCLE.decode(item.payload)
        self._advance(c, item, "status=?, attempts=?",
                      (cmd.CommandStatus.IN_FLIGHT, e.attempt or 0),
                      item.received_at)

    def attempt_failed(self, c: apsw.Cursor, item: Item) -> None:
        # The attempt number too: the attempt's start may be folded into its failure (the
        # number is the one its `AttemptStarted` set, when there is one).
        e = _LIFECYCLE.decode(item.payload)
        self._advance(c, item, "status=?, attempts=coalesce(?, attempts), last_error=?, "
                      "next_try_at=?",
                      (cmd.CommandStatus.FAILED, e.attempt,
                       bytes(e.error).decode() if e.error else None, e.next_try_at),
                      item.received_at)

    def rejected(self, c: apsw.Cursor, item: Item) -> None:
        if (found := self._start(c, item)) is None:
            return
        e, (kind, _, mid, _, seq, *_), when = found
        c.execute("DELETE FROM retry_stream WHERE seq=?", (seq,))
        self._advance(c, item, "status=?, attempts=coalesce(?, attempts), reason=?, "
                      "last_error=coalesce(?, last_error), next_try_at=NULL",
                      (cmd.CommandStatus.REJECTED, e.attempt, e.reason,
                       bytes(e.error).decode() if e.error and bytes(e.error) != b"null" else None),
                      when)
        if kind in REFUSED:
            c.execute("UPDATE messages SET local_state=? WHERE id=? AND local_command=?",
                      (REFUSED[kind], mid, item.stream))

    def retried(self, c: apsw.Cursor, item: Item) -> None:
        if (found := self._start(c, item)) is None:
            return
        e, (kind, _, mid, _, seq, *_), when = found
        c.execute("INSERT OR IGNORE INTO retry_stream (seq, id) VALUES (?, ?)", (seq, item.stream))
        self._advance(c, item, "status=?, reason=NULL, next_try_at=?",
                      (cmd.CommandStatus.PENDING, e.next_try_at), when)
        if kind in IN_PROGRESS:
            c.execute("UPDATE messages SET local_state=? WHERE id=? AND local_command=?",
                      (IN_PROGRESS[kind], mid, item.stream))

    def cancelled(self, c: apsw.Cursor, item: Item) -> None:
        if (found := self._start(c, item)) is None:
            return
        e, (kind, _, mid, _, seq, undo, _), when = found
        c.execute("DELETE FROM retry_stream WHERE seq=?", (seq,))
        self._advance(c, item, "status=?, reason=?, next_try_at=NULL",
                      (cmd.CommandStatus.CANCELLED, e.reason), when)
        before = msgspec.json.decode(undo) if undo else {}
        if kind == K.SEND_MESSAGE:
            # Never sent (or refused): the message exists only here. A row the backend has
            # confirmed meanwhile (its echo arrived) stays: the backend has the message.
            self.p.hard_delete(c, "id=? AND local_state IS NOT NULL", (mid,))
            if c.connection.changes() and "channel" in before:
                cid, was, sent_at = before["channel"]
                c.execute("UPDATE channels SET last_message_at=? WHERE cid=? AND last_message_at=?",
                          (was, cid, sent_at))
            else:
                before.pop("read", None)  # the backend has the message: it read the channel
        if "message" in before:
            self._restore_message(c, item.stream, mid, before["message"])
        if "reactions" in before and mid and self.own:
            self._restore_reactions(c, mid, seq, before["reactions"])
        if "read" in before and self.own:
            cid, was, now = before["read"]
            if self._read_row(c, cid) == now:
                c.execute("DELETE FROM reads WHERE cid=? AND user_id=?", (cid, self.own))
                if was is not None:
                    c.execute(_RESTORE_READ, (cid, self.own, *was))
        if "draft" in before:
            cid, parent, was, now = before["draft"]
            if self._draft_row(c, cid, parent) == now:
                c.execute("DELETE FROM drafts WHERE cid=? AND parent_id=?", (cid, parent))
                if was is not None:
                    c.execute("INSERT INTO drafts (cid, parent_id, created_at, position) "
                              "VALUES (?,?,?,?)", (cid, parent, *was))

    def _restore_message(self, c: apsw.Cursor, command_id: str, mid: str | None,
                         before: list[Any]) -> None:
        kind_, deleted_at, for_me, updated_at, state, owner, position, slot = before
        if owner is not None:
            # The command it took the row from may have finished meanwhile.
            row = c.execute("SELECT kind, status, response_position FROM outbox WHERE id=?",
                            (owner,)).fetchone()
            if row is not None and row[1] in cmd.FINISHED:
                if row[1] == cmd.CommandStatus.REJECTED:
                    state = REFUSED.get(row[0], state)
                else:
                    state, owner = None, None
                    if row[1] == cmd.CommandStatus.SUCCEEDED and row[2] is not None:
                        position, slot = row[2], SLOT_RESPONSE
        c.execute(
            "UPDATE messages SET type=?, deleted_at=?, deleted_for_me=?, updated_at=?, "
            "local_state=?, local_command=?, position=?, slot=? WHERE id=? AND local_command=?",
            (kind_, deleted_at, for_me, updated_at, state, owner, position, slot, mid, command_id))

    def _restore_reactions(self, c: apsw.Cursor, mid: str, seq: int,
                           before: list[list[Any]]) -> None:
        # Only what this command put there goes; what arrived since from the backend stays.
        c.execute("DELETE FROM reactions WHERE message_id=? AND user_id=? AND position=?",
                  (mid, self.own, seq))
        if c.execute("SELECT 1 FROM messages WHERE id=?", (mid,)).fetchone() is None:
            return  # the message is gone (hard-deleted meanwhile): its reactions went with it
        c.executemany(
            "INSERT OR IGNORE INTO reactions (message_id, user_id, type, score, created_at, "
            "updated_at, position) VALUES (?,?,?,?,?,?,?)",
            [(mid, self.own, *r) for r in before])
