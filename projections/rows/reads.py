"""The one writer of `reads`: how far each user has read each channel, and what was delivered."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import apsw
import msgspec

__all__ = ["ReadRows"]

_encode_json = msgspec.json.Encoder().encode

# Replaces the row unless it holds a newer state (?7: the server time of this one; None for a
# local change, which replaces whatever is on file).
SET = (
    "INSERT INTO reads (cid, user_id, last_read, unread_messages, last_read_message_id, "
    "first_unread_message_id, state_at) VALUES (?,?,?,?,?,?,?) "
    "ON CONFLICT (cid, user_id) DO UPDATE SET last_read=excluded.last_read, "
    "unread_messages=excluded.unread_messages, "
    "last_read_message_id=excluded.last_read_message_id, "
    "first_unread_message_id=excluded.first_unread_message_id, "
    "state_at=coalesce(excluded.state_at, reads.state_at) "
    "WHERE excluded.state_at IS NULL OR reads.state_at IS NULL "
    "OR excluded.state_at >= reads.state_at")
READ_ALL = ("UPDATE reads SET unread_messages=0, last_read=?1, state_at=coalesce(?1, state_at) "
            "WHERE user_id=?2 AND (?1 IS NULL OR state_at IS NULL OR state_at <= ?1)")
# New messages of a run, by creation time (a JSON list): those the read state already covers
# (created before its time) are not unread again.
ADD_UNREAD = (
    "INSERT INTO reads (cid, user_id, unread_messages) SELECT ?1, ?2, json_array_length(?3) "
    "WHERE true ON CONFLICT (cid, user_id) DO UPDATE SET "
    "unread_messages=unread_messages+(SELECT count(*) FROM json_each(?3) "
    "WHERE value IS NULL OR reads.state_at IS NULL OR value > reads.state_at)")
DELIVERED = (
    "INSERT INTO reads (cid, user_id, last_delivered_at, last_delivered_message_id) "
    "VALUES (?,?,?,?) ON CONFLICT (cid, user_id) DO UPDATE SET "
    "last_delivered_at=excluded.last_delivered_at, "
    "last_delivered_message_id=excluded.last_delivered_message_id "
    "WHERE excluded.last_delivered_at IS NULL OR reads.last_delivered_at IS NULL "
    "OR excluded.last_delivered_at >= reads.last_delivered_at")
# The columns a local command's undo keeps of a read row.
_KEPT = ("last_read, unread_messages, last_read_message_id, first_unread_message_id, "
         "last_delivered_at, last_delivered_message_id, state_at")
ROW = f"SELECT {_KEPT} FROM reads WHERE cid=? AND user_id=?"
DELETE = "DELETE FROM reads WHERE cid=? AND user_id=?"
RESTORE = f"INSERT INTO reads (cid, user_id, {_KEPT}) VALUES (?,?,?,?,?,?,?,?,?)"
DELETE_OF_CHANNEL = "DELETE FROM reads WHERE cid=?"


class ReadRows:
    """Writes `reads`; `own_user_id` is the user whose unread counts a run of new messages
    moves."""

    def __init__(self, own_user_id: str | None) -> None:
        self.own = own_user_id

    @staticmethod
    def set(
        cursor: apsw.Cursor, cid: str, user_id: str, *, last_read: int | None, unread: int,
        last_read_message_id: str | None, first_unread_message_id: str | None = None,
        state_at: int | None = None,
    ) -> None:
        """Replace a read row, unless it holds a newer state (`state_at`: the server time of
        this one; None for a local change, which replaces whatever is on file)."""
        cursor.execute(SET, (cid, user_id, last_read, unread, last_read_message_id,
                             first_unread_message_id, state_at))

    @staticmethod
    def read_all(cursor: apsw.Cursor, user_id: str, at: int | None) -> None:
        """`notification.mark_read` without a channel: the user read everything at `at`."""
        cursor.execute(READ_ALL, (at, user_id))

    def add_unread(self, cursor: apsw.Cursor,
                   unread: Iterable[tuple[str, list[int | None]]]) -> None:
        """New messages of others, by channel (their creation times): the own counts grow."""
        if rows := [(cid, self.own, _encode_json(times).decode()) for cid, times in unread]:
            cursor.executemany(ADD_UNREAD, rows)

    @staticmethod
    def delivered(cursor: apsw.Cursor, cid: str, user_id: str, at: int | None,
                  message_id: str | None) -> None:
        cursor.execute(DELIVERED, (cid, user_id, at, message_id))

    @staticmethod
    def forget_channel(cursor: apsw.Cursor, cid: str) -> None:
        cursor.execute(DELETE_OF_CHANNEL, (cid,))

    # -- the own row, for a local command's undo -----------------------------------------------

    def own_row(self, cursor: apsw.Cursor, cid: str) -> list[Any] | None:
        """The own read row of a channel, as `restore_own` puts it back."""
        row = cursor.execute(ROW, (cid, self.own)).fetchone()
        return list(row) if row is not None else None

    def restore_own(self, cursor: apsw.Cursor, cid: str, was: list[Any] | None) -> None:
        """Put back the own read row `own_row` read (None: there was none)."""
        cursor.execute(DELETE, (cid, self.own))
        if was is not None:
            cursor.execute(RESTORE, (cid, self.own, *was))
