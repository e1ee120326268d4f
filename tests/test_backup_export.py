"""Backups (`ChatStore.backup`, `chatledger backup`) and exports (`ChatStore.export_channels`,
`chatledger export`): a backup is the store, an export imports back into the same channels."""

from __future__ import annotations

import io
import json
import stat
import sys
import threading
from pathlib import Path
from typing import Any

import msgspec
import pytest
from click.testing import CliRunner

from chatledger import ChatStore
from chatledger.cli.main import cli
from chatledger.eventstore.backup import MAX_RESTARTS, DestinationExists, backup_database
from chatledger.eventstore.importer import import_stream
from chatledger.eventstore.log import StoreError
from chatledger.projections import export as export_module
from chatledger.projections.export import ExportError, iter_export
from fixtures import T0, event, message, message_new, user

CID = "messaging:general"


def _generated(n: int, seed: int) -> list[bytes]:
    sys.path.insert(0, str(Path(__file__).parent.parent))
    from benchmarks.workload import generate_events

    return list(generate_events(n, seed=seed))


def at(n: int) -> str:
    return f"2026-11-25T10:{n // 60:02d}:{n % 60:02d}.000000Z"


def _tables(store: ChatStore) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table of the file, the log included."""
    with store.log.datastore.transaction(commit=False) as c:
        names = [n for (n,) in c.execute(
            "SELECT name FROM sqlite_schema WHERE type='table' AND name NOT LIKE 'sqlite_%' "
            "ORDER BY name")]
        return {n: sorted(c.execute(f"SELECT * FROM {n}").fetchall(), key=repr) for n in names}


def _no_leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".part")
                  or p.name.endswith("-wal") or p.name.endswith("-journal"))


@pytest.fixture()
def generated_store(tmp_path: Path):
    store = ChatStore.open(tmp_path / "data", "alice")
    store.ingest_many(_generated(2500, seed=7))
    store.ingest_many([b"{not json"])  # a quarantined item goes along in a backup
    yield store
    store.close()


# -- backup ------------------------------------------------------------------------------------


def test_backup_is_the_store(generated_store: ChatStore, tmp_path: Path) -> None:
    dest = tmp_path / "copy.chatledger"
    report = generated_store.backup(dest)
    assert report["path"] == str(dest) and report["user_id"] == "alice"
    assert report["events"] == generated_store.stats().events == 2500
    assert report["bytes"] == dest.stat().st_size and report["pages"] > 0
    assert stat.S_IMODE(dest.stat().st_mode) == 0o600
    assert _no_leftovers(tmp_path) == []
    with ChatStore.open_file(dest) as copy:
        assert copy.user_id == "alice"
        assert _tables(copy) == _tables(generated_store)
        assert copy.verify() == []
        assert copy.quarantine()[0].raw == b"{not json"


def test_backup_refuses_what_it_must_not_touch(generated_store: ChatStore, tmp_path: Path) -> None:
    dest = tmp_path / "copy.chatledger"
    dest.write_bytes(b"precious")
    with pytest.raises(DestinationExists, match="already exists"):
        generated_store.backup(dest)
    assert dest.read_bytes() == b"precious"
    with pytest.raises(StoreError, match="the store itself"):
        generated_store.backup(generated_store.path)
    with pytest.raises(StoreError, match="the store itself"):
        generated_store.backup(generated_store.path.parent)  # a directory: its own name there
    with pytest.raises(StoreError, match="does not exist"):
        generated_store.backup(tmp_path / "missing" / "copy.chatledger")
    (tmp_path / "other.chatledger-wal").write_bytes(b"commits of another database")
    with pytest.raises(StoreError, match="-wal exists"):
        generated_store.backup(tmp_path / "other.chatledger")
    assert not (tmp_path / "other.chatledger").exists()
    (tmp_path / "other.chatledger-wal").unlink()
    assert _no_leftovers(tmp_path) == []
    assert generated_store.backup(dest, overwrite=True)["events"] == 2500
    with ChatStore.open_file(dest) as copy:
        assert copy.stats().events == 2500


def test_backup_into_a_directory_takes_the_store_file_name(tmp_path: Path) -> None:
    with ChatStore.open(tmp_path / "data", "alice") as store:
        store.ingest(message_new())
        (tmp_path / "backups").mkdir()
        report = store.backup(tmp_path / "backups")
    assert report["path"] == str(tmp_path / "backups" / "alice.chatledger")
    with ChatStore.open(tmp_path / "backups", "alice", create=False) as restored:
        assert restored.message("m1") is not None


def test_a_store_changing_between_steps_restarts_the_copy_and_still_ends(tmp_path: Path) -> None:
    # An append after every step makes SQLite start the copy over each time; after a few
    # restarts the rest is copied from one snapshot, so the loop ends with a consistent copy.
    store = ChatStore.open(tmp_path / "data", "alice")
    store.ingest_many(_generated(1500, seed=3))
    added = iter(range(10_000))

    def append_between_steps(done: int, total: int) -> None:
        n = next(added)
        store.ingest(message_new(mid=f"late-{n}", at=at(n % 3600)))

    report = backup_database(store.log.datastore, tmp_path / "copy.chatledger",
                             pages_per_step=8, on_progress=append_between_steps)
    assert report.restarts == MAX_RESTARTS
    assert 1500 < report.events < store.stats().events  # a snapshot taken mid-way
    with ChatStore.open_file(tmp_path / "copy.chatledger") as copy:
        assert copy.verify() == []
        assert [e.payload for e in copy.history()] == [
            e.payload for e in store.history(limit=report.events)]
    store.close()


def test_backup_while_another_thread_appends_is_a_consistent_snapshot(tmp_path: Path) -> None:
    store = ChatStore.open(tmp_path / "data", "alice")
    store.ingest_many(_generated(1500, seed=5))
    stop = threading.Event()
    errors: list[BaseException] = []

    def writer() -> None:
        n = 0
        try:
            while not stop.is_set():
                store.ingest_many([message_new(mid=f"w{n}-{i}", at=at(n % 3600)) for i in range(5)])
                n += 1
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        report = store.backup(tmp_path / "copy.chatledger")
    finally:
        stop.set()
        thread.join()
    assert errors == []
    with ChatStore.open_file(tmp_path / "copy.chatledger") as copy:
        assert copy.verify() == []  # the read tables match the log of the same snapshot
        copied = [e.payload for e in copy.history()]
        assert len(copied) == report["events"] >= 1500
        assert copied == [e.payload for e in store.history(limit=len(copied))]
    store.close()


def test_backup_of_a_store_in_memory(tmp_path: Path) -> None:
    with ChatStore.open_file(":memory:") as store:
        store.ingest(message_new())
        report = store.backup(tmp_path / "copy.chatledger")
    assert report["events"] == 1
    with ChatStore.open_file(tmp_path / "copy.chatledger") as copy:
        assert copy.message("m1").json()["text"] == "hello"


# -- the command line --------------------------------------------------------------------------


@pytest.fixture()
def run(tmp_path: Path):
    runner = CliRunner()

    def invoke(*args: str, user: str = "alice", input: bytes | None = None):
        return runner.invoke(cli, ["--data-dir", str(tmp_path / "data"), "--user", user, *args],
                             input=input, catch_exceptions=False)

    return invoke


def test_cli_backup(run, tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    events.write_bytes(b"\n".join(message_new(mid=f"m{i}", at=at(i)) for i in range(20)) + b"\n")
    assert run("import", str(events)).exit_code == 0
    dest = tmp_path / "alice-backup.chatledger"
    result = run("backup", str(dest))
    assert result.exit_code == 0, result.output
    assert f"Backed up 20 log entries of 'alice' to {dest}" in result.output
    again = run("backup", str(dest))
    assert again.exit_code == 1
    assert again.output.strip() == f"Error: {dest} already exists (--force replaces it)"
    forced = run("backup", "--force", "--json", str(dest))
    assert forced.exit_code == 0
    assert json.loads(forced.stdout)["events"] == 20
    missing = run("backup", str(tmp_path / "nowhere" / "x.chatledger"))
    assert missing.exit_code == 1 and "does not exist" in missing.output
    nobody = run("backup", str(tmp_path / "bob.chatledger"), user="bob")
    assert nobody.exit_code == 1 and "no store for user 'bob'" in nobody.output
    assert not (tmp_path / "bob.chatledger").exists()


def test_commands_help_has_examples(run) -> None:
    for command in ("backup", "export"):
        assert "Example" in run(command, "--help").output


# -- export ------------------------------------------------------------------------------------


_MESSAGE_ROW = ("cid, created_at, id, user_id, type, parent_id, show_in_channel, reply_count, "
                "pinned, pinned_at, deleted_at, silent")
_CHANNEL_ROW = ("cid, type, id, name, created_by, created_at, updated_at, last_message_at, "
                "member_count, frozen, disabled, hidden, team, truncated_at, deleted_at, custom")


def _rows(store: ChatStore, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    with store.log.datastore.transaction(commit=False) as c:
        return c.execute(sql, params).fetchall()


def _state(store: ChatStore, cids: list[str] | None = None) -> dict[str, Any]:
    """What a round trip must keep: channels, messages (rows, objects' text, order), members,
    reads, unread counts."""
    where = "" if cids is None else " WHERE cid IN (SELECT value FROM json_each(?))"
    params = () if cids is None else (json.dumps(cids),)
    channels = [r[0] for r in _rows(store, f"SELECT cid FROM channels{where} ORDER BY cid", params)]
    return {
        "channels": _rows(store, f"SELECT {_CHANNEL_ROW} FROM channels{where} ORDER BY cid",
                          params),
        "messages": _rows(store, f"SELECT {_MESSAGE_ROW} FROM messages{where} "
                          + ("AND" if where else "WHERE")
                          + " deleted_for_me=0 AND local_state IS NULL "
                          "ORDER BY cid, created_at, id",
                          params),
        "pages": {cid: [(m.id, m.json().get("text"), m.type, m.reply_count, m.deleted_at)
                        for m in store.messages(cid, limit=100_000) if m.local_state is None]
                  for cid in channels},
        "members": _rows(store, f"SELECT * FROM members{where} ORDER BY cid, user_id", params),
        "reads": _rows(store, f"SELECT cid, user_id, last_read, unread_messages, "
                       f"last_read_message_id, first_unread_message_id FROM reads{where} "
                       "ORDER BY cid, user_id", params),
    }


def _export(store: ChatStore, **options: Any) -> bytes:
    out = io.BytesIO()
    store.export_channels(out, **options)
    return out.getvalue()


def _imported(tmp_path: Path, document: bytes, name: str = "imported") -> ChatStore:
    store = ChatStore.open(tmp_path / name, "alice")
    report = import_stream(store.log, io.BytesIO(document), kind="query")
    assert report.quarantined == 0, report.reasons
    return store


def test_export_of_generated_events_imports_into_the_same_channels(
    generated_store: ChatStore, tmp_path: Path
) -> None:
    source = _state(generated_store)
    # The workload has what the round trip must keep: threads, deletions, several channels.
    assert any(row[5] for row in source["messages"]) and any(row[4] == "deleted"
                                                              for row in source["messages"])
    document = _export(generated_store)
    assert list(json.loads(document)) == ["channels"]
    with _imported(tmp_path, document) as copy:
        assert _state(copy) == source
        assert copy.unread_counts() == generated_store.unread_counts()
        assert copy.verify() == []


def _hand_made(store: ChatStore) -> None:
    other = "messaging:other"
    store.ingest_many([
        event("channel.updated", channel={"id": "general", "type": "messaging", "cid": CID,
                                          "name": "General", "member_count": 2, "colour": "teal",
                                          "created_at": T0, "updated_at": T0}),
        event("member.added", member={"user_id": "alice", "user": user("alice"),
                                      "channel_role": "channel_member", "created_at": T0}),
        event("member.added", member={"user_id": "bob", "user": user("bob"), "created_at": T0}),
        *[event("message.new", at=at(i), user=user("bob"),
                message=message(f"m{i}", at=at(i), text=f"text {i}")) for i in range(6)],
        # A thread: two replies under m1, one of them shown in the channel too.
        event("message.new", at=at(10), message=message("r1", at=at(10), parent_id="m1",
                                                        type="reply")),
        event("message.new", at=at(11), message=message("r2", at=at(11), parent_id="m1",
                                                        type="reply", show_in_channel=True)),
        event("message.updated", at=at(12), message=message("m2", at=at(2), text="edited")),
        # A soft delete whose event still carries the message as it was: the row knows better.
        event("message.deleted", at=at(13), message=message("m3", at=at(3), text="text 3")),
        event("message.deleted", at=at(14), hard_delete=True, message={"id": "m4"}),
        event("message.deleted", at=at(15), deleted_for_me=True, message={"id": "m5"}),
        event("reaction.new", at=at(16), reaction={"message_id": "m0", "user_id": "bob",
                                                   "type": "like"},
              message=message("m0", at=at(0), text="text 0", reaction_counts={"like": 1})),
        event("message.read", at=at(17), user=user("alice"), last_read_message_id="m2"),
        event("message.new", cid=other, at=at(20),
              message=message("o1", cid=other, at=at(20), text="elsewhere")),
        event("channel.updated", cid=other, at=at(21),
              channel={"id": "other", "type": "messaging", "cid": other, "name": "Other"}),
        # Hidden after its object arrived: the row knows better than the object.
        event("channel.hidden", cid=other, at=at(22)),
    ])


def test_export_of_hand_made_events_round_trips(tmp_path: Path) -> None:
    with ChatStore.open(tmp_path / "data", "alice") as store:
        _hand_made(store)
        store.send_message(CID, "not sent yet", id="local-1")
        document = _export(store)
        report = store.export_channels(io.BytesIO())
        assert report["local_left_out"] == 1 and report["channels"] == 2
        states = {s["channel"]["cid"]: s for s in json.loads(document)["channels"]}
        general = states[CID]
        assert [m["id"] for m in general["messages"]] == ["m0", "m1", "m2", "m3", "r1", "r2"]
        by_id = {m["id"]: m for m in general["messages"]}
        assert by_id["m1"]["reply_count"] == 2 and by_id["m3"]["type"] == "deleted"
        assert by_id["m2"]["text"] == "edited" and by_id["m3"]["deleted_at"]
        # Objects are the stored bytes, not rebuilt from the tables.
        assert store.message("m2").raw in document and store.message("r2").raw in document
        assert general["channel"]["colour"] == "teal"
        assert general["membership"]["user_id"] == "alice"
        # Members carry the user as last received (alice never came with a user object).
        assert [m["user"] for m in general["members"]] == [{"id": "alice"}, user("bob")]
        assert states["messaging:other"]["channel"]["hidden"] is True
        # (The own read row names it: sending marked the channel read, as the tables say.)
        assert b'"id":"local-1"' not in document
        assert b'"id":"local-1"' in _export(store, include_local=True)
        with _imported(tmp_path, document) as copy:
            assert _state(copy) == _state(store)
            assert copy.unread_counts() == store.unread_counts()
            assert copy.message("m5") is None and copy.message("m4") is None
            assert copy.user("bob").user["favourite_colour"] == "teal"  # known from the members
            assert copy.verify() == []


def test_export_of_one_channel(generated_store: ChatStore, tmp_path: Path) -> None:
    cid = generated_store.channels(limit=2)[1].cid
    document = _export(generated_store, cids=[cid, cid])
    assert [s["channel"]["cid"] for s in json.loads(document)["channels"]] == [cid]
    with _imported(tmp_path, document) as copy:
        assert [c for (c,) in _rows(copy, "SELECT cid FROM channels")] == [cid]
        assert _state(copy) == _state(generated_store, [cid])
    with pytest.raises(ExportError, match="no channel 'messaging:nope' is stored"):
        _export(generated_store, cids=[cid, "messaging:nope"])


def test_export_of_the_newest_messages(generated_store: ChatStore, tmp_path: Path) -> None:
    document = _export(generated_store, messages=3)
    states = json.loads(document)["channels"]
    for state in states:
        cid = state["channel"]["cid"]
        newest = _rows(generated_store, "SELECT id FROM messages WHERE cid=? AND deleted_for_me=0 "
                       "ORDER BY created_at DESC, id DESC LIMIT 3", (cid,))
        assert [m["id"] for m in state["messages"]] == [r[0] for r in reversed(newest)]
    with _imported(tmp_path, document) as copy:
        assert max(n for (n,) in _rows(copy, "SELECT count(*) FROM messages WHERE pinned=0 "
                                             "GROUP BY cid")) <= 3


def test_a_channel_too_big_for_one_part_is_split(
    generated_store: ChatStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(export_module, "PART_BYTES", 40_000)
    document = _export(generated_store)
    states = json.loads(document)["channels"]
    assert len(states) > len({s["channel"]["cid"] for s in states})
    assert all(len(msgspec.json.encode(s)) <= 40_000 or len(s["messages"]) == 1 for s in states)
    with _imported(tmp_path, document) as copy:
        assert _state(copy) == _state(generated_store)


def test_export_streams_a_channel_at_a_time(generated_store: ChatStore) -> None:
    chunks = list(iter_export(generated_store.read))
    assert len(chunks) > 10 and b"".join(chunks) == _export(generated_store)


def test_cli_export_and_import(run, tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    events.write_bytes(b"\n".join(_generated(800, seed=11)) + b"\n")
    assert run("import", str(events)).exit_code == 0
    out = tmp_path / "channels.json"
    result = run("export", str(out))
    assert result.exit_code == 0, result.output
    assert result.output.startswith("Exported ") and stat.S_IMODE(out.stat().st_mode) == 0o600
    again = run("export", str(out))
    assert again.exit_code == 1 and "already exists (--force replaces it)" in again.output
    bad = run("export", "--cid", "messaging:nope", str(tmp_path / "bad.json"))
    assert bad.exit_code == 1
    assert bad.output.strip() == "Error: no channel 'messaging:nope' is stored"
    assert not (tmp_path / "bad.json").exists() and _no_leftovers(tmp_path) == []
    stdout = run("export", "--json", "-")
    assert stdout.exit_code == 0 and stdout.stdout_bytes == out.read_bytes()
    assert json.loads(stdout.stderr)["channels"] == len(json.loads(out.read_bytes())["channels"])
    assert run("import", "--kind", "query", str(out), user="bob").exit_code == 0
    with ChatStore.open(tmp_path / "data", "alice", create=False) as alice, \
            ChatStore.open(tmp_path / "data", "bob", create=False) as bob:
        assert _state(bob)["pages"] == _state(alice)["pages"]
    refused = run("export", "--force", str(tmp_path / "data" / "alice.chatledger"))
    assert refused.exit_code == 1 and "SQLite database" in refused.output
