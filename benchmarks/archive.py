"""`python -m benchmarks archive`: pushing stores to the PostgreSQL archive, and pulling them back.

One run builds `--users` stores holding `--entries` generated events in all (the slow part,
progress on stderr), then measures, against one PostgreSQL (`--url`, or a throw-away cluster
started for the run, see pg_cluster.py):

- the limit: the same rows (every column push sends but the message ids, read from the same stores
  the same way, in the same batches, formatted the same way) sent with the same `COPY` and
  writer into a plain table with the same column types and payload compression: no indexes, no
  lock, no mention extraction, no bookkeeping, no second thread; and, for comparison with
  earlier runs, the same in COPY's text format;
- `archive.push` with 1 process (every store), then with 2 processes (half the stores each,
  into an archive of their own), each into a fresh schema (with `--partitions N`, an archive
  whose events table is split by user into N hash partitions);
- `archive.pull` of every user into a fresh data directory: the log restored, then the read
  tables rebuilt from it (`verify` off: it would rebuild them a second time).

Rates are entries per wall-clock second. Targets: push >= 0.5 x the limit with one process,
and 2 processes faster than one.
"""

from __future__ import annotations

import multiprocessing
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import click

from benchmarks.common import emit_json, environment, fmt_rate, progress, scratch_dir

TARGET_PUSH_VS_COPY = 0.5


def build_stores(data_dir: Path, users: int, entries: int) -> list[str]:
    from benchmarks.workload import generate_events
    from chatledger import ChatStore

    per_user, extra = divmod(entries, users)
    names = [f"user-{n:03d}" for n in range(users)]
    for n, name in enumerate(names):
        count = per_user + (1 if n < extra else 0)
        events = list(generate_events(count, seed=n + 1))
        with ChatStore.open(data_dir, name) as store:
            for start in range(0, len(events), 2_000):
                store.ingest_many(events[start:start + 2_000])
        if n % 10 == 9:
            progress(f"  built {n + 1}/{users} stores")
    return names


def _schema(url: str) -> str:
    import psycopg

    name = f"bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {name}")
    return name


_PLAIN_TABLE = (
    "CREATE TABLE {schema}.plain (user_id text, originator_id text, originator_version bigint,"
    " topic text, state bytea, position bigint, codec integer, source smallint,"
    " received_at bigint, event_at bigint, connection_id text)")
_PLAIN_COPY = ("COPY {schema}.plain (user_id, originator_id, originator_version, topic, state,"
               " position, codec, source, received_at, event_at, connection_id) FROM STDIN")
_TEXT_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def _text_field(value: str | None) -> str:
    return "\\N" if value is None else value.translate(_TEXT_ESCAPES)


def _text_lines(user_id: str, rows: Sequence[Any]) -> str:
    """Rows in COPY's text format (what push sent before it used the binary one)."""
    user, text = _text_field(user_id), _text_field
    return "".join("\t".join((
        user, text(r.stream), str(r.version), text(r.type), "\\\\x" + r.state.hex(),
        str(r.position), str(r.codec), str(r.source), str(r.received_at),
        "\\N" if r.event_at is None else str(r.event_at), text(r.connection_id))) + "\n"
        for r in rows)


def copy_limit(url: str, data_dir: Path, names: Sequence[str], batch: int, *,
               binary: bool = True) -> int:
    """The same rows as push sends (every column but the message ids), read from the same
    stores the same way, in the same batches, formatted the same way (copybinary), sent by the
    same COPY and writer, into a plain table: one transaction per batch, nothing else.
    `binary=False`: in COPY's text format instead (the limit of earlier runs)."""
    import psycopg

    from chatledger.eventstore.log import EventLog
    from chatledger.eventstore.userfiles import user_db_path
    from chatledger.sync.archive import copybinary
    from chatledger.sync.archive.tables import PAYLOAD_COMPRESSION

    schema = _schema(url)
    statement = _PLAIN_COPY.format(schema=schema) + (" (FORMAT binary)" if binary else "")
    head = copybinary.field_count(len(copybinary.ENTRY_COLUMNS))
    copied = 0
    with psycopg.connect(url) as conn:
        conn.execute(_PLAIN_TABLE.format(schema=schema))
        conn.commit()
        # The payloads stored as the archive stores them (TOAST compression), where the
        # server can: the limit is only the archive's work undone.
        try:
            conn.execute(PAYLOAD_COMPRESSION.format(schema=schema, table="plain"))
            conn.commit()
        except psycopg.Error:
            conn.rollback()
        for name in names:
            with EventLog.open(user_db_path(data_dir, name)) as log:
                after, end = 0, log.max_position()
                user = copybinary.text(name)
                while after < end:
                    rows = log.stored_rows(after=after, upto=end, limit=batch)
                    with conn.transaction(), conn.cursor() as curs:
                        if binary:
                            data = copybinary.stream(
                                [head + copybinary.entry(user, r) for r in rows])
                            with curs.copy(statement,
                                           writer=copybinary.BlockingWriter(curs)) as copy:
                                copy.write(data)
                        else:
                            with curs.copy(statement) as copy:
                                copy.write(_text_lines(name, rows))
                    copied += len(rows)
                    after = rows[-1].position
    return copied


def _push_child(url: str, schema: str, data_dir: str, users: list[str], batch: int,
                start: Any, results: Any) -> None:
    from chatledger.sync import archive

    start.wait()
    report = archive.push(url, data_dir=data_dir, users=users, schema=schema, batch=batch)
    results.put(report.pushed)


