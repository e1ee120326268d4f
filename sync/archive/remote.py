"""`Archive`: one archive (a PostgreSQL database and schema), and what can be asked of it.

Writes go through the events table's recorder lock (the `eventsourcing` application recorder's
`LOCK TABLE ... IN EXCLUSIVE MODE`), so notification ids are issued in commit order whoever
pushes, and pushes of the same user from several machines take turns. Each batch commits its
entries, the user's high-water mark, the command states and the daily counts together: a push
cut off anywhere leaves the archive as it was after some whole batch, and the next one resumes
after the mark.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
from eventsourcing.persistence import PersistenceError
from psycopg.sql import Composed

from chatledger.eventstore import schema as log_schema
from chatledger.eventstore.log import EventLog, StoredDictionary, StoredRow
from chatledger.sync.archive import copybinary
from chatledger.sync.archive.connection import (
    ArchiveDatastore,
    ArchiveError,
    connect,
    explain_error,
    redact,
)
from chatledger.sync.archive.mentions import message_ids
from chatledger.sync.archive.persistence import (
    EVENTS_TABLE,
    ArchiveApplicationRecorder,
    check_partitions,
)
from chatledger.sync.archive.tables import (
    ARCHIVE_SCHEMA_VERSION,
    DEFAULT_SCHEMA,
    PUSH_COLUMNS,
    Statements,
)

# Entries per push transaction: large enough that the per-transaction work (lock, upserts,
# commit) is small beside the COPY, small enough that the table lock is held briefly.
PUSH_BATCH = 5_000
PULL_BATCH = 10_000
# Batches read ahead of the one being stored: enough that the reader runs on while this
# thread waits for the server or for a CPU, few enough to bound memory (a batch of 5,000 is a
# few MB).
PUSH_AHEAD = 2
_DAY_US = 86_400 * 1_000_000
_COMMAND_TOPIC_PREFIX = "chatledger/command."

PushProgress = Callable[[str, int, int], None]  # (user id, entries done, entries to do)


@dataclass(frozen=True, slots=True)
class UserPush:
    """What a push did for one user."""

    user_id: str
    pushed: int  # entries this push stored
    already: int  # entries the archive had before (from earlier or concurrent pushes)
    last_position: int  # the user's high-water mark in the archive afterwards
    seconds: float


class Archive:
    """A connection to one archive. `create=True` sets up the tables when they are missing.

    >>> with Archive("postgresql://archive.example/chat") as archive:   # doctest: +SKIP
    ...     archive.users()
    """

    def __init__(self, url: str, *, schema: str = DEFAULT_SCHEMA, create: bool = False,
                 partitions: int | None = None) -> None:
        self.url = url
        self.schema = schema
        self.sql = Statements(schema)
        # When this creates the archive: its events table split by user into this many hash
        # partitions (None: one table). An archive that exists keeps its layout.
        if partitions is not None:
            check_partitions(partitions)  # before anything is made
        self.partitions = partitions
        # One connection first, so a bad URL, password or server is one clear line, not the
        # pool's "couldn't get a connection".
        with connect(url, autocommit=True) as conn:
            ready = self._check_version(conn)
            if not ready:
                if not create:
                    raise ArchiveError(
                        f"no chatledger archive at {redact(url)} (schema {schema!r}): "
                        "`chatledger archive push` creates one")
                self._create(conn)
        self.datastore = ArchiveDatastore(url, schema=schema)
        self.recorder = ArchiveApplicationRecorder(self.datastore)

    # -- setting up ----------------------------------------------------------------------------

    def _check_version(self, conn: psycopg.Connection[Any]) -> bool:
        """True when the tables are there; refuses an archive made by a newer version."""
        (meta_table,) = conn.execute(self.sql.meta_exists,
                                     (f'"{self.schema}".chatledger_archive_meta',)
                                     ).fetchone() or (None,)
        if not meta_table:
            return False
        row = conn.execute(self.sql.schema_version).fetchone()
        if row is None:
            return False
        (version,) = row
        if int(version) > ARCHIVE_SCHEMA_VERSION:
            raise ArchiveError(
                f"the archive at {redact(self.url)} was made by a newer chatledger (archive "
                f"schema {version}; this version knows up to {ARCHIVE_SCHEMA_VERSION}): "
                "upgrade chatledger")
        return True

    def _create(self, conn: psycopg.Connection[Any]) -> None:
        key = (f"chatledger-archive:{self.schema}",)
        try:
            conn.execute(self.sql.creation_lock, key)
        except psycopg.Error as error:
            raise explain_error(self.url, error) from None
        try:
            if self._check_version(conn):
                return  # another machine created it meanwhile
            try:
                (schema_found,) = conn.execute(self.sql.schema_exists,
                                               (self.schema,)).fetchone() or (None,)
                if not schema_found:
                    conn.execute(self.sql.create_schema)
                found = conn.execute(self.sql.events_partitioned,
                                     (self.sql.events_name,)).fetchone()
            except psycopg.Error as error:
                raise explain_error(self.url, error) from None
            datastore = ArchiveDatastore(self.url, schema=self.schema, pool_size=1)
            try:
                with self._errors():
                    # The library's own statements make the events table, its type and indexes.
                    recorder = ArchiveApplicationRecorder(datastore)
                    if found is None and self.partitions is not None:
                        recorder.partition_by_user(self.partitions)
                    elif found is not None and found[0]:  # partitioned by hand
                        recorder.index_partitioned_table()
                    recorder.create_table()
                    with datastore.transaction(commit=True) as curs:
                        for statement in self.sql.create_tables:
                            curs.execute(statement)
                        try:
                            with curs.connection.transaction():  # a savepoint
                                curs.execute(self.sql.payload_compression)
                        except psycopg.Error:
                            pass  # no lz4 in this server: TOAST's default compression
            finally:
                datastore.close()
        finally:
            conn.execute(self.sql.creation_unlock, key)

    @contextmanager
    def _errors(self) -> Iterator[None]:
        """The library's and psycopg's errors as one line without secrets."""
        try:
            yield
        except ArchiveError:
            raise
        except (PersistenceError, psycopg.Error) as error:
            raise explain_error(self.url, error) from None

    # -- push ----------------------------------------------------------------------------------

    def high_water(self, user_id: str) -> int:
        """The last log position of `user_id` the archive holds (0: none)."""
        with self._errors(), self.datastore.transaction(commit=False) as curs:
            row = curs.execute(self.sql.high_water, (user_id,)).fetchone()
        return 0 if row is None else int(row["last_position"])

    def push_stores(
        self, paths: Iterable[Path], *, batch: int = PUSH_BATCH,
        on_progress: PushProgress | None = None,
    ) -> list[UserPush]:
        """Push the entries the archive lacks of the stores at `paths` (files that are not a
        user's store, never opened through ChatStore, are passed over), one after the other.

        Entries appended while the push runs are left for the next one. Refuses a log whose
        entry at the archive's high-water mark differs from the archive's (another history
        of the same user, such as a store created anew).
        """
        done: list[UserPush] = []
        pushed = reached = 0
        # A second thread reads, decodes and formats the next batches (of this user or the
        # next: the stores are one stream of batches) while this one waits for the server to
        # store the current one. The generator runs one step at a time on that thread.
        batches = self._batches(paths, batch)
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="chatledger-push") as reader:
            upcoming = deque(reader.submit(next, batches, None) for _ in range(PUSH_AHEAD))
            try:
                while True:
                    current = upcoming.popleft().result()
                    if current is None:
                        break
                    upcoming.append(reader.submit(next, batches, None))
                    plan = current.plan
                    if current.first:
                        pushed, reached = 0, plan.mark
                        if on_progress is not None:
                            on_progress(plan.user_id, 0, plan.total)
                    if current.rows:
                        written, mark = self._write_batch(plan.user_id, current)
                        pushed += written
                        reached = max(reached, mark)
                        if on_progress is not None:
                            on_progress(plan.user_id,
                                        min(max(current.rows[-1].position, reached), plan.end)
                                        - plan.mark, plan.total)
                    if current.last:
                        done.append(UserPush(
                            plan.user_id, pushed, max(plan.total - pushed, 0), reached,
                            round(time.monotonic() - plan.started, 3)))
            finally:
                # Let the reader finish its step, then close the stores it holds open.
                for pending in upcoming:
                    pending.cancel()
                wait(upcoming)
                batches.close()
        return done

    def _batches(self, paths: Iterable[Path], limit: int) -> Generator[_Batch, None, None]:
        """Every store's batches to push, in order; a store with nothing to push yields one
        empty batch (so that it is reported)."""
        for path in paths:
            with EventLog.open(path) as log:
                user_id = log.get_meta("user_id")
                if user_id is None:
                    continue
                plan = self._plan(log, str(user_id))
                sent = set(plan.dictionaries_sent)
                dictionaries = {d.id: d for d in log.stored_dictionaries()}
                after, first = plan.mark, True
                while True:
                    current = _Batch.read(log, plan, after, limit, first=first)
                    if current.rows:
                        needed = current.codecs - sent
                        current.dictionaries.extend(
                            dictionaries[n] for n in sorted(needed) if n in dictionaries)
                        sent |= needed
                        after = current.rows[-1].position
                    yield current
                    if current.last:
                        break
                    first = False

    def _plan(self, log: EventLog, user_id: str) -> _UserPlan:
        started = time.monotonic()
        mark = self.high_water(user_id)
        self._check_same_history(log, user_id, mark)
        with self._errors(), self.datastore.transaction(commit=False) as curs:
            sent = frozenset(row["dictionary_id"] for row in curs.execute(
                self.sql.dictionary_ids, (user_id,)).fetchall())
        return _UserPlan(user_id, copybinary.text(user_id), mark, log.max_position(), sent,
                         started)

    def _check_same_history(self, log: EventLog, user_id: str, mark: int) -> None:
        at = min(mark, log.max_position())
        if at <= 0:
            return
        local = log.stored_rows(after=at - 1, upto=at, limit=1)
        with self._errors(), self.datastore.transaction(commit=False) as curs:
            remote = curs.execute(self.sql.entry_at, (user_id, at)).fetchone()
        same = (bool(local) and remote is not None
                and (local[0].stream, local[0].version, local[0].type, local[0].received_at)
                == (remote["originator_id"], remote["originator_version"], remote["topic"],
                    remote["received_at"]))
        if not same:
            raise ArchiveError(
                f"the archive holds another history of user {user_id!r} (entry {at} differs "
                "from this store's): not pushed; pull the archived one into another --data-dir "
                "to compare")

    def _write_batch(self, user_id: str, batch: _Batch) -> tuple[int, int]:
        """One transaction: the rows the archive lacks, and everything kept beside them.
        Returns (rows written, the user's high-water mark after it).

        The user's row in `chatledger_users` is locked first: pushes of the same user take
        turns there, and read the mark the last one left. The bookkeeping is written under
        that lock alone, so that other users' pushes store their entries meanwhile; the
        events table's lock (the library's, which keeps notification ids in commit order)
        is taken last, for the COPY and the commit. Every transaction takes the two in that
        order, and the library's own writers only the second: no deadlock."""
        rows = batch.rows
        with self._errors(), self.datastore.transaction(commit=True) as curs:
            curs.execute(self.sql.claim_user, (user_id,))
            found = curs.execute(self.sql.lock_user, (user_id,)).fetchone()
            mark = 0 if found is None else int(found["last_position"])
            if mark >= rows[-1].position:
                return 0, mark  # another push stored them meanwhile
            if mark < rows[0].position - 1:
                raise ArchiveError(
                    f"the archive holds user {user_id!r} up to position {mark}, but this push "
                    f"expected {rows[0].position - 1}: was it changed by hand?")
            skip = mark - (rows[0].position - 1)  # entries a concurrent push stored already
            rows, sizes = rows[skip:], batch.payload_bytes[skip:]
            for dictionary in batch.dictionaries:
                curs.execute(self.sql.insert_dictionary,
                             (user_id, dictionary.id, dictionary.created_at,
                              dictionary.trained_on, dictionary.level, dictionary.data))
            curs.execute(self.sql.record_push, (user_id, len(rows), rows[-1].position, sum(sizes)))
            self._record_commands(curs, user_id, rows)
            self._record_daily(curs, user_id, rows, sizes)
            for statement in self.recorder.lock_table_statements:
                curs.execute(statement)
            with curs.copy(self.sql.copy_events,
                           writer=copybinary.BlockingWriter(curs)) as copy:
                copy.write(copybinary.stream(batch.lines[skip:]))
        return len(rows), rows[-1].position

    def _record_commands(self, curs: Any, user_id: str, rows: Sequence[StoredRow]) -> None:
        local = int(log_schema.Source.LOCAL)
        latest: dict[str, tuple[int, str]] = {}
        for row in rows:
            if row.source == local and row.type.startswith(_COMMAND_TOPIC_PREFIX):
                latest[row.stream] = (row.version, row.type[len(_COMMAND_TOPIC_PREFIX):])
        if latest:
            curs.execute(self.sql.record_commands, (
                user_id, list(latest), [v for v, _ in latest.values()],
                [s for _, s in latest.values()]))

    def _record_daily(self, curs: Any, user_id: str, rows: Sequence[StoredRow],
                      payload_bytes: Sequence[int]) -> None:
        counts: dict[tuple[int, str], list[int]] = {}
        for row, size in zip(rows, payload_bytes):
            key = (row.received_at // _DAY_US, row.type)
            slot = counts.get(key)
            if slot is None:
                counts[key] = [1, size]
            else:
                slot[0] += 1
                slot[1] += size
        curs.execute(self.sql.record_daily, (
            user_id, [k[0] for k in counts], [k[1] for k in counts],
            [v[0] for v in counts.values()], [v[1] for v in counts.values()]))

    # -- pull ----------------------------------------------------------------------------------

    def stored_rows(self, user_id: str, *, after: int, upto: int,
                    limit: int = PULL_BATCH) -> list[StoredRow]:
        """The user's entries after `after` up to `upto`, as their store kept them."""
        with self._errors(), self.datastore.transaction(commit=False) as curs:
            return [
                StoredRow(r["position"], r["originator_id"], r["originator_version"], r["topic"],
                          r["codec"], bytes(r["state"]), r["source"], r["received_at"],
                          r["event_at"], r["connection_id"])
                for r in curs.execute(self.sql.select_rows, (user_id, after, upto, limit))
            ]

    def stored_dictionaries(self, user_id: str) -> list[StoredDictionary]:
        with self._errors(), self.datastore.transaction(commit=False) as curs:
            return [
                StoredDictionary(r["dictionary_id"], r["created_at"], r["trained_on"], r["level"],
                                 bytes(r["data"]))
                for r in curs.execute(self.sql.select_dictionaries, (user_id,))
            ]

    def position_at(self, user_id: str, time_us: int) -> int:
        """The user's log position as it stood at `time_us` (arrival time, as `as_of` reads a
        time): the last entry received at or before it; 0 before the first."""
        with self._errors(), self.datastore.transaction(commit=False) as curs:
            row = curs.execute(self.sql.position_at, (user_id, time_us)).fetchone()
        return int(row["position"] or 0) if row else 0

    # -- cross-user questions ------------------------------------------------------------------

    def users(self) -> list[dict[str, Any]]:
        """Every user in the archive: entries, last position and push, pending and refused
        actions (local commands not settled, and rejected by the backend)."""
        return [
            {**row, "first_push_at": _iso(row["first_push_at"]),
             "last_push_at": _iso(row["last_push_at"])}
            for row in self._query(self.sql.users)
        ]

    def find(self, message_id: str) -> list[dict[str, Any]]:
        """Which users' logs name the message (as `explain` reads entries), at which positions."""
        return [
            {**row, "source": _source_name(row["source"])}
            for row in self._query(self.sql.find, (message_id,))
        ]

    def stats(self, by: str) -> list[dict[str, Any]]:
        """Entries and payload bytes by `type`, `day` (UTC, of arrival) or `user`."""
        statement = self.sql.stats.get(by)
        if statement is None:
            raise ValueError(f"stats by {by!r}: expected one of {', '.join(self.sql.stats)}")
        return self._query(statement)

    def _query(self, statement: Composed, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        with self._errors(), self.datastore.transaction(commit=False) as curs:
            return [dict(row) for row in curs.execute(statement, params).fetchall()]

    # -- lifecycle -----------------------------------------------------------------------------

    def close(self) -> None:
        self.datastore.close()

    def __enter__(self) -> Archive:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(frozen=True, slots=True)
class _UserPlan:
    """One store's push, as planned before its first batch: the archive's mark for the user
    and the store's end (entries appended later wait for the next push)."""

    user_id: str
    user_field: bytes  # the user id as a COPY field, made once
    mark: int
    end: int
    dictionaries_sent: frozenset[int]  # already in the archive
    started: float

    @property
    def total(self) -> int:
        return max(self.end - self.mark, 0)


_PUSH_FIELDS = copybinary.field_count(len(PUSH_COLUMNS))


@dataclass(frozen=True, slots=True)
class _Batch:
    """Entries of one user's log as a push sends them: the rows, their COPY rows, the size
    of each payload as it arrived, the dictionaries the rows were compressed with, and the
    dictionaries of them the archive lacks."""

    plan: _UserPlan
    first: bool  # the store's first batch
    last: bool  # its last
    rows: list[StoredRow]
    lines: list[bytes]
    payload_bytes: list[int]
    codecs: frozenset[int]
    dictionaries: list[StoredDictionary] = field(default_factory=list)

    @classmethod
    def read(cls, log: EventLog, plan: _UserPlan, after: int, limit: int, *,
             first: bool) -> _Batch:
        rows = log.stored_rows(after=after, upto=plan.end, limit=limit) if after < plan.end else []
        decode = log.decode_payload
        local = int(log_schema.Source.LOCAL)
        entry, array, user, head = copybinary.entry, copybinary.text_array, plan.user_field, _PUSH_FIELDS
        lines: list[bytes] = []
        sizes: list[int] = []
        for row in rows:
            payload = decode(row.codec, row.state, row.position)
            sizes.append(len(payload))
            lines.append(b"".join((head, entry(user, row), array(
                message_ids(row.type, payload, local=row.source == local)))))
        last = not rows or rows[-1].position >= plan.end
        return cls(plan, first, last, rows, lines, sizes,
                   frozenset(r.codec for r in rows if r.codec > 0))


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat().replace("+00:00", "Z")


def _source_name(value: int) -> str:
    try:
        return log_schema.Source(value).name.lower()
    except ValueError:
        return str(value)


__all__ = ["Archive", "DEFAULT_SCHEMA", "EVENTS_TABLE", "PULL_BATCH", "PUSH_BATCH", "PushProgress",
           "UserPush"]
