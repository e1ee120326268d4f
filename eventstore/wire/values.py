"""What the log stores must read back: the ingest check, and the readers' never-failing decode.

A decoder for the log's head reads a few fields and skips the rest, so bytes inside skipped
values are never looked at. Stored as they are, some of them would break every later reader:
text that is not UTF-8, a lone surrogate escape, a number no float can hold, a document nested
deeper than a decoder's stack allows. `check_storable` refuses those at ingest, where the item
can still be quarantined with a reason. An integer beyond 64 bits reads back (Python's integers
have no bound) and is stored: only the read tables cannot hold it, and the projections leave
that value out and record it, so it costs only itself.

Stores written before that check may hold such bytes anyway, so readers go through
`decode_stored` and `compact_json`, which never fail: invalid UTF-8 is read with the
replacement character, and what cannot be decoded at all becomes a marker object.
"""

from __future__ import annotations

from typing import Any

import msgspec

from chatledger.eventstore.wire.errors import WireError

__all__ = ["MAX_DEPTH", "check_storable", "decode_stored", "compact_json", "repair_utf8",
           "unstorable_reason", "UNREADABLE_KEY"]

MAX_DEPTH = 64
"""Deepest nesting of arrays and objects the log accepts. Chat payloads nest a few levels;
decoders recurse, so a bound far below the interpreter's stack keeps every reader safe."""

_INT_MIN, _INT_MAX = -(2**63), 2**63 - 1  # what an SQLite INTEGER holds

# Cheap signs that a full decode is needed, looked for in one copy of the payload with digits
# folded to "0", "E" to "e", "{" to "[" and signs removed: a run of 19 digits (an integer past
# 64 bits, or a float with a huge mantissa), a 3-digit exponent of a number (a float past the
# double range), more brackets than MAX_DEPTH (the sign for the depth). Payloads without any
# (nearly every event) skip the full decode; a false sign (digits that only look joined once the
# signs are gone) costs that decode, nothing else. Escapes that are not text (a lone surrogate) need no
# sign: the decoder that reads the head of every payload already refuses them, skipped values
# included; it does not check UTF-8 bytes or the range of numbers it skips.
_FOLD = bytes.maketrans(b"0123456789E{", b"0000000000e[")
_SIGNS_REMOVED = b"+-"
_LONG_DIGITS = b"0" * 19
_BIG_EXPONENT = b"e000"
# An exponent counts only after a number's digits (and point) that start where a JSON value can
# (after ":", ",", "[" or white space; the sign is gone): "e000" inside a hex id ("...3e456...",
# in half the events of a chat) is no number, and costed half of all payloads a full decode.
_MANTISSA = frozenset(b"0.")
_VALUE_STARTS = frozenset(b":,[ \t\n\r")

UNREADABLE_KEY = "chatledger_unreadable"
"""The key of the marker object `decode_stored` gives for stored bytes that are not JSON."""


def _needs_full_check(raw: bytes) -> bool:
    folded = raw.translate(_FOLD, _SIGNS_REMOVED)
    return (folded.count(b"[") > MAX_DEPTH or _LONG_DIGITS in folded
            or _has_big_exponent(folded))


def _has_big_exponent(folded: bytes) -> bool:
    """Whether the folded payload holds a number with a 3-digit exponent (or text that looks
    like one)."""
    at = folded.find(_BIG_EXPONENT)
    while at != -1:
        start = at
        while start and folded[start - 1] in _MANTISSA:
            start -= 1
        if start < at and (start == 0 or folded[start - 1] in _VALUE_STARTS):
            return True
        at = folded.find(_BIG_EXPONENT, at + 1)
    return False


