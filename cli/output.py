"""Formatting shared by the commands: times in and out, JSON out, the console."""

from __future__ import annotations

import re
import sys
from datetime import datetime, timedelta
from typing import Any

import click
import msgspec
from rich.console import Console
from rich.markup import escape as escape_markup

from chatledger.eventstore.wire import compact_json
from chatledger.eventstore.wire import format_time as rfc3339
from chatledger.projections.times import EPOCH as _EPOCH
from chatledger.projections.times import API_FORMS, COMMAND_LINE_FORMS, to_micros

# The largest count or position an option takes: what an SQLite INTEGER holds. Larger numbers
# are a usage error, not an OverflowError deep in a query.
MAX_INT = 2**63 - 1

# C0 controls, DEL, C1 controls and the Unicode line and paragraph separators: shown escaped so that data cannot move the cursor, clear the
# screen or set the window title. Backslash is escaped too, so that the escaped text is
# unambiguous (as git quotes names). Also escaped: the bidirectional embeddings, overrides and
# isolates (U+202A-U+202E, U+2066-U+2069), which reorder what follows them on the line (a
# column of ids shown backwards), the invisible zero-width space, word joiner and BOM (two ids
# that look the same), and lone surrogates (a file name's undecodable bytes), which no output
# encoding can write.
_CONTROL_CHARS = (r"\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\u200b\u2060"
                  r"\ufeff\ud800-\udfff")
_CONTROL = re.compile(f"[{_CONTROL_CHARS}\\\\]")
_CONTROL_IN_LINE = re.compile(f"[{_CONTROL_CHARS}]")
_NAMED_ESCAPES = {"\n": "\\n", "\t": "\\t", "\r": "\\r", "\\": "\\\\"}


# Characters JSON lets strings hold raw that line-splitting readers (Python's splitlines, some
# editors and terminals) take for line breaks. In UTF-8 JSON their bytes can only be inside a
# string, where the escape means the same character.
_LINE_BREAKS_IN_STRINGS = ((b"\xe2\x80\xa8", b"\\u2028"), (b"\xe2\x80\xa9", b"\\u2029"),
                           (b"\xc2\x85", b"\\u0085"))


class Settings:
    """How output looks, set once by the global options: local time instead of UTC
    (`--local-time`, `CHATLEDGER_LOCAL_TIME=1`), no pager (`--no-pager`)."""

    local_time = False
    no_pager = False


settings = Settings()


def time_label() -> str:
    """What the times printed for people are in: `UTC`, or the local zone's name."""
    if not settings.local_time:
        return "UTC"
    return datetime.now().astimezone().tzname() or "local"


# The width Rich is told when output is not a terminal: no line is ever wrapped or cut.
_UNFITTED_WIDTH = 1_000_000


def console(err: bool = False) -> Console:
    stream = sys.stderr if err else sys.stdout
    # Rich assumes 80 columns when output is not a terminal and drops columns to fit; a pipe
    # or a file should get whole lines instead. Printed lines are never broken by Rich (an id
    # longer than the line would be cut in two): the terminal wraps them, as it does for `cat`.
    # No `:name:` in data is turned into an emoji (`x:joy:y` is an id, not `x😂y`).
    width = None if stream.isatty() else _UNFITTED_WIDTH
    return Console(stderr=err, highlight=False, soft_wrap=True, width=width, emoji=False)


def parse_when(text: str, *, now_us: int | None = None) -> int:
    """A time given on the command line, as epoch microseconds (exact: integer arithmetic).

    Accepts RFC 3339 (`2026-11-25T10:00:00Z`), a date or date and time taken as UTC
    (`2026-11-25`, `2026-11-25 10:00`), or an age such as `90s`, `15m`, `2h`, `3d`, `1w`
    (`chatledger.projections.times`, as the Python API takes them). A time outside years
    0001-9999 is a usage error.
    """
    try:
        return to_micros(text, now_us=now_us)
    except ValueError as error:
        said = str(error).replace(API_FORMS, COMMAND_LINE_FORMS)
        raise click.BadParameter(said) from None


