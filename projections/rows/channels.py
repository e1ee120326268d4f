"""The one writer of `channels`, and of `deleted_channels` (the channels gone, and when)."""

from __future__ import annotations

from collections.abc import Sequence

from typing import Any

import apsw

from chatledger.projections import payloads
from chatledger.projections.rows.values import as_flag
from chatledger.projections.rowtime import epoch_us

__all__ = ["ChannelRows", "RemovedChannels", "RunOfChannel"]

# What a run of new messages did to one channel: (cid, type, id, newest message time, member
# count, message count, the counts' server time, the newest message that shows the channel
# again if hidden).
RunOfChannel = tuple[str, str, str, int | None, int | None, int | None, int | None, int | None]

# Channels remembered as having a row (see `ChannelRows`): a bound on memory.
CHANNELS_REMEMBERED = 100_000

ENSURE = "INSERT OR IGNORE INTO channels (cid, type, id) VALUES (?,?,?)"
UPSERT = (
    "INSERT INTO channels (cid, type, id, name, created_by, created_at, updated_at, "
    "last_message_at, member_count, frozen, disabled, hidden, team, truncated_at, "
    "deleted_at, custom, position, slot) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?) "
    "ON CONFLICT (cid) DO UPDATE SET type=excluded.type, id=excluded.id, "
    "name=excluded.name, created_by=excluded.created_by, created_at=excluded.created_at, "
    "updated_at=excluded.updated_at, "
    "last_message_at=max(coalesce(excluded.last_message_at, 0), "
    "coalesce(channels.last_message_at, 0)), "
    "member_count=coalesce(excluded.member_count, channels.member_count), "
    "frozen=excluded.frozen, disabled=excluded.disabled, "
    "hidden=CASE WHEN ? THEN excluded.hidden ELSE channels.hidden END, team=excluded.team, "
    "truncated_at=max(coalesce(excluded.truncated_at, 0), coalesce(channels.truncated_at, 0)), "
    "deleted_at=excluded.deleted_at, "
    "custom=excluded.custom, position=excluded.position, slot=excluded.slot "
    # An older object of the channel, delivered late, does not replace a newer one.
    "WHERE excluded.updated_at IS NULL OR channels.updated_at IS NULL "
    "OR excluded.updated_at >= channels.updated_at")
# (The max() above makes 0 of an absent time: absent it stays.) A truncation only moves forward:
# a channel object without `truncated_at` (most events' channels, a `channel.updated` after the
# truncation) does not undo it, or messages from before it, delivered late, would come back.
NO_ZERO_LAST_MESSAGE = ("UPDATE channels SET last_message_at=NULLIF(last_message_at, 0), "
                        "truncated_at=NULLIF(truncated_at, 0) WHERE cid=?")
# What a run of new messages did to a channel: filed (even one not heard of before) with its
# newest message time, and the counters the events carried unless the row holds newer ones by
# the server's clock (`counts_at`): a late event does not roll them back. (SET expressions see
# the row as it was.)
# A hidden channel (see `SET_HIDDEN`) is shown again by a message newer than the hide (?8; not
# by one from before it, delivered late): the message's time becomes the flag's. (One statement
# with the counters: a separate UPDATE per channel of the run, nearly always a no-op, cost
# 20,000 statements per 100,000 events.)
_UNHIDES = "hidden=1 AND ?8 > coalesce(hidden_at, 0)"
FLUSH_RUN = (
    "INSERT INTO channels (cid, type, id, last_message_at, member_count, message_count, "
    "counts_at) VALUES (?1,?2,?3,?4,?5,?6,?7) ON CONFLICT (cid) DO UPDATE SET "
    "last_message_at=CASE WHEN excluded.last_message_at > coalesce(last_message_at, 0) "
    "THEN excluded.last_message_at ELSE last_message_at END, "
    "member_count=CASE WHEN excluded.member_count IS NOT NULL AND "
    "coalesce(excluded.counts_at, 0) >= coalesce(counts_at, 0) "
    "THEN excluded.member_count ELSE member_count END, "
    "message_count=CASE WHEN excluded.message_count IS NOT NULL AND "
    "coalesce(excluded.counts_at, 0) >= coalesce(counts_at, 0) "
    "THEN excluded.message_count ELSE message_count END, "
    "counts_at=CASE WHEN coalesce(excluded.counts_at, 0) >= coalesce(counts_at, 0) "
    "AND (excluded.member_count IS NOT NULL OR excluded.message_count IS NOT NULL) "
    "THEN excluded.counts_at ELSE counts_at END, "
    f"hidden=CASE WHEN {_UNHIDES} THEN 0 ELSE hidden END, "
    f"hidden_at=CASE WHEN {_UNHIDES} THEN ?8 ELSE hidden_at END"
)
# `hidden` (per user) changes by events of its own; the newest time it was set wins.
SET_HIDDEN = ("UPDATE channels SET hidden=?1, hidden_at=coalesce(?2, hidden_at) "
              "WHERE cid=?3 AND (?2 IS NULL OR hidden_at IS NULL OR ?2 >= hidden_at)")
# `channel.hidden` with `clear_history`: the channel's history up to then is gone for this user,
# and stays gone for messages of that time delivered late.
CLEAR_HISTORY = "UPDATE channels SET cleared_at=max(coalesce(cleared_at, ?1), ?1) WHERE cid=?2"
TRUNCATED_AT = "SELECT truncated_at FROM channels WHERE cid=?"
# A truncation at ?1 is on file even when its channel object was older than the row's (a
# `channel.updated` after it delivered first): messages before the cut stay out.
CUT = "UPDATE channels SET truncated_at=max(coalesce(truncated_at, ?1), ?1) WHERE cid=?2"
LAST_MESSAGE_AT = "SELECT last_message_at FROM channels WHERE cid=?"
# A cancelled send gives back the last message time it moved, unless a newer message moved it.
RESTORE_LAST_MESSAGE_AT = ("UPDATE channels SET last_message_at=? "
                           "WHERE cid=? AND last_message_at=?")
