"""`chatledger.archive` and `chatledger archive`: many users' logs in a real PostgreSQL (see
archive_pg.py): pull gives back the store, pushes are incremental, idempotent, safe when run
from several processes at once or killed anywhere, and the cross-user questions are answered."""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import msgspec
import psycopg
import pytest
from click.testing import CliRunner

from archive_pg import drop_schema, make_partitioned_events, new_schema, server_url
from chatledger import ChatStore
from chatledger.cli.main import cli
from chatledger.eventstore.commands import Delivered, Refused
from chatledger.projections import history
from chatledger.sync import archive
from chatledger.sync.archive.mentions import message_ids
from fixtures import message_new, reaction_new

REPO = Path(__file__).resolve().parent.parent
CID = "messaging:general"


def _generated(n: int, seed: int) -> list[bytes]:
    from benchmarks.workload import generate_events

    return list(generate_events(n, seed=seed))


@pytest.fixture()
def schema() -> Any:
    name = new_schema()
    yield name
    drop_schema(name)


@pytest.fixture(scope="module")
def url() -> str:
    return server_url()


def make_store(data_dir: Path, user_id: str, *, events: int, seed: int) -> None:
    """Backend events in a few batches, a message every user's log names, and local commands
    in each state of their lifecycle (delivered, refused, pending)."""
    generated = _generated(events, seed)
    with ChatStore.open(data_dir, user_id) as store:
        for start in range(0, len(generated), 700):
            store.ingest_many(generated[start:start + 700], connection_id=f"conn-{start}")
        store.ingest(message_new(CID, "shared-message", text=f"seen by {user_id}"),
                     source="sync")
        store.ingest(reaction_new(CID, "shared-message"), connection_id="conn-x")
        sent = store.send_message(CID, "delivered one", id=f"{user_id}-sent")
        refused = store.send_message(CID, "refused one", id=f"{user_id}-refused")
        store.send_message(CID, "still pending", id=f"{user_id}-pending")
        commands = {c.message_id: c.id for c in store.outbox.list()}
        answer = msgspec.json.encode({"message": {"id": f"{user_id}-sent", "cid": CID,
                                                  "text": "delivered one", "type": "regular"}})
        store.outbox.settle([Delivered(commands[f"{user_id}-sent"], answer),
                             Refused(commands[f"{user_id}-refused"], "too long",
                                     {"status": 400, "code": 4})])
        del sent, refused


def log_of(store: ChatStore) -> list[tuple[Any, ...]]:
    """Every entry: position, envelope, and the payload bytes as they arrived."""
    return [(e.position, e.stream, e.version, e.type, e.source, e.received_at, e.event_at,
             e.connection_id, e.payload) for e in store.log.iter_entries()]


