"""The one writer of `users`, and of `user_bans` (when each user was last banned or let
back)."""

from __future__ import annotations

import apsw

from chatledger.projections import payloads
from chatledger.projections.rows.values import as_flag
from chatledger.projections.rowtime import epoch_us
from chatledger.projections.schema import SLOT_EVENT

__all__ = ["UserRows"]

USERS_REMEMBERED = 100_000
_MISSING = object()  # a user not remembered yet (None: remembered as not on file)

# The newest time a user object carries (0 for none): it orders the objects of one user.
_USER_TIME = ("max(coalesce({0}.updated_at, 0), coalesce({0}.last_active, 0), "
              "coalesce({0}.deleted_at, 0))")
ON_FILE = ("SELECT name, role, online, banned, last_active, updated_at, deleted_at FROM users "
           "WHERE id=?")
UPSERT = (
    "INSERT INTO users (id, name, role, online, banned, last_active, updated_at, deleted_at, "
    "position, slot) VALUES (?,?,?,?,?,?,?,?,?,?) ON CONFLICT (id) DO UPDATE SET "
    "name=excluded.name, role=excluded.role, online=excluded.online, "
    # A ban or unban (`user_bans`) newer than the object stands: the object's `banned` is older
    # news then (one carried by a message after the ban, say, with the user's old times).
    f"banned=iif({_USER_TIME.format('excluded')} >= coalesce((SELECT banned_at FROM user_bans "
    "WHERE user_bans.user_id=users.id), 0), excluded.banned, users.banned), "
    "last_active=excluded.last_active, "
    "updated_at=excluded.updated_at, deleted_at=excluded.deleted_at, "
    "position=excluded.position, slot=excluded.slot "
    # An older object of the user, delivered late, does not replace a newer one.
    f"WHERE {_USER_TIME.format('excluded')} = 0 "
    f"OR {_USER_TIME.format('excluded')} >= {_USER_TIME.format('users')} "
    "RETURNING banned")
# A ban or unban at ?2: the newest by the server's clock wins (?2 None: no time, it just applies).
SET_BANNED = ("UPDATE users SET banned=?1 WHERE id=?3 AND (?2 IS NULL OR NOT EXISTS ("
              "SELECT 1 FROM user_bans WHERE user_id=?3 AND banned_at > ?2))")
REMEMBER_BAN = ("INSERT INTO user_bans (user_id, banned_at) VALUES (?, ?) ON CONFLICT (user_id) "
                "DO UPDATE SET banned_at=max(banned_at, excluded.banned_at)")


class UserRows:
    """Writes `users`; remembers rows as on file across appends while no other connection
    writes: a message carries its author, and most authors are unchanged since the last
    message."""

    def __init__(self) -> None:
        self._on_file: dict[str, tuple[object, ...] | None] = {}
        # By user id, the object last seen that says what the row on file says: an equal
        # object (msgspec compares the fields in C) needs neither its times parsed nor a row
        # built to compare. Dropped whenever the row is written or forgotten.
        self._agreeing: dict[str, payloads.User] = {}

    def forget(self) -> None:
        """Drop the rows remembered (a rollback, a rebuild, another connection's commit)."""
        self._on_file.clear()
        self._agreeing.clear()

    def remember(self, cursor: apsw.Cursor, user: payloads.User | None, position: int,
                 slot: int = SLOT_EVENT) -> None:
        """Upsert a user seen in passing, unless the row on file already says the same (`slot`:
        where the object is in the entry; see the `users` table)."""
        if user is None:
            return
        user_id = user.id
        if not user_id or self._agreeing.get(user_id) == user:
            return
        # Decided by the row on file (remembered only as it is on file): a rebuild must make the
        # same choice, or `verify` would find the positions differ.
        on_file = self._on_file.get(user_id, _MISSING)
        if on_file is _MISSING:
            on_file = cursor.execute(ON_FILE, (user_id,)).fetchone()
            self._keep(user_id, on_file)
        if on_file == (user.name, user.role, as_flag(user.online), as_flag(user.banned),
                       epoch_us(user.last_active), epoch_us(user.updated_at),
                       epoch_us(user.deleted_at)):
            self._agreeing[user_id] = user
            return
        self.upsert(cursor, user, position, slot=slot)

    def upsert(self, cursor: apsw.Cursor, user: payloads.User, position: int, *,
               slot: int = SLOT_EVENT) -> None:
        """File the user object unless the row holds a newer one."""
        assert user.id is not None
        row = (user.name, user.role, as_flag(user.online), as_flag(user.banned),
               epoch_us(user.last_active), epoch_us(user.updated_at), epoch_us(user.deleted_at))
        filed = cursor.execute(UPSERT, (user.id, *row, position, slot)).fetchall()
        if filed:
            # (The row's `banned` may be a newer ban's, not the object's.)
            self._keep(user.id, (*row[:3], filed[0][0], *row[4:]))
        else:
            self._on_file.pop(user.id, None)  # the row on file stands
            self._agreeing.pop(user.id, None)

    def set_banned(self, cursor: apsw.Cursor, user_id: str, banned: int,
                   at: int | None = None) -> None:
        """Banned (or let back) everywhere at `at`, the event's server time: an older ban or
        unban, delivered late, changes nothing."""
        cursor.execute(SET_BANNED, (banned, at, user_id))
        if at is not None:
            cursor.execute(REMEMBER_BAN, (user_id, at))
        self._on_file.pop(user_id, None)
        self._agreeing.pop(user_id, None)

    def _keep(self, user_id: str, row: tuple[object, ...] | None) -> None:
        """Remember `row` as the user's row on file (None: no row)."""
        if len(self._on_file) >= USERS_REMEMBERED:
            self._on_file.clear()  # a bound on memory; forgotten rows are read again
            self._agreeing.clear()
        self._on_file[user_id] = row
        self._agreeing.pop(user_id, None)
