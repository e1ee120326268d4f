"""`DevServer` (async) and `ThreadedDevServer` (a background thread with its own loop)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Callable, Coroutine, Iterable, Mapping
from datetime import datetime
from typing import Any, TypeVar

from aiohttp import web

from chatledger.sync.devserver import seeds
from chatledger.sync.devserver.actions import perform
from chatledger.sync.devserver.app import build_app
from chatledger.sync.devserver.auth import make_token
from chatledger.sync.devserver.faults import FaultSet
from chatledger.sync.devserver.ratelimit import RateLimiter
from chatledger.sync.devserver.state import State
from chatledger.sync.devserver.hub import Hub

T = TypeVar("T")
Seed = str | Callable[[State], Any] | Mapping[str, Any] | None


class DevServer:
    """A Stream-compatible chat server on loopback with in-memory state.

    `seed`: "demo", "empty" (or None), a callable taking the `State`, or
    `{"users": [...], "channels": [...]}`. `client_timeout` is how long a WebSocket client may
    stay silent before it is disconnected (default: twice `health_interval` plus 10 s).
    """

    def __init__(self, api_key: str = "devkey", secret: str = "devsecret", *,
                 health_interval: float = 30.0, client_timeout: float | None = None,
                 seed: Seed = None, rate_limits: Mapping[str, int | None] | None = None,
                 rng_seed: int = 0, max_sync_events: int = 2000) -> None:
        self.api_key = api_key
        self.secret = secret
        self.health_interval = health_interval
        self.client_timeout = (client_timeout if client_timeout is not None
                               else 2 * health_interval + 10)
        self.max_sync_events = max_sync_events
        self.state = State()
        self.faults = FaultSet(rng_seed)
        self.limiter = RateLimiter(rate_limits)
        self.hub = Hub(self.state, self.faults)
        self.state.listener = self.hub.deliver
        self.calls: dict[str, int] = {}  # API calls seen per endpoint, faults included
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self.host = "127.0.0.1"
        self.port: int | None = None
        self._apply_seed(seed)

    def _apply_seed(self, seed: Seed) -> None:
        if seed is None or seed == "empty":
            return
        if isinstance(seed, str):
            if seed not in seeds.SEEDS:
                raise ValueError(f"unknown seed {seed!r}; one of: {', '.join(seeds.SEEDS)}")
            seeds.SEEDS[seed](self.state)
        elif callable(seed):
            seed(self.state)
        else:
            self.seed(seed.get("users", ()), seed.get("channels", ()))

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Listen on host:port (0 picks a free port); returns the base URL."""
        if self._runner is not None:
            raise RuntimeError("the dev server is already running")
        self.hub.bind(asyncio.get_running_loop())
        # handler_cancellation: a hanging `timeout` fault must not hold up stop().
        runner = web.AppRunner(build_app(self), access_log=None, shutdown_timeout=0.5,
                               handler_cancellation=True)
        await runner.setup()
        site = web.TCPSite(runner, host, port)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner, self._site = runner, site
        # The runner's one site: its bound (host, port, ...) tells the port 0 picked.
        addresses = runner.addresses
        self.host, self.port = host, addresses[0][1] if addresses else port
        return self.url

    @property
    def url(self) -> str:
        if self.port is None:
            raise RuntimeError("the dev server is not running")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def ws_url(self) -> str:
        return "ws" + self.url[4:] + "/connect"

    async def stop(self) -> None:
        """Close every WebSocket, then the listener; safe to call twice."""
        runner, self._runner = self._runner, None
        if runner is None:
            return
        await self.hub.close_all(code=1001, reason="server shutting down")
        await runner.cleanup()
        self.port = None

    async def __aenter__(self) -> DevServer:
        if self._runner is None:
            await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- steering ----------------------------------------------------------------------------------

    def make_token(self, user_id: str, expires_at: float | datetime | None = None) -> str:
        return make_token(user_id, self.secret, expires_at)

    def seed(self, users: Iterable[seeds.SeedUser] = (),
             channels: Iterable[seeds.SeedChannel] = ()) -> dict[str, Any]:
        """Add users and channels (see `seeds.seed`); on a running server, call it from the
        server's loop (or through `ThreadedDevServer.seed`)."""
        return seeds.seed(self.state, users, channels)

    def act(self, user_id: str, action: str, **params: Any) -> dict[str, Any]:
        """Perform `action` as `user_id` (see `actions.ACTIONS`), emitting the usual events."""
        return perform(self.state, user_id, action, params)

    async def close_websockets(self, user_id: str | None = None) -> int:
        return await self.hub.close_all(user_id)

    def snapshot(self) -> dict[str, Any]:
        """What `GET /_dev/state` answers."""
        return {**self.state.dump(), "faults": self.faults.list(), "calls": dict(self.calls),
                "connections": self.hub.count()}


