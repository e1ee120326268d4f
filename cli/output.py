"""Formatting shared by the commands: times in and out, JSON out, the console."""

from __future__ import annotations

import re
import sys
import time
from datetime import datetime, timezone
from typing import Any

import click
import msgspec
from rich.console import Console

from chatledger.eventstore.wire import WireError, parse_time

_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)\s*(s|m|h|d|w)$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def console(err: bool = False) -> Console:
    stream = sys.stderr if err else sys.stdout
    # Rich assumes 80 columns when output is not a terminal and drops columns to fit; a pipe
    # or a file should get whole lines instead.
    width = None if stream.isatty() else 200
    return Console(stderr=err, highlight=False, soft_wrap=False, width=width)


def parse_when(text: str, *, now_us: int | None = None) -> int:
    """A time given on the command line, as epoch microseconds.

    Accepts RFC 3339 (`2026-11-25T10:00:00Z`), a date or date and time taken as UTC
    (`2026-11-25`, `2026-11-25 10:00`), or an age such as `90s`, `15m`, `2h`, `3d`, `1w`.
    """
    value = text.strip()
    if match := _RELATIVE.match(value):
        now = time.time_ns() // 1000 if now_us is None else now_us
        return now - int(float(match[1]) * _UNIT_SECONDS[match[2]] * 1_000_000)
    try:
        parsed = parse_time(value)
        if parsed is not None:
            return parsed
    except WireError:
        pass
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(
            f"{text!r} is not a time: use RFC 3339, a date (2026-11-25), or an age (15m, 2h, 3d)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return int(moment.timestamp() * 1_000_000)


def format_time(us: int | None) -> str:
    """Epoch microseconds as a readable UTC time with milliseconds."""
    if us is None:
        return "-"
    moment = datetime.fromtimestamp(us / 1_000_000, tz=timezone.utc)
    return moment.strftime("%Y-%m-%d %H:%M:%S.") + f"{moment.microsecond // 1000:03d}"


def iso_time(us: int | None) -> str | None:
    if us is None:
        return None
    return datetime.fromtimestamp(us / 1_000_000, tz=timezone.utc).isoformat().replace("+00:00", "Z")


def echo_json(value: Any) -> None:
    """One JSON document on its own line (`msgspec.Raw` values are written verbatim)."""
    sys.stdout.buffer.write(msgspec.json.encode(value) + b"\n")
    sys.stdout.flush()
