"""Reaching an archive: the URL, one-line errors, and the `eventsourcing` datastore over it.

The URL is handed to libpq as it is, so everything libpq reads applies: the URL's own parts, the
standard `PG*` environment variables for whatever it leaves out (`PGPASSWORD`, `PGHOST`, ...),
`~/.pgpass`, and a service file (`postgresql:///?service=archive` or `PGSERVICE`). A password is
never printed: messages name the server by `redact(url)`, and scrub the password from what
libpq says.
"""

from __future__ import annotations

import urllib.parse
from typing import Any

import psycopg
from eventsourcing.postgres import PostgresDatastore
from psycopg.rows import dict_row

from chatledger.errors import ArchiveError

# Seconds to wait for a server before saying it is not there.


CONNECT_TIMEOUT = 10


def redact(url: str) -> str:
    """The URL with its password (in the authority or the query) replaced by `***`."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return "<the archive URL>"
    if parts.scheme not in ("postgresql", "postgres"):
        # Another scheme's URL (a mistake the caller is told about) may still hold a password,
        # in its authority or anywhere else: name it only when it plainly holds none.
        plain = "@" not in parts.netloc and "password" not in url.lower()
        return url if plain else "<the archive URL>"
    netloc = parts.netloc
    if "@" in netloc:
        credentials, _, hosts = netloc.rpartition("@")
        user = credentials.split(":", 1)[0]
        netloc = f"{user}:***@{hosts}" if ":" in credentials else f"{user}@{hosts}"
    query = urllib.parse.urlencode(
        [(k, "***" if k.lower() == "password" else v)
         for k, v in urllib.parse.parse_qsl(parts.query, keep_blank_values=True)])
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def _password(url: str) -> str | None:
    try:
        parts = urllib.parse.urlsplit(url)
        query = dict(urllib.parse.parse_qsl(parts.query))
        return parts.password or query.get("password")
    except ValueError:
        return None


def check_url(url: str) -> None:
    """Refuse what is not a PostgreSQL URL (a file name, a typo), before libpq sees it."""
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 (raises on a port that is not a number)
    except ValueError as error:
        raise ArchiveError(f"not a PostgreSQL URL ({error}): expected postgresql://[user@]host[:port]/database") from None
    if parts.scheme not in ("postgresql", "postgres"):
        raise ArchiveError(
            f"{redact(url)} is not a PostgreSQL URL: expected postgresql://[user@]host[:port]/database")


def explain_error(url: str, error: BaseException) -> ArchiveError:
    """A libpq or psycopg error as one line: what went wrong, where, no password."""
    text = " ".join(str(error).split())
    secret = _password(url)
    if secret:
        text = text.replace(secret, "***")
    where = redact(url)
    lowered = text.lower()
    if "password authentication failed" in lowered or "no password supplied" in lowered:
        return ArchiveError(f"the archive at {where} refused the credentials: {text}")
    if ("connection refused" in lowered or "could not translate host name" in lowered
            or "timeout expired" in lowered or "no route to host" in lowered
            or "no such file or directory" in lowered or "is the server running" in lowered):
        return ArchiveError(f"cannot reach the archive at {where}: {text}")
    if "does not exist" in lowered and "database" in lowered:
        return ArchiveError(f"the archive at {where}: {text} (create it first; see docs/archive.md)")
    if "invalid" in lowered and ("uri" in lowered or "connection option" in lowered
                                 or "integer value" in lowered):
        return ArchiveError(f"not a usable PostgreSQL URL ({text})")
    return ArchiveError(f"the archive at {where}: {text}")


def connect(url: str, **kwargs: Any) -> psycopg.Connection[Any]:
    """One connection, opened now, so that a bad URL, password or server is said at once."""
    check_url(url)
    try:
        return psycopg.connect(url, connect_timeout=CONNECT_TIMEOUT, **kwargs)
    except psycopg.Error as error:
        raise explain_error(url, error) from None


class ArchiveDatastore(PostgresDatastore):
    """`eventsourcing`'s PostgreSQL datastore (its pool, its transactions, its errors), reaching
    the server through a whole libpq URL instead of separate host, user and password settings,
    so that the `PG*` variables and service files work as everywhere else."""

    def __init__(self, url: str, *, schema: str, pool_size: int = 2,
                 lock_timeout: int = 60) -> None:
        check_url(url)
        super().__init__(
            dbname="", host="", port="", user="", password="", schema=schema,
            pool_size=pool_size, connect_timeout=CONNECT_TIMEOUT, lock_timeout=lock_timeout,
            originator_id_type="text")
        # The pool connects with `connect(conninfo, **kwargs)`: the URL, and nothing of ours
        # that would override what libpq reads from the environment.
        self.pool.conninfo = url
        self.pool.kwargs = {"row_factory": dict_row, "connect_timeout": CONNECT_TIMEOUT}


__all__ = ["ArchiveDatastore", "ArchiveError", "CONNECT_TIMEOUT", "check_url", "connect",
           "explain_error", "redact"]
