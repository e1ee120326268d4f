"""The sync client: keeps one user's store in step with the backend.

While connected, every WebSocket frame is appended to the log as it arrives. On each (re)connect
the client closes the gap: the retry stream is replayed first (the user's actions happened before
whatever the backend did meanwhile, as far as this client knows), then `/sync` fetches the events
the store missed since `last_sync_at`, at most 255 channels per call. A "too old" answer, or a gap
over 30 days, queries those channels again instead; nothing local is dropped for it.

Where the gap ends is read off the backend's own clock: the `created_at` of the first frame of
the new connection. Everything after it arrives on the connection, so `last_sync_at` can advance
to it once the catch-up is done, without trusting this machine's clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import inspect
import json
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec
from chatledger.eventstore.ingest import (
    CHANNEL_STATE,
    Entry,
    Rejection,
    query_channels_entries,
)
from chatledger.eventstore.log import AppendResult
from chatledger.eventstore.wire import WireError
from chatledger.eventstore.wire.times import format_time, parse_time
from chatledger.projections.store import RejectedInput
from chatledger.sync.answers import (
    KEPT_HEAD_BYTES,
    describe_body,
    missing_list,
    obviously_unusable,
)
from chatledger.sync.backend import (
    Backend,
    BackendError,
    ConnectionLost,
    EventStream,
    UnusableAnswer,
)
from chatledger.sync.diff import DEFAULT_MESSAGES, Differ, DiffReport
from chatledger.sync.diff import ProgressCallback as DiffProgress
from chatledger.sync.http import split_cid
from chatledger.sync.outcomes import NOT_FOUND_CODE, Backoff, failure_kind
from chatledger.sync.replayer import Replayer, ReplayReport, TokenProvider
from chatledger.sync.stores import AnyStore, done

logger = logging.getLogger("chatledger.sync")

SYNC_CHUNK = 255  # channels per `/sync` call, the backend's limit
EVERY_CHANNEL = 2**63 - 1  # as a `limit`: no limit (SQLite's largest)
# The backend's own word that a channel cannot be queried again: it does not exist (404, code
# 16) or the user may no longer read it (403, code 17). Its gap may then be passed over.
_CHANNEL_GONE = frozenset({(404, NOT_FOUND_CODE), (403, 17)})
# At most this many channels of one query-channels answer that the store refused are queried
# again one by one before a sync point is set; more make the answer a failed attempt (a hostile
# or broken server must not turn one answer into thousands of calls).
MAX_REFILED = 30
# The most channels a first load asks for, page by page (`channel_limit` a call).
MAX_FIRST_LOAD_CHANNELS = 1000
MAX_GAP_US = 30 * 24 * 3600 * 1_000_000  # the oldest `last_sync_at` the backend accepts
# How often, while connected, the store notes that it holds everything up to the latest frame,
# so that a crash costs at most this much of a re-sync.
MARK_EVERY = 60.0


class _FrameHead(msgspec.Struct):
    type: str = ""
    created_at: str | None = None
    connection_id: str | None = None


_HEAD = msgspec.json.Decoder(_FrameHead)


@dataclass
class SyncReport:
    """What one catch-up did."""

    since: str | None = None
    synced_at: str | None = None
    events: int = 0
    calls: int = 0
    requeried: list[str] = field(default_factory=list)
    loaded: list[str] = field(default_factory=list)  # channels filed from the channel list
    replay: ReplayReport | None = None


@dataclass
class Status:
    """The client's state, for a status line."""

    state: str = "offline"  # offline, connecting, catching up, online, stopped
    connection_id: str | None = None
    frames: int = 0
    quarantined: int = 0
    reconnects: int = 0
    last_error: str | None = None
    last_failure: str | None = None  # what kind of failure last_error is (outcomes.failure_kind)
    delivered: int = 0
    rejected: int = 0
    retrying: int = 0
    pending: int | None = None  # commands in the retry stream after the last pass
    last_sync_at: str | None = None


