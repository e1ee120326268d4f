"""The floor of a rebuild split by channel over two processes: `rebuild --partition-floor`.

Issue 18 asks a rebuild to use the second core. A thread cannot (the projector holds the
interpreter lock for all but its SQLite calls, and handing it over costs more than it frees), and
a process that only reads, decompresses or decodes ships bytes or objects that cost the receiver
as much as decoding them itself (see docs/performance.md). What can move to a second process is
the projection itself, by channel: nearly every entry of a log is in its channel's stream
(`eventstore.ingest.stream_of`), and most read tables are keyed by channel.

This measures that design on a rebuilt store, in the same run as the reps:

- the channels' streams are split in two halves of about the same number of entries (largest
  first, each to the lighter half);
- two fresh processes replay, each into a scratch file of its own, its half's channel streams
  and every entry of no channel (the user's stream, local commands), through the projector as a
  rebuild does (`Projector.apply` in chunks of the log's order, one transaction);
- this process merges the second half's rows into the first's: for every table with a `cid`
  column, the rows of the second half's channels replace the first's; `reactions` and
  `deleted_reactions` (keyed by message) follow their message's channel, and of a message
  neither half has on file each half's rows are kept; the first half's lookup indexes are
  dropped before and every index is built after;
- the merged tables are compared with the rebuilt store's, row by row.

`users` is keyed by no channel, and its rule orders one user's objects across channels (an object
equal to the row on file keeps the row's position, one without times replaces any). So each half
records the calls its entries make to the users' writer (`UserRows`): the entries of its own
channels, and the first half also those of no channel. The merge empties `users` (and
`user_bans`, the bans' times, which the same writer keeps) and makes those calls again, from both
halves in log order, through a fresh writer: the rows a sequential rebuild makes. Of the tables
keyed by no channel that only gain rows (`deleted_polls`), both halves' rows are kept.

`partition_rows_differing` counts, by table, the rows the merge still gets wrong.

A real split also needs a guard: an entry of one half's channel that names a channel or a message
of the other half (a message whose `cid` is not its event's, a reply to a parent filed in
another channel) is decided differently by a half that lacks the other half's rows, and the
rebuild would have to go back to one process. Measured here is the cost of the guard's
evidence: each half keeps every text value its own channels' entries bind to a statement
(`exec_trace`: the keys of every row they read or write), and the merge counts those of one half
that are a channel or a message id of the other (`partition_crossing_keys`; what a real guard
would do on a count above 0 is not measured). The rate includes that cost; a guard proven
complete (the entries of no channel reading the other half's rows, too) is the work left.
"""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from benchmarks.common import remove_db

# Tables keyed by message whose rows follow their message's channel at the merge.
_BY_MESSAGE = ("reactions", "deleted_reactions")
_CHUNK = 5_000
# The log's table in a store file (`EventLog.recorder.events_table_name`).
_LOG = "stored_events"
# The calls a half's entries made to the users' writer, in order (see `_user_call_recorder`).
_USER_CALLS = ("CREATE TABLE user_calls (position INTEGER NOT NULL, seq INTEGER NOT NULL, "
               "kind INTEGER NOT NULL, user_id TEXT, user BLOB, slot INTEGER, banned INTEGER, "
               "at INTEGER, PRIMARY KEY (position, seq)) WITHOUT ROWID")
_RECORD_USER_CALL = "INSERT INTO user_calls VALUES (?,?,?,?,?,?,?,?)"
_BOTH_HALVES_USER_CALLS = (
    "SELECT position, seq, kind, user_id, user, slot, banned, at FROM main.user_calls UNION ALL "
    "SELECT position, seq, kind, user_id, user, slot, banned, at FROM second.user_calls "
    "ORDER BY position, seq")
# Tables keyed by no channel that only ever gain rows (facts): the merge keeps both halves'.
_BY_NO_CHANNEL_FACTS = ("deleted_polls",)
# The text values a half's own entries bound to statements (see `replay_half`).
_MENTIONED = "CREATE TABLE mentioned (key TEXT PRIMARY KEY) WITHOUT ROWID"
_RECORD_MENTIONED = "INSERT INTO mentioned VALUES (?)"
# The keys one half mentioned that are a channel of the other (`in_half_<database>(cid)`: one of
# the channels that half replays), or the id of a message the other half filed in one of them.
_CROSSING_KEYS = (
    "SELECT COUNT(*) FROM {mentioning}.mentioned WHERE in_half_{other}(key) "
    "OR key IN (SELECT id FROM {other}.messages WHERE in_half_{other}(cid)) "
    "OR key IN (SELECT id FROM {other}.deleted_messages WHERE in_half_{other}(cid))")
