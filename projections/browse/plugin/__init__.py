"""The Datasette plugin: chatledger stores, readable in Datasette.

Registered under Datasette's `datasette` entry point (pyproject.toml), so that `datasette
alice.chatledger` loads it as `chatledger browse` does. For every database that is a store file
(and only those) it adds:

- the SQL functions of `sqlfunctions` (on every connection: harmless elsewhere);
- the canned queries of `queries` (the readable views and the audit questions);
- readable cells: times as RFC 3339, `source` codes as names, payloads as their JSON, and links
  (a cid to its conversation, a message id to its life, a command or stream to its entries, a
  position to its log entry);
- its own pages, `/-/chatledger/<database>/charts` and `/-/chatledger/<database>/message?id=`
  (each also as `.json`), drawn with the Vega and Vega-Lite files bundled in `static/`.

Nothing here writes: the connections are Datasette's read-only (or immutable) ones.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from datasette import hookimpl
from datasette.utils import tilde_decode, tilde_encode
from datasette.utils.asgi import Forbidden, NotFound, Response, asgi_static
from markupsafe import Markup, escape

from chatledger.projections.browse import charts
from chatledger.projections.browse.queries import CANNED_QUERIES
from chatledger.projections.browse.sqlfunctions import (
    IS_STORE_SQL,
    StoreFunctions,
    rfc3339,
    source_name,
)

STATIC_DIR = Path(__file__).parent / "static"
# The files a chart page loads, in order (bundled: no CDN at run time).
SCRIPTS = ("vega-6.4.0.min.js", "vega-lite-6.4.3.min.js", "chatledger-charts.js")
PAGE_ROOT = "/-/chatledger"

# Columns holding epoch microseconds, in the tables of a store (shown as RFC 3339).
TIME_COLUMNS = frozenset({
    "received_at", "event_at", "created_at", "updated_at", "deleted_at", "last_message_at",
    "pinned_at", "archived_at", "truncated_at", "last_read", "last_delivered_at", "last_active",
    "remind_at", "expires", "start_at", "end_at",
})
# Columns whose values link somewhere, by what they hold.
CID_COLUMNS = frozenset({"cid"})
MESSAGE_COLUMNS = frozenset({"message_id", "parent_id", "last_read_message_id",
                             "first_unread_message_id", "last_delivered_message_id"})
COMMAND_COLUMNS = frozenset({"command", "local_command", "depends_on"})
STREAM_COLUMNS = frozenset({"stream", "originator_id"})
POSITION_COLUMNS = frozenset({"position", "response_position", "me_position", "as_of_position"})
# In these tables `id` is a message's or a command's id.
ID_MEANS = {"messages": "message", "outbox": "command"}
LINKED = (CID_COLUMNS | MESSAGE_COLUMNS | COMMAND_COLUMNS | STREAM_COLUMNS | POSITION_COLUMNS
          | {"id", "source", "state"})


class StoreDatabases:
    """Which databases are chatledger stores, asked once per database file (by name and path:
    several Datasette instances in one process may use one name for different files)."""

    def __init__(self) -> None:
        self._known: dict[tuple[str, str | None], bool] = {}

    async def is_store(self, datasette: Any, database: str) -> bool:
        try:
            db = datasette.get_database(database)
        except KeyError:
            return False
        key = (database, db.path)
        if key not in self._known:
            try:
                rows = (await db.execute(IS_STORE_SQL)).rows
                self._known[key] = rows[0][0] == 3
            except Exception:  # a database that cannot be read is not one this plugin shows
                self._known[key] = False
        return self._known[key]


_stores = StoreDatabases()


# -- SQL functions and canned queries ---------------------------------------------------------------


@hookimpl
def prepare_connection(conn: sqlite3.Connection, database: str, datasette: Any) -> None:
    StoreFunctions(conn).register()


@hookimpl
def canned_queries(datasette: Any, database: str, actor: Any) -> Any:
    async def inner() -> dict[str, dict[str, str | bool]]:
        if not await _stores.is_store(datasette, database):
            return {}
        return {q.name: q.as_datasette() for q in CANNED_QUERIES}

    return inner


@hookimpl
def database_actions(datasette: Any, actor: Any, database: str, request: Any) -> Any:
    async def inner() -> list[dict[str, str]]:
        if not await _stores.is_store(datasette, database):
            return []
        return [{"href": page_url(datasette, database, "charts"), "label": "chatledger: charts"}]

    return inner


@hookimpl
def extra_css_urls(database: str | None, datasette: Any) -> Any:
    async def inner() -> list[str]:
        if database is None or not await _stores.is_store(datasette, database):
            return []
        return [datasette.urls.path(f"{PAGE_ROOT}/static/chatledger.css")]

    return inner


# -- readable cells ------------------------------------------------------------------------------------


def page_url(datasette: Any, database: str, page: str, **params: Any) -> str:
    """The URL of one of the plugin's pages for a database."""
    query = f"?{urlencode(params)}" if params else ""
    return datasette.urls.path(f"{PAGE_ROOT}/{tilde_encode(database)}/{page}") + query


