"""The canned queries of the browser: readable views of a store, and the audit questions.

Each is one named SQL statement over a store file, using the functions of `sqlfunctions`. A
store file cannot hold views of its own without being written to, so the readable views are
canned queries too (Datasette lists them on the database's page, with a form for their
parameters, and offers each result as CSV and JSON).

A parameter left empty means "not given" (Datasette passes an empty string for a blank form
field). Columns are named for what they hold, and a few names carry links in the browser
(see `plugin.links`): `cid`, `message_id`, `command`, `stream`, `position`.

The canned queries read what a browser page can show in one go: Datasette returns at most
`max_returned_rows` rows (1,000 by default) of a canned query, so the long ones (the log, a
conversation) show the newest rows and take a `before` parameter to page back.
"""

from __future__ import annotations

from dataclasses import dataclass

from chatledger.eventstore import commands, ingest
from chatledger.eventstore.schema import Source

# How many rows the paged queries show at once.
PAGE = 500


@dataclass(frozen=True, slots=True)
class CannedQuery:
    """One canned query: its name (the URL), title, description and SQL."""

    name: str
    title: str
    description: str
    sql: str

    def as_datasette(self) -> dict[str, str | bool]:
        """The dict Datasette's `canned_queries` hook returns for it. The SQL is one click away
        ("show"): the page opens on the parameters and the rows."""
        return {"title": self.title, "description": self.description, "sql": self.sql.strip(),
                "hide_sql": True}


# -- the pieces several statements share -----------------------------------------------------------

# The envelope of a log entry, readable (`e` is a row of stored_events).
_ENTRY_COLUMNS = """
    e.rowid AS position,
    chatledger_time(e.received_at) AS received_at,
    chatledger_time(e.event_at) AS event_at,
    chatledger_source(e.source) AS source,
    e.originator_id AS stream,
    e.originator_version AS version,
    e.topic AS type,
    e.connection_id AS connection_id"""

# A command of the outbox, readable (`o` is a row of outbox, `last` its newest lifecycle entry).
_COMMAND_COLUMNS = """
    o.id AS command,
    o.kind AS kind,
    o.cid AS cid,
    o.message_id AS message_id,
    o.status AS status,
    o.attempts AS attempts,
    json_extract(o.last_error, '$.message') AS last_error,
    o.reason AS reason,
    COALESCE(json_extract(last.doc, '$.response'), json_extract(last.doc, '$.error')) AS answer,
    chatledger_time(o.created_at) AS requested_at,
    chatledger_time(o.updated_at) AS updated_at,
    chatledger_time(CAST(o.next_try_at * 1000000 AS INTEGER)) AS next_try_at,
    o.depends_on AS depends_on"""

# The newest lifecycle entry of each command: where its last error or the backend's answer is.
# `source = 0` lets SQLite use the log's index of the commands' streams.
_COMMAND_FROM = f"""
    FROM outbox o
    LEFT JOIN (
        SELECT e.originator_id AS command, chatledger_json(e.codec, e.state) AS doc
        FROM stored_events e
        JOIN (SELECT originator_id, MAX(originator_version) AS version FROM stored_events
              WHERE source = {int(Source.LOCAL)} GROUP BY originator_id) newest
          ON newest.originator_id = e.originator_id AND newest.version = e.originator_version
        WHERE e.source = {int(Source.LOCAL)}
    ) last ON last.command = o.id"""

# -- the readable views ------------------------------------------------------------------------------

