"""The hub that fans the state's events out to the open WebSocket connections."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import uuid
from typing import Any

from aiohttp import web

from chatledger.sync.devserver.faults import PUSHED, FaultSet
from chatledger.sync.devserver.state import State
from chatledger.sync.devserver.wire import encode

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

    def __init__(self, state: State, faults: FaultSet | None = None) -> None:
        self.state = state
        # `ws_event` rules: a pushed frame lost on the way (the event stays in the history).
        self.faults = faults
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
                if self.faults is not None and self.faults.pick(PUSHED) is not None:
                    continue  # lost on the way to this connection
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
