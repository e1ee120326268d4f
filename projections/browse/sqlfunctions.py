"""SQL functions that make a store file readable from SQL: payloads as JSON, times as RFC 3339.

Registered on a `sqlite3` connection to a store file (Datasette's connections, or any other):

| function | gives |
|---|---|
| `chatledger_json(codec, state)` | a stored payload (`stored_events.codec`, `.state`) as the JSON text that arrived |
| `chatledger_message(codec, state, slot)` | the message object at `slot` of that payload (as a read-table row points at it), JSON text |
| `chatledger_time(us)` | epoch microseconds as RFC 3339 UTC text |
| `chatledger_us(text)` | RFC 3339, a date or date and time (UTC), or a number, as epoch microseconds |
| `chatledger_source(code)` | a `source` code as its name (`websocket`, `sync`, ...) |

Payloads are decoded by the store's own `PayloadCodec`, which reads the file's compression
dictionaries as it meets them. Nothing is written.
"""

from __future__ import annotations

import sqlite3
from datetime import datetime, timezone

import msgspec
import zstandard

from chatledger.eventstore.codec import PayloadCodec
from chatledger.eventstore.schema import Source
from chatledger.eventstore.wire import WireError, format_time, parse_time
from chatledger.projections.history import message_object

# Read once per dictionary a connection meets (a store has one or a few).
DICTIONARY_SQL = "SELECT level, data FROM zstd_dictionaries WHERE id = ?"
# Whether a database is a chatledger store (the log's own metadata table is there).
IS_STORE_SQL = (
    "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' "
    "AND name IN ('chatledger_meta', 'stored_events', 'zstd_dictionaries')"
)


# A sealed store (docs/security.md): its payloads are encrypted, and the browser has no key.
IS_SEALED_SQL = "SELECT COUNT(*) FROM chatledger_meta WHERE key = 'cipher'"


def is_store(connection: sqlite3.Connection) -> bool:
    """True when the connection's main database is a chatledger store file."""
    (tables_found,) = connection.execute(IS_STORE_SQL).fetchone()
    return bool(tables_found == 3)


class StoreFunctions:
    """The SQL functions for one `sqlite3` connection to a store file.

    Contract: `register()` adds the functions to the connection; they read nothing but the
    arguments they are given, except the compression dictionaries, read through the same
    connection the first time a payload needs one. A value a function cannot decode gives NULL
    rather than failing the whole query (a browser shows the other rows).
    """

    def __init__(self, connection: sqlite3.Connection) -> None:
        self._connection = connection
        # One codec per connection: its dictionary loader reads through this connection, which
        # only the thread running the query uses meanwhile.
        self._codec = PayloadCodec(loader=self._dictionary)
        # Checked once: a store is sealed or not for as long as a browser looks at it (a rekey
        # while it runs shows NULLs or garbage until the page is reloaded).
        try:
            (cipher_keys,) = connection.execute(IS_SEALED_SQL).fetchone()
            self._sealed = bool(cipher_keys)
        except sqlite3.Error:
            self._sealed = False

    def register(self) -> None:
        add = self._connection.create_function
        add("chatledger_json", 2, self.payload_json, deterministic=True)
        add("chatledger_message", 3, self.message_json, deterministic=True)
        add("chatledger_time", 1, rfc3339, deterministic=True)
        add("chatledger_us", 1, microseconds, deterministic=True)
        add("chatledger_source", 1, source_name, deterministic=True)

    def _dictionary(self, dictionary_id: int) -> tuple[int, bytes] | None:
        row = self._connection.execute(DICTIONARY_SQL, (dictionary_id,)).fetchone()
        if row is None:
            return None
        level, data = row
        return int(level), bytes(data)

    def payload(self, codec: int | None, state: bytes | None) -> bytes | None:
        """The payload bytes as they arrived, or None when they cannot be decoded."""
        if codec is None or state is None or self._sealed:
            return None
        try:
            return self._codec.decode(int(codec), bytes(state))
        except (LookupError, ValueError, TypeError, zstandard.ZstdError):
            return None

    def payload_json(self, codec: int | None, state: bytes | None) -> str | None:
        payload = self.payload(codec, state)
        # Text, so that SQLite's json_* functions and Datasette's JSON rendering take it; the
        # rare payload that is not UTF-8 keeps its bytes visible as replacement characters.
        return None if payload is None else payload.decode("utf-8", "replace")

    def message_json(self, codec: int | None, state: bytes | None, slot: int | None) -> str | None:
        payload = self.payload(codec, state)
        if payload is None or slot is None:
            return None
        found = message_object(payload, int(slot))
        return msgspec.json.encode(found).decode() if found else None


def rfc3339(us: int | None) -> str | None:
    """Epoch microseconds as RFC 3339 UTC text (`2026-11-25T10:00:00.000000Z`); None stays None."""
    if us is None or isinstance(us, (bytes, str)):
        return None if us is None else str(us)
    try:
        return format_time(int(us))
    except (ValueError, OverflowError):
        return None


def microseconds(text: str | int | None) -> int | None:
    """A time as epoch microseconds: RFC 3339, a date or `YYYY-MM-DD HH:MM[:SS]` read as UTC, or
    a number (already microseconds). Empty text (a form field left blank) gives None."""
    if text is None:
        return None
    if isinstance(text, (int, float)):
        return int(text)
    value = str(text).strip()
    if not value:
        return None
    if value.lstrip("-").isdigit():
        return int(value)
    try:
        return parse_time(value)
    except WireError:
        pass
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return int(moment.timestamp() * 1_000_000)


def source_name(code: int | None) -> str | None:
    """A `source` column's code as its name; an unknown code as its number."""
    if code is None:
        return None
    try:
        return Source(int(code)).name.lower()
    except (ValueError, TypeError):
        return str(code)


__all__ = ["StoreFunctions", "is_store", "microseconds", "rfc3339", "source_name"]
