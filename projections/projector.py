"""The handler table, composed: which handler each log entry goes to, and the loop that runs
them (`Projector.apply`, called by `projections.engine` and `projections.history`).

Three kinds of entries, three kinds of handlers, all writing through one `Rows`:

- backend events (`projections.apply.EventHandlers`, plus the reminder and mute writers of
  their own modules): decoded here once into `payloads.Event`;
- the log's summaries of responses (channel states, query and sync results): `EventHandlers`
  too, decoding their own payloads;
- the events of local commands, by topic (`projections.local`, and `projections.local_outcomes`
  for `Succeeded`): payloads of the library's own.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import apsw
import msgspec

from chatledger.eventstore import commands
from chatledger.projections import payloads
from chatledger.projections.apply import (DECODE_ERRORS, RUN_WITH_NEW_MESSAGES, UNAPPLIABLE,
                                          EventHandler, EventHandlers, SummaryHandler)
from chatledger.projections.item import Item
from chatledger.projections.local import LocalHandlers
from chatledger.projections.local_outcomes import OutcomeHandlers
from chatledger.projections.mutes import EVENT_TYPES as MUTE_EVENTS
from chatledger.projections.mutes import MuteProjector
from chatledger.projections.reminders import EVENT_TYPES as REMINDER_EVENTS
from chatledger.projections.reminders import ReminderProjector
from chatledger.projections.rowtime import epoch_us
from chatledger.projections.rows import Rows
from chatledger.projections.screen import screened

__all__ = ["Item", "Projector"]

logger = logging.getLogger("chatledger.projections")

# Entries of a type with no handler are left to the log (unknown, ephemeral, the library's own);
# of the poll events, whatever their type, the poll's row follows the newest.
POLL_PREFIX = "poll."
# Changes only for commits made by other connections.
DATA_VERSION = "PRAGMA data_version"


class Projector:
    """Applies log entries to the read tables of one user's file."""

    def __init__(self, own_user_id: str | None) -> None:
        self.own = own_user_id
        self.rows = Rows(own_user_id)
        self.mutes = MuteProjector()
        self.events = EventHandlers(self.rows, own_user_id, self.mutes)
        reminders = ReminderProjector(own_user_id)
        self._by_type: dict[str, EventHandler] = {
            **self.events.by_type,
            # Tables projected by modules of their own.
            **{kind: reminders.apply for kind in REMINDER_EVENTS},
            **{kind: self.mutes.apply for kind in MUTE_EVENTS},
        }
        local = LocalHandlers(self.rows, own_user_id, self.events.message_new)
        outcomes = OutcomeHandlers(self.rows, own_user_id)
        # Entries whose handlers decode their payloads themselves: the log's summaries and
        # the events of local commands.
        self._self_decoding: dict[str, SummaryHandler] = {
            **self.events.summaries,
            **local.by_topic,
            commands.SUCCEEDED: outcomes.succeeded,
        }
        self._seen_version: tuple[apsw.Connection, int] | None = None

    def forget_cache(self) -> None:
        """Drop what is remembered of rows (after a rollback or a rebuild)."""
        self.events.forget()
        self.rows.forget()
        self.mutes.forget()
        self._seen_version = None

    def apply(self, cursor: apsw.Cursor, items: Iterable[Item]) -> None:
        """Apply `items`, in order, in the caller's transaction."""
        try:
            self._apply(cursor, items)
        except BaseException:
            self.rows.ranges.discard()
            raise
        self.rows.ranges.flush(cursor)

    def _apply(self, cursor: apsw.Cursor, items: Iterable[Item]) -> None:
        self._check_remembered(cursor)
        items = screened(cursor, items)  # values the tables cannot hold: left out, recorded
        by_type = self._by_type
        self_decoding = self._self_decoding
        events = self.events
        removed = self.rows.channels.removed
        decode, mended = payloads.EVENT.strict, payloads.EVENT.mended
        for item in items:
            kind = item.type
            handler = by_type.get(kind)
            if handler is None:
                decodes_itself = self_decoding.get(kind)
                if decodes_itself is not None:
                    events.barrier(cursor)
                    try:
                        decodes_itself(cursor, item)
                    except (*DECODE_ERRORS, *UNAPPLIABLE):
                        logger.warning("could not project %s at position %d", kind,
                                       item.position, exc_info=True)
                    events.barrier(cursor)
                    continue
                if not kind.startswith(POLL_PREFIX):
                    continue  # unknown, ephemeral, or the library's own events: the log keeps them
                handler = events.poll
            try:
                try:
                    event = decode(item.payload)
                except msgspec.ValidationError as refused:
                    event = mended(item.payload, refused)  # a wrong value costs only itself
            except DECODE_ERRORS:
                # Stored verbatim but not shaped as this type says: nothing to project.
                continue
            if removed.known(cursor) and removed.before_removal(
                    cursor, events.cid_of(item, event, event.message), epoch_us(event.created_at)):
                continue  # from before its channel was deleted or left: it stays in the log
            if kind not in RUN_WITH_NEW_MESSAGES:
                events.barrier_for(cursor, item, event)
            try:
                handler(cursor, item, event)
            except UNAPPLIABLE:
                # An event this version cannot apply must not cost the user the event itself:
                # it is in the log, and a rebuild (which skips it the same way) agrees.
                logger.warning("could not project %s at position %d", kind, item.position,
                               exc_info=True)
        events.barrier(cursor)

    def _check_remembered(self, cursor: apsw.Cursor) -> None:
        """Forget remembered rows if another connection may have changed them since."""
        version: Any = cursor.execute(DATA_VERSION).fetchone()
        seen = (cursor.connection, version[0])
        if seen != self._seen_version:
            self.rows.forget_others_rows()
            self.mutes.forget()
        self._seen_version = seen
