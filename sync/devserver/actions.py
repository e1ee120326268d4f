"""Named actions performed as a given user: what `POST /_dev/act` and `DevServer.act` run.

They call the same `State` writes as the REST handlers, so another user's activity reaches
connected clients exactly as real traffic would.
"""

from __future__ import annotations

from typing import Any

from chatledger.sync.devserver.state import State
from chatledger.sync.devserver.wire import input_error


def _message(params: dict[str, Any]) -> dict[str, Any]:
    """`message` as given, or built from the flat keys (`text`, `id`, `parent_id`, ...)."""
    message = params.get("message")
    if message is None:
        message = {k: v for k, v in params.items()
                   if k not in ("cid", "message_id", "user_id", "action")}
    if not isinstance(message, dict):
        raise input_error("message must be an object")
    return message


def _need(params: dict[str, Any], key: str) -> Any:
    if params.get(key) in (None, ""):
        raise input_error(f"this action needs {key!r}")
    return params[key]


def perform(state: State, user_id: str, action: str, params: dict[str, Any]) -> dict[str, Any]:
    """Run `action` as `user_id`; returns what the matching endpoint would answer."""
    if not isinstance(user_id, str) or not user_id:
        raise input_error("user_id is required")
    state.user(user_id)
    if action == "send_message":
        return state.send_message(user_id, _need(params, "cid"), _message(params))
    if action == "update_message":
        return state.update_message(user_id, _need(params, "message_id"), _message(params))
    if action == "partial_update_message":
        return state.partial_update_message(user_id, _need(params, "message_id"),
                                            params.get("set") or {}, params.get("unset") or [])
    if action == "delete_message":
        return state.delete_message(user_id, _need(params, "message_id"),
                                    hard=bool(params.get("hard")),
                                    delete_for_me=bool(params.get("delete_for_me")))
    if action == "send_reaction":
        reaction = params.get("reaction") or {"type": _need(params, "type"),
                                              "score": params.get("score", 1)}
        return state.send_reaction(user_id, _need(params, "message_id"), reaction,
                                   enforce_unique=bool(params.get("enforce_unique")))
    if action == "delete_reaction":
        return state.delete_reaction(user_id, _need(params, "message_id"), _need(params, "type"))
    if action == "mark_read":
        return state.mark_read(user_id, _need(params, "cid"), message_id=params.get("message_id"),
                               thread_id=params.get("thread_id"))
    if action == "mark_unread":
        return state.mark_unread(user_id, _need(params, "cid"),
                                 message_id=_need(params, "message_id"))
    if action == "save_draft":
        return state.save_draft(user_id, _need(params, "cid"), _message(params))
    if action == "delete_draft":
        return state.delete_draft(user_id, _need(params, "cid"), parent_id=params.get("parent_id"))
    if action == "add_member":
        added = state.add_member(_need(params, "cid"), _need(params, "member_id"))
        return {"added": added}
    if action == "remove_member":
        state.remove_member(_need(params, "cid"), _need(params, "member_id"))
        return {}
    if action == "update_channel":
        return state.update_channel(user_id, _need(params, "cid"), params.get("data") or {})
    if action == "truncate_channel":
        return state.truncate_channel(user_id, _need(params, "cid"))
    raise input_error(f"unknown action {action!r}; one of: {', '.join(ACTIONS)}")


ACTIONS = ("send_message", "update_message", "partial_update_message", "delete_message",
           "send_reaction", "delete_reaction", "mark_read", "mark_unread", "save_draft",
           "delete_draft", "add_member", "remove_member", "update_channel", "truncate_channel")
