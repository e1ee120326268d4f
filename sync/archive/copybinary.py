"""Rows for `COPY ... FROM STDIN (FORMAT binary)`, built in bulk.

The binary format sends a payload as its own bytes, where the text format sends it as hex
(twice the bytes, and the server parses every digit): in one run on the archive's rows,
formatting was about 5 x and the server's COPY about 1.5 x faster than in text, the payloads
being most of each row. psycopg's `write_row` formats value by value in Python (pure-Python
psycopg, as installed without a compiler); this module packs a whole row with `struct` and
one `bytes.join`, which run in C.

The format: a header, then per row a 16-bit field count and per field a 32-bit length (-1 for
NULL) and the value in the type's binary form (big-endian integers, UTF-8 text, raw bytea, an
array as dimensions, element type and elements), then a 16-bit -1.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

from psycopg.copy import LibpqWriter

from chatledger.eventstore.log import StoredRow

# The signature, then 32-bit flags and header-extension length (none).
HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)
TRAILER = struct.pack(">h", -1)
NULL = struct.pack(">i", -1)
TEXT_OID = 25

_length = struct.Struct(">i").pack
_bigint = struct.Struct(">iq").pack  # the length (8), then the value
_integer = struct.Struct(">ii").pack  # the length (4), then the value
_smallint = struct.Struct(">ih").pack  # the length (2), then the value
_array_head = struct.Struct(">iiiiii").pack  # length; dimensions, NULLs, element type; size, lower bound
_array_one = struct.Struct(">iiiiiii").pack  # the same, then the length of its one element
_envelope = struct.Struct(">iqiiihiq").pack  # position, codec, source, received_at (with lengths)


def field_count(count: int) -> bytes:
    """What starts a row of `count` fields."""
    return struct.pack(">h", count)


def text(value: str | None) -> bytes:
    if value is None:
        return NULL
    encoded = value.encode()
    return _length(len(encoded)) + encoded


def bytea(value: bytes) -> bytes:
    return _length(len(value)) + value


def bigint(value: int | None) -> bytes:
    return NULL if value is None else _bigint(8, value)


def integer(value: int) -> bytes:
    return _integer(4, value)


def smallint(value: int) -> bytes:
    return _smallint(2, value)


def text_array(values: Sequence[str] | None) -> bytes:
    """A one-dimensional `text[]` without NULL elements (None: the field is NULL)."""
    if values is None:
        return NULL
    if len(values) == 1:  # most arrays push sends
        item = values[0].encode()
        return _array_one(24 + len(item), 1, 0, TEXT_OID, 1, 1, len(item)) + item
    items = [v.encode() for v in values]
    body = b"".join([_length(len(item)) + item for item in items])
    # The header's 20 bytes after the length, and 4 bytes of length per element.
    return _array_head(20 + len(body), 1, 0, TEXT_OID, len(items), 1) + body


# The columns `entry` fills, in its order.
ENTRY_COLUMNS = ("user_id", "originator_id", "originator_version", "topic", "state", "position",
                 "codec", "source", "received_at", "event_at", "connection_id")


def entry(user: bytes, row: StoredRow) -> bytes:
    """The fields of `ENTRY_COLUMNS` for one log entry as its store keeps it, `user` being
    `text(user_id)` (made once per batch). One `join` per row: this runs for every entry."""
    stream_name = row.stream.encode()
    topic = row.type.encode()
    state = row.state
    connection = row.connection_id
    return b"".join((
        user, _length(len(stream_name)), stream_name, _bigint(8, row.version),
        _length(len(topic)), topic, _length(len(state)), state,
        _envelope(8, row.position, 4, row.codec, 2, row.source, 8, row.received_at),
        NULL if row.event_at is None else _bigint(8, row.event_at),
        NULL if connection is None else text(connection),
    ))


def stream(rows: Sequence[bytes]) -> bytes:
    """The whole COPY input of `rows` (each made of `field_count` and the fields)."""
    return b"".join((HEADER, *rows, TRAILER))


# Bytes per call into libpq (see BlockingWriter): few calls, each far below the sizes at which
# libpq's buffer handling misbehaves (psycopg's issue 255).
SEND_CHUNK = 4 * 1024 * 1024


class BlockingWriter(LibpqWriter):
    """psycopg's writer, sending each buffer with libpq in blocking mode.

    psycopg sends COPY data in pieces of 128 KiB and, between pieces, waits for the socket in
    Python; each wait gives up the GIL and has to get it back. While push's reader thread
    formats the next batch it holds the GIL, so every piece waited up to a switch interval
    (5 ms) for it: a COPY took twice as long with a busy thread beside it. In blocking mode
    one call into libpq (which runs without the GIL) queues and sends megabytes.
    """

    def write(self, data: bytes | bytearray | memoryview) -> None:
        pgconn = self.connection.pgconn
        was = pgconn.nonblocking
        pgconn.nonblocking = 0
        try:
            for start in range(0, len(data), SEND_CHUNK):
                pgconn.put_copy_data(data[start:start + SEND_CHUNK])
            pgconn.flush()
        finally:
            pgconn.nonblocking = was


__all__ = ["BlockingWriter", "ENTRY_COLUMNS", "HEADER", "NULL", "TEXT_OID", "TRAILER", "bigint", "bytea", "entry", "field_count",
           "integer", "SEND_CHUNK", "smallint", "stream", "text", "text_array"]