def unstorable_reason(document: Any, *, integers: bool = True) -> str | None:
    """Why a decoded document (or one about to be encoded) cannot be stored: nested more than
    MAX_DEPTH, or (with `integers`, for what the store itself writes into its tables) an integer
    beyond 64 bits; None when it can. Iterative, so the walk itself cannot overflow the stack."""
    scalar_reason = _scalar_reason if integers else _no_reason
    if not isinstance(document, (dict, list, tuple)):
        return scalar_reason(document)
    pending = [(document, 1)]
    while pending:
        value, depth = pending.pop()
        items = value.values() if isinstance(value, dict) else value
        if depth > MAX_DEPTH:
            return f"nested more than {MAX_DEPTH} levels deep"
        for item in items:
            if isinstance(item, (dict, list, tuple)):
                pending.append((item, depth + 1))
            elif reason := scalar_reason(item):
                return reason
    return None


def _no_reason(value: Any) -> str | None:
    return None


def _scalar_reason(value: Any) -> str | None:
    if isinstance(value, int) and not isinstance(value, bool) and not _INT_MIN <= value <= _INT_MAX:
        return "an integer is beyond 64 bits"
    return None


def check_storable(raw: bytes) -> None:
    """Raise WireError unless every reader can decode `raw` back (see the module docstring).

    Nearly every payload costs one `isascii` (or UTF-8) check, a byte translation and a few
    substring searches; only those with a sign of trouble are decoded and walked.
    """
    if not raw.isascii():
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise WireError(f"not JSON: invalid UTF-8 text (byte {exc.start})") from None
    if not _needs_full_check(raw):
        return
    try:
        document = msgspec.json.decode(raw)
    except msgspec.ValidationError:
        raise WireError("a number is out of range") from None
    except RecursionError:
        raise WireError(f"nested more than {MAX_DEPTH} levels deep") from None
    except (msgspec.DecodeError, UnicodeError):
        raise WireError("not JSON: a string escape is not text (a lone surrogate)") from None
    if isinstance(document, (dict, list)) and (
            problem := unstorable_reason(document, integers=False)):
        raise WireError(problem)


def repair_utf8(raw: bytes) -> bytes:
    """`raw` with every invalid UTF-8 sequence replaced by U+FFFD (unchanged when valid)."""
    if raw.isascii():
        return raw
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("utf-8", "replace").encode("utf-8")
    return raw


def _marker(raw: bytes, why: str) -> dict[str, Any]:
    return {UNREADABLE_KEY: why, "bytes": len(raw)}


def _as_bytes(raw: bytes | memoryview | str) -> bytes:
    # A read table keeps some JSON as TEXT; SQLite hands it back as str.
    return raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else bytes(raw)


def decode_stored(raw: bytes | memoryview | str) -> Any:
    """The stored JSON `raw` decoded, never failing: invalid UTF-8 is read with U+FFFD, and
    bytes that still do not decode give a marker object saying so."""
    raw = _as_bytes(raw)
    try:
        return msgspec.json.decode(raw)
    except (msgspec.DecodeError, msgspec.ValidationError, UnicodeError, RecursionError):
        pass
    try:
        return msgspec.json.decode(repair_utf8(raw))
    except (msgspec.DecodeError, msgspec.ValidationError, UnicodeError, RecursionError):
        return _marker(raw, "stored bytes that do not decode as JSON")


def compact_json(raw: bytes | memoryview | str) -> bytes:
    """The stored JSON `raw` on one line: whitespace between tokens removed, every string and
    number exactly as stored; invalid UTF-8 read with U+FFFD; a marker object when it is not
    JSON. The result is always one valid JSON value without a line break."""
    raw = _as_bytes(raw)
    text = repair_utf8(raw)
    try:
        # Formatting re-emits tokens, it does not decode them: a number keeps its spelling.
        formatted = msgspec.json.format(text, indent=-1)
        msgspec.json.decode(formatted)  # the formatter does not validate everything
        return formatted
    except (msgspec.DecodeError, msgspec.ValidationError, UnicodeError, RecursionError):
        return msgspec.json.encode(_marker(raw, "stored bytes that do not decode as JSON"))
