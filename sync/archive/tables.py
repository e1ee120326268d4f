"""The archive's own tables beside the events table, and every statement over them, built once.

- `chatledger_archive_meta`: the layout's version (a newer one is refused, never touched).
- `chatledger_users`: one row per user: entries, last log position pushed (the high-water mark
  a push resumes from), payload bytes, first and last push. Written in the same transaction as
  the entries, so it never disagrees with them.
- `chatledger_commands`: the latest lifecycle state of every local command, per user (pending
  and refused actions without reading the log).
- `chatledger_daily`: entries and payload bytes per user, UTC day (of arrival) and type: what
  `archive stats` sums, however long the logs grow.
- `chatledger_dictionaries`: each user's zstd dictionaries, by the id their rows name.
"""

from __future__ import annotations

from psycopg.sql import SQL, Composed, Identifier

from chatledger.sync.archive.copybinary import ENTRY_COLUMNS
from chatledger.sync.archive.persistence import EVENTS_TABLE

# Bumped when the layout changes; an archive made by a newer version is refused.
ARCHIVE_SCHEMA_VERSION = 1
DEFAULT_SCHEMA = "chatledger"

META = "chatledger_archive_meta"
USERS = "chatledger_users"
COMMANDS = "chatledger_commands"
DAILY = "chatledger_daily"
DICTIONARIES = "chatledger_dictionaries"

# Command states that are done with: neither pending nor refused.
SETTLED_STATES = ("succeeded", "cancelled")
REFUSED_STATE = "rejected"

_CREATE = [
    "CREATE TABLE IF NOT EXISTS {schema}.{meta} (key text PRIMARY KEY, value text NOT NULL)",
    "CREATE TABLE IF NOT EXISTS {schema}.{users} ("
    " user_id text PRIMARY KEY, entries bigint NOT NULL, last_position bigint NOT NULL,"
    " payload_bytes bigint NOT NULL, first_push_at timestamptz NOT NULL,"
    " last_push_at timestamptz NOT NULL)",
    "CREATE TABLE IF NOT EXISTS {schema}.{commands} ("
    " user_id text NOT NULL, command_id text NOT NULL, version bigint NOT NULL,"
    " state text NOT NULL, PRIMARY KEY (user_id, command_id))",
    # Only the commands `archive users` counts: settled ones are most of them, and skipped.
    "CREATE INDEX IF NOT EXISTS {commands_open} ON {schema}.{commands} (user_id)"
    " WHERE state NOT IN ('succeeded', 'cancelled')",
    "CREATE TABLE IF NOT EXISTS {schema}.{daily} ("
    " user_id text NOT NULL, day date NOT NULL, topic text NOT NULL, entries bigint NOT NULL,"
    " payload_bytes bigint NOT NULL, PRIMARY KEY (user_id, day, topic))",
    "CREATE TABLE IF NOT EXISTS {schema}.{dictionaries} ("
    " user_id text NOT NULL, dictionary_id integer NOT NULL, created_at bigint NOT NULL,"
    " trained_on bigint NOT NULL, level integer NOT NULL, data bytea NOT NULL,"
    " PRIMARY KEY (user_id, dictionary_id))",
    "INSERT INTO {schema}.{meta} (key, value) VALUES ('schema_version', '1')"
    " ON CONFLICT (key) DO NOTHING",
]

# Payloads that TOAST compresses (a row over about 2 kB) with lz4, not the default pglz: a
# COPY of the archive's rows spent a fifth to two fifths of its server time in pglz, lz4 is
# several times faster at about the same ratio on JSON, and gives up at once on payloads zstd compressed already. Servers without lz4
# (before PostgreSQL 14, or built without it) keep pglz: see `Archive._create`.
PAYLOAD_COMPRESSION = ("ALTER TABLE {schema}.{table} ALTER COLUMN state SET COMPRESSION lz4")

# What push's COPY fills, in the order of its rows (copybinary.entry, then the message ids).
PUSH_COLUMNS = (*ENTRY_COLUMNS, "message_ids")


