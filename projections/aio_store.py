"""`AsyncChatStore`: the asyncio counterpart of `ChatStore`, over the same file (background mode).

Same method names as `ChatStore`, awaitable. The event loop never touches SQLite:

- Writes go to a `BackgroundWriter`: one thread owns the write connection and applies queued work
  in order, many small appends in one transaction when they arrive together. A write is queued
  when the method is *called* (each returns an `asyncio.Future`), so calling several before
  awaiting any keeps their order, and `close()` writes everything that was called. Local
  actions queued one after another share a transaction too (`JOINABLE_METHODS`), and
  `batch()` groups them explicitly.
- Reads run in a small thread pool on the datastore's reader connections; each read is one read
  transaction, so it sees a consistent snapshot. A read sees every write that was awaited before
  it was called (not necessarily writes still queued).

Every public method of `ChatStore` has its counterpart here, written out with its types. Which
route each takes: the local actions (`JOINABLE_METHODS`) join the writer's transactions; the
other writes (`WRITE_METHODS`, and names that are one of `WRITE_PREFIXES` or start with one of
them followed by "_") run on the writer thread in call order; the rest run in the read pool.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import functools
import itertools
import os
from collections.abc import AsyncIterator, Callable, Generator, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from chatledger.eventstore.datastore import Synchronous
from chatledger.eventstore.importer import ImportReport, Kind
from chatledger.eventstore.ingest import Payload
from chatledger.eventstore.log import AppendResult, Damage, LogEntry, StoreError
from chatledger.eventstore.schema import Source
from chatledger.eventstore.writer import (
    DEFAULT_MAX_BATCH_BYTES,
    DEFAULT_MAX_BATCH_EVENTS,
    DEFAULT_YIELD_EVERY,
    BackgroundWriter,
    run_together,
)
from chatledger.projections.actions import ActionsMixin
from chatledger.projections.aio_outbox import AsyncOutbox
from chatledger.projections.ids import IdKind
from chatledger.projections.results import (
    ChannelMute, ChannelState, ChannelSummary, ConnectionInfo, QuarantineEntry, StoreStats,
    StoredDraft, StoredMember, StoredMessage, StoredPoll, StoredRead, StoredReaction,
    StoredReminder, StoredThread, StoredUser, ThreadRead, UnprojectedEntry, UnreadCounts,
    UserMute,
)
from chatledger.projections.store import ChatStore, RejectedInput
from chatledger.projections.times import TimeLike

if TYPE_CHECKING:
    from typing import BinaryIO

    from chatledger.eventstore.backup import ProgressCallback as BackupProgress
    from chatledger.eventstore.seal import ChainReport
    from chatledger.eventstore.userfiles import StoreFile
    from chatledger.projections.engine import Difference, ProgressCallback
    from chatledger.projections.history import Explanation, PastStore
    from chatledger.projections.ranges import MessagePage

T = TypeVar("T")

# Methods of ChatStore that write; they go through the writer thread, in call order.
WRITE_METHODS: frozenset[str] = frozenset({
    "ingest", "ingest_many", "ingest_query_channels", "ingest_channel_state", "ingest_sync",
    "rebuild", "record_unusable_answer", "rekey",
})
# Name stems of the methods that write: the local actions (send_, update_, delete_, mark_, pin_,
# ...) and the maintenance jobs (rebuild, train_dictionary, checkpoint, vacuum, retain, ...).
WRITE_PREFIXES: tuple[str, ...] = (
    "ingest", "append", "import", "send", "update", "partial_update", "delete", "mark", "save",
    "retry", "cancel", "rebuild", "record", "set", "apply", "pin", "unpin", "train", "checkpoint",
    "vacuum", "compact", "retain",
)
# The local actions: each does all its writing in `EventLog.write_transaction()`, so the writer
# runs several queued one after another in one transaction (a savepoint each), and `batch()`
# can group them.
JOINABLE_METHODS: frozenset[str] = frozenset(
    name for name in vars(ActionsMixin) if not name.startswith("_"))
# Lifecycle names with their own async versions here; never forwarded.
_OWN_NAMES = frozenset({"open", "open_file", "close", "flush", "flush_user", "wrap", "batch"})
# The batch open in this task (and the tasks it starts), if any: see `AsyncChatStore.batch`.
_OPEN_BATCH: contextvars.ContextVar[_Batch | None] = contextvars.ContextVar(
    "chatledger_open_batch", default=None)
DEFAULT_READ_THREADS = 4


def is_write_method(name: str) -> bool:
    """True when `ChatStore.<name>` is treated as a write (see the module doc)."""
    if name in WRITE_METHODS:
        return True
    return any(name == p or name.startswith(p + "_") for p in WRITE_PREFIXES)


def _single_position(result: AppendResult) -> int:
    """`ChatStore.ingest`'s answer for one event (runs on the writer thread)."""
    if result.quarantined:
        rejected = result.quarantined[0]
        raise RejectedInput(rejected.reason, rejected.quarantine_id)
    position = result.positions[0]
    assert position is not None
    return position