def tables_of(store: ChatStore) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every read table (the log, its caches and the quarantine aside)."""
    skip = {"stored_events", "quarantine", "chatledger_meta", "zstd_dictionaries"}
    with store.log.datastore.transaction(commit=False) as c:
        names = [n for (n,) in c.execute(
            "SELECT name FROM sqlite_schema WHERE type='table' AND name NOT LIKE 'sqlite_%' "
            "ORDER BY name") if n not in skip]
        return {n: sorted(c.execute(f"SELECT * FROM {n}").fetchall(), key=repr) for n in names}


def outbox_of(store: ChatStore) -> list[Any]:
    return sorted(repr(c) for c in store.outbox.list())


def assert_same_store(original: Path, pulled: Path, user_id: str) -> None:
    with ChatStore.open(original, user_id, create=False) as a, \
            ChatStore.open(pulled, user_id, create=False) as b:
        assert log_of(b) == log_of(a)
        assert tables_of(b) == tables_of(a)
        assert outbox_of(b) == outbox_of(a)
        assert b.verify() == []


def archived(url: str, schema: str, user_id: str) -> dict[str, Any]:
    """What the archive holds of a user: positions, and the counts kept beside them."""
    with psycopg.connect(url) as conn:
        positions = [p for (p,) in conn.execute(
            f"SELECT position FROM {schema}.chatledger_events WHERE user_id=%s ORDER BY position",
            (user_id,))]
        entries = conn.execute(f"SELECT entries FROM {schema}.chatledger_users WHERE user_id=%s",
                               (user_id,)).fetchone()
        daily = conn.execute(f"SELECT sum(entries) FROM {schema}.chatledger_daily "
                             "WHERE user_id=%s", (user_id,)).fetchone()
    return {"positions": positions, "entries": entries[0] if entries else 0,
            "daily": int(daily[0] or 0)}


def assert_each_entry_once(url: str, schema: str, data_dir: Path, user_id: str) -> None:
    with ChatStore.open(data_dir, user_id, create=False) as store:
        end = store.log.max_position()
    held = archived(url, schema, user_id)
    assert held["positions"] == list(range(1, end + 1))
    assert held["entries"] == held["daily"] == end


# -- push and pull -----------------------------------------------------------------------------


def test_pull_gives_back_the_store(url: str, schema: str, tmp_path: Path) -> None:
    data = tmp_path / "data"
    make_store(data, "alice", events=2500, seed=1)
    make_store(data, "bob", events=300, seed=2)  # too few to train a dictionary: raw payloads
    report = archive.push(url, data_dir=data, schema=schema)
    assert {u.user_id: u.pushed for u in report.users} == {"alice": 2507, "bob": 307}
    for user_id in ("alice", "bob"):
        pulled = archive.pull(url, user_id, data_dir=tmp_path / "pulled", schema=schema)
        assert pulled.differences == 0 and pulled.entries == pulled.position
        assert_same_store(data, tmp_path / "pulled", user_id)
        assert os.stat(pulled.path).st_mode & 0o777 == 0o600
    with pytest.raises(archive.ArchiveError, match="exists"):
        archive.pull(url, "alice", data_dir=tmp_path / "pulled", schema=schema)
    with pytest.raises(archive.ArchiveError, match="no entries of user 'carol'"):
        archive.pull(url, "carol", data_dir=tmp_path / "pulled", schema=schema)


def test_push_is_incremental_and_idempotent(url: str, schema: str, tmp_path: Path) -> None:
    data = tmp_path / "data"
    make_store(data, "alice", events=800, seed=3)
    first = archive.push(url, data_dir=data, users=["alice"], schema=schema)
    assert first.pushed == 807
    assert archive.push(url, data_dir=data, schema=schema).pushed == 0
    with ChatStore.open(data, "alice") as store:
        store.ingest_many(_generated(50, seed=4))
        store.outbox.cancel(next(c.id for c in store.outbox.list()
                                 if c.message_id == "alice-pending"))
    again = archive.push(url, data_dir=data, schema=schema)
    assert again.pushed == 51
    assert_each_entry_once(url, schema, data, "alice")
    (user,) = archive.users(url, schema=schema)
    assert (user["pending"], user["refused"]) == (0, 1)
    archive.pull(url, "alice", data_dir=tmp_path / "pulled", schema=schema)
    assert_same_store(data, tmp_path / "pulled", "alice")


def test_pull_upto_is_as_of(url: str, schema: str, tmp_path: Path) -> None:
    data = tmp_path / "data"
    make_store(data, "alice", events=1200, seed=5)
    archive.push(url, data_dir=data, schema=schema)
    with ChatStore.open(data, "alice") as store:
        entries = store.log.entries()
    middle = entries[len(entries) // 2]
    for label, options, at in (
        ("position", {"upto_position": 640}, {"position": 640}),
        ("time", {"upto_time": middle.received_at}, {"time": middle.received_at}),
    ):
        target = tmp_path / label
        archive.pull(url, "alice", data_dir=target, schema=schema, **options)
        with ChatStore.open(data, "alice") as store, store.as_of(**at) as past, \
                ChatStore.open(target, "alice", create=False) as pulled:
            assert pulled.log.max_position() == past.position
            cids = [c.cid for c in past.channels(limit=1000)]
            assert cids == [c.cid for c in pulled.channels(limit=1000)]
            for cid in cids:
                assert past.channel(cid, messages=1000) == pulled.channel(cid, messages=1000)
            assert past.unread_counts() == pulled.unread_counts()


# -- many machines at once, and pushes cut off anywhere --------------------------------------------


def _push_process(url: str, schema: str, data_dir: Path, batch: int) -> subprocess.Popen[bytes]:
    code = ("import sys; from chatledger.sync import archive; "
            "archive.push(sys.argv[1], data_dir=sys.argv[2], schema=sys.argv[3], "
            "batch=int(sys.argv[4]))")
    return subprocess.Popen([sys.executable, "-c", code, url, str(data_dir), schema, str(batch)],
                            cwd=REPO, stderr=subprocess.PIPE)


def test_concurrent_pushes_of_overlapping_stores(url: str, schema: str, tmp_path: Path) -> None:
    # Two machines with a copy of bob's store each, and a user of their own.
    one, two = tmp_path / "one", tmp_path / "two"
    make_store(one, "alice", events=1500, seed=6)
    make_store(one, "bob", events=1500, seed=7)
    make_store(two, "carol", events=1500, seed=8)
    shutil.copy(one / "bob.chatledger", two / "bob.chatledger")
    pushers = [_push_process(url, schema, folder, batch)
               for folder, batch in ((one, 300), (two, 200), (one, 500), (two, 300))]
    for pusher in pushers:
        _, err = pusher.communicate(timeout=60)
        assert pusher.returncode == 0, err.decode()
    for folder, user_id in ((one, "alice"), (one, "bob"), (two, "carol")):
        assert_each_entry_once(url, schema, folder, user_id)
    archive.pull(url, "bob", data_dir=tmp_path / "pulled", schema=schema)
    assert_same_store(one, tmp_path / "pulled", "bob")


def test_a_push_killed_anywhere_resumes(url: str, schema: str, tmp_path: Path) -> None:
    data = tmp_path / "data"
    for n, user_id in enumerate(("alice", "bob", "carol")):
        make_store(data, user_id, events=2000, seed=10 + n)
    chance = random.Random(int(os.environ.get("CHATLEDGER_TEST_SEED", "23")))
    kills = 0
    for round_ in range(6):
        before = _entries_in(url, schema)
        pusher = _push_process(url, schema, data, 50)
        # Every other round is killed at a random moment after this push stored something,
        # the others at any moment (while starting, between or inside transactions).
        deadline = time.monotonic() + 20
        while (round_ % 2 == 0 and pusher.poll() is None and time.monotonic() < deadline
               and _entries_in(url, schema) == before):
            time.sleep(0.01)
        time.sleep(chance.uniform(0.0, 0.15 if round_ % 2 == 0 else 0.8))
        if pusher.poll() is not None:
            break
        pusher.send_signal(signal.SIGKILL)
        pusher.wait()
        kills += 1
    last = _push_process(url, schema, data, 50)
    assert last.wait(timeout=60) == 0
    assert kills >= 1
    for user_id in ("alice", "bob", "carol"):
        assert_each_entry_once(url, schema, data, user_id)
    archive.pull(url, "carol", data_dir=tmp_path / "pulled", schema=schema)
    assert_same_store(data, tmp_path / "pulled", "carol")


def _entries_in(url: str, schema: str) -> int:
    with psycopg.connect(url) as conn:
        try:
            row = conn.execute(f"SELECT coalesce(sum(entries), 0) FROM {schema}.chatledger_users")
            return int(row.fetchone()[0])
        except psycopg.errors.UndefinedTable:
            return 0


def test_awkward_ids_and_envelopes_survive_the_copy(url: str, schema: str, tmp_path: Path) -> None:
    # Ids and envelopes with what a text COPY would have to escape (backslashes, tabs,
    # newlines, quotes in arrays) arrive as they were.
    data = tmp_path / "data"
    odd = 'm\\1\t"two"\n{x},é'
    user_id = "od\\d\tuser \"q\""
    with ChatStore.open(data, user_id) as store:
        store.ingest(message_new("messaging:we\\ird\tcid", odd), connection_id="c\\1\n2")
        store.ingest(reaction_new(CID, odd))
        store.send_message(CID, "local", id=odd + "-local")
        reply = msgspec.json.decode(message_new(CID, odd + "-reply"))
        reply["message"]["parent_id"] = odd
        store.ingest(msgspec.json.encode(reply))
    archive.push(url, data_dir=data, schema=schema)
    # The reply names two messages: an array of two in the archive.
    assert [f["position"] for f in archive.find(url, odd, schema=schema)] == [1, 2, 4]
    assert [f["position"] for f in archive.find(url, odd + "-reply", schema=schema)] == [4]
    archive.pull(url, user_id, data_dir=tmp_path / "pulled", schema=schema)
    assert_same_store(data, tmp_path / "pulled", user_id)


def test_another_history_of_a_user_is_refused(url: str, schema: str, tmp_path: Path) -> None:
    make_store(tmp_path / "one", "alice", events=100, seed=1)
    make_store(tmp_path / "two", "alice", events=100, seed=2)
    archive.push(url, data_dir=tmp_path / "one", schema=schema)
    with pytest.raises(archive.ArchiveError, match="another history of user 'alice'"):
        archive.push(url, data_dir=tmp_path / "two", schema=schema)


def test_a_refused_store_stops_the_push_after_the_stores_before_it(
        url: str, schema: str, tmp_path: Path) -> None:
    # The stores are read ahead on a second thread: the refusal of one (found while the one
    # before is still being stored) surfaces in its turn, after the one before is complete.
    make_store(tmp_path / "one", "zed", events=100, seed=1)
    archive.push(url, data_dir=tmp_path / "one", schema=schema)
    two = tmp_path / "two"
    make_store(two, "alice", events=900, seed=3)
    make_store(two, "zed", events=100, seed=2)
    with pytest.raises(archive.ArchiveError, match="another history of user 'zed'"):
        archive.push(url, data_dir=two, schema=schema, batch=100)
    assert_each_entry_once(url, schema, two, "alice")


def test_payloads_are_compressed_with_lz4_and_older_archives_still_work(
        url: str, schema: str, tmp_path: Path) -> None:
    data = tmp_path / "data"
    make_store(data, "alice", events=300, seed=4)
    archive.push(url, data_dir=data, schema=schema)
    compression = f"""SELECT attcompression FROM pg_attribute
        WHERE attrelid = '{schema}.chatledger_events'::regclass AND attname = 'state'"""
    with psycopg.connect(url, autocommit=True) as conn:
        (lz4,) = conn.execute("SELECT 'lz4' = ANY(enumvals) FROM pg_settings"
                              " WHERE name = 'default_toast_compression'").fetchone()
        (method,) = conn.execute(compression).fetchone()
        assert method == ("l" if lz4 else "")
        # An archive made before (payloads compressed the server's default way) goes on.
        conn.execute(f"ALTER TABLE {schema}.chatledger_events ALTER COLUMN state"
                     " SET COMPRESSION pglz")
    with ChatStore.open(data, "alice") as store:
        store.ingest_many(_generated(60, seed=5))
    assert archive.push(url, data_dir=data, schema=schema).pushed == 60
    archive.pull(url, "alice", data_dir=tmp_path / "pulled", schema=schema)
    assert_same_store(data, tmp_path / "pulled", "alice")


def test_an_events_table_partitioned_by_user(url: str, schema: str, tmp_path: Path) -> None:
    """The library's unique index of notification ids cannot be made on a partitioned table;
    the archive makes it a plain one, and push, pull, find and a second push work as on one
    table."""
    make_partitioned_events(schema)
    data = tmp_path / "data"
    users = ["alice", "bob", "carol", "dave", "erin"]
    for seed, user_id in enumerate(users):
        make_store(data, user_id, events=150, seed=seed)
    report = archive.push(url, data_dir=data, schema=schema)
    assert {u.user_id: u.pushed for u in report.users} == {u: 157 for u in users}
    with psycopg.connect(url) as conn:
        partitions = conn.execute(
            f"SELECT tableoid::regclass::text, count(DISTINCT user_id) "
            f"FROM {schema}.chatledger_events GROUP BY 1").fetchall()
        (unique, in_all) = conn.execute(
            f"SELECT count(DISTINCT notification_id), count(*) "
            f"FROM {schema}.chatledger_events").fetchone()
        (index,) = conn.execute(
            "SELECT indexdef FROM pg_indexes WHERE schemaname = %s "
            "AND indexname = 'chatledger_events_notification_id_idx'", (schema,)).fetchone()
    assert len(partitions) > 1 and sum(users for _, users in partitions) == 5
    assert unique == in_all == 5 * 157
    assert "UNIQUE" not in index
    for user_id in users:
        assert_each_entry_once(url, schema, data, user_id)
    assert {f["user_id"] for f in archive.find(url, "shared-message", schema=schema)} == set(users)
    archive.pull(url, "carol", data_dir=tmp_path / "pulled", schema=schema)
    assert_same_store(data, tmp_path / "pulled", "carol")
    with ChatStore.open(data, "alice") as store:
        store.ingest_many(_generated(20, seed=9))
    assert archive.push(url, data_dir=data, schema=schema).pushed == 20
    assert_each_entry_once(url, schema, data, "alice")


def _partitions_of(url: str, schema: str) -> list[tuple[str, int]]:
    """The events table's partitions and the users in each (none: not partitioned)."""
    with psycopg.connect(url) as conn:
        names = [name for (name,) in conn.execute(
            "SELECT inhrelid::regclass::text FROM pg_inherits "
            "WHERE inhparent = %s::regclass ORDER BY 1", (f"{schema}.chatledger_events",))]
        return [(name, conn.execute(f"SELECT count(DISTINCT user_id) FROM {name}").fetchone()[0])
                for name in names]


