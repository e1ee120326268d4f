"""The one writer of `drafts`: one row per (channel, thread) with a draft (`parent_id` '' for
the channel itself); and of its tombstones, `deleted_drafts`."""

from __future__ import annotations

from typing import Any

import apsw

__all__ = ["DraftRows"]

SAVE = ("INSERT INTO drafts (cid, parent_id, created_at, position) VALUES (?,?,?,?) "
        "ON CONFLICT (cid, parent_id) DO UPDATE SET created_at=excluded.created_at, "
        "position=excluded.position")
DELETE = "DELETE FROM drafts WHERE cid=? AND parent_id=?"
# The backend's states of a draft: the newest wins, by the draft's `created_at` (a save gives a
# draft a new one; ?3 None: no time, which replaces whatever is on file), and none older than
# the draft's deletion (a `draft.deleted` at `deleted_drafts.deleted_at`) files it again.
SAVE_FROM_BACKEND = (
    "INSERT INTO drafts (cid, parent_id, created_at, position) SELECT ?1,?2,?3,?4 "
    "WHERE NOT EXISTS (SELECT 1 FROM deleted_drafts WHERE cid=?1 AND parent_id=?2 "
    "AND ?3 IS NOT NULL AND deleted_at >= ?3) "
    "ON CONFLICT (cid, parent_id) DO UPDATE SET created_at=excluded.created_at, "
    "position=excluded.position "
    "WHERE excluded.created_at IS NULL OR drafts.created_at IS NULL "
    "OR excluded.created_at >= drafts.created_at")
# A deletion at ?3 removes the draft unless the row is newer (saved again since).
DELETE_FROM_BACKEND = ("DELETE FROM drafts WHERE cid=?1 AND parent_id=?2 "
                       "AND (?3 IS NULL OR created_at IS NULL OR created_at <= ?3)")
REMEMBER_DELETED = (
    "INSERT INTO deleted_drafts (cid, parent_id, deleted_at) VALUES (?,?,?) "
    "ON CONFLICT (cid, parent_id) DO UPDATE SET deleted_at=max(deleted_at, excluded.deleted_at)")
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
    def save_from_backend(cursor: apsw.Cursor, cid: str, parent_id: str,
                          created_at: int | None, position: int) -> None:
        """File the backend's state of a draft unless the row, or its deletion, is newer."""
        cursor.execute(SAVE_FROM_BACKEND, (cid, parent_id, created_at, position))

    @staticmethod
    def deleted_by_backend(cursor: apsw.Cursor, cid: str, parent_id: str,
                           at: int | None) -> None:
        """The backend deleted the draft at `at`: an older state of it, delivered late, does
        not bring it back."""
        cursor.execute(DELETE_FROM_BACKEND, (cid, parent_id, at))
        if at is not None:
            cursor.execute(REMEMBER_DELETED, (cid, parent_id, at))

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