class AsyncChatStore:
    """One user's store for asyncio code: `ChatStore`'s methods, awaitable (background mode).

    >>> async with AsyncChatStore.open("./data", "alice") as store:      # doctest: +SKIP
    ...     position = await store.ingest(frame)
    ...     page = await store.history(cid="messaging:general", limit=50)

    `AsyncChatStore.open(...)` can be awaited (`store = await AsyncChatStore.open(...)`) or used
    directly in `async with`. `AsyncChatStore.wrap(chat_store)` adopts a `ChatStore` that is
    already open; from then on write to it only through this object.
    """

    def __init__(
        self,
        store: ChatStore,
        *,
        max_batch_events: int = DEFAULT_MAX_BATCH_EVENTS,
        max_batch_bytes: int = DEFAULT_MAX_BATCH_BYTES,
        read_threads: int = DEFAULT_READ_THREADS,
        yield_every: float | None = DEFAULT_YIELD_EVERY,
    ) -> None:
        self.store = store
        self.writer = BackgroundWriter(
            store.log, max_batch_events=max_batch_events, max_batch_bytes=max_batch_bytes,
            yield_every=yield_every,
        )
        self._reads = ThreadPoolExecutor(max_workers=read_threads, thread_name_prefix="chatledger-read")
        self._closing: asyncio.Future[None] | None = None

    # -- opening ---------------------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        data_dir: str | os.PathLike[str] | None,
        user_id: str,
        *,
        synchronous: Synchronous = "NORMAL",
        compression: bool = True,
        create: bool = True,
        lock_timeout: float = 5.0,
        max_batch_events: int = DEFAULT_MAX_BATCH_EVENTS,
        max_batch_bytes: int = DEFAULT_MAX_BATCH_BYTES,
        read_threads: int = DEFAULT_READ_THREADS,
        yield_every: float | None = DEFAULT_YIELD_EVERY,
        **open_options: Any,
    ) -> _Opening:
        """Open the store of `user_id`, as `ChatStore.open` does, off the event loop.

        `lock_timeout` is how many seconds a write waits while another process holds the file's
        write lock; past it, the awaiting caller gets `WriteLockTimeout` (an `OperationalError`).
        `max_batch_events` and `max_batch_bytes` bound one merged transaction; `read_threads`
        is the size of the read pool; `yield_every` is how many seconds the writer works before
        it hands the GIL to the event loop if the loop wants it (None: never; see `GilCourtesy`).
        Other keywords go to `ChatStore.open`.
        """
        opener = functools.partial(
            ChatStore.open, data_dir, user_id, synchronous=synchronous, compression=compression,
            create=create, lock_timeout=lock_timeout, **open_options,
        )
        tuning = dict(max_batch_events=max_batch_events, max_batch_bytes=max_batch_bytes,
                      read_threads=read_threads, yield_every=yield_every)
        return _Opening(lambda: cls._adopt(opener(), tuning))

    @classmethod
    def open_file(
        cls,
        path: str | os.PathLike[str],
        *,
        synchronous: Synchronous = "NORMAL",
        compression: bool = True,
        max_batch_events: int = DEFAULT_MAX_BATCH_EVENTS,
        max_batch_bytes: int = DEFAULT_MAX_BATCH_BYTES,
        read_threads: int = DEFAULT_READ_THREADS,
        yield_every: float | None = DEFAULT_YIELD_EVERY,
        key: bytes | None = None,
    ) -> _Opening:
        """`ChatStore.open_file`, off the event loop (":memory:" works too)."""
        tuning = dict(max_batch_events=max_batch_events, max_batch_bytes=max_batch_bytes,
                      read_threads=read_threads, yield_every=yield_every)
        return _Opening(lambda: cls._adopt(
            ChatStore.open_file(path, synchronous=synchronous, compression=compression, key=key),
            tuning))

    @classmethod
    def _adopt(cls, store: ChatStore, tuning: dict[str, Any]) -> AsyncChatStore:
        try:
            return cls(store, **tuning)
        except BaseException:
            store.close()  # a bad tuning value must not leave the file open
            raise

    @classmethod
    def wrap(cls, store: ChatStore, **tuning: Any) -> AsyncChatStore:
        """Background mode for an open `ChatStore` (closing this object closes it)."""
        return cls(store, **tuning)

    @property
    def path(self) -> Path | None:
        return self.store.path

    @property
    def user_id(self) -> str | None:
        return self.store.user_id

    @property
    def closed(self) -> bool:
        return self._closing is not None

    # -- writing ---------------------------------------------------------------------------------

    def ingest(
        self, event: Payload | Any, *, source: Source | str = "websocket",
        connection_id: str | None = None,
    ) -> asyncio.Future[int]:
        """Queue one event; resolves to its log position, or raises `RejectedInput`."""
        self._outside_batch("ingest")
        queued: concurrent.futures.Future[int] = self.writer.append_events(  # type: ignore[assignment]
            [event], source=source, connection_id=connection_id, finish=_single_position)
        return asyncio.wrap_future(queued)

    def ingest_many(
        self, events: Iterable[Payload | Any], *, source: Source | str = "websocket",
        connection_id: str | None = None,
    ) -> asyncio.Future[AppendResult]:
        """Queue a batch of events (one transaction, perhaps shared with other callers' batches)."""
        self._outside_batch("ingest_many")
        return asyncio.wrap_future(
            self.writer.append_events(events, source=source, connection_id=connection_id))

    def ingest_query_channels(
        self, response: Payload | Any, *, filter: dict[str, Any] | None = None,
        sort: list[Any] | None = None, synced_at: str | None = None, offset: int = 0,
    ) -> asyncio.Future[AppendResult]:
        return self._write(self.store.ingest_query_channels, response, filter=filter, sort=sort,
                           synced_at=synced_at, offset=offset)

    def ingest_channel_state(self, state: Payload | Any) -> asyncio.Future[AppendResult]:
        return self._write(self.store.ingest_channel_state, state)

    def ingest_sync(
        self, response: Payload | Any, *, last_sync_at: str | None = None,
        synced_at: str | None = None,
    ) -> asyncio.Future[AppendResult]:
        return self._write(self.store.ingest_sync, response, last_sync_at=last_sync_at,
                           synced_at=synced_at)

    @functools.cached_property
    def outbox(self) -> AsyncOutbox:
        """The outbox, awaitable: `await store.outbox.pending()`, `await store.outbox.record(...)`."""
        return AsyncOutbox(self.store.outbox, self._join, self._read)

    def _write(self, method: Callable[..., T], /, *args: Any, **kwargs: Any) -> asyncio.Future[T]:
        # The whole method (decoding included) runs on the writer thread, in queue order.
        self._outside_batch(getattr(method, "__name__", "this call"))
        return asyncio.wrap_future(self.writer.call(functools.partial(method, *args, **kwargs)))

    def _open_batch(self) -> _Batch | None:
        """The batch of this store open in the calling task, if any."""
        batch = _OPEN_BATCH.get()
        return batch if batch is not None and batch.store is self else None

    def _outside_batch(self, name: str) -> None:
        if self._open_batch() is not None:
            raise StoreError(f"{name} cannot be part of a batch: only local actions and outbox "
                             "writes can (call it after the block)")

    def _join(self, method: Callable[..., T], /, *args: Any, **kwargs: Any) -> asyncio.Future[T]:
        """`_write` for a local action or an outbox write: in the open batch, or joinable."""
        call = functools.partial(method, *args, **kwargs)
        batch = self._open_batch()
        if batch is not None:
            return batch.add(call)
        return asyncio.wrap_future(self.writer.call(call, joinable=True))

    def batch(self) -> _Batch:
        """`async with store.batch():` the local actions and outbox writes called in the block
        run together when it ends, in one transaction on the writer thread, in call order (what
        `ChatStore.batch()` does). An action that raises is undone alone, and its future raises;
        an exception that leaves the block cancels them all (nothing is written).

        Their futures resolve when the block ends: await them after it (awaiting one inside
        raises `RuntimeError`, since nothing has run yet). Other writes (ingesting) cannot be
        called inside the block. Outside a batch, actions queued one after another are joined
        into one transaction anyway; a batch makes it all or nothing and keeps anything else
        from running in between.

        >>> async with store.batch():                               # doctest: +SKIP
        ...     sends = [store.send_message(cid, text) for text in texts]
        >>> ids = [await s for s in sends]                          # doctest: +SKIP
        """
        if self._closing is not None:
            raise StoreError("the store is closed")
        return _Batch(self)

    # -- reading, and everything else ChatStore has ----------------------------------------------

    def _read(self, method: Callable[..., T], /, *args: Any, **kwargs: Any) -> asyncio.Future[T]:
        if self._closing is not None:
            raise StoreError("the store is closed")
        loop = asyncio.get_running_loop()
        return loop.run_in_executor(self._reads, functools.partial(method, *args, **kwargs))

    def history(
        self, *, cid: str | None = None, types: Iterable[str] = (),
        since: TimeLike | None = None, until: TimeLike | None = None,
        limit: int | None = None, newest_first: bool = False,
    ) -> asyncio.Future[list[LogEntry]]:
        """`ChatStore.history`, in the read pool."""
        return self._read(self.store.history, cid=cid, types=tuple(types), since=since,
                          until=until, limit=limit, newest_first=newest_first)

    async def iter_history(
        self, *, cid: str | None = None, types: Iterable[str] = (),
        since: TimeLike | None = None, until: TimeLike | None = None,
        newest_first: bool = False,
    ) -> AsyncIterator[LogEntry]:
        """`ChatStore.iter_history` as an async iterator: each page is read in the read pool."""
        entries = self.store.iter_history(cid=cid, types=tuple(types), since=since, until=until,
                                          newest_first=newest_first)
        while page := await self._read(_next_page, entries):
            for entry in page:
                yield entry

    def import_file(
        self, file: BinaryIO, *, kind: Kind = "auto", source: str = "import",
        batch_size: int = 1_000, on_progress: Callable[[int], None] | None = None,
        again: bool = False, resume: bool = False,
    ) -> asyncio.Future[ImportReport]:
        """`ChatStore.import_file`, on the writer thread, in call order."""
        return self._write(self.store.import_file, file, kind=kind, source=source,
                           batch_size=batch_size, on_progress=on_progress, again=again,
                           resume=resume)

    def unknown_filter_fields(
        self, filter: dict[str, Any] | None = None, sort: Any = None
    ) -> asyncio.Future[dict[str, list[str]]]:
        """`ChatStore.unknown_filter_fields`, in the read pool."""
        return self._read(self.store.unknown_filter_fields, filter, sort)

    def damage(self) -> asyncio.Future[Damage | None]:
        """`ChatStore.damage`, in the read pool."""
        return self._read(self.store.damage)

    def projected_position(self) -> asyncio.Future[int]:
        """`ChatStore.projected_position`, in the read pool."""
        return self._read(self.store.projected_position)

    @staticmethod
    async def check_file(
        path: str | os.PathLike[str], *, key: bytes | None = None
    ) -> Damage | None:
        """`ChatStore.check_file` off the event loop (for a file that is not open)."""
        return await asyncio.to_thread(ChatStore.check_file, path, key=key)

    @staticmethod
    async def forget_read_tables(
        path: str | os.PathLike[str], *, key: bytes | None = None
    ) -> None:
        """`ChatStore.forget_read_tables` off the event loop (for a file that is not open)."""
        await asyncio.to_thread(ChatStore.forget_read_tables, path, key=key)

    def note(self, name: str) -> asyncio.Future[str | None]:
        """`ChatStore.note`, in the read pool."""
        return self._read(self.store.note, name)

    def set_note(self, name: str, value: str | None) -> asyncio.Future[None]:
        """`ChatStore.set_note`, on the writer thread, in call order."""
        return self._write(self.store.set_note, name, value)

    @staticmethod
    def store_file(data_dir: str | os.PathLike[str] | None, user_id: str) -> Path:
        """`ChatStore.store_file` (a name only: nothing is read, so nothing to await)."""
        return ChatStore.store_file(data_dir, user_id)

    @staticmethod
    async def store_files(data_dir: str | os.PathLike[str] | None, user_id: str) -> list[Path]:
        """`ChatStore.store_files` off the event loop."""
        return await asyncio.to_thread(ChatStore.store_files, data_dir, user_id)

    def last_position(self) -> asyncio.Future[int]:
        """`ChatStore.last_position`, in the read pool."""
        return self._read(self.store.last_position)

    def is_empty(self) -> asyncio.Future[bool]:
        """`ChatStore.is_empty`, in the read pool."""
        return self._read(self.store.is_empty)

    def ids_with_prefix(
        self, kind: IdKind, prefix: str = "", *, limit: int = 20
    ) -> asyncio.Future[list[str]]:
        """`ChatStore.ids_with_prefix`, in the read pool."""
        return self._read(self.store.ids_with_prefix, kind, prefix, limit=limit)

    def resolve_id(self, kind: IdKind, text: str) -> asyncio.Future[str | None]:
        """`ChatStore.resolve_id`, in the read pool."""
        return self._read(self.store.resolve_id, kind, text)

    def suggest_ids(self, kind: IdKind, text: str, *, limit: int = 3) -> asyncio.Future[list[str]]:
        """`ChatStore.suggest_ids`, in the read pool."""
        return self._read(self.store.suggest_ids, kind, text, limit=limit)

    @staticmethod
    async def list_users(data_dir: str | os.PathLike[str] | None = None) -> list[StoreFile]:
        """`ChatStore.list_users` off the event loop."""
        return await asyncio.to_thread(ChatStore.list_users, data_dir)

    def quarantine(self, *, limit: int | None = None) -> asyncio.Future[list[QuarantineEntry]]:
        return self._read(self.store.quarantine, limit=limit)

    def stats(self) -> asyncio.Future[StoreStats]:
        return self._read(self.store.stats)

    # ChatStore's other public methods, each written out so that editors and type checkers see
    # them (as httpx writes out Client and AsyncClient). `tests/test_background.py` checks that
    # none is missing.

    def as_of(
        self, *, position: int | None = None, time: TimeLike | None = None,
        cids: Sequence[str] | None = None, message_id: str | None = None,
        on_progress: ProgressCallback | None = None,
    ) -> asyncio.Future[PastStore]:
        """`ChatStore.as_of`, in the read pool."""
        return self._read(self.store.as_of, position=position, time=time, cids=cids,
                          message_id=message_id, on_progress=on_progress)

    def backup(
        self,
        dest: str | os.PathLike[str],
        *,
        overwrite: bool = False,
        on_progress: BackupProgress | None = None,
    ) -> asyncio.Future[dict[str, Any]]:
        """`ChatStore.backup`, in the read pool."""
        return self._read(self.store.backup, dest, overwrite=overwrite, on_progress=on_progress)

    def bundle(
        self,
        dest: str | os.PathLike[str],
        *,
        redact: bool = False,
        since: int | None = None,
        cids: Iterable[str] | None = None,
    ) -> asyncio.Future[dict[str, Any]]:
        """`ChatStore.bundle`, in the read pool (it reads a snapshot; the copy is its own file)."""
        return self._read(self.store.bundle, dest, redact=redact, since=since,
                          cids=list(cids) if cids is not None else None)

    def bundle_info(self) -> asyncio.Future[dict[str, Any] | None]:
        """`ChatStore.bundle_info`, in the read pool."""
        return self._read(self.store.bundle_info)

    def cached_channels(
        self, filter: dict[str, Any] | None = None, sort: list[dict[str, Any]] | None = None
    ) -> asyncio.Future[list[str] | None]:
        """`ChatStore.cached_channels`, in the read pool."""
        return self._read(self.store.cached_channels, filter, sort)

    def channel(self, cid: str, *, messages: int = 25) -> asyncio.Future[ChannelState | None]:
        """`ChatStore.channel`, in the read pool."""
        return self._read(self.store.channel, cid, messages=messages)

    def channel_count(self, filter: dict[str, Any] | None = None) -> asyncio.Future[int]:
        """`ChatStore.channel_count`, in the read pool."""
        return self._read(self.store.channel_count, filter)

    def channel_ids_to_sync(self, limit: int = 250) -> asyncio.Future[list[str]]:
        """`ChatStore.channel_ids_to_sync`, in the read pool."""
        return self._read(self.store.channel_ids_to_sync, limit)

    def channel_mutes(self, *, expired: bool = False) -> asyncio.Future[list[ChannelMute]]:
        """`ChatStore.channel_mutes`, in the read pool."""
        return self._read(self.store.channel_mutes, expired=expired)

    def channels(
        self,
        filter: dict[str, Any] | None = None,
        sort: list[dict[str, Any]] | None = None,
        *,
        limit: int = 30,
        offset: int = 0,
    ) -> asyncio.Future[list[ChannelSummary]]:
        """`ChatStore.channels`, in the read pool."""
        return self._read(self.store.channels, filter, sort, limit=limit, offset=offset)

    def connection_info(self) -> asyncio.Future[ConnectionInfo]:
        """`ChatStore.connection_info`, in the read pool."""
        return self._read(self.store.connection_info)

    def delete_draft(self, cid: str, *, parent_id: str | None = None) -> asyncio.Future[str]:
        """`ChatStore.delete_draft`, on the writer thread, joinable."""
        return self._join(self.store.delete_draft, cid, parent_id=parent_id)

    def delete_message(
        self, message_id: str, *, hard: bool = False, for_me: bool = False,
        known_only: bool = False,
    ) -> asyncio.Future[str]:
        """`ChatStore.delete_message`, on the writer thread, joinable."""
        return self._join(self.store.delete_message, message_id, hard=hard, for_me=for_me,
                          known_only=known_only)

    def delete_reaction(
        self, message_id: str, type: str, *, known_only: bool = False
    ) -> asyncio.Future[str]:
        """`ChatStore.delete_reaction`, on the writer thread, joinable."""
        return self._join(self.store.delete_reaction, message_id, type, known_only=known_only)

    def draft(
        self, cid: str, parent_id: str | None = None
    ) -> asyncio.Future[StoredDraft | None]:
        """`ChatStore.draft`, in the read pool."""
        return self._read(self.store.draft, cid, parent_id)

    def drafts(self, cid: str | None = None) -> asyncio.Future[list[StoredDraft]]:
        """`ChatStore.drafts`, in the read pool."""
        return self._read(self.store.drafts, cid)

    def explain(
        self, message_id: str, *, unchanged: bool = False
    ) -> asyncio.Future[list[Explanation]]:
        """`ChatStore.explain`, in the read pool."""
        return self._read(self.store.explain, message_id, unchanged=unchanged)

    def export_channels(
        self,
        file: BinaryIO,
        *,
        cids: Iterable[str] | None = None,
        messages: int | None = None,
        include_local: bool = False,
    ) -> asyncio.Future[dict[str, int]]:
        """`ChatStore.export_channels`, in the read pool."""
        return self._read(
            self.store.export_channels,
            file,
            cids=cids,
            messages=messages,
            include_local=include_local,
        )

    def last_sync_at(self) -> asyncio.Future[str | None]:
        """`ChatStore.last_sync_at`, in the read pool."""
        return self._read(self.store.last_sync_at)

    def mark_read(
        self, cid: str, *, message_id: str | None = None, thread_id: str | None = None,
        known_only: bool = False,
    ) -> asyncio.Future[str]:
        """`ChatStore.mark_read`, on the writer thread, joinable."""
        return self._join(self.store.mark_read, cid, message_id=message_id, thread_id=thread_id,
                          known_only=known_only)

    def mark_synced(self, synced_at: str, *, requeried: Iterable[str] = ()) -> asyncio.Future[int]:
        """`ChatStore.mark_synced`, on the writer thread, in call order."""
        return self._write(self.store.mark_synced, synced_at, requeried=requeried)

    def mark_unread(self, cid: str, *, message_id: str) -> asyncio.Future[str]:
        """`ChatStore.mark_unread`, on the writer thread, joinable."""
        return self._join(self.store.mark_unread, cid, message_id=message_id)

    def members(self, cid: str) -> asyncio.Future[list[StoredMember]]:
        """`ChatStore.members`, in the read pool."""
        return self._read(self.store.members, cid)

    def message(self, message_id: str) -> asyncio.Future[StoredMessage | None]:
        """`ChatStore.message`, in the read pool."""
        return self._read(self.store.message, message_id)

    def messages(
        self,
        cid: str,
        *,
        before: tuple[int, str] | None = None,
        after: tuple[int, str] | None = None,
        inclusive: bool = False,
        limit: int = 50,
    ) -> asyncio.Future[MessagePage]:
        """`ChatStore.messages`, in the read pool."""
        return self._read(
            self.store.messages, cid, before=before, after=after, inclusive=inclusive, limit=limit
        )

    def mutes(self, *, expired: bool = False) -> asyncio.Future[list[UserMute]]:
        """`ChatStore.mutes`, in the read pool."""
        return self._read(self.store.mutes, expired=expired)

    def partial_update_message(
        self, message_id: str, *, set: dict[str, Any] | None = None, unset: Iterable[str] = ()
    ) -> asyncio.Future[str]:
        """`ChatStore.partial_update_message`, on the writer thread, joinable."""
        return self._join(self.store.partial_update_message, message_id, set=set, unset=unset)

    def pinned(self, cid: str, *, limit: int = 25) -> asyncio.Future[list[StoredMessage]]:
        """`ChatStore.pinned`, in the read pool."""
        return self._read(self.store.pinned, cid, limit=limit)

    def poll(self, poll_id: str) -> asyncio.Future[StoredPoll | None]:
        """`ChatStore.poll`, in the read pool."""
        return self._read(self.store.poll, poll_id)

    def polls(self, cid: str | None = None) -> asyncio.Future[list[StoredPoll]]:
        """`ChatStore.polls`, in the read pool."""
        return self._read(self.store.polls, cid)

    def reactions(
        self, message_id: str, *, own: bool = False, limit: int = 25
    ) -> asyncio.Future[list[StoredReaction]]:
        """`ChatStore.reactions`, in the read pool."""
        return self._read(self.store.reactions, message_id, own=own, limit=limit)

    def reads(self, cid: str) -> asyncio.Future[list[StoredRead]]:
        """`ChatStore.reads`, in the read pool."""
        return self._read(self.store.reads, cid)

    def rebuild(self, on_progress: ProgressCallback | None = None) -> asyncio.Future[int]:
        """`ChatStore.rebuild`, on the writer thread, in call order."""
        return self._write(self.store.rebuild, on_progress)

    def record_unusable_answer(
        self, payload: bytes, reason: str, *, source: Source | str = "sync"
    ) -> asyncio.Future[int]:
        """`ChatStore.record_unusable_answer`, on the writer thread, in call order."""
        return self._write(self.store.record_unusable_answer, payload, reason, source=source)

    def reminders(
        self, cid: str | None = None, *, due: bool = False
    ) -> asyncio.Future[list[StoredReminder]]:
        """`ChatStore.reminders`, in the read pool."""
        return self._read(self.store.reminders, cid, due=due)

    def save_draft(
        self, cid: str, text: str, *, parent_id: str | None = None, **custom: Any
    ) -> asyncio.Future[str]:
        """`ChatStore.save_draft`, on the writer thread, joinable."""
        return self._join(self.store.save_draft, cid, text, parent_id=parent_id, **custom)

    def send_message(
        self,
        cid: str,
        text: str | None = None,
        *,
        id: str | None = None,
        attachments: Iterable[dict[str, Any]] = (),
        parent_id: str | None = None,
        show_in_channel: bool | None = None,
        quoted_message_id: str | None = None,
        mentioned_users: Iterable[str] = (),
        silent: bool = False,
        skip_push: bool = False,
        known_only: bool = False,
        **custom: Any,
    ) -> asyncio.Future[str]:
        """`ChatStore.send_message`, on the writer thread, joinable."""
        return self._join(
            self.store.send_message,
            cid,
            text,
            id=id,
            attachments=attachments,
            parent_id=parent_id,
            show_in_channel=show_in_channel,
            quoted_message_id=quoted_message_id,
            mentioned_users=mentioned_users,
            silent=silent,
            skip_push=skip_push,
            known_only=known_only,
            **custom,
        )

    def send_reaction(
        self,
        message_id: str,
        type: str,
        *,
        score: int = 1,
        enforce_unique: bool = False,
        known_only: bool = False,
        **custom: Any,
    ) -> asyncio.Future[str]:
        """`ChatStore.send_reaction`, on the writer thread, joinable."""
        return self._join(
            self.store.send_reaction,
            message_id,
            type,
            score=score,
            enforce_unique=enforce_unique,
            known_only=known_only,
            **custom,
        )

    def thread(
        self,
        parent_id: str,
        *,
        before: tuple[int, str] | None = None,
        after: tuple[int, str] | None = None,
        inclusive: bool = False,
        limit: int = 50,
    ) -> asyncio.Future[list[StoredMessage]]:
        """`ChatStore.thread`, in the read pool."""
        return self._read(
            self.store.thread,
            parent_id,
            before=before,
            after=after,
            inclusive=inclusive,
            limit=limit,
        )

    def thread_reads(self, parent_id: str) -> asyncio.Future[list[ThreadRead]]:
        """`ChatStore.thread_reads`, in the read pool."""
        return self._read(self.store.thread_reads, parent_id)

    def threads(self, cid: str | None = None) -> asyncio.Future[list[StoredThread]]:
        """`ChatStore.threads`, in the read pool."""
        return self._read(self.store.threads, cid)

    def unprojected(self, limit: int | None = None) -> asyncio.Future[list[UnprojectedEntry]]:
        """`ChatStore.unprojected`, in the read pool."""
        return self._read(self.store.unprojected, limit)

    def unread_counts(self) -> asyncio.Future[UnreadCounts]:
        """`ChatStore.unread_counts`, in the read pool."""
        return self._read(self.store.unread_counts)

    def update_message(
        self,
        message_id: str,
        text: str | None = None,
        *,
        attachments: Sequence[dict[str, Any]] | None = None,
        **custom: Any,
    ) -> asyncio.Future[str]:
        """`ChatStore.update_message`, on the writer thread, joinable."""
        return self._join(
            self.store.update_message, message_id, text, attachments=attachments, **custom
        )

    def user(self, user_id: str) -> asyncio.Future[StoredUser | None]:
        """`ChatStore.user`, in the read pool."""
        return self._read(self.store.user, user_id)

    def verify(
        self, on_progress: ProgressCallback | None = None
    ) -> asyncio.Future[list[Difference]]:
        """`ChatStore.verify`, in the read pool."""
        return self._read(self.store.verify, on_progress)

    @property
    def sealed(self) -> bool:
        """`ChatStore.sealed`."""
        return self.store.sealed

    def rekey(self, new_key: bytes | None) -> asyncio.Future[None]:
        """`ChatStore.rekey`, on the writer thread, in call order."""
        return self._write(self.store.rekey, new_key)

    def chain_head(self) -> asyncio.Future[tuple[int, bytes]]:
        """`ChatStore.chain_head`, in the read pool."""
        return self._read(self.store.chain_head)

    def verify_chain(
        self, head: tuple[bytes, int] | None = None
    ) -> asyncio.Future[ChainReport]:
        """`ChatStore.verify_chain`, in the read pool."""
        return self._read(self.store.verify_chain, head)

    # -- closing ---------------------------------------------------------------------------------

    async def close(self) -> None:
        """Write everything queued, wait for reads in flight, then close the store.

        New calls fail from the moment this is called. Calling it again waits for the same close.
        """
        if self._closing is None:
            self._closing = asyncio.ensure_future(asyncio.to_thread(self._close_now))
        await asyncio.shield(self._closing)

    def _close_now(self) -> None:
        try:
            self.writer.close()  # drains the queue
        finally:
            self._reads.shutdown(wait=True)
            _checkpoint_quietly(self.store)
            _release_cache_quietly(self.store)
            self.store.close()

    async def flush(self) -> list[Path]:
        """Log out: write what is queued, close, and delete the store's files."""
        await self.close()
        return await asyncio.to_thread(self.store.flush)

    @staticmethod
    async def flush_user(data_dir: str | os.PathLike[str] | None, user_id: str) -> list[Path]:
        """`ChatStore.flush_user` off the event loop."""
        return await asyncio.to_thread(ChatStore.flush_user, data_dir, user_id)

    async def __aenter__(self) -> AsyncChatStore:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