def test_push_makes_a_partitioned_archive_when_asked(url: str, schema: str,
                                                     tmp_path: Path) -> None:
    data = tmp_path / "data"
    users = ["alice", "bob", "carol", "dave"]
    for seed, user_id in enumerate(users):
        make_store(data, user_id, events=120, seed=seed)
    runner = CliRunner()
    result = runner.invoke(cli, ["--data-dir", str(data), "--user", "alice", "archive", "push",
                                 "--to", url, "--partitions", "3", "--json"],
                           env={"CHATLEDGER_ARCHIVE_SCHEMA": schema})
    assert result.exit_code == 0, result.output
    assert msgspec.json.decode(result.output.splitlines()[-1])["pushed"] == 127
    # An archive that exists keeps its layout, whatever a later push asks.
    report = archive.push(url, data_dir=data, schema=schema, partitions=7)
    assert report.pushed == 3 * 127
    partitions = _partitions_of(url, schema)
    assert [name.rsplit(".", 1)[1] for name, _ in partitions] == [
        f"chatledger_events_{number}" for number in range(3)]
    assert sum(held for _, held in partitions) == 4
    for user_id in users:
        assert_each_entry_once(url, schema, data, user_id)
    assert {f["user_id"] for f in archive.find(url, "shared-message", schema=schema)} == set(users)
    archive.pull(url, "dave", data_dir=tmp_path / "pulled", schema=schema)
    assert_same_store(data, tmp_path / "pulled", "dave")
    with pytest.raises(ValueError, match="partitions"):
        archive.push(url, data_dir=data, schema=f"{schema}_never_made", partitions=0)
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT to_regnamespace(%s)", (f"{schema}_never_made",)
                            ).fetchone() == (None,)


