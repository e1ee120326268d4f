"""HS256 JWTs, made and checked with the standard library (no JWT dependency for a dev tool)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from datetime import datetime

from chatledger.sync.devserver.wire import ApiError


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def make_token(user_id: str, secret: str = "devsecret",
               expires_at: float | datetime | None = None) -> str:
    """A user token as Stream's server SDKs make them: HS256 over {"user_id", optional "exp"}.

    `expires_at` is a unix time or an aware datetime; None makes a token that never expires.
    """
    payload: dict[str, object] = {"user_id": user_id}
    if expires_at is not None:
        exp = expires_at.timestamp() if isinstance(expires_at, datetime) else expires_at
        payload["exp"] = int(exp)
    header = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())
    body = _b64(json.dumps(payload, separators=(",", ":")).encode())
    signing_input = f"{header}.{body}".encode("ascii")
    signature = hmac.new(secret.encode(), signing_input, hashlib.sha256).digest()
    return f"{header}.{body}.{_b64(signature)}"


def verify_token(token: str | None, secret: str, *, now: float | None = None) -> str:
    """The user id a valid token names; otherwise the 401 the real service answers."""
    if not token:
        raise ApiError(401, 5, "authorization token is missing: "
                       "send it in the Authorization header")
    parts = token.strip().split(".")
    if len(parts) != 3:
        raise ApiError(401, 5, "token is not a valid JWT")
    try:
        header = json.loads(_unb64(parts[0]))
        payload = json.loads(_unb64(parts[1]))
        signature = _unb64(parts[2])
    except (ValueError, UnicodeDecodeError):
        raise ApiError(401, 5, "token is not a valid JWT") from None
    if not isinstance(header, dict) or header.get("alg") != "HS256":
        raise ApiError(401, 5, "token algorithm must be HS256")
    expected = hmac.new(secret.encode(), f"{parts[0]}.{parts[1]}".encode("ascii"),
                        hashlib.sha256).digest()
    if not hmac.compare_digest(signature, expected):
        raise ApiError(401, 43, "token signature is invalid")
    if not isinstance(payload, dict) or not isinstance(payload.get("user_id"), str) \
            or not payload["user_id"]:
        raise ApiError(401, 5, "token payload has no user_id")
    exp = payload.get("exp")
    if isinstance(exp, (int, float)) and exp <= (time.time() if now is None else now):
        raise ApiError(401, 40, "token expired")
    return payload["user_id"]