CONVERSATION = CannedQuery(
    name="conversation",
    title="Conversation",
    description=(f"A channel's messages as the read tables hold them now: author, text, time, "
                 f"edits, reactions, replies and local state (the newest {PAGE}, oldest first; "
                 "`before`: an RFC 3339 time to page back)."),
    sql=f"""
WITH page AS (
    SELECT * FROM messages
    WHERE cid = :cid AND deleted_for_me = 0
      AND (:before = '' OR created_at < chatledger_us(:before))
    ORDER BY created_at DESC, id DESC
    LIMIT {PAGE}
), shown AS (
    SELECT page.*, chatledger_message(e.codec, e.state, page.slot) AS object
    FROM page LEFT JOIN stored_events e ON e.rowid = page.position
)
SELECT
    chatledger_time(m.created_at) AS time,
    COALESCE(u.name, m.user_id) AS author,
    json_extract(m.object, '$.text') AS text,
    COALESCE(json_extract(m.object, '$.message_text_updated_at'),
             CASE WHEN m.updated_at > m.created_at THEN chatledger_time(m.updated_at) END)
        AS edited_at,
    (SELECT group_concat(type || ' ' || n, ', ') FROM (
        SELECT r.type AS type, COUNT(*) AS n FROM reactions r
        WHERE r.message_id = m.id GROUP BY r.type ORDER BY r.type)) AS reactions,
    m.reply_count AS replies,
    CASE WHEN m.deleted_at IS NOT NULL THEN 'deleted ' || chatledger_time(m.deleted_at) END
        AS deleted,
    m.local_state AS local_state,
    m.local_command AS command,
    m.id AS message_id,
    m.parent_id AS parent_id,
    m.position AS position
FROM shown m LEFT JOIN users u ON u.id = m.user_id
ORDER BY m.created_at, m.id
""",
)

LOG = CannedQuery(
    name="log",
    title="Log",
    description=(f"The log, newest first: position, times, source, stream, type and the event "
                 f"as it arrived ({PAGE} at a time; `before`: a position to page back; "
                 "`stream`: a cid, `@user` or a command; `type`: an event type)."),
    sql=f"""
SELECT {_ENTRY_COLUMNS},
    chatledger_json(e.codec, e.state) AS event
FROM stored_events e
WHERE (:stream = '' OR e.originator_id = :stream)
  AND (:type = '' OR e.topic = :type)
  AND (:before = '' OR e.rowid < CAST(:before AS INTEGER))
ORDER BY e.rowid DESC
LIMIT {PAGE}
""",
)

OUTBOX = CannedQuery(
    name="outbox",
    title="Outbox",
    description=("Every local command, newest first: what it does, its status, attempts, the "
                 "last error and the backend's answer (`status`: pending, in_flight, failed, "
                 "succeeded, rejected or cancelled)."),
    sql=f"""
SELECT {_COMMAND_COLUMNS}
{_COMMAND_FROM}
WHERE (:status = '' OR o.status = :status)
ORDER BY o.seq DESC
""",
)

CONFLICTS = CannedQuery(
    name="conflicts",
    title="Conflicts",
    description="Commands the backend refused, with its reason and answer, newest first.",
    sql=f"""
SELECT {_COMMAND_COLUMNS}
{_COMMAND_FROM}
WHERE o.status = 'rejected'
ORDER BY o.seq DESC
""",
)

SYNC_HISTORY = CannedQuery(
    name="sync_history",
    title="Sync history",
    description=("Every `/sync` answer and sync point, oldest first: what was asked from, how "
                 "far the store then held every event, how many events came, the backend's "
                 "duration, channels queried again, and the gap each sync point closed."),
    sql=f"""
WITH results AS (
    SELECT e.rowid AS position, e.received_at AS received_us,
           chatledger_json(e.codec, e.state) AS doc
    FROM stored_events e
    WHERE e.originator_id = '{ingest.USER_STREAM}' AND e.topic = '{ingest.SYNC_RESULT}'
), points AS (
    SELECT position,
           chatledger_us(json_extract(doc, '$.synced_at'))
             - LAG(chatledger_us(json_extract(doc, '$.synced_at'))) OVER (ORDER BY position)
             AS gap_us
    FROM results WHERE json_extract(doc, '$.synced_at') IS NOT NULL
)
SELECT
    r.position AS position,
    chatledger_time(r.received_us) AS received_at,
    CASE WHEN json_type(r.doc, '$.events') IS NOT NULL THEN 'sync call' ELSE 'sync point' END
        AS kind,
    json_extract(r.doc, '$.last_sync_at') AS asked_from,
    json_extract(r.doc, '$.synced_at') AS synced_to,
    json_extract(r.doc, '$.events') AS events,
    json_extract(r.doc, '$.duration') AS backend_duration,
    ROUND(p.gap_us / 1000000.0, 3) AS gap_seconds,
    json_extract(r.doc, '$.requeried') AS requeried,
    json_extract(r.doc, '$.inaccessible_cids') AS inaccessible
FROM results r LEFT JOIN points p ON p.position = r.position
ORDER BY r.position
""",
)