_HISTORY_PAGE = 1_000


def _next_page(entries: Iterator[LogEntry]) -> list[LogEntry]:
    """The next entries of an `iter_history` iterator (empty at the end)."""
    return list(itertools.islice(entries, _HISTORY_PAGE))


class _Pending(asyncio.Future):
    """The future of a call made inside an open batch: it has not run yet."""

    batch: _Batch

    def __await__(self) -> Generator[Any, None, Any]:
        if self.batch.open and not self.done():
            raise RuntimeError("a call made in store.batch() runs when the block ends: "
                               "await its result after the block")
        return (yield from super().__await__())


class _Batch:
    """`AsyncChatStore.batch()`: collects the block's calls, runs them together at its end."""

    def __init__(self, store: AsyncChatStore) -> None:
        self.store = store
        self.open = False
        self._calls: list[Callable[[], Any]] = []
        self._futures: list[_Pending] = []
        self._token: contextvars.Token[_Batch | None] | None = None

    def add(self, call: Callable[[], Any]) -> asyncio.Future[Any]:
        future = _Pending()
        future.batch = self
        self._calls.append(call)
        self._futures.append(future)
        return future

    async def __aenter__(self) -> None:
        if _OPEN_BATCH.get() is not None:
            raise StoreError("a batch is open already: batches do not nest")
        self.open = True
        self._token = _OPEN_BATCH.set(self)

    async def __aexit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        assert self._token is not None
        _OPEN_BATCH.reset(self._token)
        self.open = False
        if exc is not None or not self._calls:
            for future in self._futures:
                future.cancel()
            return
        calls = self._calls
        try:
            outcomes = await asyncio.wrap_future(self.store.writer.call(
                functools.partial(run_together, self.store.store.log, calls)))
        except BaseException as failure:
            for future in self._futures:  # the transaction did not commit: none of them ran
                future.set_exception(failure)
                future.exception()  # raised here once; not "never retrieved" for each
            raise
        for future, (result, error) in zip(self._futures, outcomes):
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(result)


