"""Sealed stores (issue 22): payloads encrypted at rest, bound to their position; the log's hash
chain locating any change; keys refused; rekey and the chain upgrade surviving a kill."""

from __future__ import annotations

import hashlib
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import apsw
import pytest
from click.testing import CliRunner

from chatledger import AsyncChatStore, ChatStore
from chatledger.cli.main import cli
from chatledger.eventstore import schema, seal
from chatledger.eventstore.log import EventLog, KeyRequired, StoreError
from chatledger.eventstore.seal import ChainWriter, SealError

ROOT = Path(__file__).resolve().parent.parent
KEY = bytes(range(32))
OTHER_KEY = bytes(range(32, 64))


def events(n: int, seed: int = 1) -> list[bytes]:
    from benchmarks.workload import generate_events

    return list(generate_events(n, seed=seed))


def make_store(directory: Path, n: int = 3_000, key: bytes | None = KEY, user: str = "alice") -> Path:
    store = ChatStore.open(directory, user, key=key)
    payloads = events(n)
    for start in range(0, n, 500):
        store.ingest_many(payloads[start:start + 500])
    path = store.path
    store.close()
    assert path is not None
    return path


def raw(path: Path) -> apsw.Connection:
    return apsw.Connection(str(path))


def row(connection: apsw.Connection, position: int) -> tuple:
    return connection.execute(
        "SELECT originator_id, originator_version, topic, state, codec, source, received_at, "
        "event_at, connection_id, chain FROM stored_events WHERE rowid=?", (position,)).fetchone()


def put(connection: apsw.Connection, position: int, values: tuple) -> None:
    connection.execute(
        "UPDATE stored_events SET originator_id=?, originator_version=?, topic=?, state=?, codec=?,"
        " source=?, received_at=?, event_at=?, connection_id=?, chain=? WHERE rowid=?",
        (*values, position))


def check(path: Path, head: tuple[bytes, int] | None = None) -> seal.ChainReport:
    return seal.check_file(path, head=head)


def file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# -- encryption ---------------------------------------------------------------------------------


def test_a_sealed_store_keeps_no_payload_in_clear_and_reads_everything_back(tmp_path: Path) -> None:
    path = make_store(tmp_path)
    data = path.read_bytes()
    # Ids and cids stay visible (read tables, envelope); no text of any message does.
    assert b'"text"' not in data and b"message.new" in data
    assert b"quoted" not in data
    with ChatStore.open(tmp_path, "alice", key=KEY) as store:
        assert store.sealed
        assert store.verify() == []
        cid = store.channels(limit=1)[0].cid
        assert store.messages(cid, limit=20)
        assert store.history(limit=3)
        assert store.log.entries(limit=1)[0].payload.startswith(b'{"type"')
        store.rebuild()
        assert store.verify() == [] and store.verify_chain().ok


def test_quarantine_and_commands_are_sealed_too(tmp_path: Path) -> None:
    with ChatStore.open(tmp_path, "alice", key=KEY) as store:
        store.ingest_many([b'{"type": "message.new", "secret-in-quarantine', events(1)[0]])
        command_id = store.send_message("messaging:general", "a secret sent offline")
        path = store.path
    assert path is not None
    data = path.read_bytes() + Path(f"{path}-wal").read_bytes() if Path(f"{path}-wal").exists() \
        else path.read_bytes()
    assert b"secret-in-quarantine" not in data and b"a secret sent offline" not in data
    with ChatStore.open(tmp_path, "alice", key=KEY) as store:
        assert store.log.quarantine()[0]["raw"].endswith(b"secret-in-quarantine")
        assert any(c.id == command_id for c in store.outbox.pending())


def test_no_key_and_a_wrong_key_are_refused_and_change_nothing(tmp_path: Path) -> None:
    path = make_store(tmp_path)
    before = file_digest(path)
    with pytest.raises(KeyRequired, match="encrypted: open it with its key"):
        ChatStore.open(tmp_path, "alice")
    with pytest.raises(KeyRequired, match="does not open this store"):
        ChatStore.open(tmp_path, "alice", key=OTHER_KEY)
    assert file_digest(path) == before
    runner = CliRunner()
    result = runner.invoke(cli, ["--data-dir", str(tmp_path), "-u", "alice", "stats"])
    assert result.exit_code == 1 and result.output.count("\n") == 1
    assert result.output.startswith("Error: this store is encrypted")
    (tmp_path / "wrong.key").write_bytes(OTHER_KEY.hex().encode())
    result = runner.invoke(cli, ["--data-dir", str(tmp_path), "-u", "alice", "--key-file",
                                 str(tmp_path / "wrong.key"), "log", "--limit", "1"])
    assert result.exit_code == 1 and "does not open this store" in result.output
    assert file_digest(path) == before


