"""Times as the API takes them: epoch microseconds, a timezone-aware `datetime`, RFC 3339 text,
a date (UTC), or an age such as `90s`, `15m`, `2h`, `3d`, `1w` (before now), the forms the
command line takes too. Anything else is a `ValueError` that says what is accepted."""

from __future__ import annotations

import re
import time
from datetime import date, datetime, timedelta, timezone

from chatledger.eventstore.wire import MAX_TIME_US, MIN_TIME_US, WireError, parse_time

TimeLike = int | datetime | str

_RELATIVE = re.compile(r"^(\d+)(?:\.(\d+))?\s*(s|m|h|d|w)$", re.ASCII)
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_ONE_US = timedelta(microseconds=1)
# The longest age worth parsing: anything older than year 1 is out of range anyway, and the
# bound keeps int() from reading a number of a million digits.
_MAX_AGE_DIGITS = 20
API_FORMS = "use RFC 3339, a date (2026-11-25), an age (15m, 2h, 3d), or a timezone-aware datetime"
# What the command line says instead: it takes no datetime objects.
COMMAND_LINE_FORMS = "use RFC 3339, a date (2026-11-25), or an age (15m, 2h, 3d)"


def to_micros(value: TimeLike, *, now_us: int | None = None) -> int:
    """`value` as epoch microseconds (exact: integer arithmetic); see the module docstring."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a time: {API_FORMS}")
    if isinstance(value, int):
        return value
    if isinstance(value, datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(
                f"{value!r} has no time zone: say which (datetime(..., tzinfo=timezone.utc))")
        return _in_range((value - EPOCH) // _ONE_US, value)
    if isinstance(value, date):
        return _in_range((datetime(value.year, value.month, value.day, tzinfo=timezone.utc)
                          - EPOCH) // _ONE_US, value)
    if not isinstance(value, str):
        raise ValueError(f"{value!r} is not a time: {API_FORMS}")
    return _text_micros(value, now_us)


def optional_micros(value: TimeLike | None) -> int | None:
    """`to_micros`, with None passed through (no bound)."""
    return None if value is None else to_micros(value)


def from_micros(us: int | None) -> datetime | None:
    """Epoch microseconds as an aware UTC `datetime`; None for None and for a value no
    calendar date holds."""
    if us is None:
        return None
    try:
        return EPOCH + timedelta(microseconds=us)
    except OverflowError:
        return None


def _text_micros(text: str, now_us: int | None) -> int:
    value = text.strip()
    if match := _RELATIVE.match(value):
        whole, fraction, unit = match.groups()
        if len(whole) > _MAX_AGE_DIGITS:
            raise ValueError(f"{text!r} is further back than year 1")
        fraction = (fraction or "")[:6]
        scaled = int(whole) * 10**6 + int(fraction.ljust(6, "0") or 0)  # in millionths
        now = time.time_ns() // 1000 if now_us is None else now_us
        return _in_range(now - scaled * _UNIT_SECONDS[unit], text)
    try:
        parsed = parse_time(value)
        if parsed is not None:
            return parsed
    except WireError as error:
        if "out of range" in error.reason:
            raise ValueError(f"{text!r} is {error.reason.split(':')[0]}") from None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{text!r} is not a time: {API_FORMS}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)  # a date or date and time: UTC
    try:
        return _in_range((moment - EPOCH) // _ONE_US, text)
    except OverflowError:
        raise ValueError(f"{text!r} is out of range (years 0001-9999 in UTC)") from None


def _in_range(us: int, shown: object) -> int:
    if not MIN_TIME_US <= us <= MAX_TIME_US:
        raise ValueError(f"{shown!r} is out of range (years 0001-9999 in UTC)")
    return us
