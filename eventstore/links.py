"""Back-pointers of the log's backend streams: for each entry, how far back the previous entry of
the same stream (channel, or `@user`) is.

The log has no index by stream (see `schema.events_table`: one would cost every append a page per
channel of its batch). The audit questions (`log --cid`, `explain`, `as-of ... channel`) must
still cost what they are about, not the size of the log. So each backend entry gets one small row
in `stream_links` (position, back): `back` is the distance to the previous entry of its stream (0
for the first), times four, plus two bits saying what the entry cannot change (`QUIET`,
`PROFILE`). Rows are appended in position order, at the end of their B-tree, like the log's; the
head of each stream (its last position) is kept with its version in `streams` (see
`streams.StreamHeads`). From the head, the chain gives every position of a stream in one
recursive query that reads only that stream's link rows.

The links are derived data: `relink` recomputes them from the log alone (an upgraded store, a
bundle cut down to some channels). While `META_LINKS_PENDING` is set (an upgrade still computing
them), readers get None from `stream_positions` and scan the log as before.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import Any, NamedTuple, cast

import apsw

LINKS_TABLE = """CREATE TABLE IF NOT EXISTS stream_links (
    position INTEGER PRIMARY KEY,   -- the entry's log position (its rowid in the log)
    back INTEGER NOT NULL           -- 4 x (position minus the previous position of its stream;
                                    -- 0 for the first) + its kind's bits (QUIET, PROFILE)
)"""
# Two bits of `back` say what an entry cannot change, so that a reader leaves it unread (at no
# cost in space: SQLite stores the integers of a 1,000,000-entry log in one or two bytes either
# way). They are many in the user's own stream (`@user`): presence, profiles and reads.
#
# QUIET: kinds that change no message or its reactions, and name none: who is
# online, a user's profile, reads, typing, the connection's health. `explain` leaves them out.
QUIET = 1
# PROFILE: kinds that change nothing a channel's state shows either (`as-of ... channel`): they
# write only the `users` row of the user they carry (`Projector._user_event`), or nothing at all
# (typing and watching are ephemeral). Reads and health checks are not among them: a read
# changes the channel's reads and unread count, a health check the own mutes (which hide a
# channel). Each of these is QUIET too.
PROFILE = 2
PROFILE_TOPICS = frozenset({
    "user.presence.changed", "user.updated", "typing.start", "typing.stop",
    "user.watching.start", "user.watching.stop",
})
QUIET_TOPICS = PROFILE_TOPICS | frozenset({
    "message.read", "notification.mark_read", "health.check",
})
# The bits of each kind that has any (the rest: none).
KIND_BITS = {topic: QUIET | (PROFILE if topic in PROFILE_TOPICS else 0) for topic in QUIET_TOPICS}
# How far `back` is shifted to leave room for the bits.
BITS = 2
LINKS_TABLE_NAME = "stream_links"
# Set (to the last position linked) while an upgrade computes the links; gone when they are whole.
META_LINKS_PENDING = "links_pending"
# The position up to which `streams.head` and `streams.position` are valid (see streams.py).
META_STREAMS_POSITION = "streams_position"

INSERT_LINKS = "INSERT INTO stream_links (position, back) VALUES (?, ?)"
_CLEAR_LINKS = "DELETE FROM stream_links WHERE position > ?"
_GET_META = "SELECT value FROM {schema}chatledger_meta WHERE key=?"
_SET_META = ("INSERT INTO chatledger_meta (key, value) VALUES (?, ?) "
             "ON CONFLICT (key) DO UPDATE SET value = excluded.value")
_DELETE_META = "DELETE FROM chatledger_meta WHERE key=?"
_LAST_OF_STREAMS = ("SELECT originator_id, MAX(rowid) FROM {table} WHERE rowid <= ? AND source != 0 "
                    "GROUP BY originator_id")
_PAGE_OF_STREAMS = ("SELECT rowid, originator_id, topic FROM {table} WHERE rowid > ? "
                    "AND source != 0 ORDER BY rowid LIMIT ?")
_SET_STREAM_POSITION = "UPDATE streams SET position=? WHERE name=?"
_STREAM_HEAD = "SELECT position FROM {schema}streams WHERE name=?"
_TAIL_HEAD = "SELECT MAX(rowid) FROM {schema}{table} WHERE rowid > ? AND originator_id=?"
# The chain from the head back to the first entry, read through the links' primary key only:
# each entry's position and its own link.
_CHAIN = ("WITH RECURSIVE chain(p, back) AS ("
          "SELECT position, back FROM {schema}stream_links WHERE position = ?1 UNION ALL "
          "SELECT l.position, l.back FROM chain JOIN {schema}stream_links AS l "
          "ON l.position = chain.p - (chain.back >> 2) WHERE chain.back >= 4) "
          "SELECT p, back FROM chain")
_HAS_TABLE = "SELECT 1 FROM {schema}sqlite_schema WHERE type='table' AND name='stream_links'"

# Rows of the log read per transaction while an upgrade computes the links.
RELINK_PAGE = 50_000


class _Statements(NamedTuple):
    """The templates above filled in for one schema ("" or "live.") and log table."""

    get_meta: str
    last_of_streams: str
    page_of_streams: str
    stream_head: str
    tail_head: str
    chain: str
    has_table: str


@functools.cache
def _statements(schema: str, table: str) -> _Statements:
    """Each template filled once per schema and table: a process sees one or two of each."""
    return _Statements(
        get_meta=_GET_META.format(schema=schema),
        last_of_streams=_LAST_OF_STREAMS.format(table=table),
        page_of_streams=_PAGE_OF_STREAMS.format(table=table),
        stream_head=_STREAM_HEAD.format(schema=schema),
        tail_head=_TAIL_HEAD.format(schema=schema, table=table),
        chain=_CHAIN.format(schema=schema),
        has_table=_HAS_TABLE.format(schema=schema),
    )


# The own file's meta table (no schema prefix).
_GET_OWN_META = _GET_META.format(schema="")


def link(
    positions: Sequence[int], streams: Sequence[str], topics: Sequence[str], last: dict[str, int],
) -> list[tuple[int, int]]:
    """The link rows of entries at `positions` (in order) of `streams`, of kinds `topics`;
    `last` maps a stream to its last position so far and is advanced."""
    out: list[tuple[int, int]] = []
    append = out.append
    get = last.get
    bits_of = KIND_BITS.get
    for position, stream, topic in zip(positions, streams, topics):
        previous = get(stream)
        append((position, (0 if previous is None else (position - previous) << BITS)
                | bits_of(topic, 0)))
        last[stream] = position
    return out


def last_positions(cursor: apsw.Cursor, table: str, upto: int) -> dict[str, int]:
    """The last position of every backend stream at or before `upto` (one scan of the log)."""
    return {str(stream): position for stream, position in
            cursor.execute(_statements("", table).last_of_streams, (upto,)).fetchall()
            if isinstance(position, int)}


def relink_page(cursor: apsw.Cursor, table: str, after: int, last: dict[str, int]) -> tuple[int, int]:
    """Link the next `RELINK_PAGE` backend entries after position `after`, given the streams'
    last positions up to it (`last`, advanced). Returns (the last position read, rows read)."""
    # (position, stream, topic)
    rows = cast("list[tuple[int, str, str]]", cursor.execute(
        _statements("", table).page_of_streams, (after, RELINK_PAGE)).fetchall())
    if not rows:
        return after, 0
    positions = [int(position) for position, _, _ in rows]
    cursor.executemany(INSERT_LINKS, link(positions, [str(stream) for _, stream, _ in rows],
                                          [str(topic) for _, _, topic in rows], last))
    return positions[-1], len(rows)


def finish_links(
    transaction: Callable[[], AbstractContextManager[apsw.Cursor]], table: str,
    on_page: Callable[[int], None] | None = None,
) -> None:
    """Compute the links of an upgraded store, a page per transaction, from where the pending
    mark says: a kill loses at most the page under way, and the next open goes on.

    `transaction()` is a context manager giving a write cursor (`datastore.transaction(commit=True)`).
    """
    last: dict[str, int] = {}
    expected: int | None = None
    while True:
        with transaction() as cursor:
            row = cursor.execute(_GET_OWN_META, (META_LINKS_PENDING,)).fetchone()
            if row is None:
                return
            (pending_after,) = row
            after = int(pending_after)
            if after != expected:
                # First page of this call, or another process linked pages meanwhile.
                cursor.execute(_CLEAR_LINKS, (after,))
                last = last_positions(cursor, table, after)
            end, read = relink_page(cursor, table, after, last)
            if read < RELINK_PAGE:
                # Valid whatever `streams_position` says: a reader takes the later of this
                # and what it finds after that position.
                cursor.executemany(_SET_STREAM_POSITION,
                                   [(position, stream) for stream, position in last.items()])
                cursor.execute(_DELETE_META, (META_LINKS_PENDING,))
                return
            cursor.execute(_SET_META, (META_LINKS_PENDING, end))
            expected = end
        if on_page is not None:
            on_page(end)


def relink(cursor: apsw.Cursor, table: str) -> None:
    """Recompute every link and stream head position of the log, in the caller's transaction
    (after rows were removed, as a bundle cut down to some channels does)."""
    cursor.execute(_CLEAR_LINKS, (0,))
    last: dict[str, int] = {}
    after = 0
    while True:
        after, read = relink_page(cursor, table, after, last)
        if read < RELINK_PAGE:
            break
    cursor.executemany(_SET_STREAM_POSITION,
                       [(position, stream) for stream, position in last.items()])


def stream_positions(
    cursor: apsw.Cursor, table: str, stream: str, *, upto: int | None = None, schema: str = "",
    leave_out: int = 0,
) -> list[int] | None:
    """Every position of a backend stream, oldest first (at most `upto` when given), read from
    its links; [] for a stream no backend entry has (a command's stream, or none at all); None
    when the links cannot answer (an older file, an upgrade still computing them), and the
    caller scans the log instead. `schema` prefixes the tables ("live." for an attached file).
    `leave_out`: bits (`QUIET`, `PROFILE`); the entries with any of them are left out."""
    # fetchall throughout: no statement is left open on the caller's connection (one would
    # lock its tables against a DROP of a scratch table on the same connection).
    statements = _statements(schema, table)
    if not cursor.execute(statements.has_table).fetchall():
        return None
    if cursor.execute(statements.get_meta, (META_LINKS_PENDING,)).fetchall():
        return None
    rows = cursor.execute(statements.stream_head, (stream,)).fetchall()
    if not rows:
        return []
    (stored_head,) = rows[0]
    head = _whole(stored_head)
    valid = cursor.execute(statements.get_meta, (META_STREAMS_POSITION,)).fetchall()
    (valid_up_to,) = valid[0] if valid else (0,)
    # Heads are written down every few thousand rows: the rows after that are scanned.
    found = cursor.execute(statements.tail_head, (_whole(valid_up_to), stream)).fetchall()
    (tail_head,) = found[0] if found else (0,)
    head = max(head, _whole(tail_head))
    if not head:
        return []
    chain = cursor.execute(statements.chain, (head,)).fetchall()
    positions = [_whole(p) for p, back in chain if not _whole(back) & leave_out]
    positions.reverse()
    if upto is not None and positions and positions[-1] > upto:
        positions = [p for p in positions if p <= upto]
    return positions


def _whole(value: Any) -> int:
    """A position as SQLite gave it (NULL: none, 0)."""
    return int(value or 0)


def pending(cursor: apsw.Cursor) -> bool:
    """Whether an upgrade is still computing the links."""
    return bool(cursor.execute(_GET_OWN_META, (META_LINKS_PENDING,)).fetchall())


def mark_pending(cursor: apsw.Cursor, linked_up_to: int) -> None:
    """Leave the links of every entry after position `linked_up_to` to `finish_links` (an
    upgrade, or a log that appends without links); an earlier mark stands."""
    if not pending(cursor):
        cursor.execute(_SET_META, (META_LINKS_PENDING, linked_up_to))



__all__ = [
    "INSERT_LINKS", "LINKS_TABLE", "LINKS_TABLE_NAME", "META_LINKS_PENDING", "PROFILE",
    "PROFILE_TOPICS", "QUIET", "QUIET_TOPICS", "finish_links", "link", "mark_pending", "pending",
    "relink", "stream_positions",
]
