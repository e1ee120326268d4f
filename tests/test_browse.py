"""`chatledger browse` and the Datasette plugin, in process: Datasette's own test client on a
generated store (tests/browse_store.py), checking every canned query, the readable cells, the
chart data and the message page, that nothing is written, and the command itself."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import sqlite3
import subprocess
import sys
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from click.testing import CliRunner

pytest.importorskip("datasette", reason="the browse extra is not installed")

from browse_store import GENERAL, HOURLY, HOURS, KNOWN_TEXT, PENDING_TEXT, PER_HOUR, make_store
from datasette.app import Datasette

from chatledger import ChatStore
from chatledger.cli.main import cli
from chatledger.eventstore import ingest
from chatledger.projections.browse import charts
from chatledger.projections.browse.queries import CANNED_QUERIES, PAGE
from chatledger.projections.browse.server import BrowseServer, all_store_paths
from chatledger.projections.browse.sqlfunctions import StoreFunctions, microseconds, rfc3339


def _digest(path: Path) -> dict[str, str]:
    """The bytes of a store's files, to show that browsing changed none of them."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(path.parent.glob(path.name + "*")) if p.stat().st_size}


class Browser:
    """Datasette's in-process client over one store, with a synchronous `get`."""

    def __init__(self, path: Path) -> None:
        self.datasette = Datasette(files=[str(path)])
        self.loop = asyncio.new_event_loop()
        self.loop.run_until_complete(self.datasette.invoke_startup())

    def get(self, path: str, **params: Any) -> Any:
        url = f"{path}?{urlencode(params)}" if params else path
        return self.loop.run_until_complete(self.datasette.client.get(url))

    def rows(self, query: str, **params: Any) -> list[dict[str, Any]]:
        wanted = {name: "" for name in _params(query)} | params
        response = self.get(f"/alice/{query}.json", _shape="objects", **wanted)
        assert response.status_code == 200, response.text
        return response.json()["rows"]

    def close(self) -> None:
        for db in self.datasette.databases.values():
            db.close()
        self.loop.close()


def _params(query: str) -> set[str]:
    """The named parameters of a canned query (Datasette wants each, empty when not given)."""
    sql = next(q.sql for q in CANNED_QUERIES if q.name == query)
    return set(re.findall(r"(?<!:):([a-z_]+)", sql))


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory):
    return make_store(tmp_path_factory.mktemp("browse"))


@pytest.fixture(scope="module")
def before(store) -> dict[str, str]:
    return _digest(store.path)


@pytest.fixture(scope="module")
def browser(store, before):
    browser = Browser(store.path)
    yield browser
    browser.close()


@pytest.fixture(scope="module")
def connection(store):
    connection = sqlite3.connect(f"file:{store.path}?mode=ro", uri=True)
    StoreFunctions(connection).register()
    yield connection
    connection.close()


# -- the plugin and its SQL functions -----------------------------------------------------------------


def test_the_plugin_is_registered_through_the_entry_point(browser):
    plugins = {p["name"]: p for p in browser.get("/-/plugins.json").json()}
    plugin = plugins["chatledger"]  # the distribution's name: found through its entry point
    assert plugin["static"] and plugin["templates"]
    assert {"prepare_connection", "canned_queries", "render_cell", "register_routes"} <= set(
        plugin["hooks"])


def test_payloads_decode_to_the_bytes_that_arrived_with_the_files_dictionary(store, connection):
    compressed = connection.execute("SELECT COUNT(*) FROM stored_events WHERE codec > 0").fetchone()[0]
    assert compressed > 100  # the dictionary is in use
    with ChatStore.open(store.data_dir, "alice", create=False) as opened:
        entries = {e.position: e.payload for e in opened.log.entries()}
    decoded = dict(connection.execute(
        "SELECT rowid, chatledger_json(codec, state) FROM stored_events"))
    assert decoded.keys() == entries.keys()
    assert all(decoded[p].encode() == entries[p] for p in entries)


def test_time_and_source_functions(browser):
    response = browser.get("/alice.json", _shape="array", sql=(
        "SELECT chatledger_time(1764064800000000) AS t, chatledger_us('2025-11-25T10:00:00Z') AS us,"
        " chatledger_us('2025-11-25') AS day, chatledger_source(1) AS s, chatledger_source(9) AS x"))
    assert response.json() == [{"t": "2025-11-25T10:00:00.000000Z", "us": 1764064800000000,
                                "day": 1764028800000000, "s": "websocket", "x": "9"}]
    assert microseconds("") is None and rfc3339(None) is None


# -- the canned queries ---------------------------------------------------------------------------------