def test_without_partitions_the_events_table_is_one(url: str, schema: str,
                                                    tmp_path: Path) -> None:
    make_store(tmp_path / "data", "alice", events=50, seed=1)
    archive.push(url, data_dir=tmp_path / "data", schema=schema)
    assert _partitions_of(url, schema) == []


# -- the cross-user questions --------------------------------------------------------------------


def test_users_find_and_stats(url: str, schema: str, tmp_path: Path) -> None:
    data = tmp_path / "data"
    make_store(data, "alice", events=400, seed=1)
    make_store(data, "bob", events=200, seed=2)
    archive.push(url, data_dir=data, schema=schema)
    users = archive.users(url, schema=schema)
    assert [(u["user_id"], u["entries"], u["pending"], u["refused"]) for u in users] == [
        ("alice", 407, 1, 1), ("bob", 207, 1, 1)]
    found = archive.find(url, "shared-message", schema=schema)
    assert {f["user_id"] for f in found} == {"alice", "bob"}
    for hit in found:
        with ChatStore.open(data, hit["user_id"]) as store:
            (entry,) = store.log.entries(after=hit["position"] - 1, limit=1)
            assert history.mentions(entry.type, entry.payload, "shared-message")
    assert [f["type"] for f in archive.find(url, "alice-sent", schema=schema)] == [
        "chatledger/command.requested"]
    by_user = {s["key"]: s["entries"] for s in archive.stats(url, by="user", schema=schema)}
    assert by_user == {"alice": 407, "bob": 207}
    by_type = archive.stats(url, by="type", schema=schema)
    assert sum(s["entries"] for s in by_type) == 614
    assert sum(s["entries"] for s in archive.stats(url, by="day", schema=schema)) == 614


