"""The message ids a log entry names, kept beside it in the archive for `archive find`.

The rules are those of `explain` (`projections.history.mentions` and `command_mentions`): a
backend entry names a message as itself (`message.id`), as the parent of a reply
(`message.parent_id`), as the message of a reaction (`message_id`, `reaction.message_id`), or
among a channel state's messages and pinned messages; a local command names the message it was
requested (or amended) for. `tests/test_archive.py` checks that both agree.

Push computes this for every entry, so it decodes only the few fields involved (msgspec skips
the rest without building it), and payloads without any of their keys are not decoded at all.
"""

from __future__ import annotations

from typing import Any

import msgspec

from chatledger.eventstore import commands, ingest

_COMMAND_TOPICS = frozenset({commands.REQUESTED, commands.AMENDED})
# Every rule reads a key that starts so (`message`, `message_id`, `messages`) or this one;
# `"id"` alone would not filter (every user object has one).
_MESSAGE_KEY = b'"message'
_PINNED_KEY = b'"pinned_messages"'


# Decoded for every entry that may name a message: without cycles, so kept out of the
# garbage collector's tracking (gc=False), which halves what making one costs.
class _Message(msgspec.Struct, gc=False):
    id: Any = None
    parent_id: Any = None


class _Reaction(msgspec.Struct, gc=False):
    message_id: Any = None


class _Entry(msgspec.Struct, gc=False):
    message: _Message | None = None
    message_id: Any = None
    reaction: _Reaction | None = None


class _ChannelState(msgspec.Struct):
    messages: list[_Message] | None = None
    pinned_messages: list[_Message] | None = None


_decode_entry = msgspec.json.Decoder(_Entry).decode
_decode_state = msgspec.json.Decoder(_ChannelState).decode


def message_ids(topic: str, payload: bytes, *, local: bool) -> list[str] | None:
    """The ids of the messages the entry names, in order without repeats; None when none."""
    if local and topic not in _COMMAND_TOPICS:
        return None
    if _MESSAGE_KEY not in payload and _PINNED_KEY not in payload:
        return None
    try:
        if topic == ingest.CHANNEL_STATE and not local:
            state = _decode_state(payload)
            found = [m.id for key in (state.messages, state.pinned_messages) for m in key or ()]
        else:
            entry = _decode_entry(payload)
            message = entry.message
            named = entry.message_id
            first = parent = None
            if message is not None:
                first, parent = message.id, message.parent_id
            reacted = None if local or entry.reaction is None else entry.reaction.message_id
            if (parent is None and (named is None or named == first)
                    and (reacted is None or reacted == first)):
                # Most entries: an event about one message, which every key there names.
                return [first] if isinstance(first, str) and first else None
            found = [named, first, parent, reacted]
    except msgspec.ValidationError:
        # JSON of an unusual shape (a `message` that is not an object, say): the slow way.
        found = _loosely(topic, payload, local=local)
    except (msgspec.MsgspecError, ValueError, RecursionError):
        return None  # not JSON: `explain` cannot read it either
    # Strings only, before the repeats go: an id of another JSON type (an object) is no key.
    ids = list(dict.fromkeys(i for i in found if isinstance(i, str) and i))
    return ids or None


def _get(value: Any, key: str) -> Any:
    return value.get(key) if isinstance(value, dict) else None


def _loosely(topic: str, payload: bytes, *, local: bool) -> list[Any]:
    try:
        doc = msgspec.json.decode(payload)
    except (msgspec.MsgspecError, ValueError, RecursionError):
        return []
    if not isinstance(doc, dict):
        return []
    if topic == ingest.CHANNEL_STATE and not local:
        return [_get(m, "id") for key in ("messages", "pinned_messages")
                for m in _list(doc.get(key))]
    message = doc.get("message")
    found = [doc.get("message_id"), _get(message, "id"), _get(message, "parent_id")]
    if not local:
        found.append(_get(doc.get("reaction"), "message_id"))
    return found


def _list(value: Any) -> list[Any]:
    """`value` when it is a JSON array, else an empty one (a hostile or odd document)."""
    return value if isinstance(value, list) else []


__all__ = ["message_ids"]
