"""Reminders: "remind me about this message", as the backend keeps them for the own user.

`reminder.created`, `reminder.updated`, `reminder.deleted` and `notification.reminder_due` each
carry `reminder` (`message_id`, `cid`, `user_id`, `remind_at` or none, `created_at`,
`updated_at`). One row per (message, user) in the `reminders` table (see `schema`); the object itself stays in
the log, at the row's `position`.

The newest state wins, by the server's clock: an event changes a row only when its time (the
reminder's `updated_at`, else the event's `created_at`) is not older than what the row holds.
A deleted reminder keeps a tombstone row (`deleted_at`) so that an older event arriving late
cannot bring it back; a newer `reminder.created` can.
"""

from __future__ import annotations

from typing import Any

import apsw
import msgspec

from chatledger.projections import payloads
from chatledger.projections.item import Item
from chatledger.projections.rowtime import epoch_us

__all__ = ["EVENT_TYPES", "ReminderProjector", "LIST_REMINDERS", "reminder_object"]

EVENT_TYPES = ("reminder.created", "reminder.updated", "reminder.deleted",
               "notification.reminder_due")




class _Reminder(msgspec.Struct, gc=False):
    message_id: str | None = None
    cid: str | None = None
    user_id: str | None = None
    remind_at: str | None = None
    created_at: str | None = None
    updated_at: str | None = None


class _ReminderEvent(msgspec.Struct, gc=False):
    type: str = ""
    created_at: str | None = None
    cid: str | None = None
    user_id: str | None = None
    reminder: _Reminder | None = None


# (A value of the wrong type, a numeric id say, costs only itself: `payloads.Decoder`.)
_DECODE = payloads.Decoder(_ReminderEvent).decode

# A row changes only for a state at least as new as the one it holds (deleted or not).
_NOT_OLDER = "{time} >= max(coalesce(reminders.updated_at, 0), coalesce(reminders.deleted_at, 0))"
_UPSERT = (
    "INSERT INTO reminders (message_id, user_id, cid, remind_at, created_at, updated_at, due, "
    "deleted_at, position) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, NULL, ?8) "
    "ON CONFLICT (message_id, user_id) DO UPDATE SET "
    "cid=coalesce(excluded.cid, reminders.cid), remind_at=excluded.remind_at, "
    "created_at=coalesce(excluded.created_at, reminders.created_at), "
    # A due notice carries the reminder's own state (its `updated_at`): that state, delivered
    # again or late, leaves it due; a newer state says afresh.
    "updated_at=excluded.updated_at, due=iif(excluded.updated_at = reminders.updated_at "
    "AND reminders.deleted_at IS NULL, max(excluded.due, reminders.due), excluded.due), "
    "deleted_at=NULL, "
    "position=excluded.position WHERE " + _NOT_OLDER.format(time="?6")
)
_DELETE = (
    "INSERT INTO reminders (message_id, user_id, cid, updated_at, deleted_at, position) "
    "VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (message_id, user_id) DO UPDATE SET "
    "deleted_at=excluded.deleted_at, due=0, position=excluded.position "
    "WHERE " + _NOT_OLDER.format(time="?5")
)

# Reading: the live reminders, soonest first (those without a time last), then by message.
LIST_REMINDERS = (
    "SELECT message_id, user_id, cid, remind_at, created_at, updated_at, due, position "
    "FROM reminders WHERE deleted_at IS NULL AND (?1 IS NULL OR cid = ?1) "
    "AND (?2 = 0 OR due = 1) "
    "ORDER BY remind_at IS NULL, remind_at, created_at, message_id"
)
LISTED_COLUMNS = ("message_id", "user_id", "cid", "remind_at", "created_at", "updated_at", "due")


class ReminderProjector:
    """Applies reminder events to the `reminders` table; `own_user_id` owns reminders that do
    not name their user."""

    def __init__(self, own_user_id: str | None) -> None:
        self.own = own_user_id

    def apply(self, cursor: apsw.Cursor, item: Item, *_: object) -> None:
        """A handler for any of `EVENT_TYPES` (extra arguments, such as the decoded event the
        projector passes its handlers, are ignored)."""
        try:
            event = _DECODE(item.payload)
        except (msgspec.MsgspecError, ValueError, RecursionError):
            return  # stored verbatim, but not shaped as a reminder event: nothing to project
        reminder = event.reminder
        if reminder is None or not reminder.message_id:
            return
        user_id = reminder.user_id or event.user_id or self.own
        if user_id is None:
            return
        cid = reminder.cid or (event.cid if event.cid and event.cid != "*" else None)
        event_at = epoch_us(event.created_at)
        if event.type == "reminder.deleted":
            deleted_at = event_at or epoch_us(reminder.updated_at) or 0
            cursor.execute(_DELETE, (reminder.message_id, user_id, cid, epoch_us(reminder.updated_at),
                                deleted_at, item.position))
            return
        updated_at = epoch_us(reminder.updated_at) or event_at or 0
        due = 1 if event.type == "notification.reminder_due" else 0
        cursor.execute(_UPSERT, (reminder.message_id, user_id, cid, epoch_us(reminder.remind_at),
                            epoch_us(reminder.created_at), updated_at, due, item.position))


def reminder_object(payload: bytes) -> dict[str, Any] | None:
    """The `reminder` object of an entry's payload, as it arrived (None when it has none)."""
    try:
        document = msgspec.json.decode(payload)
    except (msgspec.MsgspecError, ValueError, RecursionError):
        return None
    value = document.get("reminder") if isinstance(document, dict) else None
    return value if isinstance(value, dict) else None