@pytest.mark.parametrize(("payload", "named"), [
    ({"message": {"id": "m1", "text": "x"}}, ["m1"]),
    ({"message": {"id": "r1", "parent_id": "m1"}}, ["r1", "m1"]),
    ({"message": {"id": "m1", "parent_id": "m1"}}, ["m1"]),
    ({"message": {"id": "m1", "parent_id": ""}}, ["m1"]),
    ({"message": {"id": "", "parent_id": "m1"}}, ["m1"]),
    ({"message": {"id": "r1", "parent_id": 7}}, ["r1"]),
    ({"message": {"id": 5, "parent_id": None}}, None),
    ({"message": {"id": None, "parent_id": 7}}, None),
    ({"message": {"parent_id": "m1"}}, ["m1"]),
    ({"message_id": "m2", "message": {"id": "m1"}}, ["m2", "m1"]),
    ({"reaction": {"message_id": "m3"}, "message": {"id": "m4"}}, ["m4", "m3"]),
    ({"message": "not an object", "message_id": "m5"}, ["m5"]),
    ({"message_id": "m1", "message": {"id": "m1"}}, ["m1"]),
    ({"message_id": {"not": "an id"}, "message": {"id": "m1"}}, ["m1"]),
    ({"reaction": {"message_id": "m1"}, "message": {"id": "m1"}, "message_id": "m1"}, ["m1"]),
    ({"message_id": "m2"}, ["m2"]),
    ({"user": {"id": "u1"}, "messages": []}, None),
])
def test_message_ids_of_each_shape(payload: dict[str, Any], named: list[str] | None) -> None:
    encoded = msgspec.json.encode(payload)
    assert message_ids("message.new", encoded, local=False) == named
    for candidate in ("m1", "m2", "m3", "m4", "m5", "r1", "u1"):
        assert history.mentions("message.new", encoded, candidate) == (
            candidate in (named or [])), candidate