def query_url(datasette: Any, database: str, query: str, **params: Any) -> str:
    return f"{datasette.urls.query(database, query)}?{urlencode(params)}"


def _link(href: str, text: Any, title: str = "") -> Markup:
    hint = f' title="{escape(title)}"' if title else ""
    return Markup(f'<a href="{escape(href)}"{hint}>{escape(str(text))}</a>')


def cell_link(datasette: Any, database: str, table: str | None, column: str,
              value: Any) -> Markup | None:
    """The link a cell's value gets, by the column it is in; None when it gets none."""
    if column == "id":
        column = {"message": "message_id", "command": "command"}.get(
            ID_MEANS.get(table or "", ""), "")
    if not isinstance(value, (str, int)) or value == "":
        return None
    if column in CID_COLUMNS:
        return _link(query_url(datasette, database, "conversation", cid=value, before=""),
                     value, "the channel's conversation")
    if column in MESSAGE_COLUMNS:
        return _link(page_url(datasette, database, "message", id=value), value,
                     "the message's life: every entry that names it")
    if column in COMMAND_COLUMNS or column in STREAM_COLUMNS:
        return _link(query_url(datasette, database, "log", stream=value, type="", before=""),
                     value, "the entries of this stream")
    if column in POSITION_COLUMNS and isinstance(value, int):
        return _link(datasette.urls.row(database, "stored_events", str(value)), value,
                     "this log entry")
    return None


@hookimpl
def render_cell(row: Any, value: Any, column: str, table: str | None, database: str,
                datasette: Any) -> Any:
    wanted = (column in LINKED or (column in TIME_COLUMNS and isinstance(value, int)))
    if not wanted or value is None:
        return None

    async def inner() -> Markup | None:
        if not await _stores.is_store(datasette, database):
            return None
        if column in TIME_COLUMNS and isinstance(value, int) and value > 10**12:
            return Markup(f'<span title="{value}">{escape(rfc3339(value) or value)}</span>')
        if table in ("stored_events", "quarantine") and column == "source":
            return Markup(f'<span title="{escape(str(value))}">{escape(source_name(value))}</span>')
        if table == "stored_events" and column == "state" and isinstance(value, bytes):
            return await _payload_cell(datasette, database, row, value)
        return cell_link(datasette, database, table, column, value)

    return inner


DECODE_SQL = "SELECT chatledger_json(?, ?)"


async def _payload_cell(datasette: Any, database: str, row: Any, state: bytes) -> Markup | None:
    try:
        codec = row["codec"]
    except (IndexError, KeyError):
        return None
    rows = (await datasette.get_database(database).execute(DECODE_SQL, [codec, state])).rows
    text = rows[0][0] if rows else None
    if text is None:
        return None
    limit = datasette.setting("truncate_cells_html") or 0
    shown = text if not limit or len(text) <= limit else text[:limit] + "…"
    return Markup(f'<pre class="chatledger-json">{escape(shown)}</pre>')


# -- the plugin's own pages ---------------------------------------------------------------------------