class SyncClient:
    """Runs a store against a backend: `await client.run(stop)` until `stop` is set.

    >>> client = SyncClient(store, StreamBackend(url, key, token, "alice"))   # doctest: +SKIP
    >>> await client.run(stop_event)                                           # doctest: +SKIP

    `channel_filter` and `channel_sort` choose the channels a first sync loads (default: the
    user's own channels, most recent first), and the list page each later catch-up queries
    again for channels joined meanwhile. `on_status` is called whenever `status` changes.
    """

    def __init__(
        self,
        store: AnyStore,
        backend: Backend,
        *,
        user_id: str | None = None,
        channel_filter: dict[str, Any] | None = None,
        channel_sort: Sequence[dict[str, Any]] | None = None,
        channel_limit: int = 30,
        concurrency: int = 8,
        backoff: Backoff | None = None,
        reconnect_backoff: Backoff | None = None,
        token_provider: TokenProvider | None = None,
        on_status: Callable[[Status], None] | None = None,
    ) -> None:
        self.store = store
        self.backend = backend
        self.user_id = user_id or store.user_id
        self.channel_filter = channel_filter or (
            {"members": {"$in": [self.user_id]}} if self.user_id else {})
        self.channel_sort = list(channel_sort or [{"field": "last_message_at", "direction": -1}])
        self.channel_limit = channel_limit
        self.token_provider = token_provider
        self.replayer = Replayer(store, backend, concurrency=concurrency, backoff=backoff,
                                 token_provider=token_provider)
        self.reconnect_backoff = reconnect_backoff or Backoff(base=0.5, factor=2.0, cap=30.0)
        self.on_status = on_status
        self.status = Status()
        self._last_frame_at: str | None = None
        # The backend's clock as the first frame of the connection gave it (µs), and this
        # machine's monotonic clock then: what later frames' times are checked against.
        self._backend_clock: tuple[int, float] | None = None
        self._marked_at = 0.0
        self._appending: set[asyncio.Future[Any]] = set()  # frames queued in background mode
        # Why a frame of this connection could not be stored (not a refusal of its content):
        # the connection is then given up, and its frames fetched again by the next catch-up.
        self._unstored: str | None = None
        # The last unusable answer quarantined (digest, quarantine id): the same again is not.
        self._last_unusable: tuple[bytes, int] | None = None

    # -- pieces an application can call on their own ------------------------------------------

    async def load_channels(
        self, filter: dict[str, Any] | None = None,
        sort: Sequence[dict[str, Any]] | None = None, *, limit: int | None = None,
        offset: int = 0, synced_at: str | None = None,
    ) -> list[str]:
        """Query channels online and append the answer; returns the cids the store filed.

        An answer the store cannot file (not JSON, an error object, the wrong shape, over the
        cap) is quarantined and raises `UnusableAnswer`: nothing is reported as loaded, and the
        query's cached result stays as it was. With `synced_at`, `last_sync_at` advances to it
        in the same transaction as the channels, and only over channels the store filed: a
        channel state the store refuses is queried once more first, and when it is refused
        again the sync point stays (see `_file_channels`). One page only (`limit`, `offset`):
        a first sync reads them all (`_first_load`)."""
        filter = self.channel_filter if filter is None else filter
        sort = self.channel_sort if sort is None else list(sort)
        raw = await self._read_answer("POST /channels", self.backend.query_channels(
            filter, sort, limit=limit or self.channel_limit, offset=offset), source="query",
            listing="channels")
        return await self._file_channels(raw, filter, sort, synced_at=synced_at,
                                         requery=synced_at is not None, offset=offset)

    async def _first_load(self, until: str, *, stored: Sequence[str] = ()) -> tuple[
            list[str], list[str]]:
        """A store that never synced loads its channel list: every page of it (`channel_limit`
        channels a call), since later `/sync` calls name only the channels the store holds and
        a channel left out would never be fetched. The last page carries the sync point.

        Bounded: at most `MAX_FIRST_LOAD_CHANNELS` channels, and a page that brings no channel
        not seen before (a server that ignores `offset`) is the last.

        Channels the store holds already (`stored`: ingested or imported before any sync) that
        the list does not bring are queried one by one, as after a "too old" answer: they have
        no sync point yet, and one past their gap would skip it for good. Returns the channels
        loaded from the list, and those queried so."""
        filter, sort = self.channel_filter, list(self.channel_sort)
        limit = max(1, self.channel_limit)
        loaded: list[str] = []
        seen: set[str] = set()
        others: list[str] = []
        offset = 0
        while True:
            raw = await self._read_answer("POST /channels", self.backend.query_channels(
                filter, sort, limit=limit, offset=offset), source="query", listing="channels")
            entries = query_channels_entries(raw, filter=filter, sort=sort, offset=offset)
            states = entries[:-1] if type(entries[-1]) is Entry else []
            cids = {cid for cid in (_state_cid_of(state) for state in states)
                    if cid is not None}
            last = (len(states) < limit or not cids - seen
                    or offset + len(states) >= MAX_FIRST_LOAD_CHANNELS)
            if last and len(states) >= limit and cids - seen:
                logger.warning("first load stopped at %d channels (MAX_FIRST_LOAD_CHANNELS)",
                               offset + len(states))
            others = [cid for cid in stored if cid not in seen and cid not in cids] if last else []
            filed = await self._file_channels(
                raw, filter, sort, synced_at=until if last and not others else None,
                requery=True, entries=entries, offset=offset)
            loaded.extend(cid for cid in filed if cid not in seen)
            seen.update(cids)
            seen.update(filed)
            if last:
                break
            offset += len(states)
        requeried: list[str] = []
        if others:
            requeried = await self._requery(others)
            await done(self.store.mark_synced(until, requeried=[*loaded, *requeried]))
        return loaded, requeried

    async def _file_channels(
        self, raw: bytes, filter: dict[str, Any], sort: list[dict[str, Any]], *,
        synced_at: str | None, requery: bool,
        entries: list[Entry | Rejection] | None = None, offset: int = 0,
    ) -> list[str]:
        """Append one query-channels answer; returns the cids the store filed (in the answer's
        order, then those a channel query filed after a refusal, `requery`).

        With `synced_at`, `last_sync_at` moves to it, and only over channels the store holds: a
        sync point past a channel the store refused would lose that channel for good (later
        `/sync` calls name only stored channels). So the answer is judged first, as the store
        will judge it (`query_channels_entries`): when every state will be filed, the channels
        and the sync point share one transaction; otherwise the answer is stored without it,
        each refused channel that names a cid is queried once more (`requery`), and the sync
        point is written after them, only when they were filed too (or the backend says they
        are gone). A state that names no channel cannot be asked for again or synced: it stays
        in the quarantine and is passed over."""
        what = "POST /channels"
        if entries is None:
            entries = query_channels_entries(raw, filter=filter, sort=sort, offset=offset)
        states = entries[:-1] if type(entries[-1]) is Entry else []
        refused = [entry for entry in states if type(entry) is Rejection]
        result = await done(self.store.ingest_query_channels(
            raw, filter=filter, sort=list(sort), synced_at=None if refused else synced_at,
            offset=offset))
        if not result.stored:
            raise self._refused(what, raw, result)
        filed = _filed_cids(entries, result.positions)
        if not refused or not (requery or synced_at is not None):
            return filed
        named = list(dict.fromkeys(
            cid for cid in (_lenient_state_cid(entry.payload) for entry in refused)
            if cid is not None and cid not in filed))
        if len(named) < len(refused):
            logger.warning("%d channel state(s) of %s name no channel: quarantined, passed over",
                           len(refused) - len(named), what)
        if not requery or len(named) > MAX_REFILED:
            # No leave to ask again, or more refused channels than are worth querying one by
            # one: the answer is a failed attempt (its bad states are in the quarantine), and
            # the sync point stays where it was.
            self.status.quarantined += 1
            unusable = UnusableAnswer(
                f"the answer to {what} could not be used: the store refused {len(named)} of "
                f"its channel states ({', '.join(named[:3])}{', ...' if len(named) > 3 else ''};"
                f" {result.quarantined[0].reason})", body=raw[:KEPT_HEAD_BYTES])
            raise unusable.quarantined_as(result.quarantined[0].quarantine_id)
        # `_requery` raises (the sync point kept) when a channel is refused again or the
        # backend answers anything but "gone": the next attempt loads the list again.
        filed.extend(await self._requery(named))
        if synced_at is not None:
            await done(self.store.mark_synced(synced_at, requeried=filed))
        return filed

    async def replay(self) -> ReplayReport:
        """Send the retry stream now."""
        report = await self.replayer.replay()
        self._count(report)
        return report

    async def sync_missed(self, until: str) -> SyncReport:
        """Fetch what the store missed between `last_sync_at` and `until` (RFC 3339, on the
        backend's clock), then advance `last_sync_at` to `until`.

        The sync point moves only over what was stored: after every answer the gap needed is
        in the log and the tables, in the same transaction as the last of them (the first
        load, and a `/sync` that one call covers) or right after it. Any answer that cannot be
        used raises (`UnusableAnswer`, quarantined; or the `BackendError` of the call) and
        leaves `last_sync_at` where it was, so the next attempt asks from there again."""
        report = SyncReport(since=await done(self.store.last_sync_at()), synced_at=until)
        # Every stored channel, not the store's default of the most active few: one sync
        # point covers them all, so a channel left out would have its gap skipped for good.
        cids = await done(self.store.channel_ids_to_sync(EVERY_CHANNEL))
        if report.since is None:
            # Never synced: the channel list itself is what is missing.
            report.loaded, report.requeried = await self._first_load(until, stored=cids)
        elif not cids:
            report.loaded = await self._new_channels(cids, synced_at=until)
        elif _sync_point_us(until) - _sync_point_us(report.since) > MAX_GAP_US:
            report.loaded = await self._new_channels(cids, synced_at=None)
            report.requeried = await self._requery(cids)
            await done(self.store.mark_synced(
                until, requeried=[*report.loaded, *report.requeried]))
        else:
            report.loaded = await self._new_channels(cids, synced_at=None)
            await self._sync_chunks(cids, report)
        await self._read_sync_point()
        return report

    async def _new_channels(self, stored: Sequence[str], *, synced_at: str | None) -> list[str]:
        """A catch-up after a reconnect asks for the first page of the channel list again
        (`channel_limit` channels, at most `MAX_FIRST_LOAD_CHANNELS`): `/sync` names only the
        channels the store holds, so a channel the user joined while offline would otherwise
        never be fetched. When the page brings a channel not in `stored`, the answer is filed
        (`_file_channels`: a refused state is queried once more); otherwise nothing is
        written. Returns the new channels filed. Any failure raises before a sync point moves.

        With `synced_at` (no `/sync` follows), the sync point moves to it: with the channels
        in one transaction, or on its own when the page brings nothing new."""
        filter, sort = self.channel_filter, list(self.channel_sort)
        limit = max(1, min(self.channel_limit, MAX_FIRST_LOAD_CHANNELS))
        raw = await self._read_answer("POST /channels", self.backend.query_channels(
            filter, sort, limit=limit, offset=0), source="query", listing="channels")
        entries = query_channels_entries(raw, filter=filter, sort=sort, offset=0)
        known = set(stored)
        if type(entries[-1]) is Entry and all(
                cid is None or cid in known
                for cid in (_state_cid_of(entry) for entry in entries[:-1])):
            if synced_at is not None:
                await done(self.store.mark_synced(synced_at))
            return []
        filed = await self._file_channels(raw, filter, sort, synced_at=synced_at, requery=True,
                                          entries=entries)
        return list(dict.fromkeys(cid for cid in filed if cid not in known))

    async def _sync_chunks(self, cids: Sequence[str], report: SyncReport) -> None:
        """`/sync` for `cids`, at most 255 a call. The last call's answer carries the new sync
        point in its own transaction, unless channels must be queried again after it."""
        assert report.since is not None and report.synced_at is not None
        chunks = [cids[start:start + SYNC_CHUNK] for start in range(0, len(cids), SYNC_CHUNK)]
        stale: list[str] = []
        what = "POST /sync"
        for number, chunk in enumerate(chunks, 1):
            report.calls += 1
            try:
                raw = await self._read_answer(what, self.backend.sync(chunk, report.since),
                                              listing="events")
            except UnusableAnswer:
                raise
            except BackendError as error:
                if error.status != 400:
                    raise
                stale.extend(chunk)  # too old, or too many events: query them instead
                continue
            last = number == len(chunks) and not stale
            result = await done(self.store.ingest_sync(
                raw, last_sync_at=report.since, synced_at=report.synced_at if last else None))
            if not result.stored:
                raise self._refused(what, raw, result)
            report.events += max(0, result.stored - 1)  # less the summary entry
            if last:
                return
        if stale:
            report.requeried = await self._requery(stale)
        await done(self.store.mark_synced(report.synced_at, requeried=report.requeried))

    async def _requery(self, cids: Sequence[str]) -> list[str]:
        queried = []
        for cid in cids:
            what = "POST /channels/{type}/{id}/query"
            try:
                split_cid(cid)
            except ValueError:
                # A cid the backend once gave without a `type:` part: no query can name it.
                # Like a channel that is gone, what the store has of it stays as it was.
                logger.warning("cannot query channel %r again: not a type:id cid", cid)
                continue
            try:
                raw = await self._read_answer(what, self.backend.query_channel(cid),
                                              source="query")
            except UnusableAnswer:
                raise
            except BackendError as error:
                if (error.status, error.code) in _CHANNEL_GONE:
                    continue  # gone, or no longer ours: what the store has stays as it was
                # Anything else (a suspended app, a cooldown, a proxy's 403 or 404 page) says
                # nothing about the channel: its gap is not filled, so the sync point stays.
                raise
            answered = _state_cid(raw)
            if answered is not None and answered != cid:
                # Another channel's state (a cache or gateway keyed wrongly): `cid` is not up
                # to date, so the sync point must not pass it.
                unusable = UnusableAnswer(
                    f"the answer to {what} could not be used: it is the state of channel "
                    f"{answered!r}, not {cid!r}", body=raw[:KEPT_HEAD_BYTES])
                await self._quarantine(unusable, "query")
                raise unusable
            result = await done(self.store.ingest_channel_state(raw))
            if not result.stored:
                raise self._refused(what, raw, result)
            queried.append(cid)
        return queried

    async def _read_answer(self, what: str, call: Awaitable[bytes], *,
                           source: str = "sync", listing: str | None = None) -> bytes:
        """The answer of a read call, when it can be one: an answer the adapter found unusable
        (over the size cap, a redirect, ...), or that is no JSON object or an error object, or
        (with `listing`) has no JSON array under that key, is quarantined and raised here
        (`UnusableAnswer`); the store checks the rest."""
        try:
            raw = await call
        except UnusableAnswer as error:
            if error.body is not None and error.quarantine_id is None:
                await self._quarantine(error, source)
            raise
        problem = obviously_unusable(raw)
        if problem is None and listing is not None:
            problem = missing_list(raw, listing)
        if problem is not None:
            unusable = UnusableAnswer(f"the answer to {what} could not be used: {problem}",
                                      body=raw)
            await self._quarantine(unusable, source)
            raise unusable
        return raw

    async def _quarantine(self, error: UnusableAnswer, source: str) -> None:
        """Keep an unusable answer in the quarantine, once: while the backend keeps giving the
        same one (a captive portal's page on every retry), it is kept only the first time."""
        body = error.body or b""
        digest = hashlib.blake2b(body, digest_size=16).digest()
        if self._last_unusable is not None and self._last_unusable[0] == digest:
            error.quarantined_as(self._last_unusable[1])
            return
        quarantine_id = await done(self.store.record_unusable_answer(
            body, error.message, source=source))
        self._last_unusable = (digest, quarantine_id)
        self.status.quarantined += 1
        error.quarantined_as(quarantine_id)

    def _refused(self, what: str, raw: bytes, result: AppendResult) -> UnusableAnswer:
        """The error for an answer the store refused as a whole (it is in the quarantine)."""
        self.status.quarantined += 1
        refusal = result.quarantined[0] if result.quarantined else None
        why = describe_body(raw, refusal.reason if refusal else "refused by the store")
        error = UnusableAnswer(f"the answer to {what} could not be used: {why}",
                               body=raw[:KEPT_HEAD_BYTES])
        return error.quarantined_as(refusal.quarantine_id) if refusal else error

    async def catch_up(self, until: str) -> SyncReport:
        """Replay the retry stream, then fetch what was missed up to `until`."""
        replay = await self.replay()
        report = await self.sync_missed(until)
        report.replay = replay
        return report

    async def diff(
        self, cids: Sequence[str] | None = None, *, messages: int = DEFAULT_MESSAGES,
        on_progress: DiffProgress | None = None,
    ) -> DiffReport:
        """Compare the store's tables with the server's current view, without changing the
        store: the user's channels (or `cids`) with their newest `messages` messages, members,
        reads and own reactions; each difference classified (see `chatledger.sync.diff`).
        Raises the `BackendError` of a call that failed (an unusable answer is not kept)."""
        return await Differ(self.store, self.backend, user_id=self.user_id).run(
            cids, messages=messages, on_progress=on_progress)

    def notify(self) -> None:
        """A local action was queued: replay it now if online."""
        self.replayer.notify()

    # -- the connection loop --------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Connect, catch up, follow the event stream; reconnect with backoff when it drops.

        Every failure is transient here (unreachable, too slow, an answer that could not be
        used, an error status): it shows in `status.last_error` and the client tries again
        after a backoff, from the last good sync point. The one exception: the backend refuses
        the credentials (HTTP 401, Stream codes 2, 5, 40-43) and there is no `token_provider`
        to ask for a fresh token; then `run` raises that `BackendError`."""
        failures = 0
        await self._read_sync_point()
        try:
            while not stop.is_set():
                self._set(state="connecting")
                try:
                    stream = await self.backend.connect()
                except BackendError as error:
                    failures += 1
                    self._set(state="offline", last_error=str(error),
                              last_failure=failure_kind(error))
                    await self._fresh_credentials_or_raise(error)
                    await _sleep_or_stop(stop, self._reconnect_delay(failures, error))
                    continue
                failed: BackendError | None = None
                try:
                    await self._connected(stream, stop)
                    failures = 0
                except BackendError as error:
                    failures += 1
                    failed = error
                    self._set(state="offline", last_error=str(error),
                              last_failure=failure_kind(error))
                    await self._fresh_credentials_or_raise(error)
                finally:
                    with contextlib.suppress(Exception):
                        await stream.close()
                if not stop.is_set():
                    self.status.reconnects += 1
                    await _sleep_or_stop(stop, self._reconnect_delay(max(1, failures), failed))
        finally:
            await self._appended_all()
            self._set(state="stopped")

    def _reconnect_delay(self, failures: int, error: BackendError | None) -> float:
        """The backoff before the next connection, and never less than the wait the backend
        named (a 429's reset, `Retry-After`; bounded by `Backoff.max_backend_wait`)."""
        now = time.time()
        return max(0.0, self.reconnect_backoff.next_try(failures, now, error) - now)

    async def _fresh_credentials_or_raise(self, error: BackendError) -> None:
        """After a failure: when the backend refused the credentials, get a fresh token from
        the application, or raise the refusal when there is no one to ask."""
        if failure_kind(error) != "credentials":
            return
        if self.token_provider is None:
            raise error
        try:
            token = self.token_provider()
            if inspect.isawaitable(token):
                token = await token
        except Exception:
            logger.warning("the token provider failed")
            return
        self.backend.set_token(str(token))

    async def run_once(self) -> SyncReport:
        """Connect, replay the retry stream, catch up, and disconnect."""
        await self._read_sync_point()
        self._set(state="connecting")
        stream = await self.backend.connect()
        try:
            report = await self._connected(stream, asyncio.Event(), follow=False)
        finally:
            with contextlib.suppress(Exception):
                await stream.close()
            await self._appended_all()
            self._set(state="stopped")
        assert report is not None
        return report

    async def _connected(
        self, stream: EventStream, stop: asyncio.Event, *, follow: bool = True,
    ) -> SyncReport | None:
        """One connection: its frames go to the log; catch up; then (when `follow`) replay new
        actions and keep appending frames until the connection drops or `stop` is set."""
        first = asyncio.Event()
        reader = asyncio.create_task(self._read(stream, first), name="chatledger-frames")
        online = asyncio.Event()
        replaying: asyncio.Task[None] | None = None
        caught_up = False
        try:
            started = asyncio.create_task(first.wait())
            await asyncio.wait([started, reader], return_when=asyncio.FIRST_COMPLETED)
            started.cancel()
            if reader.done():
                reader.result()  # the connection died before its first frame: raise why
                return None
            self._set(state="catching up", connection_id=stream.connection_id)
            until = self._last_frame_at or format_time(int(time.time() * 1_000_000))
            report = await self.catch_up(until)
            caught_up = True
            self._set(state="online", last_error=None, last_failure=None)
            if not follow:
                return report
            replaying = asyncio.create_task(self._replay_online(online), name="chatledger-replay")
            stopping = asyncio.create_task(stop.wait())
            await asyncio.wait([reader, stopping], return_when=asyncio.FIRST_COMPLETED)
            stopping.cancel()
            if reader.done():
                reader.result()
            return report
        finally:
            online.set()
            for task in (reader, replaying):
                if task is not None and not task.done():
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError, BackendError):
                        await task
            if caught_up:
                await self._mark_synced_quietly()

    async def _replay_online(self, stop: asyncio.Event) -> None:
        await self.replayer.run(stop, on_pass=self._count)

    async def _read(self, stream: EventStream, first: asyncio.Event) -> None:
        self._unstored = None
        self._backend_clock = None
        async for frame in stream:
            self._append(frame, stream.connection_id)
            if self._unstored is not None:
                raise ConnectionLost(f"a frame could not be stored ({self._unstored}); "
                                     "reconnecting to fetch it again")
            self.status.frames += 1
            try:
                head = _HEAD.decode(frame)
            except (msgspec.DecodeError, UnicodeError, RecursionError):
                # Not JSON, or nested past the decoder's stack: the store has judged the frame
                # already (quarantined); it tells no time, and must not end the connection.
                head = None
            if head is not None and head.created_at:
                at = _frame_time(head.created_at)
                if at is not None and not first.is_set():
                    self._backend_clock = (_sync_point_us(at), time.monotonic())
                elif at is not None and self._ahead_of_backend(at):
                    at = None  # stored, but no end of a gap: the previous end stands
                self._last_frame_at = at or self._last_frame_at
            if not first.is_set():
                first.set()
            elif self.status.state == "online" and time.monotonic() - self._marked_at > MARK_EVERY:
                await self._mark_synced_quietly()
            self._notify_status()

    def _ahead_of_backend(self, at: str) -> bool:
        """Whether a frame claims a later moment than the backend's clock can show now (its
        time at the first frame, plus the time elapsed here since, plus `FRAME_CLOCK_SLACK_US`).
        Such a frame (junk, or a hostile server's) must not end a gap: a sync point there would
        make the next catch-up skip everything sent in between."""
        if self._backend_clock is None:
            return False
        base_us, base_monotonic = self._backend_clock
        elapsed_us = int((time.monotonic() - base_monotonic) * 1_000_000)
        return _sync_point_us(at) > base_us + elapsed_us + FRAME_CLOCK_SLACK_US

    def _append(self, frame: bytes, connection_id: str | None) -> None:
        """Append a frame as it arrived. In background mode the frame is queued on the writer
        thread without waiting (the queue keeps arrival order); outcomes are counted here.

        A frame the store refuses (malformed) is in the quarantine: counted, and the stream
        goes on. A frame the store could not write at all (the disk, a lock) is not in the
        log: the sync point must not pass it, so the connection is given up (see `_read`)."""
        try:
            result = self.store.ingest(frame, source="websocket", connection_id=connection_id)
        except RejectedInput:
            self.status.quarantined += 1
            return
        except Exception as error:  # noqa: BLE001 - whatever it was, the frame is not stored
            self._not_stored(error)
            return
        if inspect.isawaitable(result):
            queued = asyncio.ensure_future(result)
            self._appending.add(queued)
            queued.add_done_callback(self._appended)

    def _appended(self, queued: asyncio.Future[Any]) -> None:
        self._appending.discard(queued)
        if queued.cancelled():
            return
        error = queued.exception()
        if isinstance(error, RejectedInput):
            self.status.quarantined += 1
        elif error is not None:
            self._not_stored(error)

    def _not_stored(self, error: BaseException) -> None:
        logger.error("could not append a frame: %s", error)
        self._unstored = f"{type(error).__name__}: {error}"
        self.status.last_error = f"could not append a frame: {self._unstored}"

    async def _appended_all(self) -> None:
        """Wait for the frames still queued for the writer (background mode)."""
        if self._appending:
            await asyncio.gather(*self._appending, return_exceptions=True)

    async def _mark_synced_quietly(self) -> None:
        """Everything up to the latest frame is in the store: note it, so a later catch-up
        starts there. Only once a catch-up has run for this connection (else there may be a
        gap before the connection that `/sync` has not filled yet)."""
        await self._appended_all()  # the frames the mark covers are in (or known lost)
        if self._last_frame_at is None or self._unstored is not None:
            return
        try:
            await done(self.store.mark_synced(self._last_frame_at))
            self._marked_at = time.monotonic()
            await self._read_sync_point()
        except Exception:
            logger.warning("could not record the sync point", exc_info=True)

    # -- status --------------------------------------------------------------------------------

    async def _read_sync_point(self) -> None:
        """Put where the store stands (`last_sync_at`, the commands waiting) into the status:
        before connecting, so the first status line says it, and after each catch-up or mark."""
        self.status.last_sync_at = await done(self.store.last_sync_at())
        self.status.pending = len(await done(self.store.outbox.retry_stream_ids()))

    def _count(self, report: ReplayReport) -> None:
        self.status.delivered += report.delivered
        self.status.rejected += report.rejected
        self.status.retrying = report.retrying
        if report.left is not None:
            self.status.pending = report.left
        self._notify_status()

    def _set(self, **changes: Any) -> None:
        for key, value in changes.items():
            setattr(self.status, key, value)
        self._notify_status()

    def _notify_status(self) -> None:
        if self.on_status is not None:
            self.on_status(self.status)