def test_message_ids_follow_explain(tmp_path: Path) -> None:
    make_store(tmp_path, "alice", events=1500, seed=9)
    with ChatStore.open(tmp_path, "alice") as store:
        for entry in store.log.iter_entries():
            local = entry.source == "local"
            named = message_ids(entry.type, entry.payload, local=local) or []
            check = history.command_mentions if local else history.mentions
            for message_id in named:
                assert check(entry.type, entry.payload, message_id), (entry.type, message_id)
            if not local and b'"message"' in entry.payload and not named:
                assert not check(entry.type, entry.payload, "m1")


# -- errors: one line, never a password ----------------------------------------------------------


def test_errors_are_one_line_without_the_password(url: str, schema: str, tmp_path: Path) -> None:
    wrong = url.replace(":archive-test-secret@", ":not-the-password@") if (
        ":archive-test-secret@" in url) else None
    cases = [("mysql://x@localhost/db", "not a PostgreSQL URL"),
             ("postgresql://127.0.0.1:1/postgres", "cannot reach the archive")]
    if wrong is not None:
        cases.append((wrong, "refused the credentials"))
    for bad, says in cases:
        with pytest.raises(archive.ArchiveError, match=says) as caught:
            archive.users(bad, schema=schema)
        message = str(caught.value)
        assert "\n" not in message and "not-the-password" not in message
        assert "archive-test-secret" not in message
    with pytest.raises(archive.ArchiveError, match="no chatledger archive"):
        archive.users(url, schema=schema)


