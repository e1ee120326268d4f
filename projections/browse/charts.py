"""The pictures of a store: each chart's data, read from a store file, and its Vega-Lite spec.

Every function takes a `sqlite3` connection to a store file on which `StoreFunctions` is
registered, reads (never writes), and returns a `Chart`: a name, a title, the rows it plots
and a Vega-Lite spec holding those rows. The chart pages embed the specs; tests read the rows.

Times in the rows are epoch milliseconds (what Vega-Lite plots as time) plus RFC 3339 text for
tooltips. The charts:

- `events_by_type`, `events_by_channel`: entries per hour (the event's own time, or when it
  arrived for entries without one), by type and by channel (the 10 busiest, the rest together).
- `sync_gaps`, `catch_ups`: for each sync point (`chatledger/sync.result` with `synced_at`), the
  stretch of time it closed since the previous one, and how long the catch-up took: from the
  first entry the catch-up stored (a `/sync` answer or a channel query) to the sync point.
- `outbox`: how many commands were queued, failed (waiting for a retry), delivered, refused and
  cancelled after each step of any command, as the command lifecycle entries record it.
- `message_life`: every entry that names one message (the `explain` canned query), as points
  on a time line, one lane per source.
"""

from __future__ import annotations

import sqlite3
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

import msgspec

from chatledger.eventstore import commands, ingest
from chatledger.eventstore.schema import Source
from chatledger.projections.browse.queries import EXPLAIN, SYNC_HISTORY
from chatledger.projections.browse.sqlfunctions import microseconds, rfc3339

VEGA_LITE_SCHEMA = "https://vega.github.io/schema/vega-lite/v6.json"  # an identifier, never fetched
HOUR_US = 3_600_000_000
BUSIEST_CHANNELS = 10
OTHER_CHANNELS = "(other channels)"
# The outbox series is thinned to about this many points (the last state in each time slice).
MAX_OUTBOX_POINTS = 600
WIDTH = 720

EVENTS_BY_HOUR_AND_TYPE_SQL = """
SELECT (COALESCE(event_at, received_at) / 3600000000) * 3600000000 AS hour_us,
       topic AS type, COUNT(*) AS events
FROM stored_events
GROUP BY hour_us, topic
ORDER BY hour_us, topic
"""

EVENTS_BY_HOUR_AND_STREAM_SQL = f"""
SELECT (COALESCE(event_at, received_at) / 3600000000) * 3600000000 AS hour_us,
       originator_id AS stream, COUNT(*) AS events
FROM stored_events
WHERE source != {int(Source.LOCAL)} AND originator_id != '{ingest.USER_STREAM}'
GROUP BY hour_us, originator_id
ORDER BY hour_us
"""

LAST_SYNC_SQL = "SELECT value FROM connection WHERE key = 'last_sync_at'"

# Where each catch-up began: the entries a catch-up stores besides its sync points.
CATCH_UP_ENTRIES_SQL = f"""
SELECT rowid, received_at FROM stored_events
WHERE source IN ({int(Source.SYNC)}, {int(Source.QUERY)}) ORDER BY rowid
"""

COMMAND_STEPS_SQL = f"""
SELECT originator_id, topic, received_at FROM stored_events
WHERE source = {int(Source.LOCAL)} AND topic LIKE 'chatledger/command.%'
ORDER BY rowid
"""

# What a command's lifecycle entry makes of it, in the outbox chart's words.
_STATE_AFTER = {
    commands.REQUESTED: "queued",
    commands.AMENDED: None,  # no change of state
    commands.ATTEMPT_STARTED: "queued",
    commands.ATTEMPT_FAILED: "failed",
    commands.RETRIED: "queued",
    commands.SUCCEEDED: "delivered",
    commands.REJECTED: "refused",
    commands.CANCELLED: "cancelled",
}
OUTBOX_STATES = ("queued", "failed", "delivered", "refused", "cancelled")


@dataclass(frozen=True, slots=True)
class Chart:
    """One chart: `rows` are the data it plots, `spec` the Vega-Lite spec holding them."""

    name: str
    title: str
    rows: list[dict[str, Any]]
    spec: dict[str, Any] = field(repr=False)
    note: str = ""

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "title": self.title, "note": self.note, "rows": self.rows,
                "spec": self.spec}


def _ms(us: int | None) -> int | None:
    return None if us is None else us // 1000


def _spec(title: str, rows: list[dict[str, Any]], mark: dict[str, Any],
          encoding: dict[str, Any], height: int = 220) -> dict[str, Any]:
    return {
        "$schema": VEGA_LITE_SCHEMA,
        "title": title,
        "width": WIDTH,
        "height": height,
        "data": {"values": rows},
        "mark": mark,
        "encoding": encoding,
        "config": {"legend": {"labelLimit": 260}},
    }


def _time_axis(title: str = "time (UTC)", time_format: str | None = None) -> dict[str, Any]:
    # Without a format Vega picks one to suit the span (seconds for a quick catch-up, days
    # for a long log).
    axis: dict[str, Any] = {"labelAngle": -30}
    if time_format:
        axis["format"] = time_format
    return {"field": "time_ms", "type": "temporal", "title": title, "scale": {"type": "utc"},
            "axis": axis}