class ThreadedDevServer:
    """A `DevServer` on a background thread with its own event loop, for synchronous code.

        with ThreadedDevServer(seed="demo") as server:
            token = server.make_token("alice"); requests go to server.url
    """

    def __init__(self, api_key: str = "devkey", secret: str = "devsecret", *,
                 host: str = "127.0.0.1", port: int = 0, **kwargs: Any) -> None:
        self.server = DevServer(api_key, secret, **kwargs)
        self._host, self._port = host, port
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> ThreadedDevServer:
        started: concurrent.futures.Future[str] = concurrent.futures.Future()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            try:
                started.set_result(loop.run_until_complete(
                    self.server.start(self._host, self._port)))
            except BaseException as error:
                started.set_exception(error)
                loop.close()
                return
            try:
                loop.run_forever()
            finally:
                loop.run_until_complete(self.server.stop())
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.close()

        self._thread = threading.Thread(target=run, name="chatledger-devserver", daemon=True)
        self._thread.start()
        started.result(timeout=30)
        return self

    def call(self, coro: Coroutine[Any, Any, T], timeout: float | None = 30) -> T:
        """Run a coroutine on the server's loop and wait for its result."""
        if self._loop is None:
            raise RuntimeError("the dev server is not running")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def _sync(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        async def run() -> T:
            return fn(*args, **kwargs)
        return self.call(run())

    def stop(self) -> None:
        if self._loop is None or self._thread is None:
            return
        loop, thread = self._loop, self._thread
        self._loop = None
        self._thread = None
        asyncio.run_coroutine_threadsafe(self.server.stop(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(30)

    def __enter__(self) -> ThreadedDevServer:
        return self.start() if self._thread is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def ws_url(self) -> str:
        return self.server.ws_url

    @property
    def api_key(self) -> str:
        return self.server.api_key

    @property
    def faults(self) -> FaultSet:
        return self.server.faults  # thread-safe on its own

    @property
    def state(self) -> State:
        """The live state: read it only while no request is in flight; `snapshot()` is safe."""
        return self.server.state

    def make_token(self, user_id: str, expires_at: float | datetime | None = None) -> str:
        return self.server.make_token(user_id, expires_at)

    def seed(self, users: Iterable[seeds.SeedUser] = (),
             channels: Iterable[seeds.SeedChannel] = ()) -> dict[str, Any]:
        return self._sync(self.server.seed, list(users), list(channels))

    def act(self, user_id: str, action: str, **params: Any) -> dict[str, Any]:
        return self._sync(self.server.act, user_id, action, **params)

    def snapshot(self) -> dict[str, Any]:
        return self._sync(self.server.snapshot)

    def close_websockets(self, user_id: str | None = None) -> int:
        return self.call(self.server.close_websockets(user_id))


def run_in_thread(api_key: str = "devkey", secret: str = "devsecret", **kwargs: Any
                  ) -> ThreadedDevServer:
    """Start a `ThreadedDevServer` and return it (call `.stop()`, or use it in `with`)."""
    return ThreadedDevServer(api_key, secret, **kwargs).start()
