"""Compare a client's read tables with the development server's state (tests only)."""

from __future__ import annotations

from typing import Any


def server_view(snapshot: dict[str, Any], user: str) -> dict[str, Any]:
    """What `user` should see of the server: messages of their channels, their reactions."""
    cids = {c["cid"] for c in snapshot["channels"]
            if any(m.get("user_id") == user for m in c.get("members", []))}
    messages = {
        m["id"]: (m["cid"], m.get("text"), bool(m["deleted"]))
        for m in snapshot["messages"]
        if m["cid"] in cids and user not in m.get("deleted_for", [])
    }
    reactions = {(r["message_id"], r["type"]) for r in snapshot["reactions"]
                 if r.get("user_id") == user and r["message_id"] in messages}
    # Replies shown only in their thread are not part of a channel's state: a client has them
    # once it opened the thread (or received them live).
    thread_only = {m["id"] for m in snapshot["messages"]
                   if m.get("parent_id") and not m.get("show_in_channel")}
    return {"channels": cids, "messages": messages, "reactions": reactions,
            "thread_only": thread_only}


def local_view(store: Any, user: str) -> dict[str, Any]:
    with store.log.datastore.transaction(commit=False) as c:
        rows = list(c.execute(
            "SELECT id FROM messages WHERE deleted_for_me = 0"))
        reactions = {(mid, kind) for mid, kind in c.execute(
            "SELECT message_id, type FROM reactions WHERE user_id = ?", (user,))}
        cids = {cid for (cid,) in c.execute("SELECT cid FROM channels WHERE deleted_at IS NULL")}
    messages = {}
    for (mid,) in rows:
        stored = store.message(mid)
        body = stored.json()
        deleted = stored.type == "deleted" or stored.deleted_at is not None
        messages[mid] = (stored.cid, body.get("text"), deleted)
    return {"channels": cids, "messages": messages, "reactions": reactions}


def differences(store: Any, snapshot: dict[str, Any], user: str = "alice") -> list[str]:
    """Every way the local tables differ from what the server holds for `user` (empty: equal)."""
    server, local = server_view(snapshot, user), local_view(store, user)
    out = []
    for mid, value in sorted(server["messages"].items()):
        mine = local["messages"].get(mid)
        if mine is None and mid in server["thread_only"]:
            continue
        if mine != value:
            out.append(f"message {mid}: server {value}, local {mine}")
    for mid in sorted(set(local["messages"]) - set(server["messages"])):
        cid = local["messages"][mid][0]
        if cid in server["channels"]:
            out.append(f"message {mid}: local only {local['messages'][mid]}")
    for reaction in sorted(server["reactions"] ^ local["reactions"]):
        side = "server" if reaction in server["reactions"] else "local"
        out.append(f"reaction {reaction}: {side} only")
    return out


def stored_twice(snapshot: dict[str, Any]) -> list[str]:
    """Message ids the server applied more than once (must never happen)."""
    return [mid for mid, n in snapshot.get("send_applied", {}).items() if n > 1]
