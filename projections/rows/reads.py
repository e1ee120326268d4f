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
# Everything read at ?1: no message is a first unread one any more.
READ_ALL = ("UPDATE reads SET unread_messages=0, last_read=?1, first_unread_message_id=NULL, "
            "state_at=coalesce(?1, state_at) "
            "WHERE user_id=?2 AND (?1 IS NULL OR state_at IS NULL OR state_at <= ?1)")
# ... also, for the own user, in the channels without a read row yet: a message from before then,
# delivered late, is not unread there either (see ADD_UNREAD).
READ_ALL_WITHOUT_ROW = (
    "INSERT INTO reads (cid, user_id, last_read, unread_messages, state_at) "
    "SELECT cid, ?2, ?1, 0, ?1 FROM channels WHERE ?1 IS NOT NULL "
    "ON CONFLICT (cid, user_id) DO NOTHING")
# New messages of a run, by creation time (a JSON list): those the read state already covers
# (created before its time) are not unread again.
ADD_UNREAD = (
    "INSERT INTO reads (cid, user_id, unread_messages) SELECT ?1, ?2, json_array_length(?3) "
    "WHERE true ON CONFLICT (cid, user_id) DO UPDATE SET "
    "unread_messages=unread_messages+(SELECT count(*) FROM json_each(?3) "
    "WHERE value IS NULL OR reads.state_at IS NULL OR value > reads.state_at)")
# A read state of server time ?3 arrived after messages created later than that: they count on
# top of it, as they would have had they arrived after it (see ADD_UNREAD; a message of a
# channel muted when it was created counts as it did then, not at all).
# Messages that never count as unread (`apply` files new messages by the same rule).
NOT_UNREAD_TYPES = ("system", "ephemeral", "error")
# A message `m` the user ?2 counts unread: of another user, shown in the channel, not silent.
_NOT_UNREAD_LIST = ", ".join(f"'{kind}'" for kind in NOT_UNREAD_TYPES)
_COUNTS_UNREAD = (
    "(m.parent_id IS NULL OR m.show_in_channel=1) AND coalesce(m.user_id, '') != ?2 "
    f"AND m.type NOT IN ({_NOT_UNREAD_LIST}) AND m.silent=0")
ADD_UNREAD_AFTER = (
    "UPDATE reads SET unread_messages=unread_messages+(SELECT count(*) FROM messages m "
    f"WHERE m.cid=?1 AND m.created_at > ?3 AND {_COUNTS_UNREAD} AND NOT EXISTS (SELECT 1 FROM channel_mutes mu WHERE mu.cid=?1 "
    "AND (mu.expires IS NULL OR mu.expires > m.created_at))) WHERE cid=?1 AND user_id=?2")
DELIVERED = (
    "INSERT INTO reads (cid, user_id, last_delivered_at, last_delivered_message_id) "
    "VALUES (?,?,?,?) ON CONFLICT (cid, user_id) DO UPDATE SET "
    "last_delivered_at=excluded.last_delivered_at, "
    "last_delivered_message_id=excluded.last_delivered_message_id "
    "WHERE excluded.last_delivered_at IS NULL OR reads.last_delivered_at IS NULL "
    "OR excluded.last_delivered_at >= reads.last_delivered_at")
# A truncation removed the messages before the cut: the user's unread count of channel ?1 is at
# most the messages left that count as unread (of others, shown in the channel, newer than the
# last read), as a client counts them again after the cut. (Deleted ones too: a deletion does not
# change an unread count, in whichever order it arrives.)
CAP_UNREAD_AFTER_CUT = (
    "UPDATE reads SET unread_messages=min(unread_messages, (SELECT count(*) FROM messages m "
    f"WHERE m.cid=?1 AND m.created_at > coalesce(reads.last_read, -1) AND {_COUNTS_UNREAD})) "
    "WHERE cid=?1 AND user_id=?2 AND unread_messages > 0")
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
    ) -> bool:
        """Replace a read row, unless it holds a newer state (`state_at`: the server time of
        this one; None for a local change, which replaces whatever is on file); True when
        replaced."""
        cursor.execute(SET, (cid, user_id, last_read, unread, last_read_message_id,
                             first_unread_message_id, state_at))
        return cursor.connection.changes() > 0

    @staticmethod
    def add_unread_after(cursor: apsw.Cursor, cid: str, user_id: str, after: int) -> None:
        """The user's read state of `cid` is of server time `after`: the messages on file
        created since (delivered before it) are unread on top of it."""
        cursor.execute(ADD_UNREAD_AFTER, (cid, user_id, after))

    def read_all(self, cursor: apsw.Cursor, user_id: str, at: int | None) -> None:
        """`notification.mark_read` without a channel: the user read everything at `at`."""
        cursor.execute(READ_ALL, (at, user_id))
        if user_id == self.own:
            # Unread counts are the own user's only: another user gets no row in every
            # channel of the store (most of which they are not in).
            cursor.execute(READ_ALL_WITHOUT_ROW, (at, user_id))

    def add_unread(self, cursor: apsw.Cursor,
                   unread: Iterable[tuple[str, list[int | None]]]) -> None:
        """New messages of others, by channel (their creation times): the own counts grow."""
        if rows := [(cid, self.own, _encode_json(times).decode()) for cid, times in unread]:
            cursor.executemany(ADD_UNREAD, rows)

    @staticmethod
    def delivered(cursor: apsw.Cursor, cid: str, user_id: str, at: int | None,
                  message_id: str | None) -> None:
        cursor.execute(DELIVERED, (cid, user_id, at, message_id))

    def cap_unread_after_cut(self, cursor: apsw.Cursor, cid: str) -> None:
        """Channel `cid` was truncated: the own unread count counts only what is left."""
        if self.own is not None:
            cursor.execute(CAP_UNREAD_AFTER_CUT, (cid, self.own))

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
