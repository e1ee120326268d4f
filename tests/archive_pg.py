"""A PostgreSQL server for the archive's tests: `CHATLEDGER_TEST_PG`, or a throw-away cluster.

`server_url()` returns the URL of a server the tests may create schemas in. It is
`$CHATLEDGER_TEST_PG` when set; otherwise a cluster started once per test process with
`benchmarks.pg_cluster` and stopped when the process ends. Where no server can be had, the
tests skip saying why, except in CI (`CI=true`), where they fail: there they must run.
"""

from __future__ import annotations

import atexit
import os
import uuid

import psycopg
import pytest

from benchmarks.pg_cluster import Cluster, ClusterUnavailable

_state: dict[str, object] = {}


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def server_url() -> str:
    """The server's URL; skips (locally) or fails (in CI) when none can be had."""
    if "url" in _state:
        return str(_state["url"])
    if "error" not in _state:
        url = os.environ.get("CHATLEDGER_TEST_PG")
        try:
            if not url:
                cluster = Cluster.start()
                atexit.register(cluster.stop)
                url = cluster.url
            with psycopg.connect(url, connect_timeout=10):
                pass
            _state["url"] = url
            return url
        except (ClusterUnavailable, psycopg.Error, OSError) as e:
            _state["error"] = f"no PostgreSQL for the archive tests: {e}"
    message = str(_state["error"])
    if _in_ci():
        pytest.fail(message + " (CI=true: these tests must run)", pytrace=False)
    pytest.skip(message + " (set CHATLEDGER_TEST_PG=postgresql://... to use a server)")


def new_schema() -> str:
    """A fresh, empty schema name (each test gets an archive of its own)."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server_url(), autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {name}")
    return name


def drop_schema(name: str) -> None:
    with psycopg.connect(server_url(), autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")


# The events table partitioned by user, made by hand before the first push: the DDL of
# docs/archive.md ("Scaling").
PARTITIONED_EVENTS = """CREATE TABLE {schema}.chatledger_events (
    user_id text NOT NULL DEFAULT '',
    originator_id text NOT NULL,
    originator_version bigint NOT NULL,
    topic text,
    state bytea,
    notification_id bigserial,
    position bigint,
    codec integer NOT NULL DEFAULT 0,
    source smallint NOT NULL DEFAULT 0,
    received_at bigint NOT NULL
        DEFAULT (extract(epoch FROM clock_timestamp()) * 1000000)::bigint,
    event_at bigint,
    connection_id text,
    message_ids text[],
    PRIMARY KEY (user_id, originator_id, originator_version)
) PARTITION BY HASH (user_id)"""
PARTITION = ("CREATE TABLE {schema}.chatledger_events_{number} PARTITION OF "
             "{schema}.chatledger_events FOR VALUES WITH (MODULUS {partitions}, "
             "REMAINDER {number})")


def make_partitioned_events(schema: str, partitions: int = 4) -> None:
    """The archive's events table in `schema`, hash-partitioned by user, as a user would make it
    before the first push."""
    with psycopg.connect(server_url(), autocommit=True) as conn:
        conn.execute(PARTITIONED_EVENTS.format(schema=schema))
        for number in range(partitions):
            conn.execute(PARTITION.format(schema=schema, number=number, partitions=partitions))
