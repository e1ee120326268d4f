"""Wire errors: `WireError`, and msgspec's messages turned into the short reasons it carries."""

from __future__ import annotations

import re
from typing import TypeVar

import msgspec

from chatledger.errors import WireError

__all__ = ["WireError", "Buffer"]

Buffer = bytes | bytearray | memoryview | str
"""What the decoders accept: JSON text as bytes-like or str (msgspec reads all without copying)."""

# --------------------------------------------------------------------------------------------
# Errors: msgspec's messages turned into the short sentences WireError promises.


_EXPECTED_RE = re.compile(r"Expected `(.+?)`, got `(\w+)`(?: - at `\$(.*)`)?\Z", re.S)
_MISSING_RE = re.compile(r"Object missing required field `(.+?)`(?: - at `\$(.*)`)?\Z", re.S)
_KIND_WORDS = {
    "str": "a string",
    "int": "an integer",
    "float": "a number",
    "bool": "a boolean",
    "object": "an object",
    "array": "an array",
}


def _path(prefix: str, at: str | None) -> str:
    """msgspec's path (`$.message.user.id`) under `prefix`, written `message.user.id`."""
    at = (at or "").lstrip(".")
    if prefix and at:
        return f"{prefix}{'' if at.startswith('[') else '.'}{at}"
    return prefix or at


def validation_reason(exc: msgspec.ValidationError, prefix: str = "") -> str:
    """The reason a document has the wrong shape, its path under `prefix`: `'message.id' must be
    a string, got int`, `missing 'message.id'`."""
    message = str(exc)
    match = _EXPECTED_RE.match(message)
    if match is not None:
        expected, got, at = match.groups()
        where = _path(prefix, at)
        if not where and expected == "object":
            return "not a JSON object"
        kinds = [k for k in expected.split(" | ") if k != "null"] or ["null"]
        wanted = " or ".join(_KIND_WORDS.get(k, f"`{k}`") for k in kinds)
        return f"'{where or '$'}' must be {wanted}, got {got}"
    match = _MISSING_RE.match(message)
    if match is not None:
        name, at = match.groups()
        return f"missing '{_path(_path(prefix, at), name)}'"
    return f"{prefix}: {message}" if prefix else message


# The kinds of malformed JSON, told apart by our own checks first and by a keyword of the
# decoder's message last; the words are ours, so a dependency's new wording changes nothing here.
_BYTE_RE = re.compile(r"\(byte (\d+)\)")
_MALFORMED_KINDS = (
    ("truncated", "input data was truncated"),
    ("trailing", "trailing characters"),
    ("keys must be", "object keys must be strings"),
    ("invalid character", "invalid character"),
    ("depth", "nested too deeply"),
    ("recursion", "nested too deeply"),
    ("nest", "nested too deeply"),
)


def _is_valid_utf8(raw: Buffer | None) -> bool:
    """Whether `raw` is text that UTF-8 can carry (str without lone surrogates, or bytes)."""
    if raw is None:
        return True
    try:
        if isinstance(raw, str):
            raw.encode("utf-8")
        else:
            bytes(raw).decode("utf-8")
    except UnicodeError:
        return False
    return True


# A `\uD800`-`\uDFFF` escape outside a high-low pair (after an even run of backslashes, so an
# escaped backslash followed by "u" is text): no reader can show it, and msgspec's message for it
# ("truncated") would send whoever reads the reason looking in the wrong place.
_LONE_SURROGATE_RE = re.compile(
    rb"(?<!\\)(?:\\\\)*\\u[dD](?:[89abAB][0-9a-fA-F]{2}(?!\\u[dD][c-fC-F])|[c-fC-F][0-9a-fA-F]{2})")


def _lone_surrogate(raw: Buffer | None) -> bool:
    """Whether `raw` holds a surrogate escape that is not the high half of a pair followed by
    its low half (a low half is only matched where no high half took it)."""
    if raw is None:
        return False
    data = raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else bytes(raw)
    at = 0
    while (match := _LONE_SURROGATE_RE.search(data, at)) is not None:
        escape = match.group(0)[-6:]
        if escape[2:3] in b"dD" and escape[3:4].lower() in b"cdef":
            # A low half: lone unless a high half stands just before it (taken as a pair).
            before = data[max(0, match.end() - 12):match.end() - 6]
            if not re.fullmatch(rb"\\u[dD][89abAB][0-9a-fA-F]{2}", before):
                return True
        else:
            return True
        at = match.end()
    return False


def not_json_reason(exc: BaseException, raw: Buffer | None = None) -> str:
    """The reason a document is not JSON, worded by us: `not JSON: <kind>[ (byte N)]`."""
    if isinstance(exc, RecursionError):
        return "not JSON: nested too deeply"
    message = str(exc).lower()
    if isinstance(exc, UnicodeError) or "utf-8" in message or "utf8" in message:
        return "not JSON: invalid UTF-8 text"
    if raw is not None and not (raw.strip() if isinstance(raw, str) else bytes(raw).strip()):
        return "not JSON: input data was truncated"
    if _lone_surrogate(raw):
        return "not JSON: a lone surrogate escape (not text)"
    kind = next((words for key, words in _MALFORMED_KINDS if key in message), None)
    if kind in (None, "invalid character") and not _is_valid_utf8(raw):
        # Whatever the decoder calls it, a document that is not UTF-8 is told as such.
        return "not JSON: invalid UTF-8 text"
    kind = kind or "malformed"
    if kind in ("input data was truncated", "nested too deeply"):
        return f"not JSON: {kind}"
    at = _BYTE_RE.search(message)
    return f"not JSON: {kind} (byte {at.group(1)})" if at else f"not JSON: {kind}"


_T = TypeVar("_T")


def decode_or_raise(decoder: msgspec.json.Decoder[_T], raw: Buffer, prefix: str = "") -> _T:
    """decoder.decode(raw) with every failure mapped to WireError (off the hot path)."""
    try:
        return decoder.decode(raw)
    except msgspec.ValidationError as exc:
        raise WireError(validation_reason(exc, prefix)) from None
    except msgspec.DecodeError as exc:
        raise WireError(not_json_reason(exc, raw)) from None
    except (UnicodeError, RecursionError) as exc:
        # msgspec decodes the strings it keeps strictly (UnicodeDecodeError), encodes str input
        # (UnicodeEncodeError on lone surrogates) and bounds nesting (RecursionError).
        raise WireError(not_json_reason(exc)) from None


_JSON_KINDS = {ord("{"): "object", ord("["): "array", ord('"'): "str", ord("n"): "null"}
_JSON_KINDS.update({ord("t"): "bool", ord("f"): "bool"})


def require_objects(items: list[msgspec.Raw], name: str) -> None:
    """Each Raw slice must be a JSON object (msgspec.Raw accepts any value)."""
    for index, item in enumerate(items):
        view = memoryview(item)
        if view[:1] != b"{":
            kind = _JSON_KINDS.get(view[0], "number") if len(view) else "nothing"
            raise WireError(f"'{name}[{index}]' must be an object, got {kind}")