def test_every_canned_query_is_listed_and_answers(browser):
    listed = browser.get("/alice.json").json()["queries"]
    assert {q["name"] for q in listed} == {q.name for q in CANNED_QUERIES}
    for query in CANNED_QUERIES:
        browser.rows(query.name)  # answers with no parameter given (200, rows or none)


def test_conversation_shows_authors_texts_reactions_and_local_state(browser, store):
    rows = browser.rows("conversation", cid=GENERAL)
    by_text = {r["text"]: r for r in rows}
    known = by_text[KNOWN_TEXT]
    assert known["author"] and known["author"] != known["message_id"]
    assert known["time"].endswith("Z") and known["local_state"] is None
    traced = next(r for r in rows if r["message_id"] == store.traced_message)
    assert traced["text"] == "Notes are in the shared folder (v2)"
    assert traced["reactions"] == "thumbsup 1"
    pending = by_text[PENDING_TEXT]
    assert pending["local_state"] == "sending" and pending["command"] == store.pending_command
    edited = next(r for r in rows if r["message_id"] == "demo-welcome")
    assert edited["edited_at"] and "(edited offline)" in edited["text"]
    assert [r["time"] for r in rows] == sorted(r["time"] for r in rows)
    older = browser.rows("conversation", cid=GENERAL, before=known["time"])
    assert older and all(r["time"] < known["time"] for r in older)


def test_log_pages_newest_first_and_filters(browser, connection):
    total = connection.execute("SELECT COUNT(*) FROM stored_events").fetchone()[0]
    rows = browser.rows("log")
    assert len(rows) == min(total, PAGE) and rows[0]["position"] == total
    assert rows[0]["received_at"].endswith("Z") and json.loads(rows[0]["event"]) is not None
    user_stream = browser.rows("log", stream=ingest.USER_STREAM, type=ingest.SYNC_RESULT)
    # A sync point is written with what it covers: a /sync answer, or the first query's answer.
    assert user_stream and all(r["stream"] == "@user" and r["source"] in ("sync", "query", "local")
                               for r in user_stream)
    older = browser.rows("log", before=10)
    assert [r["position"] for r in older] == list(range(9, 0, -1))


def test_outbox_conflicts_and_pending_or_refused(browser, store, connection):
    outbox = browser.rows("outbox")
    statuses = Counter(r["status"] for r in outbox)
    assert statuses == Counter(dict(connection.execute(
        "SELECT status, COUNT(*) FROM outbox GROUP BY status")))
    conflicts = browser.rows("conflicts")
    assert len(conflicts) == 1
    refused = conflicts[0]
    assert "not allowed" in refused["reason"] and json.loads(refused["answer"])["status"] == 403
    delivered = next(r for r in outbox if r["message_id"] == store.traced_message
                     and r["kind"] == "send_message")
    # Its first answer was lost; the resend was answered "already exists": delivered.
    assert delivered["attempts"] == 2 and "already exists" in json.loads(delivered["answer"])["message"]
    waiting = browser.rows("pending_or_refused")
    assert {r["command"] for r in waiting} == {store.pending_command, refused["command"]}
    assert browser.rows("outbox", status="rejected") == conflicts


def test_sync_history_lists_calls_and_points_with_gaps(browser, connection):
    rows = browser.rows("sync_history")
    count = connection.execute("SELECT COUNT(*) FROM stored_events WHERE topic = ?",
                               (ingest.SYNC_RESULT,)).fetchone()[0]
    assert len(rows) == count
    kinds = Counter(r["kind"] for r in rows)
    assert kinds["sync point"] >= 2 and kinds["sync call"] >= 1
    points = [r for r in rows if r["kind"] == "sync point"]
    assert points[0]["gap_seconds"] is None and all(p["gap_seconds"] is not None for p in points[1:])
    call = next(r for r in rows if r["kind"] == "sync call")
    assert call["asked_from"] and call["events"] >= 1 and call["backend_duration"]


def test_explain_lists_the_entries_that_name_the_message(browser, store):
    rows = browser.rows("explain", message_id=store.traced_message)
    types = [r["type"] for r in rows]
    assert "chatledger/command.requested" in types and "message.new" in types
    assert "chatledger/command.amended" in types and "reaction.new" in types
    assert [r["position"] for r in rows] == sorted(r["position"] for r in rows)
    for row in rows:
        assert row["source"] == "local" or store.traced_message in row["event"]
    assert browser.rows("explain", message_id="no-such-message") == []


