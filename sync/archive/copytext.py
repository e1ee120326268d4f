"""Rows for `COPY ... FROM STDIN` in PostgreSQL's text format, built in bulk.

psycopg formats a COPY row value by value in Python (pure-Python psycopg, as installed without
a compiler); formatting a whole line with string methods that run in C is several times
faster, which is most of what a push costs on the client. The text format: fields separated by
tabs, lines by newlines, `\\N` for NULL, and backslash, tab, newline and carriage return escaped
with a backslash; a bytea field is its hex form (`\\x...`), an array `{"a","b"}`.
"""

from __future__ import annotations

from collections.abc import Sequence

NULL = "\\N"
_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def text(value: str | None) -> str:
    return NULL if value is None else value.translate(_ESCAPES)


def integer(value: int | None) -> str:
    return NULL if value is None else str(int(value))


def bytea(value: bytes) -> str:
    # The bytea input `\x<hex>`, its backslash escaped for COPY.
    return "\\\\x" + value.hex()


def text_array(values: Sequence[str] | None) -> str:
    if values is None:
        return NULL
    items = ",".join('"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"' for v in values)
    return ("{" + items + "}").translate(_ESCAPES)


__all__ = ["NULL", "bytea", "integer", "text", "text_array"]
