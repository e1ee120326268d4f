"""Reading: channel state, query channels (filter and sort), and `/sync` over the history."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from chatledger.sync.devserver.models import Channel
from chatledger.sync.devserver.objects import (
    channel_obj, draft_obj, member_obj, message_obj, read_obj,
)
from chatledger.sync.devserver.state import State
from chatledger.sync.devserver.wire import ApiError, input_error, iso, parse_time

MAX_SYNC_CIDS = 255
SYNC_WINDOW = timedelta(days=30)
MAX_CHANNEL_LIMIT = 100
MAX_MESSAGE_LIMIT = 300


def channel_state(state: State, channel: Channel, viewer: str, *, message_limit: int = 25,
                  id_lt: str | None = None, id_gt: str | None = None) -> dict[str, Any]:
    """One channel as a query answers it: the newest `message_limit` messages (oldest first),
    before `id_lt` / after `id_gt` when given."""
    ids = [mid for mid in channel.message_ids
           if (m := state.messages[mid]).in_channel and viewer not in m.deleted_for
           and (channel.truncated_at is None or m.created_at > channel.truncated_at)]
    for bound, keep_before in ((id_lt, True), (id_gt, False)):
        if bound is not None:
            pivot = state.messages.get(bound)
            if pivot is None:
                raise ApiError(404, 16, f"message with id '{bound}' does not exist")
            ids = [mid for mid in ids if (state.messages[mid].created_at < pivot.created_at)
                   == keep_before and mid != bound]
    limit = max(0, min(message_limit, MAX_MESSAGE_LIMIT))
    ids = (ids[:limit] if id_gt is not None and id_lt is None else ids[-limit:]) if limit else []
    messages = [message_obj(state, state.messages[mid], viewer) for mid in ids]
    pinned = [message_obj(state, state.messages[mid], viewer) for mid in channel.message_ids
              if state.messages[mid].pinned and state.messages[mid].type != "deleted"][-10:]
    draft = state.drafts.get((viewer, channel.cid, ""))
    result: dict[str, Any] = {
        "channel": channel_obj(state, channel, viewer),
        "messages": messages,
        "pinned_messages": pinned,
        "members": [member_obj(state, m) for m in channel.members.values()],
        "read": [read_obj(state, uid, state.reads[(channel.cid, uid)])
                 for uid in channel.members if (channel.cid, uid) in state.reads],
        "membership": (member_obj(state, channel.members[viewer])
                       if viewer in channel.members else None),
        "watcher_count": 0,
        "watchers": [],
        "threads": [],
    }
    if draft is not None:
        result["draft"] = draft_obj(draft)
    return result


# -- filters --------------------------------------------------------------------------------------

def _field(state: State, channel: Channel, name: str) -> Any:
    if name == "members":
        return list(channel.members)
    if name in ("cid", "type", "id", "frozen", "disabled", "team"):
        return getattr(channel, name)
    if name in ("created_at", "updated_at", "last_message_at", "truncated_at"):
        return iso(getattr(channel, name))
    if name == "member_count":
        return len(channel.members)
    if name == "created_by_id":
        return channel.created_by
    if name == "hidden":
        return False
    return channel.custom.get(name)


def _compare(value: Any, op: str, operand: Any, members: bool) -> bool:
    if members:  # `members` is a list: $in means "shares a member", $eq means "exactly these"
        if op == "$in":
            return bool(set(value) & set(operand or []))
        if op == "$nin":
            return not set(value) & set(operand or [])
        if op == "$eq":
            return set(value) == set(operand if isinstance(operand, list) else [operand])
        if op == "$contains":
            return operand in value
        raise input_error(f"operator {op} is not supported on members")
    if op == "$eq":
        return value == operand
    if op == "$ne":
        return value != operand
    if op == "$in":
        return value in (operand or [])
    if op == "$nin":
        return value not in (operand or [])
    if op == "$exists":
        return (value is not None) == bool(operand)
    if op == "$contains":
        return isinstance(value, list) and operand in value
    if op in ("$gt", "$gte", "$lt", "$lte"):
        if value is None or operand is None:
            return False
        try:
            return {"$gt": value > operand, "$gte": value >= operand,
                    "$lt": value < operand, "$lte": value <= operand}[op]
        except TypeError:
            return False
    raise input_error(f"filter operator {op} is not supported")


def matches(state: State, channel: Channel, condition: dict[str, Any]) -> bool:
    """Evaluate a Stream filter: `$and`, `$or`, `$nor`, and per-field operators."""
    if not isinstance(condition, dict):
        raise input_error("filter_conditions must be an object")
    for key, value in condition.items():
        if key in ("$and", "$or", "$nor"):
            if not isinstance(value, list):
                raise input_error(f"{key} takes a list of conditions")
            results = [matches(state, channel, c) for c in value]
            ok = all(results) if key == "$and" else any(results)
            if (key == "$nor") == ok:
                return False
            continue
        field_value = _field(state, channel, key)
        operators = value if isinstance(value, dict) and value and all(
            k.startswith("$") for k in value) else {"$eq": value}
        for op, operand in operators.items():
            if not _compare(field_value, op, operand, key == "members"):
                return False
    return True


def _sort_key(state: State, channel: Channel, field: str) -> Any:
    if field in ("last_message_at", "last_updated"):
        # Channels without messages sort by their creation, as on the real service.
        moment = channel.last_message_at or channel.created_at
        if field == "last_updated":
            moment = max(moment, channel.updated_at)
        return moment
    value = _field(state, channel, field)
    return value


def query_channels(state: State, viewer: str, body: dict[str, Any]) -> dict[str, Any]:
    filter_ = body.get("filter_conditions") or {}
    sort = body.get("sort") or [{"field": "last_message_at", "direction": -1}]
    if not isinstance(sort, list):
        raise input_error("sort must be a list of {field, direction}")
    try:
        limit = int(body.get("limit", 10))
        offset = int(body.get("offset", 0))
        message_limit = int(body.get("message_limit", 25))
    except (TypeError, ValueError):
        raise input_error("limit, offset and message_limit must be integers") from None
    if limit < 0 or offset < 0 or message_limit < 0:
        raise input_error("limit, offset and message_limit must not be negative")
    found = [c for c in state.channels.values()
             if state.can_read(c, viewer) and matches(state, c, filter_)]
    found.sort(key=lambda c: c.cid)
    for rule in reversed(sort):  # stable sorts, last key first
        if not isinstance(rule, dict) or "field" not in rule:
            raise input_error("each sort entry needs a field")
        descending = int(rule.get("direction", -1)) < 0
        present = [c for c in found if _sort_key(state, c, rule["field"]) is not None]
        missing = [c for c in found if _sort_key(state, c, rule["field"]) is None]
        try:
            present.sort(key=lambda c: _sort_key(state, c, rule["field"]), reverse=descending)
        except TypeError:
            raise input_error(f"cannot sort on {rule['field']}: mixed types") from None
        found = present + missing
    page = found[offset:offset + min(limit, MAX_CHANNEL_LIMIT)]
    return {"channels": [channel_state(state, c, viewer, message_limit=message_limit)
                         for c in page]}


def query_channel(state: State, viewer: str, channel_type: str, channel_id: str,
                  body: dict[str, Any]) -> dict[str, Any]:
    """One channel's state; creates the channel when the body carries `data` (get-or-create)."""
    cid = f"{channel_type}:{channel_id}"
    channel = state.channels.get(cid)
    if channel is None:
        data = body.get("data")
        if not isinstance(data, dict):
            raise ApiError(404, 16, f"channel '{cid}' does not exist")
        members = data.get("members") or [viewer]
        members = [m.get("user_id") if isinstance(m, dict) else m for m in members]
        if viewer not in members:
            members.append(viewer)
        channel = state.create_channel(
            channel_type, channel_id, created_by=viewer, members=members,
            custom={k: v for k, v in data.items() if k not in ("members", "created_by")})
    state.require_member(channel, viewer)
    messages = body.get("messages") or {}
    if not isinstance(messages, dict):
        raise input_error("messages must be an object")
    return channel_state(state, channel, viewer, message_limit=int(messages.get("limit", 25)),
                         id_lt=messages.get("id_lt"), id_gt=messages.get("id_gt"))


