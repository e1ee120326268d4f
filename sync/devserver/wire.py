"""What every part of the server shares: times, JSON, and Stream's error shape."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from typing import Any

import msgspec

UTC = timezone.utc
_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder()


def iso(moment: datetime | None) -> str | None:
    """RFC 3339 in UTC with microseconds and `Z`, as the real service writes times."""
    if moment is None:
        return None
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


_TIME = re.compile(
    r"^(\d{4}-\d{2}-\d{2})[T ](\d{2}:\d{2}:\d{2})(?:\.(\d{1,9}))?(Z|[+-]\d{2}:?\d{2})?$"
)


def parse_time(text: str) -> datetime:
    """Parse RFC 3339 with 0 to 9 fractional digits (Python's parser stops at 6)."""
    match = _TIME.match(text.strip()) if isinstance(text, str) else None
    if match is None:
        raise ValueError(f"not an RFC 3339 time: {text!r}")
    day, clock, fraction, zone = match.groups()
    micro = (fraction or "").ljust(6, "0")[:6]
    zone = "+00:00" if zone in (None, "Z") else zone
    if len(zone) == 5:  # +0100 -> +01:00
        zone = zone[:3] + ":" + zone[3:]
    return datetime.fromisoformat(f"{day}T{clock}.{micro}{zone}").astimezone(UTC)


class Clock:
    """Strictly increasing UTC times, so event order and `created_at` order never disagree
    (two writes in the same microsecond would otherwise tie in `/sync` and pagination)."""

    def __init__(self) -> None:
        self._last: datetime | None = None

    def now(self) -> datetime:
        moment = datetime.now(UTC)
        if self._last is not None and moment <= self._last:
            moment = self._last + timedelta(microseconds=1)
        self._last = moment
        return moment


def encode(value: Any) -> bytes:
    return _encoder.encode(value)


def decode(data: bytes | str) -> Any:
    return _decoder.decode(data)


class ApiError(Exception):
    """An answer in Stream's error shape: HTTP `status`, Stream `code`, a message."""

    def __init__(self, status: int, code: int, message: str, *, more_info: str = "",
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.more_info = more_info
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return error_body(self.status, self.code, self.message, self.more_info)


def decode_object(data: bytes | str, what: str) -> dict[str, Any]:
    """`data` as a JSON object, or the input error a real server gives, naming `what`."""
    try:
        value = decode(data)
    except Exception:
        raise ApiError(400, 4, f"{what} is not valid JSON") from None
    if not isinstance(value, dict):
        raise ApiError(400, 4, f"{what} must be a JSON object")
    return value


def error_body(status: int, code: int, message: str, more_info: str = "") -> dict[str, Any]:
    """Exactly the five keys of the backend's error body (docs/wire.md, "Errors")."""
    return {"code": code, "message": message, "StatusCode": status, "duration": "0.00ms",
            "more_info": more_info or "https://getstream.io/chat/docs/api_errors_response"}


def input_error(message: str) -> ApiError:
    return ApiError(400, 4, message)


def not_found(message: str) -> ApiError:
    return ApiError(404, 16, message)


def not_allowed(message: str) -> ApiError:
    return ApiError(403, 17, message)
