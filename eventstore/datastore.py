"""APSW connections for one SQLite file: one writer, pooled readers, errors in the library's types.

SQLite allows one writer at a time, so the datastore keeps exactly one write connection behind a
lock and opens `BEGIN IMMEDIATE` transactions on it: a writer waits for the lock up front instead
of failing halfway through a transaction that tried to upgrade. Readers each take a connection of
their own from a small pool, so in WAL mode they read a consistent snapshot while the writer
works. An in-memory database exists only inside the connection that made it, so there every
transaction shares the one connection.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal
from urllib.parse import unquote, urlsplit

import apsw
from chatledger.eventstore.codec import PayloadCodec
from chatledger.eventstore.seal import EntrySealer
from eventsourcing.persistence import (
    DatabaseError,
    DataError,
    IntegrityError,
    InterfaceError,
    InternalError,
    OperationalError,
    PersistenceError,
    ProgrammingError,
)

Synchronous = Literal["OFF", "NORMAL", "FULL", "EXTRA"]
OriginatorIdType = Literal["uuid", "text"]

DEFAULT_LOCK_TIMEOUT = 5.0
# Bulk ingest writes many pages per commit; checkpointing every 1,000 pages (the default) made
# batch ingest a third slower in measurements on this machine kind (see PERF-NOTES).
DEFAULT_WAL_AUTOCHECKPOINT = 16_000
WAL_SIZE_LIMIT = 64 * 1024 * 1024
WRITER_CACHE_KIB = 64 * 1024
# Prepared statements kept per connection. The projector alone runs ~100 distinct statements
# in a replay; with APSW's default of 100 they evicted each other 16,000 times per 100,000
# events (each eviction a fresh prepare next time).
STATEMENT_CACHE_SIZE = 512
FILE_MODE = 0o600

# NOFOLLOW: SQLite refuses a database path that is a symbolic link. It does not look at the
# -wal and -shm names (a link there is followed or ignored): EventLog.open refuses those.
_OPEN_FLAGS = (apsw.SQLITE_OPEN_READWRITE | apsw.SQLITE_OPEN_CREATE | apsw.SQLITE_OPEN_URI
               | apsw.SQLITE_OPEN_NOFOLLOW)

# The settings of a connection (the ones with a value take it from the datastore's own).
_SYNCHRONOUS = "PRAGMA synchronous={}"
_JOURNAL_WAL = "PRAGMA journal_mode=WAL"
_WAL_AUTOCHECKPOINT = "PRAGMA wal_autocheckpoint={:d}"
_JOURNAL_SIZE_LIMIT = f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT}"
_WRITER_CACHE = f"PRAGMA cache_size=-{WRITER_CACHE_KIB}"
_VACUUM = "VACUUM"
_SELECT_DICTIONARY = "SELECT level, data FROM zstd_dictionaries WHERE id=?"
_BEGIN_WRITE = "BEGIN IMMEDIATE"  # takes the write lock now, not at the first write
_BEGIN_READ = "BEGIN"  # deferred: a snapshot for the statements in it
_COMMIT = "COMMIT"
_ROLLBACK = "ROLLBACK"


def is_memory_name(db_name: str) -> bool:
    """True for names that open a private in-memory database rather than a file."""
    return db_name == ":memory:" or "mode=memory" in db_name or db_name.startswith("file::memory:")


def filesystem_path(db_name: str) -> Path | None:
    """The file a database name refers to (plain path or `file:` URI), or None for memory."""
    if is_memory_name(db_name) or not db_name:
        return None
    if db_name.startswith("file:"):
        return Path(unquote(urlsplit(db_name).path))
    return Path(db_name)


# Ordered most specific first: several APSW exceptions subclass others.
_ERROR_MAP: tuple[tuple[type[BaseException], type[PersistenceError]], ...] = (
    (apsw.ConstraintError, IntegrityError),
    (apsw.BusyError, OperationalError),
    (apsw.LockedError, OperationalError),
    (apsw.SQLError, OperationalError),  # "no such table" is operational, as in sqlite3
    (apsw.ReadOnlyError, OperationalError),
    (apsw.CantOpenError, OperationalError),
    (apsw.FullError, OperationalError),
    (apsw.IOError, OperationalError),
    (apsw.TooBigError, DataError),
    (apsw.MismatchError, DataError),
    (apsw.RangeError, DataError),
    (apsw.NotADBError, DatabaseError),
    (apsw.CorruptError, DatabaseError),
    (apsw.InternalError, InternalError),
    (apsw.ConnectionClosedError, InterfaceError),
    (apsw.ThreadingViolationError, ProgrammingError),
    (apsw.MisuseError, ProgrammingError),
)


def translate(error: apsw.Error) -> PersistenceError:
    """The `eventsourcing` exception that stands for an APSW error."""
    for apsw_type, library_type in _ERROR_MAP:
        if isinstance(error, apsw_type):
            return library_type(str(error))
    return PersistenceError(str(error))


@contextmanager
def library_errors() -> Iterator[None]:
    """Re-raise APSW errors as the `eventsourcing` library's own exception types."""
    try:
        yield
    except apsw.Error as error:
        raise translate(error) from error


