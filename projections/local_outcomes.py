"""What a command's success does to the read tables (see `projections.local`).

The backend's answer becomes the row (`slot` SLOT_RESPONSE), unless a later command has taken
the row over: the row then keeps showing that newer intent until its own outcome. The tables
change only through the row writers of `projections.rows`.
"""

from __future__ import annotations

import apsw
import msgspec

from chatledger.eventstore import commands
from chatledger.eventstore.commands import CommandKind
from chatledger.projections import payloads
from chatledger.projections.item import Item
from chatledger.projections.rows import Rows
from chatledger.projections.rowtime import epoch_us
from chatledger.projections.schema import SLOT_RESPONSE

__all__ = ["OutcomeHandlers", "REACTION_KINDS"]

REACTION_KINDS = frozenset({CommandKind.SEND_REACTION, CommandKind.DELETE_REACTION})


class _Answer(msgspec.Struct, gc=False):
    message: payloads.Message | None = None
    reaction: payloads.Reaction | None = None


_ANSWER = msgspec.json.Decoder(_Answer)


class _Outcome(msgspec.Struct, gc=False):
    """What the read tables use of a `Succeeded` event (`eventstore.commands`)."""

    response: msgspec.Raw = msgspec.Raw()
    attempt: int | None = None  # set when the attempt's start was folded into the outcome


_OUTCOME = msgspec.json.Decoder(_Outcome)


class OutcomeHandlers:
    """The handler of `Succeeded` (`succeeded`), writing through `rows`."""

    def __init__(self, rows: Rows, own_user_id: str | None) -> None:
        self.rows = rows
        self.own = own_user_id

    def succeeded(self, cursor: apsw.Cursor, item: Item) -> None:
        outcome = _OUTCOME.decode(item.payload)
        try:
            answer = _ANSWER.decode(outcome.response) if outcome.response else _Answer()
        except (msgspec.MsgspecError, ValueError):
            answer = _Answer()  # not an object we can read: the command's own intent stands
        message = answer.message if answer.message is not None and answer.message.id else None
        row = self.rows.outbox.row(cursor, item.stream)
        if row is None:
            return  # an event of a command this version never saw requested
        self.rows.outbox.succeeded(cursor, row.seq, outcome.attempt,
                                   item.position if message else None, item.received_at)
        if row.kind in commands.MESSAGE_KINDS:
            self._confirm_message(cursor, item, row.kind, row.cid, row.message_id, message)
        elif row.kind == CommandKind.DELETE_MESSAGE:
            self._confirm_delete(cursor, item, row.cid, row.message_id, message, row.undo)
        elif row.kind in REACTION_KINDS:
            self._confirm_reaction(cursor, item, row.kind, row.message_id, answer, row.seq)

    def _confirm_message(self, cursor: apsw.Cursor, item: Item, kind: str, cid: str | None,
                         message_id: str | None, message: payloads.Message | None) -> None:
        # A row that a later command has taken over is left alone: it shows that newer intent.
        messages = self.rows.messages
        target = (message.cid if message is not None else None) or cid
        if message is not None and message.id == message_id and target is not None:
            if messages.confirm(cursor, target, message, item.position, SLOT_RESPONSE,
                                item.stream):
                return
            if kind == CommandKind.SEND_MESSAGE and messages.owner(cursor, message_id) is None:
                # Cancelled meanwhile, yet delivered: the backend has it.
                self.rows.channels.ensure(cursor, target)
                messages.upsert(cursor, target, message, item.position, SLOT_RESPONSE,
                                confirm=())
            return
        # No message in the answer ("already exists"): its own stands.
        messages.clear_local_of(cursor, message_id, item.stream)

    def _confirm_delete(self, cursor: apsw.Cursor, item: Item, cid: str | None,
                        message_id: str | None, message: payloads.Message | None,
                        undo: str | None) -> None:
        when = item.received_at
        messages = self.rows.messages
        mode = (msgspec.json.decode(undo) if undo else {}).get("mode", "soft")
        if mode == "hard":
            # Gone at the backend, whoever owns the row; and never filed again.
            if message_id:
                messages.hard_deleted(
                    cursor, message_id, (message.cid if message is not None else None) or cid,
                    (epoch_us(message.deleted_at) if message is not None else None) or when,
                    message)
            return
        owner = messages.owner(cursor, message_id)
        if owner is None:
            return
        _, command = owner
        if command not in (item.stream, None):
            return
        target = (message.cid if message is not None else None) or cid
        if message is not None and mode == "soft" and target:
            messages.upsert(cursor, target, message, item.position, SLOT_RESPONSE, confirm=(),
                            deleted_at=when)
        messages.clear_local(cursor, message_id)

    def _confirm_reaction(self, cursor: apsw.Cursor, item: Item, kind: str,
                          message_id: str | None, answer: _Answer, put_at: int) -> None:
        reaction = answer.reaction
        if (kind == CommandKind.SEND_REACTION and reaction is not None and reaction.type
                and message_id and self.own):
            self.rows.reactions.confirm_own(
                cursor, (message_id, self.own, reaction.type), put_at, score=reaction.score,
                created_at=epoch_us(reaction.created_at),
                updated_at=epoch_us(reaction.updated_at), position=item.position)
        if answer.message is not None and answer.message.id:
            # The answer's message carries the new counters; a row with a local change of its
            # own keeps showing that change.
            self.rows.messages.point_at_response(cursor, answer.message.id, item.position,
                                                 SLOT_RESPONSE)
