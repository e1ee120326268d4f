"""Ids as people type them: unique prefixes resolve (as in git), and close names are suggested.

The lookups read the read tables' own indexes (`messages.id`, `outbox.id`, `channels.cid`,
`users.id`): a prefix is a range of the index, so a lookup costs the same in a store of any size.
"""

from __future__ import annotations

import difflib
from typing import Literal

from chatledger.errors import AmbiguousId
from chatledger.eventstore.datastore import APSWDatastore

IdKind = Literal["message", "command", "channel", "user"]

# Above every character a stored id can hold: `prefix + _AFTER_ALL` bounds the range of ids
# that start with `prefix` (ids compare by their UTF-8 bytes).


_AFTER_ALL = "\U0010ffff"
# One range query per kind, built once. Deleted messages keep their id in `deleted_messages`:
# `explain` still answers for them.
_PREFIX_QUERIES: dict[str, str] = {
    "message": "SELECT id FROM (SELECT id FROM messages WHERE id >= ? AND id < ? "
               "UNION SELECT id FROM deleted_messages WHERE id >= ? AND id < ?) "
               "ORDER BY id LIMIT ?",
    "command": "SELECT id FROM outbox WHERE id >= ? AND id < ? ORDER BY id LIMIT ?",
    "channel": "SELECT cid FROM channels WHERE cid >= ? AND cid < ? ORDER BY cid LIMIT ?",
    "user": "SELECT id FROM users WHERE id >= ? AND id < ? ORDER BY id LIMIT ?",
}
_ALL_CHANNELS = "SELECT cid FROM channels ORDER BY cid"
_ALL_USERS = "SELECT id FROM users ORDER BY id"


class IdLookup:
    """Prefix lookups and suggestions over one file's read tables."""

    def __init__(self, datastore: APSWDatastore) -> None:
        self.datastore = datastore

    def with_prefix(self, kind: IdKind, prefix: str, *, limit: int = 20) -> list[str]:
        """The ids of `kind` that start with `prefix`, in order, at most `limit`."""
        bounds: tuple[str, ...] = (prefix, prefix + _AFTER_ALL)
        if kind == "message":
            bounds = bounds * 2
        with self.datastore.transaction(commit=False) as cursor:
            return [row[0] for row in cursor.execute(_PREFIX_QUERIES[kind], (*bounds, limit))]

    def resolve(self, kind: IdKind, text: str) -> str | None:
        """The id `text` names: itself when stored, else the one id it is a prefix of; None
        when nothing matches. Raises `AmbiguousId` when several ids start with it."""
        found = self.with_prefix(kind, text, limit=11)
        if not found or text in found:
            return text if found else None
        if len(found) > 1:
            raise AmbiguousId(kind, text, found)
        return found[0]

    def suggest(self, kind: IdKind, text: str, *, limit: int = 3) -> list[str]:
        """Stored ids close to `text`: channels whose id part is `text` (`general` for
        `messaging:general`), then names that differ by a few characters; for users, ids
        that differ by case or a few characters."""
        if kind == "user":
            with self.datastore.transaction(commit=False) as cursor:
                users = [row[0] for row in cursor.execute(_ALL_USERS)]
            same = [user for user in users if user.lower() == text.lower()]
            close = difflib.get_close_matches(text, users, n=limit, cutoff=0.6)
            return list(dict.fromkeys(same + close))[:limit]
        if kind != "channel":
            return []
        with self.datastore.transaction(commit=False) as cursor:
            cids = [row[0] for row in cursor.execute(_ALL_CHANNELS)]
        exact_id = [cid for cid in cids if cid.partition(":")[2] == text]
        close = difflib.get_close_matches(text, cids, n=limit, cutoff=0.6)
        close += difflib.get_close_matches(
            text, [cid.partition(":")[2] for cid in cids], n=limit, cutoff=0.6)
        named = [cid for cid in cids if cid in close or cid.partition(":")[2] in close]
        return list(dict.fromkeys(exact_id + named))[:limit]
