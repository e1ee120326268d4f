"""Keeping the good items of a response that is not JSON as a whole because one item is not.

A `/sync` answer (or a query-channels answer) is one JSON document holding many events (or
channel states). One item with bytes a JSON decoder refuses (a lone surrogate escape, invalid
UTF-8 from a broken proxy, a stray control character) makes the whole document "not JSON", and
refusing it whole would cost every other item too, on every retry. So when the document's
structure is intact, its list is split by structure alone: each item is the exact slice of
bytes it was, and each then stands or falls on its own (`eventstore.ingest` quarantines the bad
one with its own reason).

The scan only follows strings, escapes and brackets; it never interprets an item. A document
whose structure is broken (truncated, unbalanced) is not split: None.
"""

from __future__ import annotations

import json
import re

# The only bytes that matter for structure: string delimiters, escapes, brackets and commas.
_STRUCTURE = re.compile(rb'["\\{}\[\],:]')
_WHITESPACE = b" \t\r\n"


def _items(buf: bytes, opened_at: int) -> tuple[list[tuple[int, int]], int] | None:
    """The (start, end) slices of the items directly inside the container opened at
    `buf[opened_at]` (`{` or `[`), split on its top-level commas, and the index just past its
    closing bracket; None when it does not close."""
    items: list[tuple[int, int]] = []
    depth = 0
    in_string = False
    escaped_until = -1
    item_start = opened_at + 1
    for match in _STRUCTURE.finditer(buf, opened_at + 1):
        at = match.start()
        if at < escaped_until:
            continue  # the character after a backslash
        char = buf[at]
        if in_string:
            if char == 0x5C:  # backslash: the next character is escaped
                escaped_until = at + 2
            elif char == 0x22:
                in_string = False
            continue
        if char == 0x22:
            in_string = True
        elif char in (0x7B, 0x5B):
            depth += 1
        elif char in (0x7D, 0x5D):
            if depth == 0:
                if buf[item_start:at].strip(_WHITESPACE):
                    items.append((item_start, at))
                return items, at + 1
            depth -= 1
        elif char == 0x2C and depth == 0:
            items.append((item_start, at))
            item_start = at + 1
    return None


def _member(buf: bytes, start: int, end: int) -> tuple[str, int] | None:
    """An object member `"key": value` in `buf[start:end]`: its key and where its value starts."""
    while start < end and buf[start] in _WHITESPACE:
        start += 1
    if start >= end or buf[start] != 0x22:
        return None
    position = start + 1
    while position < end:
        char = buf[position]
        if char == 0x5C:
            position += 2
            continue
        if char == 0x22:
            break
        position += 1
    else:
        return None
    try:
        key = json.loads(buf[start:position + 1])  # lenient: a key's oddities do not matter
    except ValueError:
        return None
    colon = buf.find(b":", position + 1, end)
    if colon < 0:
        return None
    value_start = colon + 1
    while value_start < end and buf[value_start] in _WHITESPACE:
        value_start += 1
    return key, value_start


def split_object_list(payload: bytes, key: str) -> tuple[list[bytes], dict[str, bytes]] | None:
    """For a document `{..., key: [item, ...], ...}`: the items of that list as exact byte
    slices, and the other top-level members as {name: raw value}; None unless the document is
    an object whose `key` is a list and whose structure closes properly."""
    start = 0
    while start < len(payload) and payload[start] in _WHITESPACE:
        start += 1
    if start >= len(payload) or payload[start] != 0x7B:
        return None
    top = _items(payload, start)
    if top is None or payload[top[1]:].strip(_WHITESPACE):
        return None
    found: list[bytes] | None = None
    others: dict[str, bytes] = {}
    for member_start, member_end in top[0]:
        member = _member(payload, member_start, member_end)
        if member is None:
            return None
        name, value_start = member
        value = payload[value_start:member_end].rstrip(_WHITESPACE)
        if name != key:
            others[name] = value
            continue
        if not value.startswith(b"["):
            return None
        inner = _items(payload, value_start)
        if inner is None:
            return None
        found = [payload[item_start:item_end].strip(_WHITESPACE)
                 for item_start, item_end in inner[0]]
    if found is None:
        return None
    return found, others
