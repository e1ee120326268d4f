"""Hostile input: user ids, filters, damaged or foreign database files, unwritable places.

Already covered elsewhere (not repeated here):
- how user ids become file names (traversal, reserved names, case, length, injectivity):
  tests/test_userfiles.py; files are 0600 and flush removes the file set: same file;
- filter compilation: values are parameters, bad field names and operators refused, huge
  `$in` lists as one parameter, SQLite's limits: tests/test_filters.py;
- damaged, foreign and newer files refused untouched by `EventLog.open`: tests/test_log.py;
- a locked store and a garbage store from the command line: tests/test_cli.py.

Here: the same promises end to end, through `ChatStore`, real stores on disk and the command line.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
import sys
import unicodedata
from pathlib import Path
from typing import Any

import apsw
import pytest
from click.testing import CliRunner

from chatledger import ChatStore
from chatledger.cli.main import cli
from chatledger.eventstore.log import EventLog, StoreError
from chatledger.projections.filters import FilterError
from fixtures import event, message, message_new, user

# --------------------------------------------------------------------------------------------
# User ids: real stores, side by side

NFC, NFD = unicodedata.normalize("NFC", "José"), unicodedata.normalize("NFD", "José")
ID_GROUPS = [
    ["alice", "Alice", "ALICE"],
    [NFC, NFD],  # look the same, differ in bytes: two users
    ["../x", "..", ".", "x", "%2e%2e", "..%2fx"],
    ["a/b", "a\\b", "a_b", "a%2Fb"],
    ["CON", "con", "nul", "COM1", "aux.txt"],
    ["x" * 10_000, "x" * 9_999, "x" * 254],
    ["\u00e5", "\u212b", "A\u030a"],  # three spellings of Å
    ["\u200b", "\ufeffa", "a\u200d", " ", "  "],
]


def _tree(root: Path) -> set[Path]:
    return {p for p in root.rglob("*")}


@pytest.mark.parametrize("ids", ID_GROUPS, ids=[f"group{i}" for i in range(len(ID_GROUPS))])
def test_hostile_user_ids_get_their_own_file_inside_the_data_dir(tmp_path: Path,
                                                                 ids: list[str]) -> None:
    data = tmp_path / "nest" / "data"
    paths = []
    for n, uid in enumerate(ids):
        store = ChatStore.open(data, uid)
        try:
            store.ingest(message_new(mid=f"m{n}"))
            paths.append(store.path.resolve())
        finally:
            store.close()
    assert len(set(paths)) == len(ids), "two users share a file"
    assert len({str(p).lower() for p in paths}) == len(ids), "names differ only by case"
    for p in _tree(tmp_path):
        assert p == tmp_path / "nest" or p.resolve().is_relative_to(data.resolve()), p
    for p in paths:
        assert p.parent == data.resolve() and len(p.name) < 255
    # Each store holds its own data only, and knows its owner.
    for n, uid in enumerate(ids):
        store = ChatStore.open(data, uid, create=False)
        try:
            assert store.user_id == uid
            assert [e.json()["message"]["id"] for e in store.history()] == [f"m{n}"]
        finally:
            store.close()


def test_flush_of_one_hostile_id_leaves_the_others(tmp_path: Path) -> None:
    ids = ["../x", "x", "X", NFC, NFD]
    for uid in ids:
        ChatStore.open(tmp_path, uid).close()
    before = _tree(tmp_path)
    removed = ChatStore.flush_user(tmp_path, "../x")
    assert removed and set(removed) <= before
    assert len(_tree(tmp_path)) == len(before) - len(removed)
    for uid in ids[1:]:
        ChatStore.open(tmp_path, uid, create=False).close()


def test_an_unusable_user_id_is_a_one_line_error_from_the_command_line(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["--data-dir", str(tmp_path), "--user", "", "stats"])
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------------------------
# Filters: injection through values, field names, operators and sort keys


EVIL = [
    "x' OR 1=1 --",
    "'); DROP TABLE channels; --",
    "a\"); DROP TABLE messages; --",
    "1; ATTACH DATABASE '/tmp/pwn.db' AS pwn; --",
    "$.\"x\"') OR 1=1 --",
    "%' OR '1'='1",
]


def _conversation(store: ChatStore) -> None:
    for c, topic in (("messaging:a", "t"), ("messaging:b", "u")):
        store.ingest(event("channel.updated", cid=c, channel={
            "cid": c, "type": "messaging", "id": c.split(":")[1], "name": c.upper(),
            "topic": topic}))
        store.ingest(event("message.new", cid=c, message=message(f"{c}-m", cid=c),
                           user=user("bob")))


def _dump(path: Path) -> str:
    db = apsw.Connection(str(path))
    try:
        names = [r[0] for r in db.execute(
            "SELECT name FROM sqlite_master WHERE type='table' ORDER BY name")]
        return hashlib.sha256(json.dumps(
            {n: [list(map(repr, r)) for r in db.execute(f'SELECT * FROM "{n}" ORDER BY 1')]
             for n in names}).encode()).hexdigest() + ",".join(names)
    finally:
        db.close()


class SQLTrace:
    """Every SQL statement run by connections opened while it is active."""

    def __init__(self) -> None:
        self.statements: list[str] = []

    def _trace(self, cursor: Any, sql: str, bindings: Any) -> bool:
        self.statements.append(sql)
        return True

    def _hook(self, connection: apsw.Connection) -> None:
        connection.exec_trace = self._trace

    def __enter__(self) -> SQLTrace:
        apsw.connection_hooks.append(self._hook)
        return self

    def __exit__(self, *exc: object) -> None:
        apsw.connection_hooks.remove(self._hook)


REFUSED = None


def _hostile_queries(evil: str) -> list[tuple[Any, Any, list[str] | None]]:
    """(filter, sort, expected cids or REFUSED) that carry `evil` in every place a query has."""
    return [
        ({"name": evil}, None, []),
        ({"topic": {"$in": [evil, "t"]}}, None, ["messaging:a"]),
        ({"cid": {"$in": [evil] * 50}}, None, []),
        ({"name": {"$autocomplete": evil}}, None, []),
        ({"members": {"$in": [evil]}}, None, []),
        ({"topic": {"$ne": evil}}, [{"field": "cid", "direction": 1}],
         ["messaging:a", "messaging:b"]),
        ({evil: "x"}, None, REFUSED),
        ({"$or": [{evil: {"$exists": True}}]}, None, REFUSED),
        ({"name": {evil: "x"}}, None, REFUSED),
        ({"name": {"$" + evil: "x"}}, None, REFUSED),
        (None, [{"field": evil, "direction": 1}], REFUSED),
        (None, [{"field": "name", "direction": evil}], REFUSED),
        (None, [{evil: "name"}], REFUSED),
    ]


@pytest.mark.parametrize("evil", EVIL)
def test_injection_through_store_channels_runs_no_sql_from_input(tmp_path: Path,
                                                                 evil: str) -> None:
    store = ChatStore.open(tmp_path, "alice")
    _conversation(store)
    path = store.path
    store.close()
    before = _dump(path)
    with SQLTrace() as trace:
        store = ChatStore.open(tmp_path, "alice", create=False)
        try:
            for filter, sort, expected in _hostile_queries(evil):
                if expected is REFUSED:
                    with pytest.raises(FilterError) as info:
                        store.channels(filter, sort)
                    message = str(info.value)
                    assert message and "\n" not in message and len(message) < 300
                else:
                    assert [c.cid for c in store.channels(filter, sort)] == expected
            assert {c.cid for c in store.channels()} == {"messaging:a", "messaging:b"}
        finally:
            store.close()
    assert trace.statements, "the trace saw nothing: it would prove nothing"
    assert not [s for s in trace.statements if evil in s]
    assert _dump(path) == before


@pytest.mark.parametrize("evil", EVIL[:3])
def test_injection_through_the_channels_command_is_a_clean_error(tmp_path: Path,
                                                                 evil: str) -> None:
    store = ChatStore.open(tmp_path, "alice")
    _conversation(store)
    path = store.path
    store.close()
    before = _dump(path)
    runner = CliRunner()
    base = ["--data-dir", str(tmp_path), "--user", "alice", "channels", "--json"]
    for filter, sort, expected in _hostile_queries(evil):
        args = [*base]
        if filter is not None:
            args += ["--filter", json.dumps(filter)]
        if sort is not None:
            args += ["--sort", json.dumps(sort)]
        result = runner.invoke(cli, args)
        assert "Traceback" not in result.output and not isinstance(
            result.exception, Exception) or isinstance(result.exception, SystemExit), result.output
        if expected is REFUSED:
            assert result.exit_code == 1, result.output
            errors = [line for line in result.output.splitlines() if line.startswith("Error: ")]
            assert len(errors) == 1 and len(result.output.strip().splitlines()) == 1
        else:
            assert result.exit_code == 0, result.output
            assert [json.loads(line)["cid"] for line in result.stdout.splitlines()] == expected
    for bad in ("{nope", "[1,", '"x\'; DROP TABLE channels; --"', "null", "[]", "{}", "1e999"):
        for option in ("--filter", "--sort"):
            result = runner.invoke(cli, [*base, option, bad])
            assert result.exit_code in (0, 1, 2) and "Traceback" not in result.output
            assert result.exception is None or isinstance(result.exception, SystemExit)
    assert _dump(path) == before


def test_a_hundred_thousand_cids_in_one_filter(tmp_path: Path) -> None:
    store = ChatStore.open(tmp_path, "alice")
    try:
        _conversation(store)
        cids = [f"messaging:c{i}" for i in range(100_000)] + ["messaging:b"]
        assert [c.cid for c in store.channels({"cid": {"$in": cids}})] == ["messaging:b"]
        assert [c.cid for c in store.channels({"cid": {"$nin": cids}})] == ["messaging:a"]
        spread = {"$or": [{"cid": c} for c in cids[:9_000]] + [{"cid": "messaging:a"}]}
        try:
            assert [c.cid for c in store.channels(spread)] == ["messaging:a"]
        except FilterError as e:  # refusing is fine too, if it says why
            assert "condition" in str(e) or "too" in str(e)
    finally:
        store.close()
    result = CliRunner().invoke(cli, ["--data-dir", str(tmp_path), "--user", "alice", "channels",
                                      "--json", "--filter", json.dumps({"cid": {"$in": cids}})])
    assert result.exit_code == 0, result.output
    assert [json.loads(line)["cid"] for line in result.stdout.splitlines()] == ["messaging:b"]


# --------------------------------------------------------------------------------------------
# Files that are not (this version's) stores


def _store_file(tmp_path: Path) -> Path:
    store = ChatStore.open(tmp_path / "data", "alice")
    store.ingest_many([message_new(mid=f"m{i}") for i in range(300)])
    path = store.path
    store.close()
    return path


def _truncated(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])


def _not_sqlite(path: Path) -> None:
    path.write_bytes(b"PK\x03\x04 this is a zip file, honest" * 200)


def _someone_elses(path: Path) -> None:
    path.unlink()
    db = apsw.Connection(str(path))
    db.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY, total REAL);"
               "INSERT INTO invoices VALUES (1, 9.5)")
    db.close()


def _newer(path: Path) -> None:
    log = EventLog.open(path)
    log.set_meta("schema_version", 10_000)
    log.close()


def _header_only(path: Path) -> None:
    path.write_bytes(b"SQLite format 3\x00" + b"\x00" * 84)


DAMAGE = {"truncated": _truncated, "not-sqlite": _not_sqlite, "someone-elses": _someone_elses,
          "newer": _newer, "header-only": _header_only}
COMMANDS = [["stats"], ["log"], ["verify"], ["rebuild"], ["channels"], ["outbox"],
            ["show", "message", "m1"], ["import", "-"], ["send", "--cid", "messaging:general", "--text", "hi"]]


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_file_that_is_not_a_usable_store_is_refused_untouched(tmp_path: Path,
                                                                damage: str) -> None:
    path = _store_file(tmp_path)
    DAMAGE[damage](path)
    for suffix in ("-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    digest = _sha(path)
    runner = CliRunner()
    known = {c.name for c in cli.commands.values()}
    for command in COMMANDS:
        if command[0] not in known:
            continue
        result = runner.invoke(cli, ["--data-dir", str(path.parent), "--user", "alice", *command],
                               input=message_new(mid="new"))
        # `verify` and `rebuild` tell a damaged file (3) from one that is not a store (1).
        expected = 3 if command in (["verify"], ["rebuild"]) and damage == "truncated" else 1
        assert result.exit_code == expected, (command, result.output)
        assert isinstance(result.exception, SystemExit), (command, result.exception)
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("Error: "), (command, result.output)
        assert _sha(path) == digest, f"{command} changed the file"
    with pytest.raises(StoreError):
        ChatStore.open(path.parent, "alice").close()
    assert _sha(path) == digest
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]


def test_the_installed_command_says_so_in_one_line(tmp_path: Path) -> None:
    path = _store_file(tmp_path)
    _newer(path)
    digest = _sha(path)
    proc = subprocess.run(
        [sys.executable, "-c", "from chatledger.cli.main import main; main()",
         "--data-dir", str(path.parent), "--user", "alice", "stats"],
        capture_output=True, timeout=60)
    assert proc.returncode == 1 and b"Traceback" not in proc.stderr
    assert len(proc.stderr.decode().strip().splitlines()) == 1
    assert b"newer" in proc.stderr
    assert _sha(path) == digest


# --------------------------------------------------------------------------------------------
# Places that cannot be written; file modes; nothing left behind


def test_a_data_dir_that_is_a_file_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "data"
    blocker.write_bytes(b"not a directory")
    with pytest.raises(StoreError):
        ChatStore.open(blocker, "alice")
    with pytest.raises(StoreError):
        ChatStore.open(blocker / "deeper", "alice")
    for data in (blocker, blocker / "deeper"):
        result = CliRunner().invoke(cli, ["--data-dir", str(data), "--user", "alice",
                                          "import", "-"], input=message_new())
        assert result.exit_code in (1, 2), result.output  # 2: click's usage error
        assert isinstance(result.exception, SystemExit), result.exception
        assert len([line for line in result.output.splitlines() if line.startswith("Error: ")]) == 1
        assert "Traceback" not in result.output
    assert blocker.read_bytes() == b"not a directory"


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write into a read-only directory")
def test_a_read_only_data_dir_is_a_clear_error(tmp_path: Path) -> None:
    data = tmp_path / "data"
    ChatStore.open(data, "alice").close()  # one existing store
    data.chmod(0o500)
    try:
        for user in ("alice", "bob"):  # an existing store (needs -wal, -shm) and a new one
            result = CliRunner().invoke(cli, ["--data-dir", str(data), "--user", user,
                                              "import", "-"], input=message_new())
            assert result.exit_code == 1 and isinstance(result.exception, SystemExit), \
                result.output
            assert result.output.startswith("Error: ")
            assert len(result.output.strip().splitlines()) == 1
            assert "Traceback" not in result.output
    finally:
        data.chmod(0o700)


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux's /proc")
@pytest.mark.parametrize("data", ["/proc", "/proc/chatledger-data"])
def test_a_data_dir_where_nothing_can_be_created_is_a_clear_error(data: str) -> None:
    """/proc refuses new files and folders even to root: the read-only case that holds whoever
    runs the tests (the test above cannot, as root)."""
    result = CliRunner().invoke(cli, ["--data-dir", data, "--user", "alice", "import", "-"],
                                input=message_new())
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    assert result.output.startswith("Error: ")
    assert len(result.output.strip().splitlines()) == 1
    assert "Traceback" not in result.output
    assert not Path(data, "alice.chatledger").exists()


@pytest.mark.parametrize("umask", [0o000, 0o022])
def test_files_are_0600_whatever_the_umask_and_from_the_command_line(tmp_path: Path,
                                                                     umask: int) -> None:
    old = os.umask(umask)
    try:
        data = tmp_path / "data"
        result = CliRunner().invoke(cli, ["--data-dir", str(data), "--user", "alice", "import",
                                          "-"], input=message_new())
        assert result.exit_code == 0, result.output
        store = ChatStore.open(data, "alice")
        try:
            store.send_message("messaging:general", "hi", id="x1")
            files = sorted(data.iterdir())
            assert {p.name for p in files} >= {"alice.chatledger", "alice.chatledger-wal",
                                                "alice.chatledger-shm"}
            for p in files:
                assert stat.S_IMODE(p.stat().st_mode) == 0o600, p
        finally:
            store.close()
        assert stat.S_IMODE(data.stat().st_mode) == 0o700
    finally:
        os.umask(old)


def test_flush_after_a_crash_leaves_nothing_behind(tmp_path: Path) -> None:
    data = tmp_path / "data"
    script = (
        "import os, sys\n"
        "from chatledger import ChatStore\n"
        "s = ChatStore.open(sys.argv[1], 'alice')\n"
        "s.send_message('messaging:general', 'hi', id='x1')\n"
        "os._exit(0)  # no close: -wal and -shm stay\n"
    )
    subprocess.run([sys.executable, "-c", script, str(data)], check=True, timeout=60)
    assert {p.name for p in data.iterdir()} >= {"alice.chatledger-wal", "alice.chatledger-shm"}
    Path(f"{data / 'alice.chatledger'}-journal").write_bytes(b"")  # as a rollback journal would
    other = ChatStore.open(data, "bob")
    other.close()
    result = CliRunner().invoke(cli, ["--data-dir", str(data), "--user", "alice", "flush",
                                      "--yes"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in data.iterdir()) == ["bob.chatledger"]


# --------------------------------------------------------------------------------------------
# Inputs that ended in a traceback: deep nesting, numbers no option holds, ids no file holds


def _one_line_error(result: Any, statuses: tuple[int, ...] = (1, 2)) -> str:
    assert result.exit_code in statuses, result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    return lines[0]


NESTED_DOCUMENTS = [b"[" * 100_000, b"[" * 100_000 + b"]" * 100_000,
                    b'{"a":' * 50_000 + b"1" + b"}" * 50_000,
                    b'{"type":"message.new","x":' + b"[" * 2_000 + b"]" * 2_000 + b"}"]


@pytest.mark.parametrize("document", NESTED_DOCUMENTS, ids=["open", "closed", "objects", "event"])
@pytest.mark.parametrize("kind", ["auto", "events", "query", "sync", "channel"])
def test_a_deeply_nested_import_is_a_one_line_answer(tmp_path: Path, document: bytes,
                                                     kind: str) -> None:
    result = CliRunner().invoke(cli, ["--data-dir", str(tmp_path), "--user", "alice", "import",
                                      "--kind", kind, "-"], input=document)
    assert "Traceback" not in result.output and "Recursion" not in result.output
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1 and len(result.output.strip().splitlines()) <= 2, result.output


@pytest.mark.parametrize("depth", [17, 1_000, 100_000])
def test_deeply_nested_filters_and_sorts_are_one_line_errors(tmp_path: Path, depth: int) -> None:
    ChatStore.open(tmp_path, "alice").close()
    base = ["--data-dir", str(tmp_path), "--user", "alice", "channels"]
    runner = CliRunner()
    for option, value in (
        ("--filter", '{"$and":[' * depth + '{"cid":"x"}' + "]}" * depth),
        ("--filter", '{"$or":[' * depth + "{}" + "]}" * depth),
        ("--filter", '{"cid":{"$in":' + "[" * depth + "]" * depth + "}}"),
        ("--sort", "[" * depth + '{"field":"cid","direction":1}' + "]" * depth),
        ("--sort", '[{"field":' + "[" * depth + "]" * depth + "}]"),
    ):
        result = runner.invoke(cli, [*base, option, value])
        assert "Traceback" not in result.output
        _one_line_error(result)
    with ChatStore.open(tmp_path, "alice") as store:
        nested: Any = {"cid": "x"}
        for _ in range(depth if depth < 5_000 else 5_000):
            nested = {"$and": [nested]}
        with pytest.raises(FilterError):
            store.channels(nested)
        sort: Any = [{"field": "cid", "direction": 1}]
        for _ in range(depth if depth < 5_000 else 5_000):
            sort = [sort]
        with pytest.raises(FilterError):
            store.channels(None, sort)


def test_a_websocket_first_frame_nested_deep_is_a_backend_error() -> None:
    import asyncio

    import aiohttp

    from chatledger.sync import websocket
    from chatledger.sync.backend import BackendError

    class Frame:
        def __init__(self, data: bytes, kind: aiohttp.WSMsgType) -> None:
            self.data, self.type = data, kind

    class Socket:
        def __init__(self, frame: Frame) -> None:
            self.frame = frame

        async def receive(self, timeout: float | None = None) -> Frame:
            return self.frame

    for raw in (b"[" * 50_000 + b"]" * 50_000, b'{"a":' * 50_000 + b"1" + b"}" * 50_000,
                b'{"type":1e999}', b"\xff"):
        for kind in (aiohttp.WSMsgType.BINARY, aiohttp.WSMsgType.TEXT):
            data: Any = raw.decode("utf-8", "replace") if kind is aiohttp.WSMsgType.TEXT else raw
            with pytest.raises(BackendError) as info:
                asyncio.run(websocket._first_frame(Socket(Frame(data, kind)), 1.0))  # type: ignore[arg-type]
            assert "\n" not in str(info.value)


@pytest.mark.parametrize("args", [
    ["channels", "--offset", "99999999999999999999"],
    ["channels", "--offset", "9223372036854775808"],
    ["log", "--limit", "9223372036854775808"],
    ["log", "--limit", "1" + "0" * 400],
    ["log", "--since", "99999999999999w"],
    ["log", "--since", "1" + "0" * 5_000 + "s"],
    ["log", "--until", "0000-01-01T00:00:00Z"],
    ["log", "--since", "9999-12-31T23:59:59-23:59"],
    ["log", "--since", "0001-01-01T00:00:00+01:00"],
    ["as-of", "--position", "9223372036854775808", "channel", "messaging:general"],
    ["as-of", "--time", "99999999999999d", "channel", "messaging:general"],
    ["quarantine", "--limit", "99999999999999999999"],
    ["verify", "--limit", "99999999999999999999"],
    ["export", "-", "--messages", "99999999999999999999"],
    ["react", "--message", "m1", "--type", "like", "--score", "99999999999999999999"],
    ["react", "--message", "m1", "--type", "like", "--score", "-9223372036854775809"],
])
def test_numbers_no_column_holds_are_usage_errors(tmp_path: Path, args: list[str]) -> None:
    with ChatStore.open(tmp_path, "alice") as store:
        store.ingest(message_new())
    result = CliRunner().invoke(cli, ["--data-dir", str(tmp_path), "--user", "alice", *args])
    assert "Traceback" not in result.output and "Overflow" not in result.output
    _one_line_error(result, (2,))


@pytest.mark.parametrize("user", ["\udcff", "a\ud800b", "\udfff" * 3])
def test_a_user_id_with_a_lone_surrogate_is_refused_and_leaves_no_file(tmp_path: Path,
                                                                       user: str) -> None:
    from chatledger.eventstore.userfiles import UserIdError

    with pytest.raises(UserIdError):
        ChatStore.open(tmp_path, user)
    for command in (["stats"], ["import", "-"], ["flush", "--yes"]):
        result = CliRunner().invoke(cli, ["--data-dir", str(tmp_path), "--user", user, *command],
                                    input=message_new())
        assert "Traceback" not in result.output
        _one_line_error(result, (1,))
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------------------------
# Private data left on disk: planted links, an interrupted logout


@pytest.mark.parametrize("suffix", ["", "-wal", "-shm"])
@pytest.mark.parametrize("target", ["empty-file", "nowhere", "existing-store"])
def test_a_store_whose_files_are_symbolic_links_is_refused(tmp_path: Path, suffix: str,
                                                           target: str) -> None:
    data, elsewhere = tmp_path / "data", tmp_path / "elsewhere"
    data.mkdir()
    elsewhere.mkdir()
    pointed = elsewhere / f"target{suffix}"
    if target == "empty-file":
        pointed.write_bytes(b"")
    elif target == "existing-store":
        ChatStore.open(elsewhere, "bob").close()
        pointed = elsewhere / f"bob.chatledger{suffix}"
        pointed.touch()
    before = {p: p.read_bytes() for p in elsewhere.iterdir()}
    link = data / f"alice.chatledger{suffix}"
    os.symlink(pointed, link)
    with pytest.raises(StoreError) as info:
        ChatStore.open(data, "alice").close()
    assert "symbolic link" in str(info.value) and "\n" not in str(info.value)
    runner = CliRunner()
    for command in (["import", "-"], ["stats"], ["log"], ["send", "--cid", "messaging:general",
                                                           "--text", "hi"]):
        result = runner.invoke(cli, ["--data-dir", str(data), "--user", "alice", *command],
                               input=message_new())
        # Reading commands may answer that there is no store (only a -wal or -shm link);
        # whatever creates or opens the store names the link.
        said = "symbolic link" in result.output or (
            suffix and command[0] in ("stats", "log") and "no store" in result.output)
        assert result.exit_code == 1 and said, (command, result.output)
        assert len(result.output.strip().splitlines()) == 1
    assert {p: p.read_bytes() for p in elsewhere.iterdir()} == before  # nothing written there
    result = runner.invoke(cli, ["--data-dir", str(data), "--user", "alice", "flush", "--yes"])
    assert result.exit_code == 0, result.output
    assert list(data.iterdir()) == [] and {p: p.read_bytes() for p in elsewhere.iterdir()} == before


_KILLED_FLUSH = (
    "import os, pathlib, sys\n"
    "from chatledger.cli.main import main\n"
    "steps = int(sys.argv[1])\n"
    "unlink = pathlib.Path.unlink\n"
    "def killing_unlink(self, *args, **kwargs):\n"
    "    global steps\n"
    "    if steps == 0:\n"
    "        os._exit(9)  # killed before this step\n"
    "    steps -= 1\n"
    "    return unlink(self, *args, **kwargs)\n"
    "pathlib.Path.unlink = killing_unlink\n"
    "sys.argv = ['chatledger', '--data-dir', sys.argv[2], '--user', 'alice', 'flush', '--yes']\n"
    "main()\n"
)


@pytest.mark.parametrize("steps", [0, 1, 2, 3])
def test_a_flush_killed_at_any_step_is_finished_by_the_next(tmp_path: Path, steps: int) -> None:
    data = tmp_path / "data"
    script = (
        "import os, sys\n"
        "from chatledger import ChatStore\n"
        "s = ChatStore.open(sys.argv[1], 'alice')\n"
        "s.send_message('messaging:general', 'secret text', id='x1')\n"
        "os._exit(0)  # no close: -wal and -shm stay\n"
    )
    subprocess.run([sys.executable, "-c", script, str(data)], check=True, timeout=60)
    Path(f"{data / 'alice.chatledger'}-journal").write_bytes(b"")
    ChatStore.open(data, "bob").close()
    alice = {p.name for p in data.iterdir() if p.name.startswith("alice")}
    assert len(alice) == 4
    killed = subprocess.run([sys.executable, "-c", _KILLED_FLUSH, str(steps), str(data)],
                            capture_output=True, timeout=60)
    assert killed.returncode == 9, killed.stderr
    left = {p.name for p in data.iterdir() if p.name.startswith("alice")}
    assert len(left) == 4 - steps
    result = CliRunner().invoke(cli, ["--data-dir", str(data), "--user", "alice", "flush",
                                      "--yes"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in data.iterdir()) == ["bob.chatledger"]


# --------------------------------------------------------------------------------------------
# The terminal: control characters escaped, no flash, JSON lines always one value per line

TERMINAL_ATTACKS = ["\x1b]0;pwned\x07", "\x1b[2J", "\x1b[1A\r", "\x9b31m", "\x07\x08\x7f",
                    "line1\nline2\r\n", "[bold red]markup[/]", "tab\there\x00nul"]


def test_control_characters_in_data_are_shown_escaped(tmp_path: Path) -> None:
    evil = "".join(TERMINAL_ATTACKS)
    with ChatStore.open(tmp_path, "alice") as store:
        store.ingest(event("channel.updated", cid="messaging:general", channel={
            "cid": "messaging:general", "type": "messaging", "id": "general", "name": evil}))
        store.ingest(message_new(mid="m1", text=evil, uid="eve\x1b[2J"))
        store.ingest(message_new(mid="m2\x1b[2J", text="hi"))
    runner = CliRunner()
    base = ["--data-dir", str(tmp_path), "--user", "alice"]
    for command in (["channels"], ["show", "channel", "messaging:general"],
                    ["show", "message", "m1"], ["show", "user", "eve\x1b[2J"], ["log"],
                    ["explain", "m1"], ["as-of", "--position", "2", "message", "m1"]):
        result = runner.invoke(cli, [*base, *command])
        assert result.exit_code == 0, (command, result.output)
        for char in "\x1b\x07\x08\x7f\x9b\x00\r":
            assert char not in result.output, (command, char, result.output)
        assert "\\x1b" in result.output, (command, result.output)
        assert "markup" not in result.output or "[bold red]" in result.output, result.output


def test_no_progress_bar_flashes_when_the_tables_are_ready(monkeypatch: pytest.MonkeyPatch,
                                                           tmp_path: Path) -> None:
    import io

    from rich.console import Console

    from chatledger.cli import progress

    screen = io.StringIO()
    monkeypatch.setattr(progress, "console",
                        lambda err=False: Console(file=screen, force_terminal=True, width=80))
    with progress.replay_progress("rebuilding read tables"):
        pass
    assert screen.getvalue() == ""
    with progress.replay_progress("rebuilding read tables") as on_progress:
        on_progress(1, 10)
    assert "rebuilding read tables" in screen.getvalue()  # a real rebuild is still shown


def _pretty(document: Any) -> bytes:
    return json.dumps(document, indent=2, ensure_ascii=False).encode()


def test_every_json_output_is_one_value_per_line(tmp_path: Path) -> None:
    from fixtures import channel_state

    states = [channel_state(f"messaging:c{i}", messages=3) for i in range(5)]
    for state in states:
        for m in state["messages"]:
            m["text"] = "two\nlines, \u2028 \u2029 \x85 separators \x1b[2J"
    data = tmp_path / "data"
    runner = CliRunner()
    base = ["--data-dir", str(data), "--user", "alice"]
    result = runner.invoke(cli, [*base, "import", "-"],
                           input=_pretty({"channels": states, "duration": "1ms"}))
    assert result.exit_code == 0, result.output
    result = runner.invoke(cli, [*base, "import", "-"], input=_pretty(json.loads(message_new(
        cid="messaging:c0", mid="pretty", text="a\nb"))))
    assert result.exit_code == 0, result.output
    with ChatStore.open(data, "alice") as store:
        store.send_message("messaging:c0", "queued\nlocally", id="local1")
        stored = {e.position: e.payload for e in store.history()}
    expected = {("channels", "--json"): 5, ("log", "--json"): len(stored),
                ("show", "channel", "messaging:c0", "--json"): 1,
                ("show", "message", "pretty", "--json"): 1,
                ("show", "message", "messaging:c1-m0", "--json"): 1,
                ("explain", "pretty", "--json"): 1, ("outbox", "--json"): 1,
                ("as-of", "--position", "3", "channel", "messaging:c1", "--json"): 1,
                ("stats", "--json"): 1}
    for command, count in expected.items():
        result = runner.invoke(cli, [*base, *command])
        assert result.exit_code == 0, (command, result.output)
        lines = result.stdout.splitlines()
        assert len(lines) == count, (command, result.stdout[:500])
        for line in lines:
            json.loads(line)
        assert result.stdout.splitlines() == result.stdout.split("\n")[:-1]  # no other breaks
        assert "\x1b" not in result.stdout
    # The event inside `log --json` is the stored JSON, compact, every string as stored.
    for line in runner.invoke(cli, [*base, "log", "--json"]).stdout.splitlines():
        row = json.loads(line)
        assert row["event"] == json.loads(stored[row["position"]])
        compact = json.dumps(json.loads(stored[row["position"]]), separators=(",", ":"),
                             ensure_ascii=False)
        assert len(json.dumps(row["event"], separators=(",", ":"), ensure_ascii=False)) == \
            len(compact)


# --------------------------------------------------------------------------------------------
# Damaged pages inside a store: `verify` says so (exit 3) and what to do; readers never show
# rows past a page SQLite reports as damaged


def _damage_pages(path: Path, table: str, count: int = 3) -> None:
    db = apsw.Connection(str(path))
    try:
        page_size = db.execute("PRAGMA page_size").fetchone()[0]
        pages = [n for (n,) in db.execute(
            "SELECT pageno FROM dbstat WHERE name=? ORDER BY pageno", (table,))]
    finally:
        db.close()
    assert pages, table
    middle = len(pages) // 2
    with open(path, "r+b") as f:
        for number in pages[middle: middle + count]:
            f.seek((number - 1) * page_size)
            f.write(os.urandom(page_size))


def _big_store(data: Path) -> Path:
    with ChatStore.open(data, "alice") as store:
        store.ingest_many([message_new(mid=f"m{i}", text=f"text {i} " + "x" * 300)
                           for i in range(1_500)])
        path = store.path
    return path


READERS = [["stats"], ["log"], ["log", "--json"], ["channels"], ["channels", "--json"],
           ["show", "channel", "messaging:general"], ["show", "message", "m700"],
           ["show", "message", "m700", "--json"], ["explain", "m700"], ["export", "-"],
           ["quarantine"], ["outbox"]]


@pytest.mark.parametrize("table", ["stored_events", "streams"])
def test_verify_says_in_one_line_that_a_damaged_log_needs_a_backup(tmp_path: Path,
                                                                   table: str) -> None:
    path = _big_store(tmp_path)
    _damage_pages(path, table, count=1 if table == "streams" else 3)
    runner = CliRunner()
    base = ["--data-dir", str(tmp_path), "--user", "alice"]
    line = _one_line_error(runner.invoke(cli, [*base, "verify"]), (3,))
    assert "the file is damaged" in line and "backup" in line and "Traceback" not in line
    for command in READERS + [["rebuild"]]:
        result = runner.invoke(cli, [*base, *command])
        assert "Traceback" not in result.output, (command, result.output)
        assert result.exit_code in (0, 3), (command, result.output)
        if result.exit_code == 3:  # after what it could read, for streaming output
            assert result.output.count("Error: ") == 1, result.output
            assert "Error: the file is damaged" in result.output
    assert runner.invoke(cli, [*base, "verify"]).exit_code == 3  # a rebuild repairs no log


@pytest.mark.parametrize("table", ["messages", "channels", "messages_id", "tracking"])
def test_damaged_read_tables_are_repaired_by_rebuild(tmp_path: Path, table: str) -> None:
    path = _big_store(tmp_path)
    db = apsw.Connection(str(path))
    log_before = list(db.execute("SELECT * FROM stored_events ORDER BY rowid"))
    db.close()
    _damage_pages(path, table, count=2)
    runner = CliRunner()
    base = ["--data-dir", str(tmp_path), "--user", "alice"]
    db = apsw.Connection(str(path))
    try:
        intact = db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    except apsw.CorruptError:
        intact = False
    finally:
        db.close()
    if intact:  # the pages hit held nothing SQLite checks (free space): nothing to find
        return
    result = runner.invoke(cli, [*base, "verify"])
    line = _one_line_error(result, (3,))
    assert "the file is damaged" in line and "rebuild" in line
    for command in READERS:
        result = runner.invoke(cli, [*base, *command])
        assert "Traceback" not in result.output and result.exit_code in (0, 3), result.output
    result = runner.invoke(cli, [*base, "rebuild"])
    assert result.exit_code == 0, result.output
    assert runner.invoke(cli, [*base, "verify"]).exit_code == 0
    db = apsw.Connection(str(path))
    assert list(db.execute("SELECT * FROM stored_events ORDER BY rowid")) == log_before
    assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    db.close()
    for command in READERS:
        assert runner.invoke(cli, [*base, *command]).exit_code == 0, command


# --------------------------------------------------------------------------------------------
# A full disk (simulated in-process: tests/diskfull.py makes SQLite's writes fail with ENOSPC)

needs_proc = pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs Linux's /proc")


def _files(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


@needs_proc
@pytest.mark.parametrize("command", [["stats"], ["log"], ["channels"], ["verify"],
                                     ["show", "message", "m1"], ["outbox"], ["quarantine"],
                                     ["export", "-"], ["explain", "m1"]])
def test_reading_on_a_full_disk_says_so_and_leaves_nothing(tmp_path: Path,
                                                           command: list[str]) -> None:
    from diskfull import DiskFull

    data = tmp_path / "data"
    with ChatStore.open(data, "alice") as store:
        store.ingest_many([message_new(mid=f"m{i}") for i in range(50)])
    before = _files(data)
    with DiskFull(data, budget=0) as full:
        result = CliRunner().invoke(cli, ["--data-dir", str(data), "--user", "alice", *command])
    assert full.failures, "the simulated full disk refused nothing: it would prove nothing"
    line = _one_line_error(result, (1,))
    assert "not a chatledger store" not in line and "disk is full" in line, line
    assert _files(data) == before  # no empty -wal or -shm left behind, the store unchanged


@needs_proc
@pytest.mark.parametrize("budget", [0, 50_000, 400_000])
def test_a_backup_to_a_full_disk_says_so(tmp_path: Path, budget: int) -> None:
    from diskfull import DiskFull

    data, dest = tmp_path / "data", tmp_path / "dest"
    dest.mkdir()
    with ChatStore.open(data, "alice") as store:
        store.ingest_many([message_new(mid=f"m{i}", text="x" * 400) for i in range(1_500)])
    before = _files(data)
    with DiskFull(dest, budget=budget):
        result = CliRunner().invoke(cli, ["--data-dir", str(data), "--user", "alice", "backup",
                                          str(dest / "copy.chatledger")])
    line = _one_line_error(result, (1,))
    assert "not an error" not in line and "disk is full" in line, line
    assert list(dest.iterdir()) == []
    assert _files(data) == before


@needs_proc
@pytest.mark.parametrize("budget", [300_000, 1_500_000, 2_500_000])
def test_an_import_stopped_by_a_full_disk_says_how_far_and_continues(tmp_path: Path,
                                                                     budget: int) -> None:
    from diskfull import DiskFull

    data = tmp_path / "data"
    with ChatStore.open(data, "alice") as store:
        store.ingest(message_new(mid="before"))
    source = tmp_path / "events.jsonl"
    source.write_bytes(b"\n".join(message_new(mid=f"i{i}") for i in range(4_000)) + b"\n")
    args = ["--data-dir", str(data), "--user", "alice", "import", "--batch", "500", str(source)]
    runner = CliRunner()
    with DiskFull(data, budget=budget):
        result = runner.invoke(cli, args)
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    errors = [x for x in result.output.splitlines() if x.startswith("Error: ")]
    assert len(errors) == 1 and "disk is full" in errors[0], result.output
    with ChatStore.open(data, "alice", create=False) as store:
        stored = store.log.max_position() - 1
    assert 0 <= stored < 4_000 and stored % 500 == 0
    assert f"{stored:,} of its items were stored" in errors[0]
    assert f"continue after line {stored:,}" in errors[0]
    result = runner.invoke(cli, args)  # space freed: the same import again
    assert result.exit_code == 0, result.output
    assert (f"Continued after line {stored:,}" in result.output) == (stored > 0)
    with ChatStore.open(data, "alice", create=False) as store:
        ids = [e.json()["message"]["id"] for e in store.history()]
        assert ids == ["before"] + [f"i{i}" for i in range(4_000)]  # each once, in order
        assert store.verify() == []
    # Finished: the same file again is noticed and stores nothing; on purpose (--again), it
    # stores it again.
    again = runner.invoke(cli, args)
    assert again.exit_code == 0 and "Already imported" in again.output, again.output
    assert runner.invoke(cli, [*args, "--again"]).exit_code == 0
    with ChatStore.open(data, "alice", create=False) as store:
        assert store.log.max_position() == 1 + 8_000


def test_an_import_resumes_only_the_same_input(tmp_path: Path) -> None:
    """A different file whose first line is the same is imported whole: the lines an earlier
    run stored must be the same bytes before any is skipped."""
    from chatledger.eventstore.importer import ImportInterrupted, import_stream

    store = ChatStore.open(tmp_path, "alice")
    try:
        lines = [message_new(mid=f"i{i}") for i in range(30)]
        calls = {"n": 0}
        append = store.log.append

        def failing_append(*args: Any, **kwargs: Any) -> Any:
            calls["n"] += 1
            if calls["n"] == 3:
                raise apsw.FullError("database or disk is full")
            return append(*args, **kwargs)

        store.log.append = failing_append  # type: ignore[method-assign]
        import io

        with pytest.raises(ImportInterrupted) as info:
            import_stream(store.log, io.BytesIO(b"\n".join(lines) + b"\n"), batch_size=10)
        assert info.value.committed_line == 20 and info.value.report.stored == 20
        store.log.append = append  # type: ignore[method-assign]
        other = [lines[0]] + [message_new(mid=f"other{i}") for i in range(29)]
        report = import_stream(store.log, io.BytesIO(b"\n".join(other) + b"\n"), batch_size=10)
        assert report.resumed_after_line == 0 and report.stored == 30
        report = import_stream(store.log, io.BytesIO(b"\n".join(lines) + b"\n"), batch_size=10)
        assert report.resumed_after_line == 20 and report.stored == 10
    finally:
        store.close()


@pytest.mark.parametrize("args", [
    ["send", "--cid", "messaging:general", "--text", "a\udcffb"],
    ["send", "--cid", "messaging:\udcff", "--text", "x"],
    ["show", "message", "\udcff"], ["show", "channel", "x\ud800"], ["explain", "\udcff"],
    ["log", "--cid", "\udcff"], ["log", "--type=\udcff"], ["react", "m1", "\udcff"],
])
def test_arguments_that_are_not_text_are_one_line_usage_errors(tmp_path: Path,
                                                              args: list[str]) -> None:
    with ChatStore.open(tmp_path, "alice") as store:
        store.ingest(message_new())
    before = _sha(store.path)
    result = CliRunner().invoke(cli, ["--data-dir", str(tmp_path), "--user", "alice", *args])
    assert "Traceback" not in result.output
    line = _one_line_error(result, (2,))
    assert "not valid text" in line
    assert _sha(store.path) == before


def test_an_import_killed_part_way_continues_on_the_next_run(tmp_path: Path) -> None:
    data = tmp_path / "data"
    source = tmp_path / "events.jsonl"
    source.write_bytes(b"\n".join(message_new(mid=f"k{i}") for i in range(2_000)) + b"\n")
    script = (
        "import os, sys\n"
        "from chatledger.eventstore.log import EventLog\n"
        "from chatledger.cli.main import main\n"
        "append, calls = EventLog.append, [0]\n"
        "def killing_append(self, *args, **kwargs):\n"
        "    calls[0] += 1\n"
        "    if calls[0] == 4:\n"
        "        os._exit(9)  # killed with three batches committed\n"
        "    return append(self, *args, **kwargs)\n"
        "EventLog.append = killing_append\n"
        "sys.argv = ['chatledger', '--data-dir', sys.argv[1], '--user', 'alice', 'import',\n"
        "            '--batch', '300', sys.argv[2]]\n"
        "main()\n"
    )
    killed = subprocess.run([sys.executable, "-c", script, str(data), str(source)],
                            capture_output=True, timeout=60)
    assert killed.returncode == 9, killed.stderr
    result = CliRunner().invoke(cli, ["--data-dir", str(data), "--user", "alice", "import",
                                      "--batch", "300", str(source)])
    assert result.exit_code == 0, result.output
    assert "Continued after line 900" in result.output
    with ChatStore.open(data, "alice", create=False) as store:
        assert [e.json()["message"]["id"] for e in store.history()] == \
            [f"k{i}" for i in range(2_000)]


@pytest.mark.parametrize("next_try_at", [1e20, -1e20, float("inf"), float("nan")])
def test_an_outbox_retry_time_no_calendar_shows_is_displayed(tmp_path: Path,
                                                              next_try_at: float) -> None:
    from chatledger.eventstore.commands import Failed

    with ChatStore.open(tmp_path, "alice") as store:
        command = store.send_message("messaging:general", "hi", id="x1")
        try:
            store.outbox.settle([Failed(command, {"status": 429, "message": "later"},
                                        next_try_at)])
        except (ValueError, OverflowError):
            return  # refused when recorded: nothing to display
    runner = CliRunner()
    base = ["--data-dir", str(tmp_path), "--user", "alice"]
    for command_line in (["outbox"], ["outbox", "--all"], ["outbox", "--json"]):
        result = runner.invoke(cli, [*base, *command_line])
        assert result.exit_code == 0 and "Traceback" not in result.output, result.output
        for line in result.stdout.splitlines() if "--json" in command_line else ():
            json.loads(line)