def push_processes(url: str, data_dir: Path, names: Sequence[str], processes: int,
                   batch: int, partitions: int | None = None) -> tuple[float, int]:
    """Wall seconds for `processes` processes to push the stores (split between them)."""
    from chatledger.sync import archive

    schema = _schema(url)
    # The tables are made first, outside the timing (first use creates them).
    archive.Archive(url, schema=schema, create=True, partitions=partitions).close()
    context = multiprocessing.get_context("fork")
    start = context.Event()
    results = context.Queue()
    shares = [list(names[n::processes]) for n in range(processes)]
    children = [context.Process(target=_push_child,
                                args=(url, schema, str(data_dir), share, batch, start, results))
                for share in shares]
    for child in children:
        child.start()
    time.sleep(1.0)  # let the children import and wait
    began = time.perf_counter()
    start.set()
    pushed = sum(results.get() for _ in children)
    seconds = time.perf_counter() - began
    for child in children:
        child.join()
        if child.exitcode != 0:
            raise click.ClickException(f"a pushing process failed (exit {child.exitcode})")
    return seconds, pushed


def pull_all(url: str, schema: str, names: Sequence[str], target: Path) -> tuple[float, int]:
    from chatledger.sync import archive

    began = time.perf_counter()
    pulled = sum(archive.pull(url, name, data_dir=target, schema=schema, verify=False).entries
                 for name in names)
    return time.perf_counter() - began, pulled


def _timed(label: str, run: Callable[[], Any]) -> tuple[float, Any]:
    progress(f"{label}...")
    began = time.perf_counter()
    value = run()
    return time.perf_counter() - began, value


@click.command("archive")
@click.option("--entries", type=click.IntRange(min=100), default=1_000_000, show_default=True,
              help="Entries in all, spread over the users' stores.")
@click.option("--users", type=click.IntRange(min=2), default=100, show_default=True)
@click.option("--batch", type=click.IntRange(min=100), default=5_000, show_default=True,
              help="Entries per push transaction (and per COPY of the limit).")
@click.option("--url", default=None, metavar="URL",
              help="A PostgreSQL server to use [default: a throw-away cluster for the run].")
@click.option("--dir", "parent", default=None, help="Where to build the stores (a temp dir).")
@click.option("--partitions", type=click.IntRange(min=1), default=None, metavar="N",
              help="Push into archives whose events table is split by user into N hash "
                   "partitions [default: one table].")
def command(entries: int, users: int, batch: int, url: str | None, parent: str | None,
            partitions: int | None) -> None:
    """Archive push and pull throughput, against a plain COPY of the same rows."""
    from benchmarks.pg_cluster import Cluster

    cluster = Cluster.start() if url is None else None
    server = cluster.url if cluster is not None else str(url)
    try:
        with scratch_dir(parent) as scratch:
            data_dir = scratch / "data"
            progress(f"building {users} stores, {entries:,} entries in all")
            names = build_stores(data_dir, users, entries)
            text_seconds, text_copied = _timed(
                "plain COPY in text format",
                lambda: copy_limit(server, data_dir, names, batch, binary=False))
            copy_seconds, copied = _timed("the limit: plain COPY",
                                          lambda: copy_limit(server, data_dir, names, batch))
            progress("push, 1 process...")
            push1_seconds, pushed1 = push_processes(server, data_dir, names, 1, batch,
                                                    partitions)
            progress("push, 2 processes...")
            push2_seconds, pushed2 = push_processes(server, data_dir, names, 2, batch,
                                                    partitions)
            schema = _schema(server)
            from chatledger.sync import archive

            archive.push(server, data_dir=data_dir, schema=schema, batch=batch)
            pull_seconds, pulled = _timed(
                "pull", lambda: pull_all(server, schema, names, scratch / "pulled"))[1]
    finally:
        if cluster is not None:
            cluster.stop()
    copy_rate = copied / copy_seconds
    text_rate = text_copied / text_seconds
    push1_rate = pushed1 / push1_seconds
    push2_rate = pushed2 / push2_seconds
    pull_rate = pulled / pull_seconds
    layout = f", events table in {partitions} partitions" if partitions else ""
    print(f"archive: {users} users, {entries:,} entries, batches of {batch:,}{layout}")
    print(f"  limit, plain COPY into a plain table   {fmt_rate(copy_rate):>12} entries/s")
    print(f"  (the same in COPY's text format        {fmt_rate(text_rate):>12} entries/s)")
    print(f"  push, 1 process                        {fmt_rate(push1_rate):>12} entries/s"
          f"  ({push1_rate / copy_rate:.2f} x the limit; target >= {TARGET_PUSH_VS_COPY})")
    print(f"  push, 2 processes                      {fmt_rate(push2_rate):>12} entries/s"
          f"  ({push2_rate / push1_rate:.2f} x 1 process; target > 1)")
    print(f"  pull (log restored + tables rebuilt)   {fmt_rate(pull_rate):>12} entries/s")
    emit_json({
        "benchmark": "archive", "users": users, "entries": entries, "batch": batch,
        "partitions": partitions,
        "copy_entries_per_s": round(copy_rate), "copy_text_entries_per_s": round(text_rate), "push1_entries_per_s": round(push1_rate),
        "push2_entries_per_s": round(push2_rate), "pull_entries_per_s": round(pull_rate),
        "push1_vs_copy": round(push1_rate / copy_rate, 3),
        "push2_vs_push1": round(push2_rate / push1_rate, 3),
        "throwaway_cluster": cluster is not None, "environment": environment(),
    })