class _Channel(msgspec.Struct):
    cid: str = ""
    type: str = ""
    id: str = ""


class _State(msgspec.Struct):
    channel: _Channel | None = None


_STATE = msgspec.json.Decoder(_State)


def _channel_cid(channel: _Channel) -> str:
    return channel.cid or (f"{channel.type}:{channel.id}" if channel.type and channel.id else "")


def _state_cid(raw: bytes) -> str | None:
    """The cid a channel state is about; None when it names none readably (the store judges
    such an answer itself)."""
    try:
        channel = _STATE.decode(raw).channel
    except (msgspec.DecodeError, UnicodeError, RecursionError):
        return None
    return (_channel_cid(channel) or None) if channel is not None else None


def _filed_cids(entries: Sequence[Entry | Rejection], positions: Sequence[int | None]) -> list[str]:
    """The cids of a query-channels answer that the store filed, in the answer's order.
    `entries` are the answer as the store judges it (`query_channels_entries`: one per channel
    state, then the query's result); `positions` the append's, in the same order (None where
    the state was quarantined). Read from the entries, not by decoding the answer again: an
    answer the store split by structure (one state's bytes are no JSON) is no JSON as a whole."""
    return [entry.stream for entry, position in zip(entries[:-1], positions)
            if position is not None and type(entry) is Entry and entry.type == CHANNEL_STATE]