# -- the audit questions -------------------------------------------------------------------------------

# The entries of the message's channels and of its commands that name it (the JSON paths
# `projections.history.mentions` checks); `instr` first, so only candidates are parsed as JSON.
EXPLAIN = CannedQuery(
    name="explain",
    title="Explain a message",
    description=("Every log entry that names the message, oldest first: the backend's events in "
                 "its channel and each step of the local commands on it. (`chatledger explain` "
                 "also replays them and shows what each changed.)"),
    sql=f"""
WITH streams AS (
    SELECT cid AS stream FROM messages WHERE id = :message_id
    UNION SELECT cid FROM outbox WHERE message_id = :message_id AND cid IS NOT NULL
), command_streams AS (
    SELECT id AS stream FROM outbox WHERE message_id = :message_id
), entries AS (
    SELECT e.*, e.rowid AS position, chatledger_json(e.codec, e.state) AS doc
    FROM stored_events e
    WHERE e.originator_id IN (SELECT stream FROM streams) AND e.source != {int(Source.LOCAL)}
    UNION ALL
    SELECT e.*, e.rowid AS position, chatledger_json(e.codec, e.state) AS doc
    FROM stored_events e
    WHERE e.originator_id IN (SELECT stream FROM command_streams)
      AND e.source = {int(Source.LOCAL)}
)
SELECT
    e.position AS position,
    chatledger_time(e.received_at) AS received_at,
    chatledger_time(e.event_at) AS event_at,
    chatledger_source(e.source) AS source,
    e.originator_id AS stream,
    e.topic AS type,
    CASE WHEN json_type(e.doc, '$.reaction.type') = 'text'
         THEN json_extract(e.doc, '$.reaction.type') || ' by '
              || COALESCE(json_extract(e.doc, '$.reaction.user_id'), '?')
         WHEN json_type(e.doc, '$.request.reaction.type') = 'text'
         THEN json_extract(e.doc, '$.request.reaction.type')
         ELSE COALESCE(json_extract(e.doc, '$.message.text'), json_extract(e.doc, '$.reason'),
                       json_extract(e.doc, '$.error.message'), json_extract(e.doc, '$.kind'))
    END AS says,
    e.doc AS event
FROM entries e
WHERE e.source = {int(Source.LOCAL)}
   OR (instr(e.doc, :message_id) > 0 AND (
          json_extract(e.doc, '$.message.id') = :message_id
       OR json_extract(e.doc, '$.message_id') = :message_id
       OR json_extract(e.doc, '$.reaction.message_id') = :message_id
       OR json_extract(e.doc, '$.message.parent_id') = :message_id
       OR (e.topic = '{ingest.CHANNEL_STATE}' AND EXISTS (
              SELECT 1 FROM json_each(e.doc, '$.messages') m
              WHERE json_extract(m.value, '$.id') = :message_id))))
ORDER BY e.position
""",
)

