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
_KEYS = (b'"message', b'"pinned_messages"')


class _Message(msgspec.Struct):
    id: Any = None
    parent_id: Any = None


class _Reaction(msgspec.Struct):
    message_id: Any = None


class _Entry(msgspec.Struct):
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
    if not any(key in payload for key in _KEYS):
        return None
    try:
        if topic == ingest.CHANNEL_STATE and not local:
            state = _decode_state(payload)
            found = [m.id for key in (state.messages, state.pinned_messages) for m in key or ()]
        else:
            entry = _decode_entry(payload)
            message = entry.message
            found = [entry.message_id,
                     message.id if message is not None else None,
                     message.parent_id if message is not None else None]
            if not local and entry.reaction is not None:
                found.append(entry.reaction.message_id)
    except msgspec.ValidationError:
        # JSON of an unusual shape (a `message` that is not an object, say): the slow way.
        found = _loosely(topic, payload, local=local)
    except (msgspec.MsgspecError, ValueError, RecursionError):
        return None  # not JSON: `explain` cannot read it either
    ids = [i for i in dict.fromkeys(found) if isinstance(i, str) and i]
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