# Kinds of call (`UserRows` methods).
_REMEMBER, _UPSERT, _SET_BANNED = 0, 1, 2


def split_streams(path: Path) -> tuple[list[set[str]], list[int], int]:
    """The channel streams of the log at `path` in two halves of about equal entries (largest
    stream first, each to the half with fewer entries so far), the halves' entry counts, and the
    entries of the whole log."""
    import apsw

    from chatledger.eventstore.ingest import USER_STREAM
    from chatledger.eventstore.schema import Source

    conn = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        # Local commands' streams (named by command id) are no channel's: both halves replay them.
        counts = conn.execute(
            f"SELECT originator_id, COUNT(*) FROM {_LOG} WHERE source != ? "
            "GROUP BY originator_id ORDER BY 2 DESC, 1", (int(Source.LOCAL),)).fetchall()
        total = int(conn.execute(f"SELECT COUNT(*) FROM {_LOG}").fetchone()[0])
    finally:
        conn.close()
    halves: list[set[str]] = [set(), set()]
    loads = [0, 0]
    for stream, count in counts:
        if stream == USER_STREAM:
            continue
        lighter = 0 if loads[0] <= loads[1] else 1
        halves[lighter].add(stream)
        loads[lighter] += count
    return halves, loads, total


def _user_call_recorder() -> Any:
    """A users' writer (`UserRows`) that also keeps, in `calls`, each call made while an entry
    that `track` marks as recorded is applied."""
    import msgspec

    from chatledger.projections.item import Item
    from chatledger.projections.rows.users import UserRows
    from chatledger.projections.schema import SLOT_EVENT

    encode = msgspec.msgpack.encode

    class RecordingUserRows(UserRows):
        def __init__(self) -> None:
            super().__init__()
            self.calls: list[tuple[Any, ...]] = []
            self.position = 0
            self.recording = False
            self.own_channel = False  # the item applied is of the half's own channels
            self._seq = 0
            self._depth = 0  # `remember` calls `upsert`: only the outer call is kept

        def track(self, items: Iterable[Item], own: set[str],
                  recorded: set[str] | None) -> Iterator[Item]:
            """The items, noting which one is being applied (the projector pulls them one at
            a time), whether it is of the `own` streams, and whether its calls are kept: those
            of the streams in `recorded` (None: of every stream)."""
            for item in items:
                self.position, self._seq = item.position, 0
                self.own_channel = item.stream in own
                self.recording = recorded is None or self.own_channel
                yield item

        def _keep_call(self, kind: int, user_id: str | None, user: Any, slot: int | None,
                       banned: int | None = None, at: int | None = None) -> None:
            if self.recording and self._depth == 0:
                self.calls.append((self.position, self._seq, kind, user_id,
                                   None if user is None else encode(user), slot, banned, at))
                self._seq += 1

        def remember(self, cursor: Any, user: Any, position: int,
                     slot: int = SLOT_EVENT) -> None:
            if user is not None:  # `remember` of no user does nothing
                self._keep_call(_REMEMBER, None, user, slot)
            self._depth += 1
            try:
                super().remember(cursor, user, position, slot)
            finally:
                self._depth -= 1

        def upsert(self, cursor: Any, user: Any, position: int, *,
                   slot: int = SLOT_EVENT) -> None:
            self._keep_call(_UPSERT, None, user, slot)
            self._depth += 1
            try:
                super().upsert(cursor, user, position, slot=slot)
            finally:
                self._depth -= 1

        def set_banned(self, cursor: Any, user_id: str, banned: int,
                       at: int | None = None) -> None:
            self._keep_call(_SET_BANNED, user_id, None, None, banned, at)
            super().set_banned(cursor, user_id, banned, at)

    return RecordingUserRows()


