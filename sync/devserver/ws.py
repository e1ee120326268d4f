"""The WebSocket side: the hub that fans events out to connections, and `GET /connect`."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import uuid
from typing import TYPE_CHECKING, Any

from aiohttp import WSMsgType, web

from chatledger.sync.devserver.state import State
from chatledger.sync.devserver.wire import ApiError, decode, decode_object, encode, iso

if TYPE_CHECKING:
    from chatledger.sync.devserver.runner import DevServer

# Events whose frame carries the recipient's own unread counters.
PERSONAL = frozenset({"message.new", "notification.message_new", "message.read"})


class Connection:
    def __init__(self, ws: web.WebSocketResponse, user_id: str) -> None:
        self.ws = ws
        self.user_id = user_id
        self.connection_id = str(uuid.uuid4())
        self.queue: asyncio.Queue[bytes | None] = asyncio.Queue()


class Hub:
    """Open connections by user. `deliver` is the state's listener: it may be called from a
    thread other than the server's (a test seeding directly), so it hops onto the loop."""

    def __init__(self, state: State) -> None:
        self.state = state
        self.connections: dict[str, set[Connection]] = {}
        self.loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop, self._loop_thread = loop, threading.get_ident()

    def add(self, conn: Connection) -> None:
        self.connections.setdefault(conn.user_id, set()).add(conn)

    def remove(self, conn: Connection) -> None:
        conns = self.connections.get(conn.user_id)
        if conns is not None:
            conns.discard(conn)
            if not conns:
                del self.connections[conn.user_id]

    def count(self) -> int:
        return sum(len(c) for c in self.connections.values())

    def _frame(self, event: dict[str, Any], user_id: str, cid: str | None) -> bytes:
        if event.get("type") not in PERSONAL:
            return encode(event)
        total, channels = self.state.unread_totals(user_id)
        read = self.state.reads.get((cid, user_id)) if cid else None
        return encode({**event, "total_unread_count": total, "unread_channels": channels,
                       "unread_count": read.unread_messages if read else 0})

    def deliver(self, event: dict[str, Any], user_ids: list[str]) -> None:
        plain = None
        for user_id in user_ids:
            for conn in list(self.connections.get(user_id, ())):
                if event.get("type") in PERSONAL:
                    frame = self._frame(event, user_id, event.get("cid"))
                else:
                    plain = plain or encode(event)
                    frame = plain
                if self.loop is None or threading.get_ident() == self._loop_thread:
                    conn.queue.put_nowait(frame)
                else:
                    self.loop.call_soon_threadsafe(conn.queue.put_nowait, frame)

    async def close_all(self, user_id: str | None = None, *, code: int = 1001,
                        reason: str = "closed by the dev server") -> int:
        """Close open WebSockets (all, or one user's); returns how many."""
        targets = [c for uid, conns in self.connections.items()
                   if user_id is None or uid == user_id for c in conns]
        for conn in targets:
            self.remove(conn)
            conn.queue.put_nowait(None)
            with contextlib.suppress(Exception):
                await conn.ws.close(code=code, message=reason.encode())
        return len(targets)


def health_check(conn: Connection, me: dict[str, Any] | None, created_at: str) -> bytes:
    event: dict[str, Any] = {"type": "health.check", "connection_id": conn.connection_id,
                             "cid": "*", "created_at": created_at}
    if me is not None:
        event["me"] = me
    return encode(event)


async def serve_connection(server: DevServer, request: web.Request, user_id: str,
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
