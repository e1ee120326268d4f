"""What a 2xx answer must hold before the client believes it (docs/wire.md, "Errors": a 2xx is
not always a success).

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

# An absent member (msgspec.Raw cannot be in a union with None): an empty slice.
_ABSENT = msgspec.Raw(b"")


class _Answer(msgspec.Struct):
    """The top level of an answer, as raw slices: an error object's fields and the keys the
    endpoints promise. Decoding into it builds nothing for the rest of the answer, so a large
    answer costs one scan, not a tree of Python objects."""

    code: msgspec.Raw = _ABSENT
    message: msgspec.Raw = _ABSENT
    StatusCode: msgspec.Raw = _ABSENT
    reaction: msgspec.Raw = _ABSENT
    event: msgspec.Raw = _ABSENT
    draft: msgspec.Raw = _ABSENT


class _Named(msgspec.Struct):
    """What identifies the object an answer is about (any JSON type: checked after)."""

    id: Any = None
    type: Any = None
    message_id: Any = None
    text: Any = None


_ANSWER = msgspec.json.Decoder(_Answer)
_NAMED = msgspec.json.Decoder(_Named)
_VALUE = msgspec.json.Decoder()
_RAW = msgspec.json.Decoder(msgspec.Raw)
_DECODE_ERRORS = (msgspec.DecodeError, UnicodeError, RecursionError)  # ValidationError included

# The JSON kind of a document that is valid JSON, by its first byte.
_KIND_BY_FIRST_BYTE = {ord("["): "an array", ord('"'): "a string", ord("t"): "a boolean",
                       ord("f"): "a boolean", ord("n"): "null"}


def _snippet(body: bytes, limit: int = 60) -> str:
    text = body[:limit * 4].decode("utf-8", "replace")
    text = " ".join(text.split())  # one line, whatever the page's layout
    if len(text) > limit:
        text = text[:limit] + "..."
    return repr(text)


def _small(raw: msgspec.Raw) -> Any:
    """A top-level member that should be a scalar, decoded (None when absent or unreadable)."""
    if not len(raw):
        return None
    try:
        return _VALUE.decode(raw)
    except _DECODE_ERRORS:
        return None


def _starts(raw: msgspec.Raw, char: bytes) -> bool:
    """Whether a member is there and its JSON value starts with `char` (its kind)."""
    return bytes(memoryview(raw)[:1]) == char


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def error_in(answer: _Answer) -> str | None:
    """The error an object says it is (`{"code", "message", "StatusCode"}`), worded; else None."""
    status, code = _small(answer.StatusCode), _small(answer.code)
    message = _small(answer.message) if _starts(answer.message, b'"') else None
    if not _is_int(status) and not (_is_int(code) and isinstance(message, str)):
        return None
    parts = []
    if _is_int(code):
        parts.append(f"code {code}")
    if _is_int(status):
        parts.append(f"StatusCode {status}")
    said = f": {message[:200]}" if isinstance(message, str) and message else ""
    return f"an error object in the body ({', '.join(parts)}){said}"


def _top_level(body: bytes) -> _Answer | str:
    """The answer's top level, or what it is instead of a JSON object, in a few words."""
    if len(body) > MAX_ANSWER_BYTES:
        return f"an answer of {len(body):,} bytes, over the {MAX_ANSWER_BYTES:,}-byte cap"
    if not body.strip():
        return "an empty body"
    try:
        return _ANSWER.decode(body)
    except msgspec.ValidationError:
        pass  # valid JSON, not an object
    except _DECODE_ERRORS:
        return f"not JSON ({len(body):,} bytes, starting {_snippet(body)})"
    try:
        _RAW.decode(body)
    except _DECODE_ERRORS:
        return f"not JSON ({len(body):,} bytes, starting {_snippet(body)})"
    first = body.lstrip()[:1]
    return f"JSON {_KIND_BY_FIRST_BYTE.get(first[0], 'a number')}, not an object"


def describe_body(body: bytes, shape_problem: str = "not the shape the call promises") -> str:
    """What an answer that cannot be used is, in a few words: empty, over the cap, not JSON
    (and how it starts), an error object, a JSON value that is no object, or else
    `shape_problem`."""
    answer = _top_level(body)
    if isinstance(answer, str):
        return answer
    return error_in(answer) or shape_problem


def obviously_unusable(body: bytes) -> str | None:
    """Why `body` cannot be the answer of any read (empty, over the cap, anything but a JSON
    object, an error object), in a few words; None when it may be one. An object that is not
    valid JSON inside is left to the store, which may keep its good items
    (`chatledger.eventstore.salvage`)."""
    if len(body) > MAX_ANSWER_BYTES or not body.lstrip()[:1] == b"{":
        return describe_body(body)
    try:
        answer = _ANSWER.decode(body)
    except _DECODE_ERRORS:
        return None
    return error_in(answer)


class _Lists(msgspec.Struct):
    """The lists the read endpoints promise at the top level, as raw slices."""

    events: msgspec.Raw = _ABSENT
    channels: msgspec.Raw = _ABSENT


_LISTS = msgspec.json.Decoder(_Lists)