def _out_of_range(us: int) -> str:
    return f"<out of range: {us} µs>"


def format_time(us: int | None) -> str:
    """Epoch microseconds as a readable UTC time with milliseconds; never fails (a marker for a
    value no calendar date can show)."""
    if us is None:
        return "-"
    if settings.local_time:
        try:
            local = (_EPOCH + timedelta(microseconds=us)).astimezone()
        except (OverflowError, ValueError, OSError):
            return _out_of_range(us)
        return local.strftime("%Y-%m-%d %H:%M:%S.") + f"{local.microsecond // 1000:03d}"
    try:
        text = rfc3339(us)
    except ValueError:
        return _out_of_range(us)
    return f"{text[:10]} {text[11:23]}"


def labelled_time(us: int | None) -> str:
    """`format_time` with the zone said: `2026-11-25 10:00:00.000 UTC`."""
    return format_time(us) if us is None else f"{format_time(us)} {time_label()}"


def iso_time(us: int | None) -> str | None:
    """Epoch microseconds as RFC 3339 UTC with microseconds; a marker when out of range."""
    if us is None:
        return None
    try:
        text = rfc3339(us)
    except ValueError:
        return _out_of_range(us)
    # Whole seconds without a fraction, as these lines have always been written.
    return text[:-8] + "Z" if text.endswith(".000000Z") else text


def _escape_one(match: re.Match[str]) -> str:
    char = match.group()
    code = ord(char)
    return _NAMED_ESCAPES.get(char) or (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")


def escape_controls(text: str) -> str:
    """`text` with control characters (and backslash) written as escapes: `\\x1b`, `\\n`."""
    return _CONTROL.sub(_escape_one, text)


def escape_line(text: str) -> str:
    """`text` for a one-line message (an error): control characters escaped as in
    `escape_controls`, so that a stored id quoted in an error can neither act on the terminal
    nor break the line; backslashes stay as they are (the text may hold a `repr` already)."""
    return _CONTROL_IN_LINE.sub(_escape_one, text)


# The password of a URL's user (`postgresql://u:secret@host/db`), and credentials given as
# parameters (`?api_key=...`, `password=...` in a connection string).
_URL_PASSWORD = re.compile(r"(\b[a-z][a-z0-9+.-]*://[^/\s@:'\"<>]*):[^/\s@'\"<>]*@", re.IGNORECASE)
_CREDENTIAL_PARAMS = re.compile(
    r"(?i)\b(password|passwd|api_key|apikey|token|access_token|authorization)=[^&\s'\"<>]*")


def without_credentials(text: str) -> str:
    """`text` with the password of any URL in it, and any credential parameter's value,
    replaced by `***`: what every error the command line prints goes through, whichever layer
    wrote it."""
    text = _URL_PASSWORD.sub(r"\1:***@", text)
    return _CREDENTIAL_PARAMS.sub(r"\1=***", text)


def writable(text: str) -> str:
    """`text` as any UTF-8 output can write it: lone surrogates (the undecodable bytes of a file
    name, `\\udcff`) written as escapes; any other text is returned unchanged."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


def shown(value: object) -> str:
    """Data for a rich table cell or a line printed with markup: controls escaped, and square
    brackets escaped so that the data is never read as markup."""
    return escape_markup(escape_controls("" if value is None else str(value)))


def stored_json(raw: bytes | memoryview) -> msgspec.Raw:
    """Stored JSON to embed in a JSON line: re-serialised compactly, strings and numbers as
    stored (invalid UTF-8 from an older store shows U+FFFD)."""
    return msgspec.Raw(compact_json(raw))


def echo_json(value: Any) -> None:
    """One JSON document on its own line. `msgspec.Raw` values are written as they are: wrap
    stored JSON with `stored_json`, which keeps it on one line."""
    line = msgspec.json.encode(value)
    for char, escape in _LINE_BREAKS_IN_STRINGS:
        line = line.replace(char, escape)
    sys.stdout.buffer.write(line + b"\n")
    sys.stdout.flush()
