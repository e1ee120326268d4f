"""`ChatStore`: the offline store of one user, the object applications hold.

It owns the user's file: the event log, and (as they land) the read tables built from it and the
local actions recorded in it. Everything the backend sends goes in through `ingest*`, verbatim.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from chatledger.eventstore.backup import ProgressCallback as BackupProgress
from chatledger.eventstore.backup import backup_database
from chatledger.eventstore.datastore import Synchronous
from chatledger.eventstore.ingest import (
    CHANNEL_STATE,
    Entry,
    Payload,
    Rejection,
    query_channels_entries,
    sync_point_entry,
)
from chatledger.eventstore.log import AppendResult, EventLog, LogEntry, StoreError
from chatledger.eventstore.schema import Source
from chatledger.eventstore.seal import ChainReport
from chatledger.eventstore.userfiles import flush_files, user_db_path
from chatledger.projections.actions import ActionsMixin
from chatledger.projections.engine import Difference, ProgressCallback, Projections
from chatledger.projections.export import export_channels
from chatledger.projections.outbox import Outbox
from chatledger.projections.queries import ReadAPI, ReadModel

if TYPE_CHECKING:
    from chatledger.projections.history import Explanation, PastStore


class RejectedInput(ValueError):
    """An item the store refused; it is kept in the quarantine table with `reason`."""

    def __init__(self, reason: str, quarantine_id: int) -> None:
        super().__init__(reason)
        self.reason = reason
        self.quarantine_id = quarantine_id


def default_data_dir() -> Path:
    """`$CHATLEDGER_DATA_DIR`, else `$XDG_DATA_HOME/chatledger`, else `~/.local/share/chatledger`."""
    if env := os.environ.get("CHATLEDGER_DATA_DIR"):
        return Path(env).expanduser()
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "chatledger"


class ChatStore(ActionsMixin, ReadAPI):
    """The offline store of one user: one SQLite file, opened with `ChatStore.open`.

    >>> store = ChatStore.open("/tmp/chat", "alice")                    # doctest: +SKIP
    >>> store.ingest(b'{"type":"message.new","cid":"messaging:general",...}')  # doctest: +SKIP
    17
    """

    def __init__(
        self, log: EventLog, *, user_id: str | None = None,
        on_rebuild_progress: ProgressCallback | None = None,
    ) -> None:
        self.log = log
        self.user_id = user_id
        self.projections = Projections(log, user_id)
        # "rebuilt" when the read tables had to be built from the log (first open, or an upgrade).
        self.opened_as = self.projections.install(on_rebuild_progress)
        self.read = ReadModel(log.datastore, user_id)
        self.read.warm_up()
        # The local commands: the retry stream for the replayer, retry and cancel for the user.
        self.outbox = Outbox(log)

    # -- opening -------------------------------------------------------------------------------

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
        on_rebuild_progress: ProgressCallback | None = None,
        key: bytes | None = None,
    ) -> ChatStore:
        """Open the store of `user_id` in `data_dir` (created with mode 0700 when missing).

        `synchronous="FULL"` makes every commit durable against power loss, at a cost in speed;
        the default `NORMAL` is durable against a crash of the process. `create=False` refuses to
        create a store that does not exist yet. `lock_timeout` is how many seconds a write waits
        while another process holds the file's write lock. When the read tables must be rebuilt
        (tables from another version), `on_rebuild_progress(done, total)` follows the replay.
        `key` (32 bytes) opens a sealed store, or seals a new one (see docs/security.md); a
        sealed store opened without its key, or with another, raises `StoreError`.
        """
        directory = Path(data_dir).expanduser() if data_dir is not None else default_data_dir()
        path = user_db_path(directory, user_id)
        if not os.path.lexists(path):  # a link, even dangling, is there: EventLog.open refuses it
            if not create:
                raise StoreError(f"no store for user {user_id!r} in {directory}")
            try:
                directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            except OSError as e:
                raise StoreError(f"cannot create the data directory {directory}: {e.strerror}") from e
        log = EventLog.open(path, synchronous=synchronous, compression=compression,
                            lock_timeout=lock_timeout, key=key)
        try:
            owner = log.get_meta("user_id")
            if owner is None:
                log.set_meta("user_id", user_id)
            elif owner != user_id:
                raise StoreError(f"{path} belongs to user {owner!r}, not {user_id!r}")
            return cls(log, user_id=user_id, on_rebuild_progress=on_rebuild_progress)
        except BaseException:
            log.close()
            raise

    @classmethod
    def open_file(
        cls, path: str | os.PathLike[str], *, synchronous: Synchronous = "NORMAL",
        compression: bool = True, key: bytes | None = None,
    ) -> ChatStore:
        """Open a store by its file name (or ":memory:" for a store that lives only in memory)."""
        log = EventLog.open(Path(path) if path != ":memory:" else path,
                            synchronous=synchronous, compression=compression, key=key)
        try:
            return cls(log, user_id=log.get_meta("user_id"))
        except BaseException:
            log.close()
            raise

    @property
    def path(self) -> Path | None:
        return self.log.datastore.path

    # -- ingest --------------------------------------------------------------------------------

    def ingest(
        self,
        event: Payload | Any,
        *,
        source: Source | str = "websocket",
        connection_id: str | None = None,
    ) -> int:
        """Append one backend event verbatim; returns its log position.

        Raises `RejectedInput` (with the reason) when the event is malformed; it is then kept in
        the quarantine, and nothing else changes.
        """
        result = self.log.append_events([event], source=source, connection_id=connection_id)
        if result.quarantined:
            q = result.quarantined[0]
            raise RejectedInput(q.reason, q.quarantine_id)
        position = result.positions[0]
        assert position is not None
        return position

    def ingest_many(
        self,
        events: Iterable[Payload | Any],
        *,
        source: Source | str = "websocket",
        connection_id: str | None = None,
    ) -> AppendResult:
        """Append a batch of events in one transaction; malformed ones go to the quarantine."""
        return self.log.append_events(events, source=source, connection_id=connection_id)

    def ingest_query_channels(
        self,
        response: Payload | Any,
        *,
        filter: dict[str, Any] | None = None,
        sort: list[Any] | None = None,
        synced_at: str | None = None,
    ) -> AppendResult:
        """Append a query-channels response (and the filter and sort that asked for it).

        With `synced_at` (RFC 3339), the same transaction advances `last_sync_at()` to it,
        naming the channels the answer held as queried again; a response refused as a whole
        (quarantined) advances nothing. The last entry's position is then the sync point's."""
        if synced_at is None:
            return self.log.append_query_channels(response, filter=filter, sort=sort)
        entries = query_channels_entries(response, filter=filter, sort=sort)
        if all(type(entry) is Rejection for entry in entries):
            return self.log.append(entries, source="query")
        cids = [entry.stream for entry in entries
                if type(entry) is Entry and entry.type == CHANNEL_STATE]
        entries.append(sync_point_entry(synced_at, requeried=cids))
        return self.log.append(entries, source="query")

    def ingest_channel_state(self, state: Payload | Any) -> AppendResult:
        """Append the state of one channel, as a channel query returns it."""
        return self.log.append_channel_state(state)

    def ingest_sync(
        self, response: Payload | Any, *, last_sync_at: str | None = None,
        synced_at: str | None = None,
    ) -> AppendResult:
        """Append a `/sync` response: the missed events, in order. `synced_at` (RFC 3339)
        advances `last_sync_at()`: the store now holds every event up to that time."""
        return self.log.append_sync(response, last_sync_at=last_sync_at, synced_at=synced_at)

    def record_unusable_answer(
        self, payload: bytes, reason: str, *, source: Source | str = "sync",
    ) -> int:
        """Keep an answer the sync client could not use (not JSON, an error object, over the
        size cap, ...) in the quarantine with `reason`; nothing else changes. Returns its
        quarantine id (what `quarantine()` lists)."""
        result = self.log.append([Rejection(bytes(payload), reason)], source=source)
        return result.quarantined[0].quarantine_id

    def mark_synced(self, synced_at: str, *, requeried: Iterable[str] = ()) -> int:
        """Record that the store holds every event up to `synced_at` (RFC 3339), having closed
        the gap some other way than `/sync` (the channels in `requeried` were queried again, or
        the event stream was followed live). Returns the log position of the mark."""
        result = self.log.append([sync_point_entry(synced_at, requeried=list(requeried))],
                                 source="sync")
        position = result.positions[0]
        assert position is not None
        return position

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Local actions and outbox calls inside the block share one transaction: one commit
        for all of them (much cheaper than one each). An action that raises inside is undone
        alone; an exception that leaves the block undoes them all. Reads made inside the block
        (on the same thread) see its changes so far; other threads and processes see them
        when it ends.

        >>> with store.batch():                                     # doctest: +SKIP
        ...     ids = [store.send_message(cid, text) for text in texts]
        """
        with self.log.write_transaction():
            yield

    # -- reading the log -----------------------------------------------------------------------

    def history(
        self,
        *,
        cid: str | None = None,
        types: Iterable[str] = (),
        since: int | None = None,
        until: int | None = None,
        limit: int | None = None,
        newest_first: bool = False,
    ) -> list[LogEntry]:
        """The audit history: log entries, filtered by channel, type and time (epoch µs)."""
        return self.log.entries(
            stream=cid, types=tuple(types), since=since, until=until, limit=limit,
            newest_first=newest_first,
        )

    def quarantine(self, *, limit: int | None = None) -> list[dict[str, Any]]:
        """Input the store refused, newest first, with the reason and the bytes as they arrived."""
        return self.log.quarantine(limit=limit)

    def stats(self) -> dict[str, Any]:
        """Counts and sizes of the log (see `EventLog.stats`), with the channel counts of the
        read tables: `channels` is what `channels()` lists (`channel_count()`),
        `hidden_channels` the hidden ones it leaves out, `channel_streams` the channels the log
        has entries for (a channel can be on file without any: a query's or a member's)."""
        stats = self.log.stats()
        stats["channel_streams"] = stats["channels"]
        stats["channels"] = self.read.channel_count()
        stats["hidden_channels"] = self.read.channel_count({"hidden": True})
        # Stored but not wholly projected (see projections.screen): counted, the latest named.
        stats["unprojected"] = self.read.unprojected_count()
        stats["unprojected_latest"] = self.read.unprojected(limit=10)
        stats["user_id"] = self.user_id
        stats["path"] = str(self.path) if self.path else ":memory:"
        return stats

    # -- read tables ---------------------------------------------------------------------------

    def rebuild(self, on_progress: ProgressCallback | None = None) -> int:
        """Rebuild the read tables from the whole log; returns the log position they reflect."""
        return self.projections.rebuild(on_progress)

    def verify(self, on_progress: ProgressCallback | None = None) -> list[Difference]:
        """Rebuild into a scratch copy and list how the live tables differ (empty: all good)."""
        return self.projections.verify(on_progress)

    # -- backup and export ---------------------------------------------------------------------

    def backup(
        self, dest: str | os.PathLike[str], *, overwrite: bool = False,
        on_progress: BackupProgress | None = None,
    ) -> dict[str, Any]:
        """Copy the whole store to the file `dest` (or into the directory `dest`) while it stays
        in use; the copy is checked before it takes the name. Returns `path`, `bytes`, `pages`,
        `events`, `seconds`, `user_id`, `restarts`. An existing file is replaced only with
        `overwrite=True`; `on_progress(pages_copied, pages)` follows the copy."""
        return backup_database(self.log.datastore, dest, overwrite=overwrite,
                               on_progress=on_progress).as_dict()

    def export_channels(
        self, file: BinaryIO, *, cids: Iterable[str] | None = None, messages: int | None = None,
        include_local: bool = False,
    ) -> dict[str, int]:
        """Write the channels (all, or `cids`) as one query-channels response to the binary
        file object `file`, with all their messages or the newest `messages`; see
        `chatledger.projections.export`. Returns `channels`, `messages`, `bytes`,
        `local_left_out`, `parts`."""
        return export_channels(self.read, file, cids=cids, messages=messages,
                               include_local=include_local).as_dict()

    # -- lifecycle -----------------------------------------------------------------------------

    def close(self) -> None:
        self.log.close()

    # -- sealing -------------------------------------------------------------------------------

    @property
    def sealed(self) -> bool:
        """Whether the store's payloads are encrypted at rest."""
        return self.log.sealed

    def rekey(self, new_key: bytes | None) -> None:
        """Re-encrypt the store under `new_key` (a plain store: encrypt it in place; None:
        decrypt it), in one transaction. The chain is computed again: record the new head."""
        self.log.rekey(new_key)

    def chain_head(self) -> tuple[int, bytes]:
        """(last log position, its chain hash): record it to prove the log unchanged later."""
        return self.log.head()

    def verify_chain(self, head: tuple[bytes, int] | None = None) -> ChainReport:
        """Recompute the log's chain (and check a recorded (hash, position) head); the report
        names the first entry changed, removed, inserted or reordered."""
        return self.log.verify_chain(head)

    def flush(self) -> list[Path]:
        """Log out: close the store and delete its files (database, -wal, -shm)."""
        self.close()
        return flush_files(self.path) if self.path is not None else []

    @staticmethod
    def flush_user(data_dir: str | os.PathLike[str] | None, user_id: str) -> list[Path]:
        """Delete the store of `user_id` without opening it; returns the files removed."""
        directory = Path(data_dir).expanduser() if data_dir is not None else default_data_dir()
        return flush_files(user_db_path(directory, user_id))

    def __enter__(self) -> ChatStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the past (see projections.history) ----------------------------------------------------

    def as_of(self, *, position: int | None = None, time: int | None = None) -> PastStore:
        """The read tables as of a log position or a time (epoch µs), read-only: a `PastStore`
        with the read methods of this class. Close it when done."""
        from chatledger.projections.history import as_of

        return as_of(self, position=position, time=time)

    def explain(self, message_id: str, *, unchanged: bool = False) -> list[Explanation]:
        """Every log entry that changed a message, oldest first, with what it changed."""
        from chatledger.projections.history import explain

        return explain(self, message_id, unchanged=unchanged)