def _checkpoint_quietly(store: ChatStore) -> None:
    """Fold the WAL into the database before the last connection closes.

    Closing the last connection makes SQLite checkpoint the WAL, and APSW's `Connection.close`
    does that while holding the GIL: 158 ms of a frozen event loop for a 64 MB WAL, measured. An
    explicit checkpoint does the same work with the GIL released. When it cannot (another process
    is reading an old snapshot, the file is gone), closing simply does what it always did.
    """
    try:
        store.log.checkpoint()
    except Exception:  # noqa: BLE001 - only an optimisation; close() reports real trouble
        pass


def _release_cache_quietly(store: ChatStore) -> None:
    """Give back the write connection's page cache before the connection is closed.

    APSW's `Connection.close` frees the cache (up to 64 MB of pages on the write connection)
    while holding the GIL: the event loop froze for 7-9 ms at the end of the loop benchmark
    (100,000 events), its longest stall in every run. `PRAGMA shrink_memory` frees the same
    pages inside a statement, with the GIL released; closing then has little left to do.
    """
    try:
        store.log.datastore.writer.execute("PRAGMA shrink_memory")
    except Exception:  # noqa: BLE001 - only an optimisation; close() reports real trouble
        pass


class _Opening:
    """What `AsyncChatStore.open` returns: await it for the store, or use it in `async with`."""

    def __init__(self, make: Callable[[], AsyncChatStore]) -> None:
        self._make = make
        self._store: AsyncChatStore | None = None

    async def _open(self) -> AsyncChatStore:
        # Opening reads the file and may wait for another process's write lock: not on the loop.
        return await asyncio.to_thread(self._make)

    def __await__(self) -> Generator[Any, None, AsyncChatStore]:
        return self._open().__await__()

    async def __aenter__(self) -> AsyncChatStore:
        self._store = await self._open()
        return self._store

    async def __aexit__(self, *exc: object) -> None:
        if self._store is not None:
            await self._store.close()


__all__ = ["AsyncChatStore", "WRITE_METHODS", "WRITE_PREFIXES", "is_write_method"]