class APSWDatastore:
    """One SQLite database reached through APSW: a locked writer and a pool of readers.

    `transaction(commit=True)` runs on the writer inside `BEGIN IMMEDIATE`; `transaction(commit=False)`
    runs on a reader inside a deferred `BEGIN`, so several statements see one snapshot. Listeners
    registered with `listen()` are set after every commit of the writer (subscriptions wait on them).
    """

    def __init__(
        self,
        db_name: str,
        *,
        lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
        synchronous: Synchronous = "NORMAL",
        originator_id_type: OriginatorIdType = "uuid",
        wal_autocheckpoint: int = DEFAULT_WAL_AUTOCHECKPOINT,
        max_readers: int = 8,
    ) -> None:
        if not db_name:
            raise InterfaceError("the database name is empty: give a file path or ':memory:'")
        if synchronous.upper() not in ("OFF", "NORMAL", "FULL", "EXTRA"):
            raise InterfaceError(
                f"synchronous must be OFF, NORMAL, FULL or EXTRA, not {synchronous!r}"
            )
        self.db_name = db_name
        self.lock_timeout = lock_timeout
        self.synchronous = synchronous.upper()
        self.originator_id_type = originator_id_type
        self.wal_autocheckpoint = wal_autocheckpoint
        self.is_memory = is_memory_name(db_name)
        self.path = filesystem_path(db_name)
        self._write_lock = threading.RLock()
        # The thread in a transaction on the write connection, if any: its reads join it.
        self._writing_thread: int | None = None
        self._readers: list[apsw.Connection] = []
        self._readers_lock = threading.Lock()
        self._reader_slots = threading.BoundedSemaphore(max_readers)
        self._listeners: set[threading.Event] = set()
        self._closed = False
        # How payloads are compressed is a property of the file, shared by all its recorders.
        self.codec = PayloadCodec(loader=None if self.is_memory else self._load_dictionary)
        # Encrypts (with a key) and chains every row the recorders insert into the log.
        self.sealer = EntrySealer(self.codec)
        self._create_file()
        self.writer = self._connect()
        self._configure_writer(self.writer)

    # -- connections ---------------------------------------------------------------------------

    def _create_file(self) -> None:
        # SQLite creates new files with the umask's mode; the design promises 0600. SQLite gives
        # the -wal and -shm files the mode of the database file, so this covers all three.
        if self.path is None or self.path.exists():
            return
        try:
            # O_EXCL: never through a symbolic link planted at the name, dangling or not.
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW,
                         FILE_MODE)
        except FileExistsError:
            return
        except OSError as error:
            raise OperationalError(f"cannot create {self.path}: {error.strerror}") from error
        os.close(fd)

    def _connect(self) -> apsw.Connection:
        try:
            connection = apsw.Connection(self.db_name, flags=_OPEN_FLAGS,
                                         statementcachesize=STATEMENT_CACHE_SIZE)
            connection.set_busy_timeout(int(self.lock_timeout * 1000))
            connection.execute(_SYNCHRONOUS.format(self.synchronous))
        except apsw.Error as error:
            raise translate(error) from error
        return connection

    def _configure_writer(self, connection: apsw.Connection) -> None:
        with library_errors():
            if not self.is_memory:
                (mode,) = connection.execute(_JOURNAL_WAL).fetchone() or (None,)
                if str(mode).lower() != "wal":
                    raise OperationalError(f"cannot switch {self.db_name} to WAL mode")
                connection.execute(_WAL_AUTOCHECKPOINT.format(int(self.wal_autocheckpoint)))
                # After a checkpoint the WAL is cut back to this size rather than kept at its peak.
                connection.execute(_JOURNAL_SIZE_LIMIT)
            # Re-applied after the journal mode: changing it can reset the sync level.
            connection.execute(_SYNCHRONOUS.format(self.synchronous))
            # The read tables' indexes are written all over on every append; with SQLite's
            # default 2 MB cache they are read back from the OS for each statement.
            connection.execute(_WRITER_CACHE)

    def _take_reader(self) -> apsw.Connection:
        self._reader_slots.acquire()
        with self._readers_lock:
            if self._readers:
                return self._readers.pop()
        try:
            return self._connect()
        except BaseException:
            self._reader_slots.release()
            raise

    def _give_back_reader(self, connection: apsw.Connection) -> None:
        with self._readers_lock:
            if self._closed:
                connection.close()
            else:
                self._readers.append(connection)
        self._reader_slots.release()

    # -- transactions --------------------------------------------------------------------------

    def transaction(self, *, commit: bool) -> Transaction:
        """A cursor inside a transaction: the writer's when `commit`, else a reader's snapshot.

        A write transaction commits when the block ends normally and rolls back on an exception.
        """
        if self._closed:
            raise InterfaceError(f"the datastore for {self.db_name} is closed")
        return Transaction(self, commit=commit)

    def _load_dictionary(self, dictionary_id: int) -> tuple[int, bytes] | None:
        with self.transaction(commit=False) as cursor:
            row = cursor.execute(_SELECT_DICTIONARY, (dictionary_id,)).fetchone()
        if row is None:
            return None
        level, data = row
        return level, data

    # -- change notification -------------------------------------------------------------------

    def listen(self, event: threading.Event) -> None:
        self._listeners.add(event)

    def unlisten(self, event: threading.Event) -> None:
        self._listeners.discard(event)

    def _notify(self) -> None:
        for listener in list(self._listeners):
            listener.set()

    # -- lifecycle -----------------------------------------------------------------------------

    def checkpoint(self) -> None:
        """Move the WAL's pages into the database file and truncate the WAL."""
        if self.is_memory:
            return
        with self._write_lock, library_errors():
            self.writer.wal_checkpoint(mode=apsw.SQLITE_CHECKPOINT_TRUNCATE)

    def vacuum(self) -> None:
        """Repack the file: pages left part-empty by rewritten rows are given back."""
        with self._write_lock, library_errors():
            self.writer.execute(_VACUUM)

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        if self._closed:
            return
        with self._write_lock:
            self._closed = True
            with self._readers_lock:
                readers, self._readers = self._readers, []
            for connection in readers:
                connection.close()
            self.writer.close()
        self._notify()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown may have torn down apsw
            pass


