"""`ChatStore`: the offline store of one user, the object applications hold.

It owns the user's file: the event log, and (as they land) the read tables built from it and the
local actions recorded in it. Everything the backend sends goes in through `ingest*`, verbatim.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from chatledger.errors import RejectedInput
from chatledger.eventstore.backup import ProgressCallback as BackupProgress
from chatledger.eventstore.backup import backup_database
from chatledger.eventstore.bundle import BUNDLE_META_KEY, copy_for_bundle, finish_bundle
from chatledger.eventstore.datastore import Synchronous
from chatledger.eventstore.importer import ImportReport, Kind, import_stream
from chatledger.eventstore.ingest import (
    CHANNEL_STATE,
    Entry,
    Payload,
    Rejection,
    query_channels_entries,
    sync_point_entry,
)
from chatledger.eventstore.log import AppendResult, Damage, EventLog, LogEntry, StoreError
from chatledger.eventstore.schema import Source
from chatledger.eventstore.seal import ChainReport
from chatledger.eventstore.userfiles import (
    StoreFile,
    flush_files,
    list_stores,
    store_files,
    user_db_path,
)
from chatledger.projections.actions import ActionsMixin
from chatledger.projections.engine import Difference, ProgressCallback, Projections
from chatledger.projections.export import export_channels
from chatledger.projections.ids import IdKind, IdLookup
from chatledger.projections.outbox import Outbox
from chatledger.projections.queries import ReadAPI, ReadModel
from chatledger.projections.results import QuarantineEntry, StoreStats
from chatledger.projections.schema import PROJECTION_VERSION
from chatledger.projections.times import TimeLike, optional_micros

if TYPE_CHECKING:
    from chatledger.projections.history import Explanation, PastStore


def _chatledger_version() -> str:
    """The installed distribution's version (the package root, which also says it, is above
    this module)."""
    try:
        return metadata.version("chatledger")
    except metadata.PackageNotFoundError:
        return "unknown"


# Application notes (`set_note`) share the file's meta table with the store's own keys; the
# prefix keeps the two apart.
_NOTE_PREFIX = "note:"
# Notes written before notes had their prefix, under their bare name: `chatledger demo`'s mark
# of a store it made (so that a new demo still recognises, and replaces, an older demo's store).
_UNPREFIXED_NOTES = frozenset({"made_by"})


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
        # The parts are private: applications (and the CLI) use the methods below. Three stay
        # reachable as documented read-only properties (`log`, `read`, `outbox`), because the
        # user docs show them and the sync layer drives the outbox through its own API. (The
        # mixins declare them as plain attributes, the names their methods use: PastStore
        # assigns its `read`; hence the `override` ignores on the properties.)
        self._log = log
        self.user_id = user_id
        self._projections = Projections(log, user_id)
        # "rebuilt" when the read tables had to be built from the log (first open, or an upgrade).
        self.opened_as = self._projections.install(on_rebuild_progress)
        self._read_model = ReadModel(log.datastore, user_id)
        self._read_model.warm_up()
        # The local commands: the retry stream for the replayer, retry and cancel for the user.
        self._outbox = Outbox(log)
        self._ids = IdLookup(log.datastore)

    @property
    def log(self) -> EventLog:  # type: ignore[override]
        """The store's `EventLog` (docs/python-api.md, "EventLog"): for append listeners,
        checkpoints and the other log-level tools an application may want. Everyday work needs
        only this class's methods."""
        return self._log

    @property
    def read(self) -> ReadModel:  # type: ignore[override]
        """The read tables' query object, for the functions that take one
        (`chatledger.projections.export.iter_export`)."""
        return self._read_model

    @property
    def outbox(self) -> Outbox:  # type: ignore[override]
        """The local commands (docs/actions.md): `pending()`, `list()`, `conflicts()`,
        `get(id)`, `retry(id)`, `cancel(id)`, and the calls the replayer records outcomes
        with. Public because the sync layer (`Replayer`, `SyncClient`) and applications that
        replay on their own drive it."""
        return self._outbox

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
            except OSError as error:
                raise StoreError(f"cannot create the data directory {directory}: "
                                 f"{error.strerror}") from error
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
        return self._log.datastore.path

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
        result = self._log.append_events([event], source=source, connection_id=connection_id)
        if result.quarantined:
            rejected = result.quarantined[0]
            raise RejectedInput(rejected.reason, rejected.quarantine_id)
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
        return self._log.append_events(events, source=source, connection_id=connection_id)

    def ingest_query_channels(
        self,
        response: Payload | Any,
        *,
        filter: dict[str, Any] | None = None,
        sort: list[Any] | None = None,
        synced_at: str | None = None,
        offset: int = 0,
    ) -> AppendResult:
        """Append a query-channels response (and the filter and sort that asked for it; with
        `offset`, the answer is a later page of that query, and `cached_channels` gives the
        pages together).

        With `synced_at` (RFC 3339), the same transaction advances `last_sync_at()` to it,
        naming the channels the answer held as queried again; a response refused as a whole
        (quarantined) advances nothing. The last entry's position is then the sync point's."""
        if synced_at is None:
            return self._log.append_query_channels(response, filter=filter, sort=sort,
                                                   offset=offset)
        entries = query_channels_entries(response, filter=filter, sort=sort, offset=offset)
        if all(type(entry) is Rejection for entry in entries):
            return self._log.append(entries, source="query")
        cids = [entry.stream for entry in entries
                if type(entry) is Entry and entry.type == CHANNEL_STATE]
        entries.append(sync_point_entry(synced_at, requeried=cids))
        return self._log.append(entries, source="query")

    def ingest_channel_state(self, state: Payload | Any) -> AppendResult:
        """Append the state of one channel, as a channel query returns it."""
        return self._log.append_channel_state(state)

    def ingest_sync(
        self, response: Payload | Any, *, last_sync_at: str | None = None,
        synced_at: str | None = None,
    ) -> AppendResult:
        """Append a `/sync` response: the missed events, in order. `synced_at` (RFC 3339)
        advances `last_sync_at()`: the store now holds every event up to that time."""
        return self._log.append_sync(response, last_sync_at=last_sync_at, synced_at=synced_at)

    def record_unusable_answer(
        self, payload: bytes, reason: str, *, source: Source | str = "sync",
    ) -> int:
        """Keep an answer the sync client could not use (not JSON, an error object, over the
        size cap, ...) in the quarantine with `reason`; nothing else changes. Returns its
        quarantine id (what `quarantine()` lists)."""
        result = self._log.append([Rejection(bytes(payload), reason)], source=source)
        return result.quarantined[0].quarantine_id

    def mark_synced(self, synced_at: str, *, requeried: Iterable[str] = ()) -> int:
        """Record that the store holds every event up to `synced_at` (RFC 3339), having closed
        the gap some other way than `/sync` (the channels in `requeried` were queried again, or
        the event stream was followed live). Returns the log position of the mark."""
        result = self._log.append([sync_point_entry(synced_at, requeried=list(requeried))],
                                 source="sync")
        position = result.positions[0]
        assert position is not None
        return position

    def import_file(
        self, file: BinaryIO, *, kind: Kind = "auto", source: str = "import",
        batch_size: int = 1_000, on_progress: Callable[[int], None] | None = None,
        again: bool = False, resume: bool = False,
    ) -> ImportReport:
        """Append a binary file of JSON lines of events, or one query-channels, sync or
        channel response (`kind`), verbatim; see `chatledger.eventstore.importer`.

        The import ledger keeps the same input from being stored twice: an input an earlier
        import read whole raises `AlreadyImported` (nothing stored) unless `again=True`; one an
        earlier run stopped in continues after its stored lines (`resume=True` insists on
        that: `NothingToResume` otherwise). A full disk raises `ImportInterrupted`, Ctrl-C
        `ImportStopped` (a KeyboardInterrupt); both say what was committed.
        `on_progress(bytes_read)` follows the reading."""
        return import_stream(self._log, file, kind=kind, source=source, batch_size=batch_size,
                             on_progress=on_progress, again=again, resume=resume)

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
        with self._log.write_transaction():
            yield

    # -- reading the log -----------------------------------------------------------------------

    def last_position(self) -> int:
        """The position of the newest log entry; 0 for a store that holds nothing yet."""
        return self._log.max_position() or 0

    def is_empty(self) -> bool:
        """Whether the store holds nothing: no log entry and nothing quarantined."""
        return not self.last_position() and not self._log.quarantine(limit=1)

    def history(
        self,
        *,
        cid: str | None = None,
        types: Iterable[str] = (),
        since: TimeLike | None = None,
        until: TimeLike | None = None,
        limit: int | None = None,
        newest_first: bool = False,
    ) -> list[LogEntry]:
        """The audit history: log entries, filtered by channel, type and time.

        `since` and `until` take a timezone-aware `datetime`, RFC 3339 text, a date (UTC), an
        age such as "2h" or "3d", or epoch microseconds; a naive datetime or text that is no
        time raises `ValueError`."""
        return self._log.entries(
            stream=cid, types=tuple(types), since=optional_micros(since),
            until=optional_micros(until), limit=limit, newest_first=newest_first,
        )

    def iter_history(
        self,
        *,
        cid: str | None = None,
        types: Iterable[str] = (),
        since: TimeLike | None = None,
        until: TimeLike | None = None,
        newest_first: bool = False,
    ) -> Iterator[LogEntry]:
        """`history` without a limit, read a page at a time in short read transactions: a
        log of any size streams in constant memory."""
        return self._log.iter_entries(
            stream=cid, types=tuple(types), since=optional_micros(since),
            until=optional_micros(until), newest_first=newest_first,
        )

    def quarantine(self, *, limit: int | None = None) -> list[QuarantineEntry]:
        """Input the store refused, newest first, with the reason and the bytes as they arrived."""
        return [QuarantineEntry(**item) for item in self._log.quarantine(limit=limit)]

    def stats(self) -> StoreStats:
        """Counts and sizes of the log (see `EventLog.stats`), with the channel counts of the
        read tables: `channels` is what `channels()` lists (`channel_count()`),
        `hidden_channels` the hidden ones it leaves out, `channel_streams` the channels the log
        has entries for (a channel can be on file without any: a query's or a member's)."""
        stats = self._log.stats()
        stats["channel_streams"] = stats["channels"]
        stats["channels"] = self._read_model.channel_count()
        stats["hidden_channels"] = self._read_model.channel_count({"hidden": True})
        # Stored but not wholly projected (see projections.screen): counted, the latest named.
        stats["unprojected"] = self._read_model.unprojected_count()
        stats["unprojected_latest"] = self._read_model.unprojected(limit=10)
        stats["user_id"] = self.user_id
        stats["path"] = str(self.path) if self.path else ":memory:"
        # A bundle (`bundle()`) says so: who made it, redacted or not, cut down to what.
        stats["bundle"] = self.bundle_info()
        return StoreStats(**stats)

    def bundle_info(self) -> dict[str, Any] | None:
        """How this store was made, when it is a bundle (see `bundle`): `redacted`,
        `chatledger_version` and `projection_version` of the store that made it, `made_at`
        (epoch µs), `since` and `cids` it was cut down to. None for a store of one's own."""
        raw = self._log.get_meta(BUNDLE_META_KEY)
        if raw is None:
            return None
        try:
            info = json.loads(raw)
        except ValueError:
            return {"redacted": None}
        return info if isinstance(info, dict) else {"redacted": None}

    # -- ids as people type them ----------------------------------------------------------------

    def ids_with_prefix(self, kind: IdKind, prefix: str = "", *, limit: int = 20) -> list[str]:
        """Stored ids of `kind` ("message", "command", "channel" or "user") that start with
        `prefix`, in order: what shell completion offers."""
        return self._ids.with_prefix(kind, prefix, limit=limit)

    def resolve_id(self, kind: IdKind, text: str) -> str | None:
        """The stored id `text` names, as git resolves a commit: the id itself, or the one id
        it is a unique prefix of; None when no id matches. Raises `AmbiguousId` (a
        `ValueError` listing the candidates) when several ids start with `text`."""
        return self._ids.resolve(kind, text)

    def suggest_ids(self, kind: IdKind, text: str, *, limit: int = 3) -> list[str]:
        """Stored ids close to a `text` that names none: for a channel, those whose id part
        is `text` (`messaging:general` for `general`) and those a typo away."""
        return self._ids.suggest(kind, text, limit=limit)

    def unknown_filter_fields(self, filter: dict[str, Any] | None = None,
                              sort: Any = None) -> dict[str, list[str]]:
        """The fields a `channels()` filter or sort names that neither the backend defines nor
        any stored channel has as a custom field (most often a typo, which matches nothing),
        each with the known names close to it: `{"nmae": ["name"]}`. Empty when all is known."""
        from chatledger.projections.filters import close_field_names, unknown_fields

        custom = self._read_model.custom_channel_fields()
        return {name: close_field_names(name, custom)
                for name in unknown_fields(filter, sort, custom)}

    # -- read tables ---------------------------------------------------------------------------

    def rebuild(self, on_progress: ProgressCallback | None = None) -> int:
        """Rebuild the read tables from the whole log; returns the log position they reflect."""
        return self._projections.rebuild(on_progress)

    def projected_position(self) -> int:
        """The log position the read tables reflect (0 before anything is projected). It
        equals `last_position()` whenever no write is under way: entries are projected in the
        transaction that appends them."""
        return self._projections.position() or 0

    def damage(self) -> Damage | None:
        """SQLite's integrity check of the whole file: None when it is intact, else what is
        damaged and whether the log itself is hit (`Damage.advice()` says what to do). Reads
        every page: as long as a rebuild."""
        return self._log.damage()

    def verify(self, on_progress: ProgressCallback | None = None) -> list[Difference]:
        """Rebuild into a scratch copy and list how the live tables differ (empty: all good)."""
        return self._projections.verify(on_progress)

    @staticmethod
    def check_file(path: str | os.PathLike[str], *, key: bytes | None = None) -> Damage | None:
        """`damage()` for a store file that cannot be opened as a store: SQLite's integrity
        check through the log alone, without reading or building the read tables (which may be
        what is damaged). None when the file is intact. Raises `StoreError` (or APSW's
        `CorruptError`) when even the log cannot be opened; `key` opens a sealed file."""
        with EventLog.open(Path(path), key=key) as log:
            return log.damage()

    @staticmethod
    def forget_read_tables(path: str | os.PathLike[str], *, key: bytes | None = None) -> None:
        """Remove the read tables from a store file that is not open, keeping the log: the
        next open builds them afresh from the log. The repair for a file whose damage is in
        the read tables only (`check_file(path)` or `damage()` says `log_hit=False`); SQLite
        cannot drop a damaged table, so the file is repacked without them."""
        with EventLog.open(Path(path), key=key) as log:
            log.forget_read_tables()

    # -- notes ---------------------------------------------------------------------------------

    def note(self, name: str) -> str | None:
        """The note `name` an application (or a tool such as `chatledger demo`) left in this
        store with `set_note`; None when there is none. Notes live in the file, beside the log,
        and are neither log entries nor part of a backup's meaning of "the events"."""
        value = self._log.get_meta(_NOTE_PREFIX + name)
        if value is None and name in _UNPREFIXED_NOTES:
            value = self._log.get_meta(name)
        return None if value is None else str(value)

    def set_note(self, name: str, value: str | None) -> None:
        """Keep a short text under `name` in the store file (None removes it): who made the
        store, a tool's setting. Notes have their own names, apart from the keys the store
        keeps for itself (its user id, its version), so no note can change those."""
        self._log.set_meta(_NOTE_PREFIX + name, value)

    # -- backup and export ---------------------------------------------------------------------

    def backup(
        self, dest: str | os.PathLike[str], *, overwrite: bool = False,
        on_progress: BackupProgress | None = None,
    ) -> dict[str, Any]:
        """Copy the whole store to the file `dest` (or into the directory `dest`) while it stays
        in use; the copy is checked before it takes the name. Returns `path`, `bytes`, `pages`,
        `events`, `seconds`, `user_id`, `restarts`. An existing file is replaced only with
        `overwrite=True`; `on_progress(pages_copied, pages)` follows the copy."""
        return backup_database(self._log.datastore, dest, overwrite=overwrite,
                               on_progress=on_progress).as_dict()

    def export_channels(
        self, file: BinaryIO, *, cids: Iterable[str] | None = None, messages: int | None = None,
        include_local: bool = False,
    ) -> dict[str, int]:
        """Write the channels (all, or `cids`) as one query-channels response to the binary
        file object `file`, with all their messages or the newest `messages`; see
        `chatledger.projections.export`. Returns `channels`, `messages`, `bytes`,
        `local_left_out`, `parts`."""
        return export_channels(self._read_model, file, cids=cids, messages=messages,
                               include_local=include_local).as_dict()

    def bundle(
        self, dest: str | os.PathLike[str], *, redact: bool = False, since: int | None = None,
        cids: Iterable[str] | None = None,
    ) -> dict[str, Any]:
        """Write a bundle for a bug report into the directory `dest` (created when missing):
        a consistent copy of this store, under the user's store file name, so that
        `chatledger --data-dir DEST --user USER ...` opens it with every command.

        `since` (epoch µs) and `cids` leave out what was received before or filed under other
        channels; `redact=True` replaces texts, attachment URLs and titles, user names and
        images, channel names and custom field values with same-shape placeholders (see
        `chatledger.eventstore.bundle`), keeping ids, types, times, counts, the outbox and the
        errors. The read tables are rebuilt from the copied log and verified. Returns `path`,
        `bytes`, `events`, `left_out`, `redacted`, `replaced`, `seconds`, `info`."""
        if self.user_id is None:
            raise StoreError("this store has no user id: a bundle is named after it")
        if self.sealed:
            # A bundle is for someone without the key; decrypting one is not built yet.
            raise StoreError("a sealed store cannot be bundled yet: bundle a decrypted backup "
                             "(chatledger backup, then rekey --decrypt on the copy)")
        info = {"chatledger_version": _chatledger_version(),
                "projection_version": PROJECTION_VERSION,
                "source_position": self._log.max_position()}
        copy = copy_for_bundle(self._log.datastore, dest, self.user_id, redact=redact,
                               since=since, cids=list(cids) if cids is not None else None,
                               info=info)
        try:
            # Through the public API, like any store: opening rebuilds the read tables from
            # the copied log (they were left out of the copy).
            with ChatStore.open_file(copy.partial) as bundled:
                if redact:
                    bundled.log.train_dictionary()  # compressed again, with a redacted dictionary
                differences = bundled.verify()
                if differences:
                    raise StoreError(f"the bundle's tables differ from its log in "
                                     f"{len(differences)} places; it was not written")
            return finish_bundle(copy, redacted=redact).as_dict()
        except BaseException:
            copy.discard()
            raise

    # -- lifecycle -----------------------------------------------------------------------------

    def close(self) -> None:
        self._log.close()

    # -- sealing -------------------------------------------------------------------------------

    @property
    def sealed(self) -> bool:
        """Whether the store's payloads are encrypted at rest."""
        return self._log.sealed

    def rekey(self, new_key: bytes | None) -> None:
        """Re-encrypt the store under `new_key` (a plain store: encrypt it in place; None:
        decrypt it), in one transaction. The chain is computed again: record the new head."""
        self._log.rekey(new_key)

    def chain_head(self) -> tuple[int, bytes]:
        """(last log position, its chain hash): record it to prove the log unchanged later."""
        return self._log.head()

    def verify_chain(self, head: tuple[bytes, int] | None = None) -> ChainReport:
        """Recompute the log's chain (and check a recorded (hash, position) head); the report
        names the first entry changed, removed, inserted or reordered."""
        return self._log.verify_chain(head)

    def flush(self) -> list[Path]:
        """Log out: close the store and delete its files (database, -wal, -shm)."""
        self.close()
        return flush_files(self.path) if self.path is not None else []

    @staticmethod
    def flush_user(data_dir: str | os.PathLike[str] | None, user_id: str) -> list[Path]:
        """Delete the store of `user_id` without opening it; returns the files removed."""
        directory = Path(data_dir).expanduser() if data_dir is not None else default_data_dir()
        return flush_files(user_db_path(directory, user_id))

    @staticmethod
    def list_users(data_dir: str | os.PathLike[str] | None = None) -> list[StoreFile]:
        """The stores in `data_dir` (default: `default_data_dir()`), by user id, with their
        size in bytes, number of log entries and last activity; read without opening them for
        writing. An empty list when the directory does not exist."""
        directory = Path(data_dir).expanduser() if data_dir is not None else default_data_dir()
        return list_stores(directory)

    @staticmethod
    def store_file(data_dir: str | os.PathLike[str] | None, user_id: str) -> Path:
        """Where the store of `user_id` lives in `data_dir` (default: `default_data_dir()`),
        whether or not it exists yet: `<data dir>/<encoded user id>.chatledger`. Raises
        `UserIdError` for a user id that cannot name a store."""
        directory = Path(data_dir).expanduser() if data_dir is not None else default_data_dir()
        return user_db_path(directory, user_id)

    @staticmethod
    def store_files(data_dir: str | os.PathLike[str] | None, user_id: str) -> list[Path]:
        """The files of `user_id`'s store that are there (the database, its `-wal` and
        `-shm`): empty when there is no store; a flush killed half-way can leave some."""
        return store_files(ChatStore.store_file(data_dir, user_id))

    def __enter__(self) -> ChatStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the past (see projections.history) ----------------------------------------------------

    def as_of(
        self, *, position: int | None = None, time: TimeLike | None = None,
        cids: Sequence[str] | None = None, message_id: str | None = None,
        on_progress: ProgressCallback | None = None,
    ) -> PastStore:
        """The read tables as of a log position or a time, read-only: a `PastStore` with the
        read methods of this class. Close it when done. `time` takes the forms `history`'s
        `since` takes (an aware datetime, RFC 3339, an age, epoch microseconds). `cids`: only
        these channels will be asked about, and only their entries are replayed; `message_id`:
        only this message, and only its channel's entries are replayed (see
        `history.as_of`). `on_progress(done, total)` follows the replay."""
        from chatledger.projections.history import as_of

        return as_of(self, position=position, time=optional_micros(time), cids=cids,
                     message_id=message_id, on_progress=on_progress)

    def explain(self, message_id: str, *, unchanged: bool = False) -> list[Explanation]:
        """Every log entry that changed a message, oldest first, with what it changed."""
        from chatledger.projections.history import explain

        return explain(self, message_id, unchanged=unchanged)