def test_an_archive_from_a_newer_version_is_refused(url: str, schema: str, tmp_path: Path) -> None:
    make_store(tmp_path, "alice", events=50, seed=1)
    archive.push(url, data_dir=tmp_path, schema=schema)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"UPDATE {schema}.chatledger_archive_meta SET value='99' "
                     "WHERE key='schema_version'")
    with pytest.raises(archive.ArchiveError, match="newer chatledger"):
        archive.push(url, data_dir=tmp_path, schema=schema)


# -- the command ---------------------------------------------------------------------------------


def test_cli(url: str, schema: str, tmp_path: Path) -> None:
    data = tmp_path / "data"
    make_store(data, "alice", events=300, seed=1)
    runner = CliRunner()

    def run(*args: str, code: int = 0) -> str:
        result = runner.invoke(cli, ["--data-dir", str(data), *args],
                               env={"CHATLEDGER_USER": None, "CHATLEDGER_ARCHIVE_SCHEMA": schema})
        assert result.exit_code == code, result.output
        assert "archive-test-secret" not in result.output
        return result.output

    (summary,) = [msgspec.json.decode(line) for line in
                  run("archive", "push", "--to", url, "--json").splitlines()]
    assert summary["pushed"] == 307 and summary["users"][0]["user_id"] == "alice"
    assert "pushed 0 entries" in run("archive", "push", "--to", url).lower()
    users = [msgspec.json.decode(line) for line in
             run("archive", "users", "--from", url, "--json").splitlines()]
    assert users[0]["user_id"] == "alice" and users[0]["refused"] == 1
    assert "alice" in run("archive", "users", "--from", url)
    assert "alice" in run("archive", "find", "shared-message", "--from", url)
    assert "message.new" in run("archive", "stats", "--by", "type", "--from", url)
    pulled = run("archive", "pull", "--from", url, "--user", "alice", "--data-dir",
                 str(tmp_path / "pulled"), "--upto", "100", "--json")
    assert msgspec.json.decode(pulled.splitlines()[-1])["position"] == 100
    wrong = url.replace(":archive-test-secret@", ":nope@")
    out = run("archive", "users", "--from", wrong, code=1)
    assert out.count("\n") == 1 and "nope" not in out


def test_the_package_root_imports_psycopg_only_for_the_archive() -> None:
    code = ("import sys, chatledger; assert 'psycopg' not in sys.modules; "
            "from chatledger import archive; assert archive.push; "
            "assert 'psycopg' in sys.modules")
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)
