"""The one writer of `drafts`: one row per (channel, thread) with a draft (`parent_id` '' for
the channel itself)."""

from __future__ import annotations

from typing import Any

import apsw

__all__ = ["DraftRows"]

SAVE = ("INSERT INTO drafts (cid, parent_id, created_at, position) VALUES (?,?,?,?) "
        "ON CONFLICT (cid, parent_id) DO UPDATE SET created_at=excluded.created_at, "
        "position=excluded.position")
DELETE = "DELETE FROM drafts WHERE cid=? AND parent_id=?"
ROW = "SELECT created_at, position FROM drafts WHERE cid=? AND parent_id=?"
RESTORE = "INSERT INTO drafts (cid, parent_id, created_at, position) VALUES (?,?,?,?)"
DELETE_OF_CHANNEL = "DELETE FROM drafts WHERE cid=?"


class DraftRows:
    """Writes `drafts`."""

    @staticmethod
    def save(cursor: apsw.Cursor, cid: str, parent_id: str, created_at: int | None,
             position: int) -> None:
        cursor.execute(SAVE, (cid, parent_id, created_at, position))

    @staticmethod
    def delete(cursor: apsw.Cursor, cid: str, parent_id: str) -> None:
        cursor.execute(DELETE, (cid, parent_id))

    @staticmethod
    def row(cursor: apsw.Cursor, cid: str, parent_id: str) -> list[Any] | None:
        """[created_at, position] of the draft, as `restore` puts it back; None without one."""
        found = cursor.execute(ROW, (cid, parent_id)).fetchone()
        return list(found) if found is not None else None

    @staticmethod
    def restore(cursor: apsw.Cursor, cid: str, parent_id: str, was: list[Any] | None) -> None:
        """Put back the row `row` read (None: there was none)."""
        cursor.execute(DELETE, (cid, parent_id))
        if was is not None:
            cursor.execute(RESTORE, (cid, parent_id, *was))

    @staticmethod
    def forget_channel(cursor: apsw.Cursor, cid: str) -> None:
        cursor.execute(DELETE_OF_CHANNEL, (cid,))