def test_as_of_a_position_and_a_time(browser, connection):
    hourly = browser.rows("as_of", cid=HOURLY)
    assert len(hourly) == HOURS * PER_HOUR
    first = connection.execute("SELECT MIN(rowid), MAX(rowid) FROM stored_events "
                               "WHERE originator_id = ?", (HOURLY,)).fetchone()
    partly = browser.rows("as_of", cid=HOURLY, position=first[0] + 9)
    assert len(partly) == 10 and {r["as_of_position"] for r in partly} == {first[0] + 9}
    welcome = browser.rows("as_of", cid=GENERAL, position=5)
    texts = {r["message_id"]: r["text"] for r in welcome}
    assert texts["demo-welcome"] == "Welcome to the dev server!"  # before the offline edit
    now = {r["message_id"]: r["text"] for r in browser.rows("as_of", cid=GENERAL)}
    assert now["demo-welcome"].endswith("(edited offline)") and KNOWN_TEXT in now.values()
    received = connection.execute("SELECT received_at FROM stored_events WHERE rowid = 5"
                                  ).fetchone()[0]
    by_time = browser.rows("as_of", cid=GENERAL, time=rfc3339(received))
    assert by_time[0]["as_of_position"] >= 5
    assert KNOWN_TEXT not in {r["text"] for r in by_time}
    assert browser.rows("as_of", cid=GENERAL, time="2000-01-01") == []


def test_time_window(browser, connection):
    low, high = connection.execute(
        "SELECT received_at FROM stored_events WHERE rowid IN (10, 20) ORDER BY rowid").fetchall()
    rows = browser.rows("time_window", since=rfc3339(low[0]), until=rfc3339(high[0]))
    assert rows and all(low[0] <= microseconds(r["received_at"]) <= high[0] for r in rows)
    assert 10 in {r["position"] for r in rows} and 20 in {r["position"] for r in rows}
    assert browser.rows("time_window", since="2999-01-01") == []


# -- readable cells and links ----------------------------------------------------------------------


def test_cells_link_and_decode(browser, store):
    page = browser.get("/alice/conversation", cid=GENERAL, before="").text
    assert f"/-/chatledger/alice/message?id={store.traced_message}" in page
    assert f"/alice/log?stream={store.pending_command.replace(':', '%3A')}" in page
    assert "/alice/stored_events/" in page  # positions link to their entries
    # Payloads are zstd with a dictionary in the file: the text shows only when decoded.
    events = browser.get("/alice/stored_events", _size=200).text
    assert "chatledger-json" in events and KNOWN_TEXT in events
    assert ">websocket</span>" in events  # source codes as names
    messages = browser.get("/alice/messages").text
    assert "conversation?cid=messaging%3Ageneral" in messages
    assert re.search(r'<span title="\d{16}">20\d\d-\d\d-\d\dT[0-9:.]+Z</span>', messages)
    assert "chatledger: charts" in browser.get("/alice").text  # the database's actions menu
    outbox = browser.get("/alice/outbox").text
    assert f"/alice/log?stream={store.pending_command.replace(':', '%3A')}" in outbox


def test_a_database_that_is_not_a_store_is_left_alone(tmp_path):
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as c:
        c.execute("CREATE TABLE t (cid TEXT, created_at INTEGER)")
        c.execute("INSERT INTO t VALUES ('messaging:x', 1764064800000000)")
    browser = Browser(other)
    try:
        assert browser.get("/other.json").json()["queries"] == []
        assert "conversation" not in browser.get("/other/t").text
        assert browser.get("/-/chatledger/other/charts").status_code == 404
    finally:
        browser.close()


# -- the chart page and the message page ---------------------------------------------------------------


def test_charts_data(browser, store, connection):
    response = browser.get("/-/chatledger/alice/charts.json")
    found = {c["name"]: c for c in response.json()["charts"]}
    assert set(found) == {"events_by_type", "events_by_channel", "sync_gaps", "catch_ups", "outbox"}
    for chart in found.values():
        assert chart["spec"]["data"]["values"] == chart["rows"]
    total = connection.execute("SELECT COUNT(*) FROM stored_events").fetchone()[0]
    assert sum(r["events"] for r in found["events_by_type"]["rows"]) == total
    hourly = [r for r in found["events_by_channel"]["rows"] if r["channel"] == HOURLY]
    assert [r["events"] for r in hourly] == [PER_HOUR] * HOURS
    backend = connection.execute(
        "SELECT COUNT(*) FROM stored_events WHERE source != 0 AND originator_id != '@user'"
    ).fetchone()[0]
    assert sum(r["events"] for r in found["events_by_channel"]["rows"]) == backend
    points = charts.sync_points(connection)
    assert len(found["catch_ups"]["rows"]) == len(points) >= 2
    assert len(found["sync_gaps"]["rows"]) == len(points) - 1
    with ChatStore.open(store.data_dir, "alice", create=False) as opened:
        assert found["sync_gaps"]["note"] == f"last sync point: {opened.last_sync_at()}"
    last = max(r["time_ms"] for r in found["outbox"]["rows"])
    final = {r["state"]: r["commands"] for r in found["outbox"]["rows"] if r["time_ms"] == last}
    statuses = Counter(dict(connection.execute("SELECT status, COUNT(*) FROM outbox GROUP BY 1")))
    assert final == {"queued": statuses["pending"] + statuses["in_flight"],
                     "failed": statuses["failed"], "delivered": statuses["succeeded"],
                     "refused": statuses["rejected"], "cancelled": statuses["cancelled"]}
    page = browser.get("/-/chatledger/alice/charts").text
    for name in found:
        assert f'id="chart-{name}"' in page
    assert "/-/chatledger/static/vega-6.4.0.min.js" in page and "cdn" not in page.lower()


