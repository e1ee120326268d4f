"""A backend for tests: answers from a script, remembers every call, keeps a tiny server state.

Without a script entry a call succeeds the way the real backend does (a send answers with the
stored message; sending an id twice answers 400 code 4 "already exists"). A script entry for a
method name is a list of what its next calls do: a `BackendError` to raise, `bytes` to answer,
or a callable taking the call's keyword arguments.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import msgspec

from chatledger.sync.backend import BackendError, EventStream

T = "2026-11-25T12:00:00.000000Z"


def error(status: int, code: int, message: str = "error", retry_at: float | None = None,
          ) -> BackendError:
    body = msgspec.json.encode({"code": code, "message": message, "StatusCode": status,
                                "duration": "0.1ms", "more_info": ""})
    return BackendError(message, status=status, code=code, retry_at=retry_at, body=body)


class ScriptedBackend:
    """Implements `chatledger.sync.backend.Backend` from a script."""

    def __init__(self, *, delay: float = 0.0) -> None:
        self.script: dict[str, list[Any]] = defaultdict(list)
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.messages: dict[str, dict[str, Any]] = {}
        self.sent: dict[str, int] = defaultdict(int)  # message id -> sends applied
        self.reactions: dict[tuple[str, str], dict[str, Any]] = {}
        self.token = "t0"
        self.delay = delay
        self.in_flight = 0
        self.max_in_flight = 0
        self._seq = itertools.count()

    def then(self, method: str, *answers: Any) -> ScriptedBackend:
        self.script[method].extend(answers)
        return self

    def calls_to(self, method: str) -> list[dict[str, Any]]:
        return [kwargs for name, kwargs in self.calls if name == method]

    async def _do(self, method: str, kwargs: dict[str, Any], default: Callable[[], bytes]) -> bytes:
        self.calls.append((method, kwargs))
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.delay:
                await asyncio.sleep(self.delay)
            if self.script.get(method):
                answer = self.script[method].pop(0)
                if isinstance(answer, BaseException):
                    raise answer
                if callable(answer):
                    return answer(**kwargs)
                return answer
            return default()
        finally:
            self.in_flight -= 1

    # -- the Backend protocol ------------------------------------------------------------------

    async def send_message(self, cid: str, message: dict[str, Any], *,
                           skip_push: bool = False) -> bytes:
        def answer() -> bytes:
            if message["id"] in self.messages:
                raise error(400, 4, f"message with id {message['id']} already exists")
            stored = {**message, "cid": cid, "type": message.get("type", "regular"),
                      "user": {"id": "alice"}, "created_at": T, "updated_at": T,
                      "reaction_counts": {}, "seq": next(self._seq)}
            self.messages[message["id"]] = stored
            self.sent[message["id"]] += 1
            return msgspec.json.encode({"message": stored, "duration": "1ms"})
        return await self._do("send_message", {"cid": cid, "message": message,
                                               "skip_push": skip_push}, answer)

    async def update_message(self, message: dict[str, Any]) -> bytes:
        def answer() -> bytes:
            if message["id"] not in self.messages:
                raise error(404, 16, "message does not exist")
            self.messages[message["id"]].update(message)
            return msgspec.json.encode({"message": self.messages[message["id"]]})
        return await self._do("update_message", {"message": message}, answer)

    async def partial_update_message(self, message_id: str, *, set: dict[str, Any],
                                     unset: Any) -> bytes:
        def answer() -> bytes:
            if message_id not in self.messages:
                raise error(404, 16, "message does not exist")
            stored = self.messages[message_id]
            stored.update(set)
            for key in unset:
                stored.pop(key, None)
            return msgspec.json.encode({"message": stored})
        return await self._do("partial_update_message",
                              {"message_id": message_id, "set": set, "unset": unset}, answer)

    async def delete_message(self, message_id: str, *, hard: bool = False,
                             for_me: bool = False) -> bytes:
        def answer() -> bytes:
            if message_id not in self.messages:
                raise error(404, 16, "message does not exist")
            stored = self.messages.pop(message_id) if hard else self.messages[message_id]
            stored.update(type="deleted", deleted_at=T)
            return msgspec.json.encode({"message": stored})
        return await self._do("delete_message", {"message_id": message_id, "hard": hard,
                                                 "for_me": for_me}, answer)

    async def send_reaction(self, message_id: str, reaction: dict[str, Any], *,
                            enforce_unique: bool = False) -> bytes:
        def answer() -> bytes:
            if message_id not in self.messages:
                raise error(404, 16, "message does not exist")
            stored = {**reaction, "message_id": message_id, "user_id": "alice",
                      "created_at": T, "updated_at": T}
            self.reactions[(message_id, reaction["type"])] = stored
            return msgspec.json.encode({"message": self.messages[message_id],
                                        "reaction": stored})
        return await self._do("send_reaction", {"message_id": message_id, "reaction": reaction,
                                                "enforce_unique": enforce_unique}, answer)

    async def delete_reaction(self, message_id: str, reaction_type: str) -> bytes:
        def answer() -> bytes:
            if (message_id, reaction_type) not in self.reactions:
                raise error(404, 16, "reaction does not exist")
            stored = self.reactions.pop((message_id, reaction_type))
            return msgspec.json.encode({"message": self.messages.get(message_id, {}),
                                        "reaction": stored})
        return await self._do("delete_reaction", {"message_id": message_id,
                                                  "reaction_type": reaction_type}, answer)

    async def mark_read(self, cid: str, *, message_id: str | None = None,
                        thread_id: str | None = None) -> bytes:
        return await self._do("mark_read", {"cid": cid, "message_id": message_id,
                                            "thread_id": thread_id},
                              lambda: msgspec.json.encode({"event": {"type": "message.read",
                                                                     "cid": cid}}))

    async def mark_unread(self, cid: str, *, message_id: str) -> bytes:
        return await self._do("mark_unread", {"cid": cid, "message_id": message_id},
                              lambda: b'{"duration":"1ms"}')

    async def save_draft(self, cid: str, message: dict[str, Any]) -> bytes:
        return await self._do("save_draft", {"cid": cid, "message": message},
                              lambda: msgspec.json.encode({"draft": {"channel_cid": cid,
                                                                     "message": message}}))

    async def delete_draft(self, cid: str, *, parent_id: str | None = None) -> bytes:
        return await self._do("delete_draft", {"cid": cid, "parent_id": parent_id},
                              lambda: b'{"duration":"1ms"}')

    async def query_channels(self, filter: dict[str, Any], sort: Any = (), **kwargs: Any) -> bytes:
        return await self._do("query_channels", {"filter": filter, "sort": sort, **kwargs},
                              lambda: b'{"channels":[],"duration":"1ms"}')

    async def query_channel(self, cid: str, **kwargs: Any) -> bytes:
        kind, _, cid_id = cid.partition(":")
        return await self._do(
            "query_channel", {"cid": cid, **kwargs},
            lambda: msgspec.json.encode({"channel": {"cid": cid, "type": kind, "id": cid_id},
                                         "messages": [], "members": [], "read": []}))

    async def sync(self, channel_cids: Any, last_sync_at: str) -> bytes:
        return await self._do("sync", {"channel_cids": list(channel_cids),
                                       "last_sync_at": last_sync_at},
                              lambda: b'{"events":[],"inaccessible_cids":[],"duration":"1ms"}')

    async def connect(self) -> EventStream:
        raise error(500, -1, "the scripted backend has no event stream")

    def set_token(self, token: str) -> None:
        self.token = token

    async def close(self) -> None:
        pass