DELETE = "DELETE FROM channels WHERE cid=?"

REMOVED = "SELECT cid, deleted_at FROM deleted_channels"
REMOVE = ("INSERT INTO deleted_channels (cid, deleted_at) VALUES (?, ?) "
          "ON CONFLICT (cid) DO UPDATE SET deleted_at=max(deleted_at, excluded.deleted_at)")


class RemovedChannels:
    """The channels deleted, or left by the own user, and when (`deleted_channels`), remembered
    as on file: whatever happened in such a channel before that, delivered late, is not applied.

    The table is small (channels rarely go), so it is read whole, once, and then followed.
    """

    def __init__(self) -> None:
        self._on_file: dict[str, int] | None = None  # None: to be read

    def forget(self) -> None:
        """Read the table again when next asked (after a rollback, or another connection's
        commit)."""
        self._on_file = None

    def known(self, cursor: apsw.Cursor) -> dict[str, int]:
        if self._on_file is None:
            removed: list[Any] = cursor.execute(REMOVED).fetchall()
            self._on_file = dict(removed)
        return self._on_file

    def record(self, cursor: apsw.Cursor, cid: str, when: int | None) -> None:
        """Channel `cid` was deleted or left at `when` (nothing is recorded without a time)."""
        if when is None:
            return
        cursor.execute(REMOVE, (cid, when))
        known = self.known(cursor)
        known[cid] = max(when, known.get(cid, when))

    def before_removal(self, cursor: apsw.Cursor, cid: str | None, when: int | None) -> bool:
        """True when `when` is earlier than the removal of channel `cid`."""
        if cid is None or when is None:
            return False
        removed = self.known(cursor).get(cid)
        return removed is not None and when < removed


class ChannelRows:
    """Writes `channels` and `deleted_channels` (through `removed`); remembers which channels
    have a row, as on file, while no other connection writes: most events of a channel's
    messages and reactions make sure of its row, ~13,000 INSERTs per 100,000 events that SQLite
    ignored. A hint only in one direction: a cid remembered has a row (this writer deletes
    rows, and forgets them then); one not remembered costs the INSERT."""

    def __init__(self) -> None:
        self.removed = RemovedChannels()
        self._on_file: set[str] = set()

    def forget(self) -> None:
        """Drop what is remembered (a rollback, a rebuild, another connection's commit)."""
        self.removed.forget()
        self._on_file.clear()

    def ensure(self, cursor: apsw.Cursor, cid: str) -> None:
        """A channel first heard of through one of its events gets a row from its cid alone."""
        if cid in self._on_file:
            return
        kind, _, ident = cid.partition(":")
        cursor.execute(ENSURE, (cid, kind, ident))
        if len(self._on_file) >= CHANNELS_REMEMBERED:
            self._on_file.clear()  # a bound on memory; a forgotten cid costs an INSERT
        self._on_file.add(cid)

    @staticmethod
    def upsert(cursor: apsw.Cursor, cid: str, channel: payloads.Channel, custom: str | None,
               position: int, slot: int) -> None:
        """File a channel object (`custom`: its custom fields as JSON) unless the row holds a
        newer one. `hidden` changes only when the object says."""
        kind, _, ident = cid.partition(":")
        cursor.execute(UPSERT, (
            cid, channel.type or kind, channel.id or ident, channel.name,
            channel.created_by.id if channel.created_by else None,
            epoch_us(channel.created_at), epoch_us(channel.updated_at),
            epoch_us(channel.last_message_at), channel.member_count, as_flag(channel.frozen),
            as_flag(channel.disabled), as_flag(channel.hidden), channel.team,
            epoch_us(channel.truncated_at), epoch_us(channel.deleted_at), custom, position, slot,
            channel.hidden is not None))
        cursor.execute(NO_ZERO_LAST_MESSAGE, (cid,))

    @staticmethod
    def flush_run(cursor: apsw.Cursor, runs: Sequence[RunOfChannel]) -> None:
        """Write what a run of new messages did to channels: their newest message times and
        counters, and whether they show again if hidden (one statement per channel)."""
        if runs:
            cursor.executemany(FLUSH_RUN, runs)

    @staticmethod
    def set_hidden(cursor: apsw.Cursor, cid: str, hidden: int, at: int | None) -> None:
        cursor.execute(SET_HIDDEN, (hidden, at, cid))

    @staticmethod
    def clear_history(cursor: apsw.Cursor, cid: str, until: int) -> None:
        cursor.execute(CLEAR_HISTORY, (until, cid))

    @staticmethod
    def truncated_at(cursor: apsw.Cursor, cid: str) -> int | None:
        row = cursor.execute(TRUNCATED_AT, (cid,)).fetchone()
        return row[0] if row and row[0] else None

    @staticmethod
    def cut(cursor: apsw.Cursor, cid: str, at: int) -> None:
        cursor.execute(CUT, (at, cid))

    @staticmethod
    def last_message_at(cursor: apsw.Cursor, cid: str) -> int | None:
        row = cursor.execute(LAST_MESSAGE_AT, (cid,)).fetchone()
        return row[0] if row else None

    @staticmethod
    def restore_last_message_at(cursor: apsw.Cursor, cid: str, was: int | None,
                                moved_to: int | None) -> None:
        cursor.execute(RESTORE_LAST_MESSAGE_AT, (was, cid, moved_to))

    def delete(self, cursor: apsw.Cursor, cid: str) -> None:
        cursor.execute(DELETE, (cid,))
        self._on_file.discard(cid)