def replay_half(path: str, user_id: str, own: set[str], skipped: set[str], target: str,
                with_shared_user_calls: bool) -> dict[str, float]:
    """Replay every entry of the log at `path` but those of the `skipped` streams into fresh
    read tables at `target` (run in a child process), keeping in `user_calls` the calls to the
    users' writer made by the entries of the `own` streams (and of every other stream replayed,
    those of no channel, when `with_shared_user_calls`). Returns its own seconds."""
    import apsw

    from chatledger.eventstore.datastore import STATEMENT_CACHE_SIZE
    from chatledger.eventstore.log import EventLog
    from chatledger.projections.engine import collector_paused, create_tables
    from chatledger.projections.item import Item
    from chatledger.projections.projector import Projector

    started = time.perf_counter()
    remove_db(Path(target))
    with EventLog.open(Path(path)) as log:
        codec = log.datastore.codec
        scratch = apsw.Connection(target, statementcachesize=STATEMENT_CACHE_SIZE)
        try:
            for pragma in ("PRAGMA journal_mode=OFF", "PRAGMA synchronous=OFF",
                           "PRAGMA cache_size=-65536"):
                scratch.execute(pragma).fetchall()
            cursor = scratch.cursor()
            create_tables(cursor, with_indexes=False)
            cursor.execute(_USER_CALLS)
            cursor.execute(_MENTIONED)
            projector = Projector(user_id)
            users = _user_call_recorder()
            projector.rows.users = users
            recorded = None if with_shared_user_calls else own
            mentioned: set[str] = set()
            keep = mentioned.add

            def trace(_cursor: Any, _sql: str, bindings: Any) -> bool:
                if users.own_channel and bindings:
                    for value in (bindings.values() if isinstance(bindings, dict)
                                  else bindings):
                        if type(value) is str:
                            keep(value)
                return True

            scratch.exec_trace = trace
            with collector_paused(), log.datastore.transaction(commit=False) as reading:
                cursor.execute("BEGIN")
                chunk: list[Item] = []
                for position, topic, stream, codec_id, state, received_at in reading.execute(
                        "SELECT rowid, topic, originator_id, codec, state, received_at "
                        f"FROM {log.recorder.events_table_name} ORDER BY rowid"):
                    if stream in skipped:
                        continue
                    chunk.append(Item(position, topic, stream,
                                      codec.decode(codec_id, state, position), received_at))
                    if len(chunk) == _CHUNK:
                        projector.apply(cursor, users.track(chunk, own, recorded))
                        chunk = []
                if chunk:
                    projector.apply(cursor, users.track(chunk, own, recorded))
                scratch.exec_trace = None
                cursor.executemany(_RECORD_USER_CALL, users.calls)
                cursor.executemany(_RECORD_MENTIONED, ((key,) for key in mentioned))
                cursor.execute("COMMIT")
        finally:
            scratch.close()
    return {"seconds": time.perf_counter() - started}


def _replay_user_calls(merged: Any) -> None:
    """Empty the merged `users` (and `user_bans`, which its writer also keeps) and make both
    halves' calls again, in log order."""
    import msgspec

    from chatledger.projections import payloads
    from chatledger.projections.rows.users import UserRows

    decode = msgspec.msgpack.Decoder(payloads.User).decode
    writer = UserRows()
    cursor = merged.cursor()
    cursor.execute("DELETE FROM main.users")
    cursor.execute("DELETE FROM main.user_bans")
    for position, _, kind, user_id, user, slot, banned, at in merged.cursor().execute(
            _BOTH_HALVES_USER_CALLS):
        if kind == _REMEMBER:
            writer.remember(cursor, decode(user), position, slot)
        elif kind == _UPSERT:
            writer.upsert(cursor, decode(user), position, slot=slot)
        else:
            writer.set_banned(cursor, user_id, banned, at)
    cursor.execute("DROP TABLE main.user_calls")


def _crossing_keys(merged: Any) -> int:
    """The keys each half's own entries mentioned that are the other half's (before the
    merge)."""
    return sum(merged.execute(_CROSSING_KEYS.format(mentioning=mentioning, other=other))
               .fetchone()[0]
               for mentioning, other in (("main", "second"), ("second", "main")))


