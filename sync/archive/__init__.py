"""A shared archive of many users' logs in PostgreSQL, through `eventsourcing`'s PostgreSQL
module (`pip install 'chatledger[archive]'`); `from chatledger import archive`.

    from chatledger import archive

    archive.push("postgresql://archive.example/chat", data_dir="~/.local/share/chatledger")
    archive.pull("postgresql://archive.example/chat", "alice", data_dir="/tmp/restore")
    archive.users(url); archive.find(url, message_id); archive.stats(url, by="day")

See docs/archive.md for the tables, the queries and how it scales.
"""

from __future__ import annotations

from typing import Any

from chatledger.sync.archive.connection import ArchiveError, redact
from chatledger.sync.archive.remote import Archive, UserPush
from chatledger.sync.archive.tables import DEFAULT_SCHEMA
from chatledger.sync.archive.transfer import PullReport, PushReport, pull, push

STATS_BY = ("type", "day", "user")


def users(url: str, *, schema: str = DEFAULT_SCHEMA) -> list[dict[str, Any]]:
    """Every user in the archive: `user_id`, `entries`, `last_position`, `payload_bytes`,
    `first_push_at`, `last_push_at`, `pending` and `refused` actions."""
    with Archive(url, schema=schema) as archive:
        return archive.users()


def find(url: str, message_id: str, *, schema: str = DEFAULT_SCHEMA) -> list[dict[str, Any]]:
    """The entries of any user's log that name the message: `user_id`, `position`, `stream`,
    `type`, `source`, `received_at`."""
    with Archive(url, schema=schema) as archive:
        return archive.find(message_id)


def stats(url: str, *, by: str = "type", schema: str = DEFAULT_SCHEMA) -> list[dict[str, Any]]:
    """Entries and payload bytes grouped by `type`, `day` (UTC, of arrival) or `user`:
    `key`, `entries`, `payload_bytes`, `users`."""
    if by not in STATS_BY:
        raise ValueError(f"stats by {by!r}: expected one of {', '.join(STATS_BY)}")
    with Archive(url, schema=schema) as archive:
        return archive.stats(by)


__all__ = ["Archive", "ArchiveError", "DEFAULT_SCHEMA", "PullReport", "PushReport", "STATS_BY",
           "UserPush", "find", "pull", "push", "redact", "stats", "users"]