def _hourly(rows: list[tuple[int, str, int]], key: str, title: str, name: str) -> Chart:
    data = [{"time_ms": _ms(hour), "hour": rfc3339(hour), key: value, "events": count}
            for hour, value, count in rows]
    spec = _spec(title, data, {"type": "bar", "tooltip": True}, {
        "x": {**_time_axis("hour (UTC)", "%Y-%m-%d %H:%M"), "timeUnit": "utcyearmonthdatehours"},
        "y": {"field": "events", "type": "quantitative", "aggregate": "sum", "title": "entries"},
        "color": {"field": key, "type": "nominal", "title": key},
        "tooltip": [{"field": "hour", "title": "hour"}, {"field": key},
                    {"field": "events", "type": "quantitative"}],
    })
    return Chart(name, title, data, spec)


def events_by_type(connection: sqlite3.Connection) -> Chart:
    rows = connection.execute(EVENTS_BY_HOUR_AND_TYPE_SQL).fetchall()
    return _hourly(rows, "type", "Entries per hour, by type", "events_by_type")


def events_by_channel(connection: sqlite3.Connection) -> Chart:
    rows = connection.execute(EVENTS_BY_HOUR_AND_STREAM_SQL).fetchall()
    totals: Counter[str] = Counter()
    for _, stream, count in rows:
        totals[stream] += count
    busiest = {stream for stream, _ in totals.most_common(BUSIEST_CHANNELS)}
    folded: dict[tuple[int, str], int] = defaultdict(int)
    for hour, stream, count in rows:
        folded[(hour, stream if stream in busiest else OTHER_CHANNELS)] += count
    merged = [(hour, channel, count) for (hour, channel), count in sorted(folded.items())]
    return _hourly(merged, "channel", "Backend events per hour, by channel", "events_by_channel")


@dataclass(frozen=True, slots=True)
class SyncPoint:
    position: int
    received_us: int
    synced_us: int
    gap_seconds: float | None  # since the previous sync point; None for the first
    catch_up_seconds: float  # from the first entry of the catch-up to this sync point


def sync_points(connection: sqlite3.Connection) -> list[SyncPoint]:
    """The sync points of the log, oldest first, with the gap each closed and how long its
    catch-up took."""
    cursor = connection.execute(SYNC_HISTORY.sql)
    columns = [name for name, *_details in cursor.description]
    history = cursor.fetchall()
    entries = connection.execute(CATCH_UP_ENTRIES_SQL).fetchall()
    points: list[SyncPoint] = []
    previous_position = 0
    previous_synced: int | None = None
    next_entry = 0  # into `entries`, which is in log order like the sync points
    for values in history:
        row = dict(zip(columns, values))
        synced = microseconds(row["synced_to"])
        if synced is None:
            continue  # a /sync answer: its sync point follows
        received = microseconds(row["received_at"]) or 0
        started = received
        # entries: (position, received_at) of each entry a catch-up brought.
        while next_entry < len(entries) and entries[next_entry][0] <= previous_position:
            next_entry += 1
        if next_entry < len(entries):
            entry_position, entry_received = entries[next_entry]
            if entry_position < row["position"]:
                started = min(started, entry_received)
        gap = None if previous_synced is None else (synced - previous_synced) / 1_000_000
        points.append(SyncPoint(row["position"], received, synced, gap,
                                max(0, received - started) / 1_000_000))
        previous_position, previous_synced = row["position"], synced
    return points


def last_sync_at(connection: sqlite3.Connection) -> str | None:
    """The last sync point the read tables hold (RFC 3339), or None."""
    row = connection.execute(LAST_SYNC_SQL).fetchone()
    if row is None:
        return None
    (synced,) = row
    return rfc3339(synced)


def _sync_rows(points: list[SyncPoint]) -> list[dict[str, Any]]:
    return [{"time_ms": _ms(p.received_us), "received_at": rfc3339(p.received_us),
             "synced_to": rfc3339(p.synced_us), "position": p.position,
             "gap_seconds": p.gap_seconds, "catch_up_seconds": round(p.catch_up_seconds, 6)}
            for p in points]


def sync_gaps(connection: sqlite3.Connection) -> Chart:
    rows = [r for r in _sync_rows(sync_points(connection)) if r["gap_seconds"] is not None]
    title = "Sync: the gap each sync point closed"
    spec = _spec(title, rows, {"type": "bar", "tooltip": True, "width": 6}, {
        "x": _time_axis("sync point received (UTC)"),
        "y": {"field": "gap_seconds", "type": "quantitative", "title": "gap closed (s)"},
        "tooltip": [{"field": "synced_to"}, {"field": "gap_seconds", "type": "quantitative"},
                    {"field": "position", "type": "quantitative"}],
    }, height=160)
    last = last_sync_at(connection)
    return Chart("sync_gaps", title, rows, spec,
                 note=f"last sync point: {last}" if last else "never synced")