def missing_list(body: bytes, key: str) -> str | None:
    """Why a read's answer (a JSON object) has no JSON array at `key` ("events" for `/sync`,
    "channels" for query channels), in a few words; None when it has one, or when it cannot be
    read here (the store judges such an answer, and may salvage its good items).

    `null` is no list either: read as "nothing", it would move a sync point over a gap nobody
    sent (a gateway's rewrite, a server's empty slot), so it is a failed attempt like `{}`."""
    if key not in _Lists.__struct_fields__:
        raise ValueError(f"no list {key!r} in any read's answer")
    try:
        member = getattr(_LISTS.decode(body), key)
    except _DECODE_ERRORS:
        return None
    if _starts(member, b"["):
        return None
    if not len(member):
        return f"no '{key}' in the answer"
    first = bytes(memoryview(member)[:1])[0]
    kind = "an object" if first == ord("{") else _KIND_BY_FIRST_BYTE.get(first, "a number")
    return f"'{key}' is {kind}, not a list"


# -- local actions --------------------------------------------------------------------------------

Check = Callable[[bytes, _Answer, dict[str, Any]], "str | None"]


def _named(raw: msgspec.Raw, key: str) -> _Named | str:
    """The object at `key`, as far as it names something; or why there is none."""
    if not _starts(raw, b"{"):
        return f"no '{key}' object in the answer"
    try:
        return _NAMED.decode(raw)
    except _DECODE_ERRORS:
        return f"no '{key}' object in the answer"


class _MessageRef(msgspec.Struct):
    message: msgspec.Raw = _ABSENT


_MESSAGE_REF = msgspec.json.Decoder(_MessageRef)


def _message_with_id(expected: Callable[[dict[str, Any]], Any]) -> Check:
    """The answer's `message` is the message the request named."""
    def check(body: bytes, answer: _Answer, request: dict[str, Any]) -> str | None:
        # `message` is kept out of `_Answer`: in an error object it is a string.
        message = _named(_MESSAGE_REF.decode(body).message, "message")
        if isinstance(message, str):
            return message
        wanted = expected(request)
        got = message.id
        if not isinstance(got, str) or not got:
            return "the answer's message has no id"
        if isinstance(wanted, str) and wanted and got != wanted:
            return f"the answer is about message {got!r}, not {wanted!r}"
        return None
    return check


def _reaction(body: bytes, answer: _Answer, request: dict[str, Any]) -> str | None:
    """The answer's `reaction` is of the type asked for, on the message asked for."""
    reaction = _named(answer.reaction, "reaction")
    if isinstance(reaction, str):
        return reaction
    asked = request.get("reaction")
    wanted_type = asked.get("type") if isinstance(asked, dict) else request.get("reaction_type")
    # The type must be named, not merely not contradicted: `{"reaction": {}}` confirms nothing.
    got_type = reaction.type
    if isinstance(wanted_type, str) and got_type != wanted_type:
        if not isinstance(got_type, str):
            return "the answer's reaction names no type"
        return f"the answer's reaction is {got_type!r}, not {wanted_type!r}"
    got_message = reaction.message_id
    wanted_message = request.get("message_id")
    if got_message is not None and isinstance(wanted_message, str) \
            and got_message != wanted_message:
        return f"the answer's reaction is on message {got_message!r}, not {wanted_message!r}"
    return None


def _has(key: str) -> Check:
    def check(body: bytes, answer: _Answer, request: dict[str, Any]) -> str | None:
        return None if _starts(getattr(answer, key), b"{") else f"no '{key}' object in the answer"
    return check


def _any_object(body: bytes, answer: _Answer, request: dict[str, Any]) -> str | None:
    return None  # the endpoint promises no body: any JSON object that is not an error


def _sent_id(request: dict[str, Any]) -> Any:
    message = request.get("message")
    return message.get("id") if isinstance(message, dict) else None


# What each endpoint's 2xx answer must carry (docs/wire.md, "Endpoints"). `request` is the
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
    answer = _top_level(body)
    if isinstance(answer, str):
        return answer
    check = CONFIRMATIONS.get(kind, _any_object)
    problem = check(body, answer, request)
    if problem is not None:
        # An error object explains a missing key better than "no 'message' object".
        return error_in(answer) or problem
    if check is _any_object:
        return error_in(answer)
    return None


# Actions whose answer is the message as the backend now keeps it.
_MESSAGE_ANSWERS = frozenset({"send_message", "update_message", "partial_update_message"})


def refusal_in(kind: str, body: bytes) -> str | None:
    """The refusal a 2xx answer carries, worded; None when it carries none. Moderation answers
    a blocked or bounced message with 201 and the message as `type: "error"` (its text says
    why): the message was not published, so the action is refused, not delivered."""
    if kind not in _MESSAGE_ANSWERS:
        return None
    try:
        message = _named(_MESSAGE_REF.decode(body).message, "message")
    except _DECODE_ERRORS:
        return None  # not an object: `confirmation_problem` says why
    if isinstance(message, str) or message.type != "error":
        return None
    said = f": {message.text[:200]}" if isinstance(message.text, str) and message.text else ""
    return f"the backend answered with an error message (blocked or bounced){said}"


def kept_answer(body: bytes) -> str:
    """An answer as text for the command's record (so `explain` can show it), cut to a size a
    log entry should have."""
    text = body.decode("utf-8", "replace")
    if len(text) > KEPT_ANSWER_CHARS:
        return text[:KEPT_ANSWER_CHARS] + f"... ({len(body):,} bytes in all)"
    return text
