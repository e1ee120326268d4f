"""Wire times: RFC 3339 text <-> integer microseconds since the Unix epoch (UTC)."""

from __future__ import annotations

import re
from datetime import datetime

from chatledger.eventstore.wire.errors import WireError

__all__ = ["UNSET_TIME", "MIN_TIME_US", "MAX_TIME_US", "parse_time", "format_time",
           "format_time_or_none"]


# --------------------------------------------------------------------------------------------
# Time: RFC 3339 text <-> integer microseconds since the Unix epoch (UTC).

UNSET_TIME = "0001-01-01T00:00:00Z"
"""Go's zero time: the backend's way of saying "no time"."""

_US_PER_DAY = 86_400_000_000
_TIME_RE = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})"  # date, time
    r"(?:[.,](\d{1,9}))?"  # fraction ("," is ISO 8601's; fromisoformat takes it too)
    r"(?:[Zz]|([+-])(\d{2}):(\d{2}))",  # offset
    re.ASCII,
)
_MONTH_DAYS = (0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
# "YYYY-MM-DDTHH:MM" -> epoch µs of that minute, filled by the validated slow path. Events arrive
# in time order, so nearly every timestamp hits the minute before it; a hit costs one dict lookup
# instead of five int() calls and a calendar computation.
_MINUTES: dict[str, int] = {}
_MINUTES_MAX = 8192
_fromisoformat = datetime.fromisoformat


def _days_from_civil(year: int, month: int, day: int) -> int:
    """Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm)."""
    year -= month <= 2
    era = year // 400
    yoe = year - era * 400
    doy = (153 * (month + (-3 if month > 2 else 9)) + 2) // 5 + day - 1
    return era * 146_097 + yoe * 365 + yoe // 4 - yoe // 100 + doy - 719_468


def _civil_from_days(days: int) -> tuple[int, int, int]:
    """Inverse of `_days_from_civil`."""
    days += 719_468
    era = days // 146_097
    doe = days - era * 146_097
    yoe = (doe - doe // 1460 + doe // 36_524 - doe // 146_096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    day = doy - (153 * mp + 2) // 5 + 1
    month = mp + 3 if mp < 10 else mp - 9
    return yoe + era * 400 + (month <= 2), month, day


_UNSET_US = _days_from_civil(1, 1, 1) * _US_PER_DAY
# RFC 3339 writes years 0000-9999; the backend's times start at year 1 (its "unset" sentinel).
# A time whose UTC value falls outside is refused at ingest, so everything stored can be written
# back as RFC 3339 text by every reader.
MIN_TIME_US = _UNSET_US
MAX_TIME_US = _days_from_civil(10_000, 1, 1) * _US_PER_DAY - 1


def _parse_time_slow(value: str) -> int | None:
    """Full RFC 3339 validation and conversion; also primes the minute cache for UTC times."""
    match = _TIME_RE.fullmatch(value)
    if match is None:
        raise WireError(f"not an RFC 3339 time: {value[:64]!r}")
    year, month, day, hour, minute, second = map(int, match.group(1, 2, 3, 4, 5, 6))
    fraction, sign, off_hour, off_minute = match.group(7, 8, 9, 10)
    leap = month == 2 and year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
    if not (
        1 <= month <= 12
        and 1 <= day <= _MONTH_DAYS[month] + leap
        and hour <= 23
        and minute <= 59
        and second <= 60
    ):
        raise WireError(f"not a valid time: {value[:64]!r}")
    base = (_days_from_civil(year, month, day) * 1440 + hour * 60 + minute) * 60_000_000
    micros = int(fraction[:6].ljust(6, "0")) if fraction else 0
    if sign is None:
        if base != _UNSET_US:  # the sentinel's minute keeps taking this path (it maps to None)
            if len(_MINUTES) >= _MINUTES_MAX:
                _MINUTES.clear()
            _MINUTES[value[:16]] = base
    else:
        off_h, off_m = int(off_hour), int(off_minute)
        if off_h > 23 or off_m > 59:
            raise WireError(f"not a valid time offset: {value[:64]!r}")
        offset = (off_h * 60 + off_m) * 60_000_000
        base -= offset if sign == "+" else -offset
    if second == 60:
        # A leap second (RFC 3339 allows one, at 23:59:60 UTC only): the store's clock has
        # none, so it is the last microsecond before the next minute, still ordered after
        # everything earlier. (The fast path never sees one: `fromisoformat` refuses :60.)
        if base % _US_PER_DAY != _US_PER_DAY - 60_000_000:
            raise WireError(f"not a valid time: {value[:64]!r}")
        second, micros = 59, 999_999
    us = base + second * 1_000_000 + micros
    if not MIN_TIME_US <= us <= MAX_TIME_US:
        raise WireError(f"out of range (years 0001-9999 in UTC): {value[:64]!r}")
    return None if us == _UNSET_US else us


def parse_time(value: str) -> int | None:
    """RFC 3339 text -> microseconds since the epoch (UTC), truncating below µs.

    0-9 fractional digits, "Z"/"z" or any "+hh:mm"/"-hh:mm" offset (converted to UTC). The unset
    sentinel (any spelling of 0001-01-01T00:00:00 UTC) gives None. Malformed text raises WireError.
    """
    # Fast path for the "YYYY-MM-DDTHH:MM:SS[.f{1,9}]Z" the backend sends, in a minute already
    # validated by the slow path: the cached prefix fixes date, hour and minute, the length and
    # "Z" leave fromisoformat (C, truncates below µs) only ":SS" and the fraction to check.
    base = _MINUTES.get(value[:16])
    if base is not None and value[-1] == "Z":
        size = len(value)
        if size == 20 or 21 < size < 31:
            try:
                moment = _fromisoformat(value)
            except ValueError:
                pass  # the slow path says what is wrong
            else:
                return base + moment.second * 1_000_000 + moment.microsecond
    return _parse_time_slow(value)


def format_time(us: int) -> str:
    """Microseconds since the epoch -> RFC 3339 UTC with 6 fractional digits and "Z".

    Exact (integer arithmetic); ValueError outside years 0000-9999, which RFC 3339 cannot write."""
    days, rest = divmod(us, _US_PER_DAY)
    year, month, day = _civil_from_days(days)
    if not 0 <= year <= 9999:
        raise ValueError(f"time out of the RFC 3339 range: {us} µs")
    seconds, micros = divmod(rest, 1_000_000)
    minutes, second = divmod(seconds, 60)
    hour, minute = divmod(minutes, 60)
    return f"{year:04d}-{month:02d}-{day:02d}T{hour:02d}:{minute:02d}:{second:02d}.{micros:06d}Z"



def format_time_or_none(us: int | None) -> str | None:
    """`format_time`, or None for no time and for a time RFC 3339 cannot write (a value an
    older version stored before times were checked at ingest)."""
    if us is None:
        return None
    try:
        return format_time(us)
    except ValueError:
        return None