def partition_floor_figures(path: Path, user_id: str) -> dict[str, Any]:
    """The partition_* keys (see the module's docstring), for the rebuilt store at `path`."""
    import apsw

    from chatledger.projections.schema import INDEXES, LOOKUP_INDEXES, TABLES

    halves, loads, total = split_streams(path)
    targets = [path.parent / f"partition-{half}.db" for half in (0, 1)]
    context = multiprocessing.get_context("spawn")
    started = time.perf_counter()
    with context.Pool(2) as pool:
        # The first half also keeps the calls of the entries of no channel (both replay them).
        pending = [pool.apply_async(replay_half, (str(path), user_id, halves[half],
                                                  halves[1 - half], str(targets[half]),
                                                  half == 0))
                   for half in (0, 1)]
        runs = [result.get() for result in pending]
    replay_s = time.perf_counter() - started
    merged = apsw.Connection(str(targets[0]), flags=apsw.SQLITE_OPEN_READWRITE
                             | apsw.SQLITE_OPEN_CREATE | apsw.SQLITE_OPEN_URI)
    try:
        # Whether a cid is one of a half's channels, named by the database that half wrote.
        for database, channels in (("main", halves[0]), ("second", halves[1])):
            merged.create_scalar_function(f"in_half_{database}", channels.__contains__, 1,
                                          deterministic=True)
        merged.execute("ATTACH DATABASE ? AS second", (str(targets[1]),))
        started = time.perf_counter()
        merged.execute("BEGIN")
        crossing = _crossing_keys(merged)
        merged.execute("DROP TABLE main.mentioned")
        # The merged tables are indexed once, after: the first half's lookup indexes go first.
        for (index,) in merged.execute("SELECT name FROM main.sqlite_schema "
                                       "WHERE type = 'index' AND sql IS NOT NULL").fetchall():
            merged.execute(f"DROP INDEX main.{index}")
        for name in TABLES:
            columns = {row[1] for row in merged.execute(f"PRAGMA main.table_info({name})")}
            if "cid" in columns:
                where = "in_half_second(cid)"
            elif name in _BY_MESSAGE:
                where = "message_id IN (SELECT id FROM second.messages WHERE in_half_second(cid))"
            elif name in _BY_NO_CHANNEL_FACTS:
                merged.execute(f"INSERT OR IGNORE INTO main.{name} SELECT * FROM second.{name}")
                continue
            else:
                continue
            merged.execute(f"DELETE FROM main.{name} WHERE {where}")
            merged.execute(f"INSERT INTO main.{name} SELECT * FROM second.{name} WHERE {where}")
            if name in _BY_MESSAGE:
                # Of a message neither half has on file, each half holds what its own entries
                # said: both are kept (the same key in both would be a conflict, and counted).
                merged.execute(
                    f"INSERT OR IGNORE INTO main.{name} SELECT * FROM second.{name} "
                    "WHERE message_id NOT IN (SELECT id FROM second.messages) "
                    "AND message_id NOT IN (SELECT id FROM main.messages)")
        _replay_user_calls(merged)
        for ddl in LOOKUP_INDEXES + INDEXES:
            merged.execute(ddl)
        merged.execute("COMMIT")
        merge_s = time.perf_counter() - started
        merged.execute("DETACH DATABASE second")
        merged.execute("ATTACH DATABASE ? AS rebuilt", (f"{path.resolve().as_uri()}?mode=ro",))
        differing: dict[str, int] = {}
        for name in TABLES:
            count = sum(merged.execute(
                f"SELECT COUNT(*) FROM (SELECT * FROM {first}.{name} "
                f"EXCEPT SELECT * FROM {other}.{name})").fetchone()[0]
                for first, other in (("main", "rebuilt"), ("rebuilt", "main")))
            if count:
                differing[name] = count
    finally:
        merged.close()
    for target in targets:
        remove_db(target)
    return {
        "partition_entries": [loads[0], loads[1]],
        # Entries of no channel, replayed by both halves.
        "partition_shared_entries": total - sum(loads),
        "partition_half_s": [round(run["seconds"], 4) for run in runs],
        "partition_replay_s": round(replay_s, 4),
        "partition_merge_s": round(merge_s, 4),
        "partition_floor_events_per_s": round(total / (replay_s + merge_s), 1),
        "partition_rows_differing": differing,
        "partition_crossing_keys": crossing,
    }


def partition_ratios(figures: dict[str, Any], raw_rate: float,
                     rebuild_rate: float) -> dict[str, float]:
    """The floor against raw APSW's append and against the rebuild, of the same run."""
    floor = figures["partition_floor_events_per_s"]
    return {"partition_floor_ratio_raw": round(floor / raw_rate, 4),
            "partition_floor_ratio_rebuild": round(floor / rebuild_rate, 4)}


def describe(result: dict[str, Any]) -> str:
    """One line for people, from the partition_* keys of a benchmark's result."""
    halves = result["partition_entries"]
    wrong = ", ".join(f"{name} {count:,}"
                      for name, count in result["partition_rows_differing"].items()) or "none"
    return (f"split by channel over two processes: halves of {halves[0]:,} and {halves[1]:,} "
            f"entries (+{result['partition_shared_entries']:,} replayed by both) in "
            f"{result['partition_replay_s']:.2f} s, merged in {result['partition_merge_s']:.2f} s"
            f" = {result['partition_floor_events_per_s']:,.0f} events/s, "
            f"{result['partition_floor_ratio_raw']:.2f} x raw APSW append, "
            f"{result['partition_floor_ratio_rebuild']:.2f} x this rebuild; rows the merge gets "
            f"wrong: {wrong}.")
