"""What a command's success does to the read tables (see `projections.local`).

The backend's answer becomes the row (`slot` SLOT_RESPONSE), unless a later command has taken
the row over: the row then keeps showing that newer intent until its own outcome.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import apsw
import msgspec

from chatledger.eventstore import commands as cmd
from chatledger.eventstore.commands import CommandKind as K
from chatledger.projections import payloads as p
from chatledger.projections.rowtime import epoch_us as t
from chatledger.projections.rowtime import newest
from chatledger.projections.schema import SLOT_RESPONSE

if TYPE_CHECKING:
    from chatledger.projections.apply import Item, Projector

REACTION_KINDS = frozenset({K.SEND_REACTION, K.DELETE_REACTION})


class _Answer(msgspec.Struct, gc=False):
    message: p.Message | None = None
    reaction: p.Reaction | None = None


_ANSWER = msgspec.json.Decoder(_Answer)


class _Outcome(msgspec.Struct, gc=False):
    """What the read tables use of a `Succeeded` event (`eventstore.commands`)."""

    response: msgspec.Raw = msgspec.Raw()
    attempt: int | None = None  # set when the attempt's start was folded into the outcome


_OUTCOME = msgspec.json.Decoder(_Outcome)
_ROW = "SELECT kind, cid, message_id, seq, undo FROM outbox WHERE id=?"
_CONFIRMED = (
    "UPDATE messages SET cid=?1, created_at=coalesce(?2, created_at), user_id=?3, type=?4, "
    "parent_id=?5, show_in_channel=?6, reply_count=coalesce(?7, reply_count), pinned=?8, "
    "pinned_at=?9, updated_at=?10, deleted_at=?11, silent=?12, position=?13, slot=?14, "
    "state_at=coalesce(?15, state_at), local_state=NULL, local_command=NULL "
    "WHERE id=?16 AND (local_command IS NULL OR local_command=?17) "
    "AND (?15 IS NULL OR state_at IS NULL OR state_at <= ?15)")
_CLEAR_LOCAL = ("UPDATE messages SET local_state=NULL, local_command=NULL "
                "WHERE id=? AND (local_command IS NULL OR local_command=?)")
_SUCCEEDED = ("UPDATE outbox SET status=?, attempts=coalesce(?, attempts), next_try_at=NULL, "
              "response_position=?, version=version+1, updated_at=? WHERE seq=?")


class OutcomeHandlers:
    """The `Succeeded` handler of `LocalProjector` (which sets `p`, the projector whose row
    helpers it shares)."""

    p: Projector

    @property
    def own(self) -> str | None:
        return self.p.own

    # -- succeeded -----------------------------------------------------------------------------

    def succeeded(self, c: apsw.Cursor, item: Item) -> None:
        e = _OUTCOME.decode(item.payload)
        try:
            answer = _ANSWER.decode(e.response) if e.response else _Answer()
        except (msgspec.MsgspecError, ValueError):
            answer = _Answer()  # not an object we can read: the command's own intent stands
        m = answer.message if answer.message is not None and answer.message.id else None
        row = c.execute(_ROW, (item.stream,)).fetchone()
        if row is None:
            return  # an event of a command this version never saw requested
        kind, cid, mid, seq, undo = row
        # By `seq`, the rowid, which the lookup above found. (Not one `UPDATE ... RETURNING`:
        # SQLite runs that several times slower than the two statements.)
        c.execute(_SUCCEEDED, (cmd.CommandStatus.SUCCEEDED, e.attempt,
                               item.position if m else None, item.received_at, seq))
        c.execute("DELETE FROM retry_stream WHERE seq=?", (seq,))
        if kind in cmd.MESSAGE_KINDS:
            self._confirm_message(c, item, kind, cid, mid, m)
        elif kind == K.DELETE_MESSAGE:
            self._confirm_delete(c, item, cid, mid, m, undo, item.received_at)
        elif kind in REACTION_KINDS:
            self._confirm_reaction(c, item, kind, mid, answer, seq)

    def _owner(self, c: apsw.Cursor, mid: str | None) -> tuple[int, str | None] | None:
        """(created_at, local_command) of the message's row, None when there is none."""
        return c.execute("SELECT created_at, local_command FROM messages WHERE id=?",
                         (mid,)).fetchone()

    def _confirmed(self, c: apsw.Cursor, cid: str, m: p.Message, position: int,
                   command_id: str) -> bool:
        """The row becomes the backend's message, if it is this command's or nobody's, and the
        row shows no newer state of it (an event that came before the answer); False when no
        such row was found. The same columns as `Projector.upsert_message`; the row's own
        `created_at` when the answer has none."""
        stamp = newest(t(m.updated_at), t(m.deleted_at))
        c.execute(_CONFIRMED, (
            cid, t(m.created_at) or None, m.author, m.type, m.parent_id,
            1 if m.show_in_channel else 0, m.reply_count, 1 if m.pinned else 0,
            t(m.pinned_at), t(m.updated_at), t(m.deleted_at), 1 if m.silent else 0, position,
            SLOT_RESPONSE, stamp, m.id, command_id))
        if c.connection.changes():
            return True
        # Older than the row: the command is done all the same, the row keeps the newer state.
        c.execute(_CLEAR_LOCAL, (m.id, command_id))
        return c.connection.changes() > 0

    def _confirm_message(self, c: apsw.Cursor, item: Item, kind: str, cid: str | None,
                         mid: str | None, m: p.Message | None) -> None:
        # A row that a later command has taken over is left alone: it shows that newer intent.
        target = (m.cid if m is not None else None) or cid
        if m is not None and m.id == mid and target is not None:
            if self._confirmed(c, target, m, item.position, item.stream):
                return
            if kind == K.SEND_MESSAGE and self._owner(c, mid) is None:
                # Cancelled meanwhile, yet delivered: the backend has it.
                self.p.ensure_channel(c, target)
                self.p.upsert_message(c, target, m, item.position, SLOT_RESPONSE, confirm=())
            return
        # No message in the answer ("already exists"): its own stands.
        c.execute("UPDATE messages SET local_state=NULL, local_command=NULL "
                  "WHERE id=? AND (local_command IS NULL OR local_command=?)", (mid, item.stream))

    def _confirm_delete(self, c: apsw.Cursor, item: Item, cid: str | None, mid: str | None,
                        m: p.Message | None, undo: str | None, when: int) -> None:
        mode = (msgspec.json.decode(undo) if undo else {}).get("mode", "soft")
        if mode == "hard":
            # Gone at the backend, whoever owns the row; and never filed again.
            if mid:
                self.p.hard_deleted(c, mid, (m.cid if m is not None else None) or cid,
                                    (t(m.deleted_at) if m is not None else None) or when, m)
            return
        row = self._owner(c, mid)
        if row is None or row[1] not in (item.stream, None):
            return
        target = (m.cid if m is not None else None) or cid
        if m is not None and mode == "soft" and target:
            self.p.upsert_message(c, target, m, item.position, SLOT_RESPONSE, confirm=(),
                                  deleted_at=when)
        c.execute("UPDATE messages SET local_state=NULL, local_command=NULL WHERE id=?", (mid,))

    def _confirm_reaction(self, c: apsw.Cursor, item: Item, kind: str, mid: str | None,
                          answer: _Answer, seq: int) -> None:
        r = answer.reaction
        if kind == K.SEND_REACTION and r is not None and r.type and mid and self.own:
            c.execute(
                "UPDATE reactions SET score=coalesce(?, score), created_at=coalesce(?, created_at),"
                " updated_at=coalesce(?, updated_at), position=? "
                "WHERE message_id=? AND user_id=? AND type=? AND position=?",
                (r.score, t(r.created_at), t(r.updated_at), item.position, mid, self.own, r.type,
                 seq))
        if answer.message is not None and answer.message.id:
            # The answer's message carries the new counters; a row with a local change of its
            # own keeps showing that change.
            c.execute("UPDATE messages SET position=?, slot=? WHERE id=? AND local_command IS NULL",
                      (item.position, SLOT_RESPONSE, answer.message.id))