def test_a_payload_moved_to_another_position_does_not_decrypt(tmp_path: Path) -> None:
    path = make_store(tmp_path, 2_500)
    with raw(path) as connection:
        other = row(connection, 70)
        connection.execute("UPDATE stored_events SET state=?, codec=? WHERE rowid=50",
                           (other[3], other[4]))
    log = EventLog.open(path, key=KEY)
    try:
        with pytest.raises(SealError, match="log entry 50"):
            log.entries(after=49, limit=1)
        assert log.entries(after=50, limit=1)[0].position == 51
    finally:
        log.close()
    broken = check(path).broken
    assert broken is not None and (broken.position, broken.kind) == (50, "changed")


def test_a_plain_store_is_encrypted_in_place_rekeyed_and_decrypted(tmp_path: Path) -> None:
    path = make_store(tmp_path, key=None)
    with ChatStore.open(tmp_path, "alice") as store:
        expected = [e.payload for e in store.log.entries()]
        store.rekey(KEY)
    assert b"quoted" not in path.read_bytes()
    with pytest.raises(KeyRequired):
        ChatStore.open(tmp_path, "alice")
    with ChatStore.open(tmp_path, "alice", key=KEY) as store:
        store.rekey(OTHER_KEY)
    with ChatStore.open(tmp_path, "alice", key=OTHER_KEY) as store:
        assert [e.payload for e in store.log.entries()] == expected
        assert store.verify() == [] and store.verify_chain().ok
        store.rekey(None)
    with ChatStore.open(tmp_path, "alice") as store:
        assert not store.sealed
        assert [e.payload for e in store.log.entries()] == expected


def test_a_key_given_for_a_plain_store_is_refused(tmp_path: Path) -> None:
    make_store(tmp_path, 100, key=None)
    with pytest.raises(KeyRequired, match="not encrypted"):
        ChatStore.open(tmp_path, "alice", key=KEY)


def test_rekey_refuses_a_broken_chain(tmp_path: Path) -> None:
    path = make_store(tmp_path, 2_500)
    with raw(path) as connection:
        connection.execute("UPDATE stored_events SET received_at=received_at+1 WHERE rowid=9")
    with ChatStore.open(tmp_path, "alice", key=KEY) as store:
        with pytest.raises(StoreError, match="chain breaks at entry 9"):
            store.rekey(OTHER_KEY)
    with ChatStore.open(tmp_path, "alice", key=KEY) as store:  # nothing changed
        assert store.log.entries(after=100, limit=1)


