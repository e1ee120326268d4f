"""The WebSocket side: `GET /connect`, one connection's life (its frames come from the hub)."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from aiohttp import WSMsgType, web

from chatledger.sync.devserver.context import ServerContext
from chatledger.sync.devserver.hub import Connection
from chatledger.sync.devserver.wire import ApiError, decode, decode_object, encode, iso


def health_check(conn: Connection, me: dict[str, Any] | None, created_at: str) -> bytes:
    event: dict[str, Any] = {"type": "health.check", "connection_id": conn.connection_id,
                             "cid": "*", "created_at": created_at}
    if me is not None:
        event["me"] = me
    return encode(event)


async def serve_connection(server: ServerContext, request: web.Request, user_id: str,
                           details: dict[str, Any], *, drop: bool = False
                           ) -> web.WebSocketResponse:
    """Upgrade, send the first `health.check`, then events and periodic health checks until
    the client goes, falls silent past `client_timeout`, or the server closes it."""
    state, hub = server.state, server.hub
    ws = web.WebSocketResponse(autoping=True)
    await ws.prepare(request)
    if drop:  # accepted, then cut before the first frame
        await ws.close(code=1011, message=b"dropped (injected fault)")
        return ws
    user = state.upsert_user({**details, "id": user_id}) if details else state.user(user_id)
    user.online, user.last_active = True, state.clock.now()
    conn = Connection(ws, user_id)
    # The first frame goes into the queue before the connection joins the hub, so no event
    # can overtake it, and none emitted from here on is missed.
    conn.queue.put_nowait(health_check(conn, state.me(user_id), iso(state.clock.now()) or ""))
    hub.add(conn)

    async def writer() -> None:
        while (frame := await conn.queue.get()) is not None:
            await ws.send_str(frame.decode())

    async def heartbeat() -> None:
        while True:
            await asyncio.sleep(server.health_interval)
            conn.queue.put_nowait(health_check(conn, None, iso(state.clock.now()) or ""))

    tasks = [asyncio.create_task(writer()), asyncio.create_task(heartbeat())]
    try:
        while True:
            try:
                msg = await asyncio.wait_for(ws.receive(), timeout=server.client_timeout)
            except asyncio.TimeoutError:
                # The client stopped answering health checks: the real service hangs up too.
                await ws.close(code=1000, message=b"health check timeout")
                break
            if msg.type == WSMsgType.TEXT:
                # Any frame proves the client alive (receiving it reset the timeout above);
                # a health.check, also in the array form some clients send, marks it active.
                with contextlib.suppress(Exception):
                    frame = decode(msg.data)
                    frames = frame if isinstance(frame, list) else [frame]
                    if any(isinstance(f, dict) and f.get("type") == "health.check"
                           for f in frames):
                        user.last_active = state.clock.now()
            elif msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED,
                              WSMsgType.ERROR):
                break
    finally:
        hub.remove(conn)
        user.online = any(True for _ in hub.connections.get(user_id, ()))
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if not ws.closed:
            with contextlib.suppress(Exception):
                await ws.close()
    return ws


def parse_connect_query(request: web.Request) -> tuple[str | None, dict[str, Any]]:
    """(user_id, user_details) from the `json` query parameter."""
    raw = request.query.get("json")
    if not raw:
        raise ApiError(400, 4, "the json query parameter is required")
    payload = decode_object(raw, "the json query parameter")
    details = payload.get("user_details") or {}
    if not isinstance(details, dict):
        raise ApiError(400, 4, "user_details must be an object")
    user_id = payload.get("user_id") or details.get("id")
    return user_id, details
