"""The one writer of `reactions` and of its tombstones, `deleted_reactions`."""

from __future__ import annotations

from typing import Any

import apsw

__all__ = ["ReactionKey", "ReactionRows"]

ReactionKey = tuple[str, str, str]  # (message id, user id, reaction type): a row's key

# A reaction is newer than the row of its key, and than any deletion of it, or changes nothing.
# The newer state wins whole: a reaction removed and given again (its deletion delivered late)
# shows the creation time of the second one, as the backend does.
UPSERT = (
    "INSERT INTO reactions (message_id, user_id, type, score, created_at, updated_at, position) "
    "SELECT ?1,?2,?3,?4,?5,?6,?7 "
    "WHERE NOT EXISTS (SELECT 1 FROM deleted_messages WHERE id=?1) "
    "AND NOT EXISTS (SELECT 1 FROM deleted_reactions "
    "WHERE message_id=?1 AND user_id=?2 AND type=?3 AND deleted_at >= ?6) "
    "ON CONFLICT (message_id, user_id, type) DO UPDATE SET score=excluded.score, "
    "created_at=coalesce(excluded.created_at, reactions.created_at), "
    "updated_at=excluded.updated_at, position=excluded.position "
    "WHERE excluded.updated_at IS NULL OR reactions.updated_at IS NULL "
    "OR excluded.updated_at >= reactions.updated_at")
FORGET_DELETION = ("DELETE FROM deleted_reactions WHERE message_id=? AND user_id=? "
                   "AND type=? AND deleted_at < ?")
DELETE = (
    "DELETE FROM reactions WHERE message_id=?1 AND user_id=?2 AND type=?3 "
    "AND (?4 IS NULL OR updated_at IS NULL OR updated_at <= ?4)")
# Remembered only while no newer reaction of the key is on file (that one wins anyway).
TOMBSTONE = (
    "INSERT INTO deleted_reactions (message_id, user_id, type, deleted_at) SELECT ?1,?2,?3,?4 "
    "WHERE ?4 IS NOT NULL AND NOT EXISTS (SELECT 1 FROM reactions "
    "WHERE message_id=?1 AND user_id=?2 AND type=?3) "
    "ON CONFLICT (message_id, user_id, type) DO UPDATE "
    "SET deleted_at=max(deleted_at, excluded.deleted_at)")
DELETE_OF_MESSAGE = "DELETE FROM reactions WHERE message_id=?"
DELETE_OF_CHANNEL = ("DELETE FROM reactions "
                     "WHERE message_id IN (SELECT id FROM messages WHERE cid=?)")

# A local command's reactions: the own user's, as the command asks, without the checks above
# (nothing the backend says about the key can be newer than the user's own request yet).
OWN_OF_MESSAGE = ("SELECT type, score, created_at, updated_at, position FROM reactions "
                  "WHERE message_id=? AND user_id=? ORDER BY type")
DELETE_OWN = "DELETE FROM reactions WHERE message_id=? AND user_id=?"
DELETE_OWN_OF_TYPE = "DELETE FROM reactions WHERE message_id=? AND user_id=? AND type=?"
PUT_OWN = (
    "INSERT INTO reactions (message_id, user_id, type, score, created_at, updated_at, "
    "position) VALUES (?,?,?,?,?,?,?) ON CONFLICT (message_id, user_id, type) DO "
    "UPDATE SET score=excluded.score, updated_at=excluded.updated_at, "
    "position=excluded.position")
DELETE_PUT_BY = "DELETE FROM reactions WHERE message_id=? AND user_id=? AND position=?"
RESTORE_OWN = ("INSERT OR IGNORE INTO reactions (message_id, user_id, type, score, created_at, "
               "updated_at, position) VALUES (?,?,?,?,?,?,?)")
# The backend's answer to a command's reaction replaces what the command put there.
CONFIRM_OWN = (
    "UPDATE reactions SET score=coalesce(?, score), created_at=coalesce(?, created_at),"
    " updated_at=coalesce(?, updated_at), position=? "
    "WHERE message_id=? AND user_id=? AND type=? AND position=?")


class ReactionRows:
    """Writes `reactions` and `deleted_reactions`."""

    @staticmethod
    def upsert(cursor: apsw.Cursor, key: ReactionKey, score: int, created_at: int | None,
               stamp: int | None, position: int) -> None:
        """File a reaction of server time `stamp` unless a newer state or deletion of its key
        is on file (`OverflowError`: a score the table cannot hold)."""
        cursor.execute(UPSERT, (*key, score, created_at, stamp, position))
        if cursor.connection.changes() and stamp is not None:
            cursor.execute(FORGET_DELETION, (*key, stamp))

    @staticmethod
    def delete(cursor: apsw.Cursor, key: ReactionKey, deleted_at: int | None) -> None:
        """The backend deleted a reaction at `deleted_at`: an older state of it, delivered
        late, does not bring it back."""
        cursor.execute(DELETE, (*key, deleted_at))
        cursor.execute(TOMBSTONE, (*key, deleted_at))

    @staticmethod
    def forget_message(cursor: apsw.Cursor, message_id: str) -> None:
        cursor.execute(DELETE_OF_MESSAGE, (message_id,))

    @staticmethod
    def forget_channel(cursor: apsw.Cursor, cid: str) -> None:
        cursor.execute(DELETE_OF_CHANNEL, (cid,))

    # -- the own user's, from local commands ---------------------------------------------------

    @staticmethod
    def own_of_message(cursor: apsw.Cursor, message_id: str,
                       own_user_id: str) -> list[list[Any]]:
        """The own reactions to a message: [type, score, created_at, updated_at, position]."""
        return [list(row) for row in cursor.execute(OWN_OF_MESSAGE, (message_id, own_user_id))]

    @staticmethod
    def put_own(cursor: apsw.Cursor, message_id: str, own_user_id: str, reaction_type: str,
                score: int, at: int, position: int, *, unique: bool) -> None:
        """A reaction sent from here (`unique`: it replaces the user's others)."""
        if unique:
            cursor.execute(DELETE_OWN, (message_id, own_user_id))
        cursor.execute(PUT_OWN, (message_id, own_user_id, reaction_type, score, at, at,
                                 position))

    @staticmethod
    def delete_own(cursor: apsw.Cursor, message_id: str, own_user_id: str,
                   reaction_type: str | None) -> None:
        cursor.execute(DELETE_OWN_OF_TYPE, (message_id, own_user_id, reaction_type))

    @staticmethod
    def restore_own(cursor: apsw.Cursor, message_id: str, own_user_id: str, put_at: int,
                    before: list[list[Any]], message_on_file: bool) -> None:
        """Undo a cancelled command's reaction: only what it put there (at position `put_at`)
        goes; what arrived since from the backend stays. `before`: the rows it replaced, put
        back unless the message is gone meanwhile (its reactions went with it)."""
        cursor.execute(DELETE_PUT_BY, (message_id, own_user_id, put_at))
        if not message_on_file:
            return
        cursor.executemany(RESTORE_OWN, [(message_id, own_user_id, *row) for row in before])

    @staticmethod
    def confirm_own(cursor: apsw.Cursor, key: ReactionKey, put_at: int, *, score: int | None,
                    created_at: int | None, updated_at: int | None, position: int) -> None:
        """The backend's answer becomes the row a command put there (at position `put_at`)."""
        message_id, user_id, reaction_type = key
        cursor.execute(CONFIRM_OWN, (score, created_at, updated_at, position, message_id,
                                     user_id, reaction_type, put_at))
