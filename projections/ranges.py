"""Which stretches of a channel's history the store holds whole, and pages that cross the rest.

A channel's messages are ordered by (created_at, id), the cursor of `messages()`. The
`held_ranges` table keeps, per channel, the stretches of that order in which the store holds
every message the channel had (sorted, never overlapping). They grow from:

- a channel state's `messages` page: the backend sent every message between its oldest and its
  newest (`HeldRanges.cover_page`);
- `message.new` (live, or replayed by `/sync`): a channel the client follows gets each new
  message, so the stretch that ends at the newest held message extends to it
  (`HeldRanges.extend_head`). A message older than that end only joins a stretch it falls in.

Everything else is not known to be contiguous: a channel state's `pinned_messages` older than
its page, a message carried by another event (a reaction's, a notification's), messages sent
here and not yet echoed by the backend count as neither held nor missing. A page of messages
that crosses from one stretch to another, or to a message outside every stretch, crosses a
gap: the store may lack messages there (`MessagePage.gaps`).

The store assumes it follows a channel's events without loss between syncs; a gap in the
event stream itself (a reconnect not followed by `/sync`) is not seen here.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

import apsw

__all__ = ["Gap", "HeldRanges", "MessagePage", "RANGES_OVERLAPPING", "find_gaps"]

Key = tuple[int, str]  # (created_at in epoch µs, message id): a message's place in its channel

_COLUMNS = "start_at, start_id, end_at, end_id"
_OVERLAP = "cid=?1 AND (end_at, end_id) >= (?2, ?3) AND (start_at, start_id) <= (?4, ?5)"
_SELECT_OVERLAPPING = f"SELECT {_COLUMNS} FROM held_ranges WHERE {_OVERLAP}"
_DELETE_OVERLAPPING = f"DELETE FROM held_ranges WHERE {_OVERLAP}"
_INSERT = f"INSERT INTO held_ranges (cid, {_COLUMNS}) VALUES (?, ?, ?, ?, ?)"
_HEAD = (f"SELECT {_COLUMNS} FROM held_ranges WHERE cid=? "
         "ORDER BY end_at DESC, end_id DESC LIMIT 1")
_EXTEND_HEAD = ("UPDATE held_ranges SET end_at=?, end_id=? "
                "WHERE cid=? AND start_at=? AND start_id=?")
_FORGET = "DELETE FROM held_ranges WHERE cid=?"
# For reading: the stretches that meet a page's span, in order. Parameters written `+?`: a
# page's statements must not be planned again for each new value (see queries._BOUND).
RANGES_OVERLAPPING = (
    f"SELECT {_COLUMNS} FROM held_ranges WHERE cid=+? "
    "AND (end_at, end_id) >= (+?, +?) AND (start_at, start_id) <= (+?, +?) "
    "ORDER BY start_at, start_id"
)


# Channels whose newest stretch is remembered between appends (a bound on memory).
HEADS_REMEMBERED = 10_000


class _Head:
    """The newest stretch of a channel as it stands; `moved` when its end is not written yet."""

    __slots__ = ("start", "end", "moved")

    def __init__(self, start: Key, end: Key, moved: bool) -> None:
        self.start, self.end, self.moved = start, end, moved

    def write(self, cursor: apsw.Cursor, cid: str) -> None:
        if self.moved:
            cursor.execute(_EXTEND_HEAD, (*self.end, cid, *self.start))


class HeldRanges:
    """Keeps `held_ranges`: the projector calls it as messages arrive.

    A run of `message.new` in one channel moves the end of the same stretch again and again:
    the head of each channel is kept here and written once (`flush`), which the projector does
    at the end of every `apply` (so the table is current whenever a transaction can commit).
    A rebuild of 100,000 events spent 14 % of its time on the SELECT + UPDATE per new message
    this replaces. The heads stay remembered, as on file, across appends: reading each busy
    channel's head again in every batch of 1,000 took 12,500 SELECTs per 100,000 events.
    Contract: nothing but this object writes `held_ranges` on its connection (its own `cover`
    and `forget` write the channel's head first); `discard` drops what is remembered, written
    or not (the transaction is being rolled back, or another connection committed).
    """

    def __init__(self) -> None:
        self._heads: dict[str, _Head] = {}  # by cid

    def cover(self, cursor: apsw.Cursor, cid: str, start: Key, end: Key) -> None:
        """Record that every message of `cid` from `start` to `end` (inclusive) is held,
        merging the stretches this one touches."""
        self._write_head(cursor, cid)
        params = (cid, *start, *end)
        merged_start, merged_end = start, end
        overlapping: list[tuple[Any, ...]] = cursor.execute(_SELECT_OVERLAPPING, params).fetchall()
        for start_at, start_id, end_at, end_id in overlapping:
            merged_start = min(merged_start, (start_at, start_id))
            merged_end = max(merged_end, (end_at, end_id))
        cursor.execute(_DELETE_OVERLAPPING, params)
        cursor.execute(_INSERT, (cid, *merged_start, *merged_end))

    def cover_page(self, cursor: apsw.Cursor, cid: str, keys: Iterable[Key]) -> None:
        """A page of a channel's history as the backend sent it (in any order): whole from its
        oldest message to its newest."""
        ordered = sorted(keys)
        if ordered:
            self.cover(cursor, cid, ordered[0], ordered[-1])

    def extend_head(self, cursor: apsw.Cursor, cid: str, key: Key) -> None:
        """A new message of a followed channel: the newest stretch now reaches it."""
        head = self._heads.get(cid)
        if head is None:
            row: tuple[Any, ...] | None = cursor.execute(_HEAD, (cid,)).fetchone()
            if row is None:
                cursor.execute(_INSERT, (cid, *key, *key))
                self._heads[cid] = _Head(key, key, False)
                return
            start_at, start_id, end_at, end_id = row
            head = self._heads[cid] = _Head((start_at, start_id), (end_at, end_id), False)
        if head.end <= key:
            head.end, head.moved = key, True
        else:  # older than the newest held message: held only if a stretch covers it already
            self.cover(cursor, cid, key, key)

    def flush(self, cursor: apsw.Cursor) -> None:
        """Write the heads moved since the last flush; they stay remembered as on file."""
        for cid, head in self._heads.items():
            head.write(cursor, cid)
            head.moved = False
        if len(self._heads) > HEADS_REMEMBERED:
            self._heads.clear()  # a bound on memory; forgotten heads are read again

    def discard(self) -> None:
        """Forget the heads without writing them (the transaction is rolled back)."""
        self._heads.clear()

    def forget(self, cursor: apsw.Cursor, cid: str) -> None:
        """The channel is gone (deleted, or left)."""
        self._heads.pop(cid, None)
        cursor.execute(_FORGET, (cid,))

    def _write_head(self, cursor: apsw.Cursor, cid: str) -> None:
        """Write channel `cid`'s head if it moved, and forget it (the table is about to change)."""
        head = self._heads.pop(cid, None)
        if head is not None:
            head.write(cursor, cid)


class Gap(NamedTuple):
    """Two neighbouring messages of a page (or the page's cursor and its first message) between
    which the store may lack messages: (created_at, id) of each."""

    older: Key
    newer: Key


class MessagePage(list[Any]):
    """A page of messages, oldest first (a list), that also says whether it is contiguous
    history: `gaps` lists the places where it crosses from one held stretch of the channel's
    history to another, where the store may lack messages; empty when the page holds every
    message between its first and its last (and its cursor)."""

    def __init__(self, items: Iterable[Any] = (), gaps: Sequence[Gap] = ()) -> None:
        super().__init__(items)
        self.gaps: tuple[Gap, ...] = tuple(gaps)

    @property
    def contiguous(self) -> bool:
        return not self.gaps


def find_gaps(ranges: Sequence[tuple[int, str, int, str]], keys: Sequence[Key]) -> list[Gap]:
    """The gaps between neighbouring `keys` (sorted) given the held `ranges` (rows of
    `RANGES_OVERLAPPING`, sorted and disjoint): each pair not inside one range."""
    starts = [(start_at, start_id) for start_at, start_id, _end_at, _end_id in ranges]
    ends = [(end_at, end_id) for _start_at, _start_id, end_at, end_id in ranges]

    def range_of(key: Key) -> int | None:
        index = bisect_right(starts, key) - 1
        if index >= 0 and key <= ends[index]:
            return index
        return None

    gaps = []
    for older, newer in zip(keys, keys[1:]):
        if older == newer:
            continue
        where = range_of(older)
        if where is None or where != range_of(newer):
            gaps.append(Gap(older, newer))
    return gaps