def _state_cid_of(entry: Entry | Rejection) -> str | None:
    """The cid a channel state of an answer names: the stream the store files it in, or for one
    it refuses, as read leniently (no state is decoded again that the store has judged)."""
    return entry.stream if type(entry) is Entry else _lenient_state_cid(entry.payload)


def _lenient_state_cid(raw: bytes) -> str | None:
    """The cid a refused channel state names, read leniently (its bytes may be no JSON to a
    strict decoder: a lone surrogate, bytes that are not UTF-8), so that it can be asked for
    again; None when it names none."""
    cid = _state_cid(raw)
    if cid is not None:
        return cid
    try:
        state = json.loads(raw.decode("utf-8", "replace"))
    except (ValueError, RecursionError):
        return None
    channel = state.get("channel") if isinstance(state, dict) else None
    if not isinstance(channel, dict):
        return None
    cid, kind, name = channel.get("cid"), channel.get("type"), channel.get("id")
    if isinstance(cid, str) and cid:
        return cid
    if isinstance(kind, str) and isinstance(name, str) and kind and name:
        return f"{kind}:{name}"
    return None


# How far ahead of this machine's clock a frame's time may be and still end a gap: a later
# time would claim events not yet sent (a backend with a broken clock, or a hostile one).
MAX_CLOCK_LEAD_US = 24 * 3600 * 1_000_000
# How far a later frame of a connection may be dated after the backend's clock as its first
# frame gave it (plus the time elapsed since): events are dated when the backend makes them,
# so more than this is a frame that claims a moment that has not come yet.
FRAME_CLOCK_SLACK_US = 60 * 1_000_000


def _frame_time(created_at: str) -> str | None:
    """A frame's `created_at` as an end of the gap, or None when it is unreadable (a bad frame
    must not stop sync) or too far in the future; then the previous end stands."""
    try:
        when = parse_time(created_at)
    except WireError:
        return None
    # The unset time (0001-01-01T00:00:00Z) tells no moment: unreadable as an end, like the rest.
    if when is None or when > time.time() * 1_000_000 + MAX_CLOCK_LEAD_US:
        return None
    return created_at


def _sync_point_us(value: str) -> int:
    """A sync point (`last_sync_at`, or the end of a gap) in µs. Both come from `_frame_time`
    or the clock, never the unset time, which would tell no gap."""
    when = parse_time(value)
    if when is None:
        raise ValueError(f"not a sync point: {value!r}")
    return when


async def _sleep_or_stop(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)
