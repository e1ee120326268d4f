"""The one writer of `members`, and of `removed_members` (when each member went) and
`member_bans` (when each was last banned from the channel or let back)."""

from __future__ import annotations

from typing import Any

import apsw
import msgspec

from chatledger.projections import payloads
from chatledger.projections.rows.values import as_flag
from chatledger.projections.rowtime import epoch_us, newest

__all__ = ["MemberRows"]

# A member object merges into the row: a field it lacks (or holds null for) keeps what is known,
# since one channel state describes the own user twice (`membership` often without `role`,
# `members[]` with it). `pinned_at` and `archived_at` are the exceptions: null there says
# "not pinned", so only their absence (?10, ?11 false) keeps the row's.
# ?12: the server time of the member object (its own, or its event's): none older than the
# member's removal adds them back.
UPSERT = (
    "INSERT INTO members (cid, user_id, role, channel_role, banned, pinned_at, archived_at, "
    "created_at, updated_at) SELECT ?1, ?2, ?3, ?4, coalesce(?5, 0), ?6, ?7, ?8, ?9 "
    "WHERE NOT EXISTS (SELECT 1 FROM removed_members "
    "WHERE cid=?1 AND user_id=?2 AND removed_at >= ?12) "
    "ON CONFLICT (cid, user_id) DO UPDATE SET role=coalesce(?3, role), "
    "channel_role=coalesce(?4, channel_role), "
    # A ban or unban in the channel newer than the object stands (see SET_BANNED).
    "banned=iif(?5 IS NOT NULL AND (?12 IS NULL OR NOT EXISTS (SELECT 1 FROM member_bans "
    "WHERE cid=?1 AND user_id=?2 AND banned_at > ?12)), ?5, banned), "
    "pinned_at=iif(?10, ?6, pinned_at), archived_at=iif(?11, ?7, archived_at), "
    "created_at=coalesce(?8, created_at), updated_at=coalesce(?9, updated_at) "
    # An older object of the member, delivered late, does not replace a newer one.
    "WHERE ?9 IS NULL OR members.updated_at IS NULL OR ?9 >= members.updated_at")
REMOVE = ("DELETE FROM members WHERE cid=?1 AND user_id=?2 "
          "AND (?3 IS NULL OR updated_at IS NULL OR updated_at <= ?3)")
REMEMBER_REMOVED = (
    "INSERT INTO removed_members (cid, user_id, removed_at) VALUES (?, ?, ?) "
    "ON CONFLICT (cid, user_id) DO UPDATE SET removed_at=max(removed_at, excluded.removed_at)")
# A ban or unban in one channel at ?2: the newest by the server's clock wins (?2 None: no time,
# it just applies).
SET_BANNED = ("UPDATE members SET banned=?1 WHERE cid=?3 AND user_id=?4 AND (?2 IS NULL OR "
              "NOT EXISTS (SELECT 1 FROM member_bans WHERE cid=?3 AND user_id=?4 "
              "AND banned_at > ?2))")
REMEMBER_BAN = (
    "INSERT INTO member_bans (cid, user_id, banned_at) VALUES (?, ?, ?) "
    "ON CONFLICT (cid, user_id) DO UPDATE SET banned_at=max(banned_at, excluded.banned_at)")
# Whether the own user is a member, and whether any members are known.
OWN_MEMBERSHIP = "SELECT max(user_id = ?), count(*) FROM members WHERE cid=?"
DELETE_OF_CHANNEL = "DELETE FROM members WHERE cid=?"


def _time_or_none(value: str | None | msgspec.UnsetType) -> int | None:
    return None if isinstance(value, msgspec.UnsetType) else epoch_us(value)


class MemberRows:
    """Writes `members` and `removed_members`; remembers, per channel, whether the own user's
    unread counts are kept there."""

    def __init__(self, own_user_id: str | None) -> None:
        self.own = own_user_id
        # Whether the own user's unread counts are kept in a channel (its memberships), as on
        # file: forgotten for a channel whenever its members change.
        self._counts_unread_in: dict[str, bool] = {}

    def forget(self) -> None:
        """Drop what is remembered (a rollback, a rebuild, another connection's commit)."""
        self._counts_unread_in.clear()

    def upsert(self, cursor: apsw.Cursor, cid: str, member: payloads.Member,
               at: int | None = None) -> None:
        """Merge a member object into its row (`at`: the server time of what carried it)."""
        user_id = member.uid
        if not user_id:
            return
        self._counts_unread_in.pop(cid, None)
        updated = epoch_us(member.updated_at)
        cursor.execute(UPSERT, (
            cid, user_id, member.role, member.channel_role,
            None if member.banned is None else as_flag(member.banned),
            _time_or_none(member.pinned_at), _time_or_none(member.archived_at),
            epoch_us(member.created_at), updated,
            member.pinned_at is not msgspec.UNSET, member.archived_at is not msgspec.UNSET,
            newest(updated, at),
        ))

    def remove(self, cursor: apsw.Cursor, cid: str, user_id: str, at: int | None) -> None:
        """A member left (or was removed) at `at`: an older object of them adds them back no
        more."""
        cursor.execute(REMOVE, (cid, user_id, at))
        if at is not None:
            cursor.execute(REMEMBER_REMOVED, (cid, user_id, at))
        self._counts_unread_in.pop(cid, None)

    @staticmethod
    def set_banned(cursor: apsw.Cursor, cid: str, user_id: str, banned: int,
                   at: int | None = None) -> None:
        """Banned from (or let back into) one channel at `at`, the event's server time: an
        older ban or unban, delivered late, changes nothing."""
        cursor.execute(SET_BANNED, (banned, at, cid, user_id))
        if at is not None:
            cursor.execute(REMEMBER_BAN, (cid, user_id, at))

    def counts_unread(self, cursor: apsw.Cursor, cid: str) -> bool:
        """Unread counts are kept for channels the own user is in (or whose members are unknown)."""
        known = self._counts_unread_in.get(cid)
        if known is not None:
            return known
        membership: Any = cursor.execute(OWN_MEMBERSHIP, (self.own, cid)).fetchone()
        is_member, member_count = membership
        counts = self._counts_unread_in[cid] = not member_count or bool(is_member)
        return counts

    def forget_channel(self, cursor: apsw.Cursor, cid: str) -> None:
        cursor.execute(DELETE_OF_CHANNEL, (cid,))
        self._counts_unread_in.pop(cid, None)