class Transaction:
    """`with datastore.transaction(commit=...) as cursor:` (a class: appends open one each).

    A read (`commit=False`) on a thread that is inside a transaction on the write connection
    joins that transaction: it sees what the thread has written so far (a `ChatStore.batch()`
    reading its own changes), and it neither begins nor ends anything.
    """

    __slots__ = ("_datastore", "_commit", "_connection", "_cursor", "_locked", "_joined",
                 "_owns_writer")

    def __init__(self, datastore: APSWDatastore, *, commit: bool) -> None:
        self._datastore = datastore
        self._commit = commit
        self._connection: apsw.Connection | None = None
        self._cursor: apsw.Cursor | None = None
        self._locked = False
        self._joined = False
        self._owns_writer = False  # began the write connection's transaction (see _release)

    def __enter__(self) -> apsw.Cursor:
        datastore = self._datastore
        if not self._commit and datastore._writing_thread == threading.get_ident():
            self._joined = True
            try:
                return datastore.writer.cursor()  # its own cursor: the writer's stay as they are
            except apsw.Error as error:
                raise translate(error) from error
        if self._commit or datastore.is_memory:
            datastore._write_lock.acquire()
            self._locked = True
            connection = datastore.writer
        else:
            connection = datastore._take_reader()
        self._connection = connection
        try:
            cursor = self._cursor = connection.cursor()
            cursor.execute(_BEGIN_WRITE if self._commit else _BEGIN_READ)
        except BaseException as error:
            self._release()
            if isinstance(error, apsw.Error):
                raise translate(error) from error
            raise
        if self._locked:
            self._owns_writer = True
            datastore._writing_thread = threading.get_ident()
        return cursor

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object
    ) -> None:
        if self._joined:
            if isinstance(exc, apsw.Error):
                raise translate(exc) from exc
            return
        connection, cursor = self._connection, self._cursor
        assert connection is not None and cursor is not None
        # On the transaction's own cursor: executing resets whatever statement it left open.
        try:
            if exc is None:
                try:
                    cursor.execute(_COMMIT if self._commit else _ROLLBACK)
                except apsw.Error as error:
                    if connection.in_transaction:
                        cursor.execute(_ROLLBACK)
                    raise translate(error) from error
            else:
                if connection.in_transaction:
                    try:
                        cursor.execute(_ROLLBACK)
                    except apsw.Error as error:
                        raise translate(error) from error
                if isinstance(exc, apsw.Error):
                    raise translate(exc) from exc
        finally:
            self._release()
        if self._commit:
            self._datastore._notify()

    def _release(self) -> None:
        datastore = self._datastore
        if self._locked:
            self._locked = False
            if self._owns_writer:
                self._owns_writer = False
                datastore._writing_thread = None
            datastore._write_lock.release()
        elif self._connection is not None:
            datastore._give_back_reader(self._connection)

