"""What a 2xx answer must hold before the client believes it (WIRE.md: "A 2xx is not always a
success").

Proxies and captive portals answer 200 with an HTML page; some gateways answer 200 with an error
object in the body. So a status is never enough:

- an answer to a **local action** confirms it only when it carries what its endpoint promises,
  about the object the action named (`confirmation_problem`); anything else is an unconfirmed
  delivery, which the replayer retries a bounded number of times and then records as a conflict;
- an answer to a **read** (`/sync`, query channels, a channel query) is used only when the store
  could file it; otherwise it is quarantined and the attempt failed (`describe_body` words the
  reason for the status line).

The size cap applies to every answer, read while it streams in (`chatledger.sync.http`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec

from chatledger.eventstore.ingest import MAX_RESPONSE_BYTES

# The largest answer the client reads: the store's own limit for one response, so whatever
# passes here can also be filed. A larger answer is cut off at the cap and quarantined (its head).
MAX_ANSWER_BYTES = MAX_RESPONSE_BYTES  # 64 MiB
# How much of an answer over the cap is kept in the quarantine: enough to see what it was.
KEPT_HEAD_BYTES = 64 * 1024
# How much of an unconfirming answer a command's conflict keeps (as text) for `explain`.
KEPT_ANSWER_CHARS = 16 * 1024

UNCONFIRMED = "the backend's answer did not confirm the action"

_decode_any = msgspec.json.Decoder().decode


def _snippet(body: bytes, limit: int = 60) -> str:
    text = body[:limit * 4].decode("utf-8", "replace")
    text = " ".join(text.split())  # one line, whatever the page's layout
    if len(text) > limit:
        text = text[:limit] + "..."
    return repr(text)


def error_in(answer: dict[str, Any]) -> str | None:
    """The error an object says it is (`{"code", "message", "StatusCode"}`), worded; else None."""
    status = answer.get("StatusCode")
    code = answer.get("code")
    message = answer.get("message")
    is_int = lambda value: isinstance(value, int) and not isinstance(value, bool)  # noqa: E731
    if not is_int(status) and not (is_int(code) and isinstance(message, str)):
        return None
    parts = []
    if is_int(code):
        parts.append(f"code {code}")
    if is_int(status):
        parts.append(f"StatusCode {status}")
    said = f": {message}" if isinstance(message, str) and message else ""
    return f"an error object in the body ({', '.join(parts)}){said}"


_JSON_KINDS = {list: "an array", str: "a string", int: "a number", float: "a number",
               bool: "a boolean", type(None): "null"}


def describe_body(body: bytes, shape_problem: str = "not the shape the call promises") -> str:
    """What an answer that cannot be used is, in a few words: empty, not JSON (and how it
    starts), an error object, a JSON value that is no object, or else `shape_problem`."""
    if not body.strip():
        return "an empty body"
    try:
        answer = _decode_any(body)
    except (msgspec.DecodeError, UnicodeError, RecursionError):
        return f"not JSON ({len(body):,} bytes, starting {_snippet(body)})"
    if isinstance(answer, dict):
        return error_in(answer) or shape_problem
    return f"JSON {_JSON_KINDS.get(type(answer), 'value')}, not an object"


# -- local actions --------------------------------------------------------------------------------

Check = Callable[[dict[str, Any], dict[str, Any]], "str | None"]


def _object(answer: dict[str, Any], key: str) -> dict[str, Any] | str:
    value = answer.get(key)
    if isinstance(value, dict):
        return value
    return f"no '{key}' object in the answer"


def _message_with_id(expected: Callable[[dict[str, Any]], Any]) -> Check:
    """The answer's `message` is the message the request named."""
    def check(answer: dict[str, Any], request: dict[str, Any]) -> str | None:
        message = _object(answer, "message")
        if isinstance(message, str):
            return message
        wanted = expected(request)
        got = message.get("id")
        if not isinstance(got, str) or not got:
            return "the answer's message has no id"
        if isinstance(wanted, str) and wanted and got != wanted:
            return f"the answer is about message {got!r}, not {wanted!r}"
        return None
    return check


def _reaction(answer: dict[str, Any], request: dict[str, Any]) -> str | None:
    """The answer's `reaction` is of the type asked for, on the message asked for."""
    reaction = _object(answer, "reaction")
    if isinstance(reaction, str):
        return reaction
    asked = request.get("reaction")
    wanted_type = asked.get("type") if isinstance(asked, dict) else request.get("reaction_type")
    got_type = reaction.get("type")
    if isinstance(got_type, str) and isinstance(wanted_type, str) and got_type != wanted_type:
        return f"the answer's reaction is {got_type!r}, not {wanted_type!r}"
    got_message = reaction.get("message_id")
    wanted_message = request.get("message_id")
    if isinstance(got_message, str) and isinstance(wanted_message, str) \
            and got_message != wanted_message:
        return f"the answer's reaction is on message {got_message!r}, not {wanted_message!r}"
    return None


def _has(key: str) -> Check:
    def check(answer: dict[str, Any], request: dict[str, Any]) -> str | None:
        found = _object(answer, key)
        return found if isinstance(found, str) else None
    return check


def _any_object(answer: dict[str, Any], request: dict[str, Any]) -> str | None:
    return None  # the endpoint promises no body: any JSON object that is not an error


def _sent_id(request: dict[str, Any]) -> Any:
    message = request.get("message")
    return message.get("id") if isinstance(message, dict) else None


# What each endpoint's 2xx answer must carry (WIRE.md's endpoint table). `request` is the
# command's request: the keyword arguments of the `Backend` method named by the kind.
CONFIRMATIONS: dict[str, Check] = {
    "send_message": _message_with_id(_sent_id),
    "update_message": _message_with_id(_sent_id),
    "partial_update_message": _message_with_id(lambda request: request.get("message_id")),
    "delete_message": _message_with_id(lambda request: request.get("message_id")),
    "send_reaction": _reaction,
    "delete_reaction": _reaction,
    "mark_read": _has("event"),
    "mark_unread": _any_object,
    "save_draft": _has("draft"),
    "delete_draft": _any_object,
}


def confirmation_problem(kind: str, request: dict[str, Any], body: bytes) -> str | None:
    """None when `body` (a 2xx answer) confirms the action `kind` with `request`; otherwise why
    it does not, in a few words."""
    if len(body) > MAX_ANSWER_BYTES:
        return f"an answer of {len(body):,} bytes, over the {MAX_ANSWER_BYTES:,}-byte cap"
    try:
        answer = _decode_any(body)
    except (msgspec.DecodeError, UnicodeError, RecursionError):
        return describe_body(body)
    if not isinstance(answer, dict):
        return describe_body(body)
    check = CONFIRMATIONS.get(kind, _any_object)
    problem = check(answer, request)
    if problem is not None:
        # An error object explains a missing key better than "no 'message' object".
        return error_in(answer) or problem
    if check is _any_object:
        return error_in(answer)
    return None


def kept_answer(body: bytes) -> str:
    """An answer as text for the command's record (so `explain` can show it), cut to a size a
    log entry should have."""
    text = body.decode("utf-8", "replace")
    if len(text) > KEPT_ANSWER_CHARS:
        return text[:KEPT_ANSWER_CHARS] + f"... ({len(body):,} bytes in all)"
    return text