def test_message_page(browser, store):
    data = browser.get("/-/chatledger/alice/message.json", id=store.traced_message).json()
    assert data["now"]["text"] == "Notes are in the shared folder (v2)"
    explained = browser.rows("explain", message_id=store.traced_message)
    assert [e["position"] for e in data["entries"]] == [e["position"] for e in explained]
    assert len(data["chart"]["rows"]) == len(explained)
    assert {r["lane"] for r in data["chart"]["rows"]} >= {"local", "websocket"}
    page = browser.get("/-/chatledger/alice/message", id=store.traced_message).text
    assert "Notes are in the shared folder (v2)" in page and 'id="chart-message_life"' in page
    assert browser.get("/-/chatledger/alice/message").status_code == 404
    assert browser.get("/-/chatledger/nope/charts").status_code == 404


def test_bundled_scripts_are_served(browser):
    for name in ("vega-6.4.0.min.js", "vega-lite-6.4.3.min.js", "chatledger-charts.js"):
        response = browser.get(f"/-/chatledger/static/{name}")
        assert response.status_code == 200 and len(response.content) > 1000
    assert browser.get("/-/chatledger/static/..%2F__init__.py").status_code == 404


def test_browsing_writes_nothing(browser, store, before):
    browser.get("/alice.json", sql="DELETE FROM messages")  # refused: read-only queries only
    for query in CANNED_QUERIES:
        browser.rows(query.name)
    browser.get("/-/chatledger/alice/charts.json")
    assert _digest(store.path) == before
    with ChatStore.open(store.data_dir, "alice", create=False) as opened:
        assert opened.verify() == []


# -- the command --------------------------------------------------------------------------------------


def test_browse_serves_several_stores_read_only(store, tmp_path):
    with ChatStore.open(store.data_dir, "Bob.B") as bob:  # a user id the file name encodes
        bob_path = bob.path
    assert bob_path is not None
    with BrowseServer([store.path, bob_path], port=0) as server:
        url = server.start()
        assert url == f"http://127.0.0.1:{server.port}/"
        with urllib.request.urlopen(f"{url}.json") as answer:
            assert set(json.load(answer)) == {"alice", bob_path.stem}
        with urllib.request.urlopen(f"{url}alice/conversation.json?cid={GENERAL}&before=") as a:
            assert KNOWN_TEXT in a.read().decode()
    (store.data_dir / "notes.chatledger").write_text("not a store")
    assert all_store_paths(store.data_dir) == sorted([store.path, bob_path])
    with BrowseServer([bob_path], port=0) as server:
        with urllib.request.urlopen(server.start() + ".json") as answer:  # the URL it prints
            assert json.load(answer)["database"] == bob_path.stem


def test_browse_command_errors(store, tmp_path):
    runner = CliRunner()
    result = runner.invoke(cli, ["--data-dir", str(store.data_dir), "--user", "nobody", "browse",
                                 "--no-open"])
    assert result.exit_code == 1 and "no store for user 'nobody'" in result.output
    result = runner.invoke(cli, ["--data-dir", str(store.data_dir), "browse", "--no-open"])
    assert result.exit_code == 2 and "no user given" in result.output
    result = runner.invoke(cli, ["--data-dir", str(tmp_path / "empty"), "browse", "--all"])
    assert result.exit_code == 1 and "no stores in" in result.output
    not_a_store = tmp_path / "x.chatledger"
    sqlite3.connect(not_a_store).execute("CREATE TABLE t (x)").connection.close()
    result = runner.invoke(cli, ["--data-dir", str(tmp_path), "--user", "x", "browse"])
    assert result.exit_code == 1 and "is not a chatledger store" in result.output
    with BrowseServer([store.path], port=0) as busy:
        result = runner.invoke(cli, ["--data-dir", str(store.data_dir), "--user", "alice",
                                     "browse", "--port", str(busy.port), "--no-open"])
        assert result.exit_code == 1 and "cannot listen on 127.0.0.1" in result.output


def test_importing_chatledger_does_not_import_datasette():
    code = ("import sys, chatledger, chatledger.cli.main, chatledger.projections.browse.charts; "
            "print('datasette' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