async def _store(datasette: Any, request: Any) -> str:
    """The store database a page's URL names; NotFound or Forbidden otherwise."""
    name = tilde_decode(request.url_vars["database"])
    if name not in datasette.databases:
        raise NotFound(f"no database {name!r}")
    if not await _stores.is_store(datasette, name):
        raise NotFound(f"{name!r} is not a chatledger store")
    if not await datasette.permission_allowed(request.actor, "view-database", name,
                                             default=True):
        raise Forbidden("you may not view this database")
    return name


def _spec_json(chart: charts.Chart) -> Markup:
    # Inside <script type="application/json">: only "</" could end the element early.
    return Markup(json.dumps(chart.spec).replace("</", "<\\/"))


def _scripts(datasette: Any) -> list[str]:
    return [datasette.urls.path(f"{PAGE_ROOT}/static/{name}") for name in SCRIPTS]


async def charts_page(datasette: Any, request: Any) -> Response:
    database = await _store(datasette, request)
    found = await datasette.get_database(database).execute_fn(charts.store_charts)
    if request.url_vars.get("format") == ".json":
        return Response.json({"database": database, "charts": [c.as_json() for c in found]})
    views = [(q.name, q.title, query_url(datasette, database, q.name)) for q in CANNED_QUERIES]
    return Response.html(await datasette.render_template("chatledger_charts.html", {
        "database": database,
        "database_url": datasette.urls.database(database),
        "charts": [(c, _spec_json(c)) for c in found],
        "views": views,
        "scripts": _scripts(datasette),
    }, request=request))


MESSAGE_NOW_SQL = """
SELECT m.cid, chatledger_time(m.created_at), m.user_id,
       json_extract(chatledger_message(e.codec, e.state, m.slot), '$.text'), m.local_state
FROM messages m LEFT JOIN stored_events e ON e.rowid = m.position WHERE m.id = ?
"""


def _message_data(connection: sqlite3.Connection, message_id: str) -> dict[str, Any]:
    now = connection.execute(MESSAGE_NOW_SQL, (message_id,)).fetchone()
    return {
        "chart": charts.message_life(connection, message_id),
        "entries": charts.message_entries(connection, message_id),
        "now": None if now is None else dict(zip(
            ("cid", "created_at", "user_id", "text", "local_state"), now)),
    }


async def message_page(datasette: Any, request: Any) -> Response:
    database = await _store(datasette, request)
    message_id = request.args.get("id") or ""
    if not message_id:
        raise NotFound("say which message: ?id=MESSAGE_ID")
    db = datasette.get_database(database)
    found = await db.execute_fn(lambda connection: _message_data(connection, message_id))
    chart: charts.Chart = found["chart"]
    if request.url_vars.get("format") == ".json":
        return Response.json({"database": database, "message_id": message_id, "now": found["now"],
                              "entries": found["entries"], "chart": chart.as_json()})
    entries = [{
        **entry,
        "position_link": cell_link(datasette, database, None, "position", entry["position"]),
        "stream_link": cell_link(datasette, database, None, "stream", entry["stream"]),
    } for entry in found["entries"]]
    now = found["now"]
    return Response.html(await datasette.render_template("chatledger_message.html", {
        "database": database,
        "database_url": datasette.urls.database(database),
        "message_id": message_id,
        "now": now,
        "cid_link": cell_link(datasette, database, None, "cid", now["cid"]) if now else None,
        "entries": entries,
        "chart": (chart, _spec_json(chart)),
        "explain_url": query_url(datasette, database, "explain", message_id=message_id),
        "charts_url": page_url(datasette, database, "charts"),
        "scripts": _scripts(datasette),
    }, request=request))


@hookimpl
def register_routes() -> list[tuple[str, Any]]:
    return [
        (rf"^{PAGE_ROOT}/static/(?P<path>[^/]+)$", asgi_static(STATIC_DIR)),
        (rf"^{PAGE_ROOT}/(?P<database>[^/]+)/charts(?P<format>\.json)?$", charts_page),
        (rf"^{PAGE_ROOT}/(?P<database>[^/]+)/message(?P<format>\.json)?$", message_page),
    ]