class Statements:
    """Every statement of the archive, for one schema."""

    def __init__(self, schema: str) -> None:
        names = {
            "schema": Identifier(schema), "events": Identifier(EVENTS_TABLE),
            "meta": Identifier(META), "users": Identifier(USERS),
            "commands": Identifier(COMMANDS), "daily": Identifier(DAILY),
            "dictionaries": Identifier(DICTIONARIES),
            "commands_open": Identifier(f"{COMMANDS}_open_idx"),
        }

        def sql(text: str) -> Composed:
            return SQL(text).format(**names)

        self.schema_exists = SQL("SELECT to_regnamespace(%s) IS NOT NULL AS found")
        self.create_schema = sql("CREATE SCHEMA IF NOT EXISTS {schema}")
        self.meta_exists = SQL("SELECT to_regclass(%s) IS NOT NULL AS found")
        # True when the events table was made beforehand partitioned (docs/archive.md,
        # "Scaling"); no row when there is no events table yet.
        self.events_partitioned = SQL(
            "SELECT relkind = 'p' AS partitioned FROM pg_class WHERE oid = to_regclass(%s)")
        self.events_name = f'"{schema}".{EVENTS_TABLE}'
        self.create_tables = [sql(s) for s in _CREATE]
        self.payload_compression = SQL(PAYLOAD_COMPRESSION).format(
            schema=Identifier(schema), table=Identifier(EVENTS_TABLE))
        self.schema_version = sql("SELECT value FROM {schema}.{meta} WHERE key = 'schema_version'")
        # Serialises creating the tables across machines (CREATE ... IF NOT EXISTS races): a
        # session lock, held by the first connection while the library's recorder and this
        # module create theirs on others.
        self.creation_lock = SQL("SELECT pg_advisory_lock(hashtext(%s))")
        self.creation_unlock = SQL("SELECT pg_advisory_unlock(hashtext(%s))")

        # -- push --
        self.high_water = sql("SELECT last_position FROM {schema}.{users} WHERE user_id = %s")
        # A user's row exists from the first push's first transaction on, so that it can be
        # locked (committed with that transaction's entries, or not at all).
        self.claim_user = sql(
            "INSERT INTO {schema}.{users} (user_id, entries, last_position, payload_bytes,"
            " first_push_at, last_push_at) VALUES (%s, 0, 0, 0, now(), now())"
            " ON CONFLICT (user_id) DO NOTHING")
        self.lock_user = sql(
            "SELECT last_position FROM {schema}.{users} WHERE user_id = %s FOR UPDATE")
        self.entry_at = sql(
            "SELECT originator_id, originator_version, topic, received_at FROM {schema}.{events}"
            " WHERE user_id = %s AND position = %s")
        self.dictionary_ids = sql(
            "SELECT dictionary_id FROM {schema}.{dictionaries} WHERE user_id = %s")
        self.insert_dictionary = sql(
            "INSERT INTO {schema}.{dictionaries} (user_id, dictionary_id, created_at, trained_on,"
            " level, data) VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING")
        # Binary format: see copybinary.py.
        self.copy_events = sql("COPY {schema}.{events} (" + ", ".join(PUSH_COLUMNS)
                               + ") FROM STDIN (FORMAT binary)")
        self.record_push = sql(
            "INSERT INTO {schema}.{users} AS u (user_id, entries, last_position, payload_bytes,"
            " first_push_at, last_push_at) VALUES (%s, %s, %s, %s, now(), now())"
            " ON CONFLICT (user_id) DO UPDATE SET entries = u.entries + excluded.entries,"
            " last_position = excluded.last_position,"
            " payload_bytes = u.payload_bytes + excluded.payload_bytes, last_push_at = now()")
        self.record_commands = sql(
            "INSERT INTO {schema}.{commands} AS c (user_id, command_id, version, state)"
            " SELECT %s, * FROM unnest(%s::text[], %s::bigint[], %s::text[])"
            " ON CONFLICT (user_id, command_id) DO UPDATE SET version = excluded.version,"
            " state = excluded.state WHERE c.version < excluded.version")
        self.record_daily = sql(
            "INSERT INTO {schema}.{daily} AS d (user_id, day, topic, entries, payload_bytes)"
            " SELECT %s, DATE '1970-01-01' + t.day, t.topic, t.entries, t.bytes"
            " FROM unnest(%s::int[], %s::text[], %s::bigint[], %s::bigint[])"
            " AS t(day, topic, entries, bytes)"
            " ON CONFLICT (user_id, day, topic) DO UPDATE SET entries = d.entries + excluded.entries,"
            " payload_bytes = d.payload_bytes + excluded.payload_bytes")

        # -- pull --
        self.select_rows = sql(
            "SELECT position, originator_id, originator_version, topic, codec, state, source,"
            " received_at, event_at, connection_id FROM {schema}.{events}"
            " WHERE user_id = %s AND position > %s AND position <= %s ORDER BY position LIMIT %s")
        self.select_dictionaries = sql(
            "SELECT dictionary_id, created_at, trained_on, level, data FROM {schema}.{dictionaries}"
            " WHERE user_id = %s ORDER BY dictionary_id")
        self.position_at = sql(
            "SELECT max(position) AS position FROM {schema}.{events}"
            " WHERE user_id = %s AND position IS NOT NULL AND received_at <= %s")

        # -- cross-user questions --
        self.users = sql(
            "SELECT u.user_id, u.entries, u.last_position, u.payload_bytes, u.first_push_at,"
            " u.last_push_at, COALESCE(c.pending, 0) AS pending, COALESCE(c.refused, 0) AS refused"
            " FROM {schema}.{users} u LEFT JOIN ("
            "  SELECT user_id, count(*) FILTER (WHERE state <> 'rejected') AS pending,"
            "  count(*) FILTER (WHERE state = 'rejected') AS refused FROM {schema}.{commands}"
            "  WHERE state NOT IN ('succeeded', 'cancelled') GROUP BY user_id"
            " ) c USING (user_id) ORDER BY u.user_id")
        self.find = sql(
            "SELECT user_id, position, originator_id AS stream, topic AS type, source,"
            " received_at FROM {schema}.{events}"
            " WHERE message_ids @> ARRAY[%s]::text[] ORDER BY user_id, position")
        self.stats = {
            "type": sql("SELECT topic AS key, sum(entries)::bigint AS entries,"
                        " sum(payload_bytes)::bigint AS payload_bytes, count(DISTINCT user_id)"
                        " AS users FROM {schema}.{daily} GROUP BY topic ORDER BY 2 DESC, 1"),
            "day": sql("SELECT day::text AS key, sum(entries)::bigint AS entries,"
                       " sum(payload_bytes)::bigint AS payload_bytes, count(DISTINCT user_id)"
                       " AS users FROM {schema}.{daily} GROUP BY day ORDER BY day"),
            "user": sql("SELECT user_id AS key, sum(entries)::bigint AS entries,"
                        " sum(payload_bytes)::bigint AS payload_bytes, 1 AS users"
                        " FROM {schema}.{daily} GROUP BY user_id ORDER BY 2 DESC, 1"),
        }


__all__ = ["ARCHIVE_SCHEMA_VERSION", "DEFAULT_SCHEMA", "PAYLOAD_COMPRESSION", "PUSH_COLUMNS", "REFUSED_STATE",
           "SETTLED_STATES", "Statements"]