def test_importing_chatledger_imports_no_cipher_or_keyring() -> None:
    code = ("import sys, chatledger, chatledger.cli.main; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('cryptography','keyring')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_key_files_hold_raw_hex_or_base64(tmp_path: Path) -> None:
    import base64

    for material in (KEY, KEY.hex().encode() + b"\n", base64.b64encode(KEY)):
        (tmp_path / "k").write_bytes(material)
        assert seal.read_key_file(tmp_path / "k") == KEY
    (tmp_path / "k").write_bytes(b"short")
    with pytest.raises(seal.StoreKeyError, match="no usable key"):
        seal.read_key_file(tmp_path / "k")


def test_the_async_store_has_the_sealing_methods(tmp_path: Path) -> None:
    import asyncio

    async def main() -> None:
        store = await AsyncChatStore.open(tmp_path, "alice", key=KEY)
        try:
            await store.ingest_many(events(50))
            position, chain = await store.chain_head()
            assert position == 50 and (await store.verify_chain((chain, 50))).ok
            await store.rekey(OTHER_KEY)
            assert store.sealed
        finally:
            await store.close()

    asyncio.run(main())


# -- the chain ---------------------------------------------------------------------------------


@pytest.fixture(params=["sealed", "plain"])
def chained(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    return make_store(tmp_path, 2_500, key=KEY if request.param == "sealed" else None)


def test_an_untouched_chain_checks_with_and_without_the_key(chained: Path, tmp_path: Path) -> None:
    report = check(chained)
    assert report.ok and report.entries == 2_500
    log = EventLog.open(chained, key=KEY if b"cipher" in chained.read_bytes() else None)
    try:
        assert log.head() == (2_500, report.head_hash)
        assert log.verify_chain((report.head_hash, 2_500)).ok
    finally:
        log.close()


def test_a_flipped_byte_is_located(chained: Path) -> None:
    with raw(chained) as connection:
        values = list(row(connection, 1_234))
        state = bytearray(values[3])
        state[len(state) // 2] ^= 0x01
        values[3] = bytes(state)
        put(connection, 1_234, tuple(values))
    broken = check(chained).broken
    assert broken is not None and (broken.position, broken.kind) == (1_234, "changed")


def test_a_changed_envelope_is_located(chained: Path) -> None:
    with raw(chained) as connection:
        connection.execute("UPDATE stored_events SET topic='message.deleted' WHERE rowid=77")
    broken = check(chained).broken
    assert broken is not None and (broken.position, broken.kind) == (77, "changed")


def test_a_deleted_row_is_located(chained: Path) -> None:
    with raw(chained) as connection:
        connection.execute("DELETE FROM stored_events WHERE rowid=500")
    broken = check(chained).broken
    assert broken is not None and (broken.position, broken.kind) == (500, "removed")


def test_rows_deleted_and_the_rest_renumbered_are_located(chained: Path) -> None:
    with raw(chained) as connection:
        connection.execute("DELETE FROM stored_events WHERE rowid IN (600, 601)")
        connection.execute("UPDATE stored_events SET rowid=-rowid WHERE rowid>601")
        connection.execute("UPDATE stored_events SET rowid=-rowid-2 WHERE rowid<0")
    broken = check(chained).broken
    assert broken is not None and (broken.position, broken.kind) == (600, "removed")
    assert "600..601" in broken.detail


def test_two_swapped_rows_are_located(chained: Path) -> None:
    with raw(chained) as connection:
        first, second = row(connection, 300), row(connection, 340)
        put(connection, 300, second)
        put(connection, 340, first)
    broken = check(chained).broken
    assert broken is not None and (broken.position, broken.kind) == (300, "reordered")
    assert "appended at 340" in broken.detail


def test_swapped_neighbours_are_located(chained: Path) -> None:
    with raw(chained) as connection:
        first, second = row(connection, 301), row(connection, 302)
        put(connection, 301, second)
        put(connection, 302, first)
    broken = check(chained).broken
    assert broken is not None and (broken.position, broken.kind) == (301, "reordered")


def test_an_inserted_row_is_located(chained: Path) -> None:
    with raw(chained) as connection:
        copy = row(connection, 10)
        connection.execute("UPDATE stored_events SET rowid=-rowid WHERE rowid>=700")
        connection.execute("UPDATE stored_events SET rowid=-rowid+1 WHERE rowid<0")
        connection.execute(
            "INSERT INTO stored_events (rowid, originator_id, originator_version, topic, state,"
            " codec, source, received_at, event_at, connection_id, chain)"
            " VALUES (700,?,?,?,?,?,?,?,?,?,?)", copy)
    broken = check(chained).broken
    assert broken is not None and (broken.position, broken.kind) == (700, "inserted")


def test_a_row_appended_behind_the_log_is_located(chained: Path) -> None:
    with raw(chained) as connection:
        copy = row(connection, 10)
        connection.execute(
            "INSERT INTO stored_events (originator_id, originator_version, topic, state, codec,"
            " source, received_at, event_at, connection_id) VALUES (?,?,?,?,?,?,?,?,?)", copy[:9])
    broken = check(chained).broken
    assert broken is not None and (broken.position, broken.kind) == (2_501, "inserted")


def test_a_payload_moved_between_positions_is_located(chained: Path) -> None:
    with raw(chained) as connection:
        source = row(connection, 2_000)
        connection.execute("UPDATE stored_events SET state=?, codec=? WHERE rowid=1_999",
                           (source[3], source[4]))
    broken = check(chained).broken
    assert broken is not None and (broken.position, broken.kind) == (1_999, "changed")


def test_a_recorded_head_catches_a_truncated_or_rechained_log(chained: Path) -> None:
    report = check(chained)
    head = (report.head_hash, 2_500)
    middle = check(chained, (bytes(32), 0))
    assert middle.ok
    with raw(chained) as connection:
        connection.execute("DELETE FROM stored_events WHERE rowid>2_400")
    broken = check(chained, head).broken
    assert broken is not None and broken.kind == "truncated" and broken.position == 2_401
    shortened = check(chained)
    assert shortened.ok  # without the head, a shortened log is whole
    with raw(chained) as connection:  # a change, and the chain computed again over it
        connection.execute("UPDATE stored_events SET received_at=received_at+1 WHERE rowid=5")
        ChainWriter("stored_events").rechain_from(connection.cursor(), 5)
    assert check(chained).ok
    broken = check(chained, (shortened.head_hash, 2_400)).broken
    assert broken is not None and broken.kind == "rewritten" and broken.position == 2_400


def test_the_cli_reports_a_break_with_exit_status_1(tmp_path: Path) -> None:
    make_store(tmp_path, 2_500)
    runner = CliRunner()
    base = ["--data-dir", str(tmp_path), "-u", "alice"]
    head = runner.invoke(cli, [*base, "head"])  # no key needed
    assert head.exit_code == 0, head.output
    recorded = head.output.strip()
    assert recorded.endswith("@2500")
    ok = runner.invoke(cli, [*base, "verify", "--chain", "--head", recorded])
    assert ok.exit_code == 0 and "whole" in ok.output
    path = ChatStore.open(tmp_path, "alice", key=KEY).path
    with raw(path) as connection:  # type: ignore[arg-type]
        connection.execute("UPDATE stored_events SET event_at=event_at+1 WHERE rowid=1_001")
    bad = runner.invoke(cli, [*base, "verify", "--chain", "--json"])
    assert bad.exit_code == 1
    assert '"broken_at":1001' in bad.output and '"kind":"changed"' in bad.output
    assert "Error: the log's chain breaks at position 1001" in bad.output
    usage = runner.invoke(cli, [*base, "verify", "--chain", "--head", "zz@1"])
    assert usage.exit_code == 2


class _MemoryKeyring:
    """A keyring backend that keeps passwords in a dict (the tests touch no real keyring)."""

    def __new__(cls):  # noqa: D102 - built lazily: keyring is an optional extra
        import keyring.backend
        import keyring.errors

        class Backend(keyring.backend.KeyringBackend):
            priority = 1  # type: ignore[assignment]

            def __init__(self) -> None:
                super().__init__()
                self.kept: dict[tuple[str, str], str] = {}

            def get_password(self, service: str, username: str) -> str | None:
                return self.kept.get((service, username))

            def set_password(self, service: str, username: str, password: str) -> None:
                self.kept[(service, username)] = password

            def delete_password(self, service: str, username: str) -> None:
                if self.kept.pop((service, username), None) is None:
                    raise keyring.errors.PasswordDeleteError(username)

        return Backend()


def test_the_keyring_keeps_the_key_through_create_rekey_and_flush(tmp_path: Path) -> None:
    import keyring

    backend = _MemoryKeyring()
    previous = keyring.get_keyring()
    keyring.set_keyring(backend)
    try:
        runner = CliRunner()
        base = ["--data-dir", str(tmp_path), "-u", "alice", "--keyring"]
        (tmp_path / "ev.jsonl").write_bytes(b"\n".join(events(100)) + b"\n")
        result = runner.invoke(cli, [*base, "import", str(tmp_path / "ev.jsonl")])
        assert result.exit_code == 0, result.output
        first = backend.kept[("chatledger", "alice")]
        result = runner.invoke(cli, [*base, "rekey", "--new-keyring"])
        assert result.exit_code == 0, result.output
        assert backend.kept[("chatledger", "alice")] != first
        assert ("chatledger", "alice.next") not in backend.kept
        # A rekey killed after its commit: the old key is still the user's, the new one waits.
        with ChatStore.open(tmp_path, "alice", key=bytes.fromhex(
                backend.kept[("chatledger", "alice")])) as store:
            store.rekey(KEY)
        backend.kept[("chatledger", "alice.next")] = KEY.hex()
        result = runner.invoke(cli, [*base, "verify"])
        assert result.exit_code == 0, result.output
        assert backend.kept[("chatledger", "alice")] == KEY.hex()
        result = runner.invoke(cli, [*base, "flush", "--yes"])
        assert result.exit_code == 0 and not backend.kept
    finally:
        keyring.set_keyring(previous)


# -- kills ---------------------------------------------------------------------------------------

_REKEY_WORKER = """
import sys
from chatledger import ChatStore
store = ChatStore.open(sys.argv[1], "alice", key=bytes(range(32)))
print("ready", flush=True)
store.rekey(bytes(range(32, 64)))
print("done", flush=True)
store.close()
"""


def _kill_after(args: list[str], delay: float) -> str:
    process = subprocess.Popen([sys.executable, "-c", *args], stdout=subprocess.PIPE, text=True,
                               cwd=ROOT)
    assert process.stdout is not None
    first = process.stdout.readline()
    assert first.strip() == "ready", first
    time.sleep(delay)
    process.send_signal(signal.SIGKILL)
    process.wait()
    return process.stdout.read()


def test_a_rekey_killed_leaves_a_usable_store(tmp_path: Path) -> None:
    make_store(tmp_path, 20_000)
    with ChatStore.open(tmp_path, "alice", key=KEY) as store:
        expected = store.log.max_position()
    rng = random.Random(22)
    outcomes = set()
    for _ in range(4):
        _kill_after([_REKEY_WORKER, str(tmp_path)], rng.uniform(0.0, 0.8))
        try:
            store = ChatStore.open(tmp_path, "alice", key=KEY)
            outcomes.add("old key")
        except KeyRequired:
            store = ChatStore.open(tmp_path, "alice", key=OTHER_KEY)
            outcomes.add("new key")
        with store:
            assert store.log.max_position() == expected
            assert store.verify_chain().ok and store.verify() == []
            assert len(store.log.entries(after=expected - 10)) == 10
            if store.sealed and store.log.datastore.codec.cipher is not None:
                store.rekey(KEY)  # back to the first key for the next round
    assert outcomes


_UPGRADE_WORKER = """
import sys
from chatledger.eventstore.log import EventLog
from chatledger.eventstore.seal import ChainWriter
ChainWriter.PAGE = 200
print("ready", flush=True)
EventLog.open(sys.argv[1], key=bytes(range(32))).close()
print("done", flush=True)
"""


def _as_version_1(path: Path) -> None:
    """What a store written before the chain looks like: no chain column, schema version 1."""
    with raw(path) as connection:
        connection.execute("ALTER TABLE stored_events DROP COLUMN chain")
        connection.execute("UPDATE chatledger_meta SET value=1 WHERE key='schema_version'")


def test_the_chain_upgrade_is_computed_once_and_survives_kills(tmp_path: Path) -> None:
    path = make_store(tmp_path, 6_000)
    reference = check(path)
    _as_version_1(path)
    rng = random.Random(7)
    for _ in range(3):
        _kill_after([_UPGRADE_WORKER, str(path)], rng.uniform(0.05, 0.6))
    with ChatStore.open(tmp_path, "alice", key=KEY) as store:
        assert store.log.get_meta(seal.META_CHAIN_PENDING) is None
        assert store.log.get_meta("schema_version") == schema.SCHEMA_VERSION
        report = store.verify_chain()
        assert report.ok and report.head_hash == reference.head_hash
        assert store.verify() == []
        store.ingest_many(events(10, seed=2))
        assert store.verify_chain().ok


def test_a_version_1_store_is_upgraded_on_open(tmp_path: Path) -> None:
    path = make_store(tmp_path, 600, key=None)
    reference = check(path)
    _as_version_1(path)
    with ChatStore.open(tmp_path, "alice") as store:
        assert store.chain_head() == (600, reference.head_hash)


@pytest.mark.parametrize("key", [None, KEY], ids=["plain", "sealed"])
def test_entries_restored_from_another_copy_are_chained(tmp_path: Path, key: bytes | None) -> None:
    """What an archive pull does: entries written as another copy kept them get their chain in
    the same transaction, so later appends continue it and the check finds it whole."""
    source = ChatStore.open(tmp_path / "a", "alice", key=key)
    payloads = events(2_600)  # past the dictionary's first training, which rechains
    source.ingest_many(payloads[:2_500])
    copy = ChatStore.open(tmp_path / "b", "alice", key=key)
    copy.log.restore(source.log.stored_dictionaries(),
                     source.log.stored_rows(limit=10_000))
    assert copy.log.head() == source.log.head()
    copy.ingest_many(payloads[2_500:])
    assert copy.verify_chain().ok and copy.log.max_position() == 2_600
    source.close()
    copy.close()


def test_a_sealed_store_is_not_bundled_in_clear(tmp_path: Path) -> None:
    store = ChatStore.open(tmp_path, "alice", key=KEY)
    store.ingest_many(events(10))
    with pytest.raises(StoreError, match="sealed store cannot be bundled"):
        store.bundle(tmp_path / "bundle")
    assert not (tmp_path / "bundle").exists()
    store.close()