# -- sync -----------------------------------------------------------------------------------------

def sync(state: State, viewer: str, body: dict[str, Any], *, max_events: int,
         now: datetime) -> dict[str, Any]:
    """The events of `channel_cids` after `last_sync_at`, oldest first."""
    cids = body.get("channel_cids")
    if not isinstance(cids, list) or not all(isinstance(c, str) for c in cids):
        raise input_error("channel_cids must be a list of channel ids")
    if len(cids) > MAX_SYNC_CIDS:
        raise input_error(f"too many channel_cids: {len(cids)}, at most {MAX_SYNC_CIDS}")
    raw = body.get("last_sync_at")
    if not isinstance(raw, str):
        raise input_error("last_sync_at is required (RFC 3339)")
    try:
        since = parse_time(raw)
    except ValueError as error:
        raise input_error(str(error)) from None
    if now - since > SYNC_WINDOW:
        raise input_error("last_sync_at is too old: it must be at most 30 days ago; "
                          "query the channels instead")
    wanted = set()
    inaccessible = []
    for cid in cids:
        channel = state.channels.get(cid)
        if channel is None or not state.can_read(channel, viewer):
            inaccessible.append(cid)
        else:
            wanted.add(cid)
    events = [entry.event for entry in state.history
              if entry.cid in wanted and entry.created_at > since
              and entry.only_user in (None, viewer)]
    if len(events) > max_events:
        raise input_error(f"too many events since last_sync_at ({len(events)}, at most "
                          f"{max_events}): query the channels instead")
    events.sort(key=lambda e: e["created_at"])
    return {"events": events, "inaccessible_cids": inaccessible}