# The newest stored version (by the server's clock, then log position) of each message of the
# channel, among the entries up to the position: what the backend had told the store by then.
AS_OF = CannedQuery(
    name="as_of",
    title="A channel as of a position or time",
    description=("A channel's messages as the log held them at a past log position (`position`) "
                 "or time (`time`, RFC 3339: the last entry that had arrived by then): the newest "
                 "version of each message the backend had sent. Local changes not yet confirmed "
                 "and channel-wide removals are not applied here; `chatledger as-of` replays the "
                 "read tables exactly."),
    sql=f"""
WITH upto AS (
    SELECT CASE
        WHEN :position != '' THEN CAST(:position AS INTEGER)
        WHEN :time != '' THEN COALESCE(
            (SELECT MAX(rowid) FROM stored_events WHERE received_at <= chatledger_us(:time)), 0)
        ELSE (SELECT MAX(rowid) FROM stored_events) END AS position
), entries AS (
    SELECT e.rowid AS position, e.topic AS topic, chatledger_json(e.codec, e.state) AS doc
    FROM stored_events e, upto
    WHERE e.originator_id = :cid AND e.rowid <= upto.position
      AND e.source != {int(Source.LOCAL)}
), versions AS (
    SELECT position, topic, json_extract(doc, '$.message') AS message FROM entries
    WHERE topic LIKE 'message.%' AND json_type(doc, '$.message.id') = 'text'
    UNION ALL
    SELECT entries.position, entries.topic, m.value FROM entries, json_each(entries.doc, '$.messages') m
    WHERE entries.topic = '{ingest.CHANNEL_STATE}'
), ranked AS (
    SELECT position, topic, message,
           ROW_NUMBER() OVER (
               PARTITION BY json_extract(message, '$.id')
               ORDER BY COALESCE(json_extract(message, '$.deleted_at'),
                                 json_extract(message, '$.updated_at'),
                                 json_extract(message, '$.created_at')) DESC,
                        position DESC) AS newest
    FROM versions
)
SELECT
    json_extract(message, '$.created_at') AS time,
    COALESCE(json_extract(message, '$.user.name'), json_extract(message, '$.user.id')) AS author,
    json_extract(message, '$.text') AS text,
    json_extract(message, '$.type') AS message_type,
    json_extract(message, '$.deleted_at') AS deleted_at,
    json_extract(message, '$.id') AS message_id,
    position AS position,
    topic AS from_type,
    (SELECT position FROM upto) AS as_of_position
FROM ranked
WHERE newest = 1
ORDER BY json_extract(message, '$.created_at'), json_extract(message, '$.id')
""",
)

TIME_WINDOW = CannedQuery(
    name="time_window",
    title="What arrived in a time window",
    description=(f"The entries that arrived between `since` and `until` (RFC 3339, or a date or "
                 f"date and time in UTC; either may be left empty), oldest first, at most "
                 f"{PAGE * 2}."),
    sql=f"""
SELECT {_ENTRY_COLUMNS},
    chatledger_json(e.codec, e.state) AS event
FROM stored_events e
WHERE (:since = '' OR e.received_at >= chatledger_us(:since))
  AND (:until = '' OR e.received_at <= chatledger_us(:until))
ORDER BY e.rowid
LIMIT {PAGE * 2}
""",
)

PENDING_OR_REFUSED = CannedQuery(
    name="pending_or_refused",
    title="Pending or refused actions",
    description=("The local actions not yet delivered (pending, in flight, failed and waiting to "
                 "be retried) and those the backend refused, in request order."),
    sql=f"""
SELECT {_COMMAND_COLUMNS}
{_COMMAND_FROM}
WHERE o.status IN ('{commands.CommandStatus.PENDING}', '{commands.CommandStatus.IN_FLIGHT}',
                   '{commands.CommandStatus.FAILED}', '{commands.CommandStatus.REJECTED}')
ORDER BY o.seq
""",
)

CANNED_QUERIES: tuple[CannedQuery, ...] = (
    CONVERSATION, LOG, OUTBOX, CONFLICTS, SYNC_HISTORY, EXPLAIN, AS_OF, TIME_WINDOW,
    PENDING_OR_REFUSED,
)

__all__ = ["CANNED_QUERIES", "CannedQuery", "PAGE"]
