"""Values the read tables cannot hold, screened out of a payload before it is projected.

SQLite's integers are 64-bit; JSON's are not. An event carrying, say, a `channel_member_count`,
a `reply_count` or a reaction `score` beyond 64 bits is valid JSON and is stored in the log byte
for byte, but projecting it as it is would fail (and, inside the append's transaction, take the
event and its whole batch with it). So the projector sees a copy of such a payload with each of
those integers replaced by null (as if the field were absent), and the `unprojected` table
records what was left out, with the entry's position: a poison value costs only itself.

The screen depends on the payload alone, never on the batch it came in, so live appends, a
rebuild, `verify` and the past (`as_of`, `explain`) all leave out the same values.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, NamedTuple

import apsw
import msgspec

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1

# An integer beyond 64 bits has at least 19 digits. Most payloads have no such run at all, so
# this scan (native code) is all they cost; a run inside a string (a long numeric id) only costs
# the full check below. The scan maps every digit to "0" and everything else to "." and looks
# for 19 zeros: 1.6 us for a 1.46 KB event, where the regular expression `\d{19}` took 16.6 us
# (it restarts at every digit of every timestamp): a quarter of a rebuild's time went to it.
_DIGITS_AS_ZEROS = bytes(0x30 if 0x30 <= code <= 0x39 else 0x2E for code in range(256))
_LONG_RUN = b"0" * 19


def has_long_digits(payload: bytes) -> bool:
    """True when `payload` holds a run of 19 or more ASCII digits (as `re` `rb"\\d{19}"`)."""
    return _LONG_RUN in payload.translate(_DIGITS_AS_ZEROS)

_decode = msgspec.json.Decoder().decode
_encode = msgspec.json.Encoder().encode

_RECORD = ("INSERT INTO unprojected (position, type, reason) VALUES (?, ?, ?) "
           "ON CONFLICT (position) DO UPDATE SET type=excluded.type, reason=excluded.reason")


class Screened(NamedTuple):
    """A payload as the projector may see it, and the paths of the values taken out."""

    payload: bytes
    left_out: list[str]


def screen(payload: bytes) -> Screened:
    """`payload` with every integer outside SQLite's 64-bit range replaced by null."""
    if not has_long_digits(payload):
        return Screened(payload, [])
    try:
        value = _decode(payload)
    except (msgspec.DecodeError, UnicodeError, RecursionError):
        return Screened(payload, [])  # not JSON: the projector skips it anyway
    left_out: list[str] = []
    try:
        cleaned = _clean(value, "$", left_out)
    except RecursionError:
        return Screened(payload, [])
    if not left_out:
        return Screened(payload, [])
    return Screened(_encode(cleaned), left_out)


def _clean(value: Any, path: str, left_out: list[str]) -> Any:
    if type(value) is int:
        if INT64_MIN <= value <= INT64_MAX:
            return value
        left_out.append(path)
        return None
    if type(value) is dict:
        return {key: _clean(item, f"{path}.{key}", left_out) for key, item in value.items()}
    if type(value) is list:
        return [_clean(item, f"{path}[{index}]", left_out) for index, item in enumerate(value)]
    return value


def reason(left_out: list[str]) -> str:
    shown = ", ".join(left_out[:5]) + (f" and {len(left_out) - 5} more" if len(left_out) > 5 else "")
    return f"integer beyond 64 bits, not projected (kept in the log): {shown}"


def screened(cursor: apsw.Cursor, items: Iterable[Any]) -> Iterator[Any]:
    """The items (`projections.item.Item`), each with its payload screened; what was left out
    of one is recorded in `unprojected` under its position, in the caller's transaction."""
    for item in items:
        payload = item.payload
        if type(payload) is not bytes or not has_long_digits(payload):
            yield item
            continue
        result = screen(payload)
        if result.left_out:
            cursor.execute(_RECORD, (item.position, item.type, reason(result.left_out)))
            item = item.with_payload(result.payload)
        yield item