def catch_ups(connection: sqlite3.Connection) -> Chart:
    rows = _sync_rows(sync_points(connection))
    title = "Sync: how long each catch-up took"
    spec = _spec(title, rows, {"type": "bar", "tooltip": True, "width": 6}, {
        "x": _time_axis("sync point received (UTC)"),
        "y": {"field": "catch_up_seconds", "type": "quantitative", "title": "catch-up (s)"},
        "tooltip": [{"field": "received_at"}, {"field": "catch_up_seconds", "type": "quantitative"},
                    {"field": "position", "type": "quantitative"}],
    }, height=160)
    return Chart("catch_ups", title, rows, spec)


def outbox_series(connection: sqlite3.Connection) -> list[dict[str, Any]]:
    """After each step of any command: how many commands are in each state."""
    state_of: dict[str, str] = {}
    counts: Counter[str] = Counter()
    series: list[tuple[int, dict[str, int]]] = []
    for command, topic, received in connection.execute(COMMAND_STEPS_SQL):
        new_state = _STATE_AFTER.get(topic)
        if new_state is None:
            continue
        old_state = state_of.get(command)
        if old_state == new_state:
            continue
        if old_state is not None:
            counts[old_state] -= 1
        counts[new_state] += 1
        state_of[command] = new_state
        snapshot = {s: counts[s] for s in OUTBOX_STATES}
        if series and series[-1][0] == received:
            series[-1] = (received, snapshot)  # one transaction, one point
        else:
            series.append((received, snapshot))
    if len(series) > MAX_OUTBOX_POINTS:
        start, end = series[0][0], series[-1][0]
        width = max(1, (end - start) // MAX_OUTBOX_POINTS + 1)
        thinned: dict[int, tuple[int, dict[str, int]]] = {}
        for moment, snapshot in series:
            thinned[(moment - start) // width] = (moment, snapshot)  # the last in each slice
        series = list(thinned.values())
    return [{"time_ms": _ms(moment), "time": rfc3339(moment), "state": state, "commands": n}
            for moment, snapshot in series for state, n in snapshot.items()]


def outbox(connection: sqlite3.Connection) -> Chart:
    rows = outbox_series(connection)
    title = "The outbox over time"
    spec = _spec(title, rows, {"type": "line", "interpolate": "step-after", "point": True,
                               "tooltip": True}, {
        "x": _time_axis(),
        "y": {"field": "commands", "type": "quantitative", "title": "commands"},
        "color": {"field": "state", "type": "nominal", "title": "state",
                  "scale": {"domain": list(OUTBOX_STATES)}},
        "tooltip": [{"field": "time"}, {"field": "state"},
                    {"field": "commands", "type": "quantitative"}],
    })
    return Chart("outbox", title, rows, spec)


def message_entries(connection: sqlite3.Connection, message_id: str) -> list[dict[str, Any]]:
    """The rows of the `explain` canned query for one message, as dicts."""
    cursor = connection.execute(EXPLAIN.sql, {"message_id": message_id})
    columns = [d[0] for d in cursor.description]
    return [dict(zip(columns, values)) for values in cursor.fetchall()]


def message_life(connection: sqlite3.Connection, message_id: str) -> Chart:
    rows = []
    for entry in message_entries(connection, message_id):
        received = microseconds(entry["received_at"])
        event = _decoded(entry["event"])
        rows.append({"time_ms": _ms(received), "received_at": entry["received_at"],
                     "lane": entry["source"], "type": entry["type"],
                     "position": entry["position"], "says": entry["says"] or "",
                     "attempt": event.get("attempt") if isinstance(event, dict) else None})
    title = f"The life of message {message_id}"
    # One row per entry type, in the order they first happened: the steps read top to bottom.
    spec = _spec(title, rows, {"type": "point", "filled": True, "size": 120, "tooltip": True}, {
        "x": _time_axis("received (UTC)", "%H:%M:%S.%L"),
        "y": {"field": "type", "type": "nominal", "title": "entry type", "sort": None},
        "color": {"field": "lane", "type": "nominal", "title": "source"},
        "tooltip": [{"field": "position", "type": "quantitative"}, {"field": "received_at"},
                    {"field": "type"}, {"field": "says"}],
    }, height=max(120, 24 * len({r["type"] for r in rows})))
    return Chart("message_life", title, rows, spec)


def _decoded(text: str | None) -> Any:
    if text is None:
        return None
    try:
        return msgspec.json.decode(text)
    except msgspec.DecodeError:
        return None


def store_charts(connection: sqlite3.Connection) -> list[Chart]:
    """The charts of the store's chart page, in page order."""
    return [events_by_type(connection), events_by_channel(connection), sync_gaps(connection),
            catch_ups(connection), outbox(connection)]


__all__ = [
    "Chart", "SyncPoint", "catch_ups", "events_by_channel", "events_by_type", "last_sync_at",
    "message_entries", "message_life", "outbox", "outbox_series", "store_charts", "sync_gaps",
    "sync_points",
]
