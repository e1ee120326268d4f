"""Sealed stores: payloads encrypted at rest, and a hash chain over the log.

Two independent protections, both applied where a row is written (`EntrySealer.rows_for_insert`,
called by the recorder for every insert into the log):

- **Encryption** (only when the store has a key): every payload is encrypted with AES-256-GCM
  after compression, with a fresh 96-bit nonce per entry, and the entry's position and codec as
  associated data, so a payload moved to another row no longer decrypts. The same applies to
  quarantined bytes (bound to their quarantine id) and the compression dictionaries (bound to
  their id). The read tables stay plain. `cryptography` is imported only when a key is used.
- **The chain**: every entry of the log carries `chain = SHA-256(msgpack([previous chain,
  position, originator_id, originator_version, topic, stored bytes, codec, source, received_at,
  event_at, connection_id]))`, the first entry's previous chain being 32 zero bytes. It is
  computed over the bytes as stored (after encryption), so it can be checked without the key.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import apsw
import msgspec

GENESIS = bytes(32)
NONCE_SIZE = 12
KEY_SIZE = 32
CIPHER_NAME = "aes-256-gcm"
# The meta keys of a sealed store: the cipher's name, and a known text sealed with the key (an
# open checks the key against it before it changes anything).
META_CIPHER = "cipher"
META_KEY_CHECK = "key_check"
# Present while the chain of an upgraded store is being computed: the last position chained.
META_CHAIN_PENDING = "chain_pending"
KEYRING_SERVICE = "chatledger"

_KEY_CHECK_TEXT = b"chatledger key check"
# Associated data: what the ciphertext is bound to. A prefix per kind of row, so that bytes of
# one kind (a quarantined item) cannot pass for another (a log entry) at the same number.
_ENTRY_AD = struct.Struct(">4sqq")  # b"ent1", position, codec
_NUMBERED_AD = struct.Struct(">4sq")  # b"qua1" quarantine id, b"dic1" dictionary id, b"key1" 0

_pack = msgspec.msgpack.Encoder().encode


class StoreKeyError(Exception):
    """A key that does not fit the store, or a store that needs one: the message says why."""


class SealError(Exception):
    """A sealed payload that does not decrypt: the wrong key, or bytes changed or moved."""


# -- keys -------------------------------------------------------------------------------------


def parse_key(material: bytes) -> bytes:
    """A 32-byte key from what a key file or keyring holds: 32 raw bytes, 64 hex digits, or
    base64 of 32 bytes (surrounding whitespace ignored)."""
    if len(material) == KEY_SIZE:
        return bytes(material)
    text = material.strip()
    if len(text) == 2 * KEY_SIZE:
        try:
            return bytes.fromhex(text.decode("ascii"))
        except (ValueError, UnicodeDecodeError):
            pass
    try:
        decoded = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        decoded = b""
    if len(decoded) == KEY_SIZE:
        return decoded
    raise StoreKeyError("a key must be 32 bytes: raw, 64 hexadecimal digits, or base64")


def read_key_file(path: str | os.PathLike[str]) -> bytes:
    """The key in a file (see `parse_key`); never echoes the file's content."""
    try:
        material = Path(path).read_bytes()
    except OSError as error:
        raise StoreKeyError(f"cannot read the key file {path}: {error.strerror or error}") from None
    try:
        return parse_key(material)
    except StoreKeyError as error:
        raise StoreKeyError(f"the key file {path} holds no usable key: {error}") from None


def new_key() -> bytes:
    return os.urandom(KEY_SIZE)


def keyring_key(user_id: str, *, pending: bool = False) -> bytes | None:
    """The user's key in the system keyring (service "chatledger", the user id as the name;
    `pending`: the key a `rekey` is moving to), or None."""
    import keyring  # only when asked: an optional extra

    name = f"{user_id}.next" if pending else user_id
    try:
        stored = keyring.get_password(KEYRING_SERVICE, name)
    except Exception as error:  # the backends raise their own kinds
        raise StoreKeyError(f"cannot read the system keyring: {type(error).__name__}") from None
    return None if stored is None else parse_key(stored.encode("ascii", "replace"))


def store_keyring_key(user_id: str, key: bytes | None, *, pending: bool = False) -> None:
    """Write (or with None, delete) the user's key in the system keyring, as hexadecimal."""
    import keyring

    name = f"{user_id}.next" if pending else user_id
    try:
        if key is None:
            try:
                keyring.delete_password(KEYRING_SERVICE, name)
            except keyring.errors.PasswordDeleteError:
                pass
        else:
            keyring.set_password(KEYRING_SERVICE, name, key.hex())
    except Exception as error:
        raise StoreKeyError(f"cannot write to the system keyring: {type(error).__name__}") from None


# -- the cipher ----------------------------------------------------------------------------------


class PayloadCipher:
    """AES-256-GCM over payloads, bound to where they are stored. Nonces are random: 96 bits
    drawn once per batch of entries (one system call), so two writers never share one."""

    __slots__ = ("_aead", "_invalid_tag")

    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_SIZE:
            raise StoreKeyError("a key must be 32 bytes")
        # Imported here, not with the module: `import chatledger` must not need the extra.
        from cryptography.exceptions import InvalidTag
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        self._aead = AESGCM(key)
        self._invalid_tag = InvalidTag

    # Entries of the log: bound to (position, codec).

    def seal_entries(
        self, states: Sequence[bytes], first_position: int, codecs: Sequence[int],
    ) -> list[bytes]:
        nonces = os.urandom(NONCE_SIZE * len(states))
        encrypt = self._aead.encrypt
        pack = _ENTRY_AD.pack
        sealed: list[bytes] = []
        for offset, (state, codec) in enumerate(zip(states, codecs)):
            nonce = nonces[offset * NONCE_SIZE:(offset + 1) * NONCE_SIZE]
            sealed.append(nonce + encrypt(nonce, state, pack(b"ent1", first_position + offset, codec)))
        return sealed

    def open_entry(self, stored: bytes, position: int, codec: int) -> bytes:
        return self._open(stored, _ENTRY_AD.pack(b"ent1", position, codec), f"log entry {position}")

    # Other numbered things: quarantined items, dictionaries, the key check.

    def seal_numbered(self, kind: bytes, number: int, data: bytes) -> bytes:
        nonce = os.urandom(NONCE_SIZE)
        return nonce + self._aead.encrypt(nonce, data, _NUMBERED_AD.pack(kind, number))

    def open_numbered(self, kind: bytes, number: int, stored: bytes) -> bytes:
        return self._open(stored, _NUMBERED_AD.pack(kind, number), f"{kind[:3].decode()} {number}")

    def _open(self, stored: bytes, associated: bytes, what: str) -> bytes:
        try:
            return self._aead.decrypt(stored[:NONCE_SIZE], stored[NONCE_SIZE:], associated)
        except self._invalid_tag:
            raise SealError(f"{what} does not decrypt: changed, moved, or sealed with another "
                            "key") from None

    def key_check(self) -> bytes:
        return self.seal_numbered(b"key1", 0, _KEY_CHECK_TEXT)

    def fits(self, key_check: bytes) -> bool:
        try:
            return self.open_numbered(b"key1", 0, key_check) == _KEY_CHECK_TEXT
        except SealError:
            return False


# -- the chain -----------------------------------------------------------------------------------

# The columns of a log row the chain covers, in the order `entry_hash` takes them.
# The order of a row as the recorder inserts it (`persistence.EventRow`), so that the append
# hashes the row it already has without reordering it.
CHAIN_COLUMNS = ("originator_id, originator_version, topic, state, codec, source, received_at,"
                 " event_at, connection_id")
# A row of `rowid, CHAIN_COLUMNS` (`_ChainedRow`), and with its `chain` after them (`_SealedRow`).
_ChainedRow = tuple[int, str, int, str, bytes, int, int, int, "int | None", "str | None"]
_SealedRow = tuple[int, str, int, str, bytes, int, int, int, "int | None", "str | None",
                   "bytes | None"]


def entry_hash(previous: bytes, position: int, row: Sequence[Any]) -> bytes:
    """The chain hash of one entry. `row` holds the values of `CHAIN_COLUMNS`, in order."""
    return hashlib.sha256(_pack((previous, position, *row))).digest()


class EntrySealer:
    """Turns rows to insert into the log (`persistence.EventRow`) into rows as stored: the
    payload encrypted when a cipher is set, and the chain hash appended. One per datastore."""

    __slots__ = ("_codec", "_tail_statements")

    def __init__(self, codec: Any) -> None:
        # The datastore's `PayloadCodec`: its cipher (None in a plain store) seals the rows.
        self._codec = codec
        self._tail_statements: dict[str, str] = {}

    def tail(self, cursor: apsw.Cursor, table: str) -> tuple[int, bytes | None]:
        """The last position of the log and its chain hash (GENESIS for an empty log; None when
        the chain is still being computed by an upgrade)."""
        statement = self._tail_statements.get(table)
        if statement is None:
            statement = f"SELECT rowid, chain FROM {table} ORDER BY rowid DESC LIMIT 1"
            self._tail_statements[table] = statement
        row = cursor.execute(statement).fetchone()
        if row is None:
            return 0, GENESIS
        position, chain = row
        return position, chain

    def rows_for_insert(
        self, cursor: apsw.Cursor, table: str, rows: Sequence[tuple[Any, ...]],
    ) -> list[tuple[Any, ...]]:
        """Rows with the stored state and the chain hash, for positions following the tail (the
        caller inserts them in order, in this write transaction)."""
        last, previous = self.tail(cursor, table)
        position = last + 1
        cipher = self._codec.cipher
        if cipher is not None:
            states = cipher.seal_entries([r[3] for r in rows], position, [r[4] for r in rows])
            rows = [r[:3] + (state,) + r[4:] for r, state in zip(rows, states)]
        if previous is None:  # an upgrade is computing the chain: it will reach these rows
            return [row + (None,) for row in rows]
        # The hot loop of every append (about 1 µs a row): one msgpack of the row as it is,
        # one SHA-256, one tuple.
        sha256 = hashlib.sha256
        pack = _pack
        out: list[tuple[Any, ...]] = []
        append = out.append
        for row in rows:
            previous = sha256(pack((previous, position) + row)).digest()
            append(row + (previous,))
            position += 1
        return out


# -- checking the chain --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ChainBreak:
    """The first place where the log is not what its chain says."""

    position: int
    kind: str  # changed, removed, inserted, reordered, unchained, truncated, rewritten
    detail: str

    def __str__(self) -> str:
        return f"position {self.position}: {self.detail}"


@dataclass(frozen=True, slots=True)
class ChainReport:
    entries: int
    head_position: int
    head_hash: bytes
    broken: ChainBreak | None

    @property
    def ok(self) -> bool:
        return self.broken is None


def format_head(position: int, chain: bytes) -> str:
    return f"{chain.hex()}@{position}"


def parse_head(text: str) -> tuple[bytes, int]:
    """HASH@POSITION as `chatledger head` prints it."""
    digest, at, position = text.strip().partition("@")
    try:
        value = bytes.fromhex(digest)
        number = int(position)
    except ValueError:
        raise ValueError(f"not a head (HASH@POSITION): {text!r}") from None
    if not at or len(value) != 32 or number < 0:
        raise ValueError(f"not a head (HASH@POSITION): {text!r}")
    return value, number


class ChainChecker:
    """Recomputes the chain of a log table, in short read transactions, and says where it first
    breaks and how (see `ChainBreak.kind`)."""

    # Rows read per transaction: short ones let the WAL reset while a long check runs.
    PAGE = 5_000
    # How far a moved entry is looked for around a break (a swap of neighbours, a shifted run).
    LOOK_AROUND = 64

    def __init__(self, table: str) -> None:
        self.table = table
        self._page = (f"SELECT rowid, {CHAIN_COLUMNS}, chain FROM {table} WHERE rowid>? "
                      "ORDER BY rowid LIMIT ?")
        self._window = (f"SELECT rowid, {CHAIN_COLUMNS}, chain FROM {table} WHERE rowid>=? "
                        "AND rowid<=? ORDER BY rowid")

    def rows(self, transaction: Any) -> Iterator[tuple[Any, ...]]:
        after = 0
        while True:
            with transaction() as cursor:
                page = cursor.execute(self._page, (after, self.PAGE)).fetchall()
            yield from page
            if len(page) < self.PAGE:
                return
            after, *_ = page[-1]

    def check(self, transaction: Any, head: tuple[bytes, int] | None = None) -> ChainReport:
        """`transaction()` opens a read transaction and gives its cursor. `head`: a (hash,
        position) recorded earlier, which the recomputed chain must reach unchanged."""
        previous, expected, entries = GENESIS, 1, 0
        at_head: bytes | None = None
        for row in self.rows(transaction):
            position, *values, stored = row
            if position != expected:
                return self._report(entries, expected - 1, previous, ChainBreak(
                    expected, "removed",
                    f"entries {expected}..{position - 1} are missing (the next entry is {position})"
                    if position > expected + 1 else f"entry {expected} is missing"))
            digest = entry_hash(previous, position, values)
            if stored != digest:
                return self._report(entries, position - 1, previous,
                                    self._explain(transaction, position, previous, stored))
            previous, expected, entries = digest, expected + 1, entries + 1
            if head is not None and position == head[1]:
                at_head = digest
        last = expected - 1
        if head is not None:
            wanted, head_position = head
            if head_position > last:
                return self._report(entries, last, previous, ChainBreak(
                    last + 1, "truncated",
                    f"the log ends at {last}, before the recorded head {head_position}: entries "
                    "were removed from its end"))
            if head_position == 0:
                at_head = GENESIS
            if at_head != wanted:
                return self._report(entries, last, previous, ChainBreak(
                    head_position, "rewritten",
                    f"the chain is whole but reaches another hash at {head_position} than the "
                    "recorded head: entries up to there were changed and the chain computed again"))
        return ChainReport(entries, last, previous, None)

    @staticmethod
    def _report(entries: int, position: int, chain: bytes, broken: ChainBreak) -> ChainReport:
        return ChainReport(entries, position, chain, broken)

    def _explain(
        self, transaction: Any, position: int, previous: bytes, stored: bytes | None,
    ) -> ChainBreak:
        """What most likely happened at the first entry that does not hash to its chain value.
        Only called at a break: it tries the entries around it at other places (a few thousand
        hashes)."""
        if stored is None:
            return ChainBreak(position, "inserted",
                              f"entry {position} has no chain hash: it was inserted, not appended")
        with transaction() as cursor:
            window = cursor.execute(self._window, (position - self.LOOK_AROUND,
                                              position + self.LOOK_AROUND)).fetchall()
        # position -> (the values of CHAIN_COLUMNS, the chain hash stored)
        by_position = {number: (values, chain) for number, *values, chain in window}
        # An entry further on hashes here, after the last good one, and so does the one after
        # it at the next place (a whole run moved up, not one entry moved): entries were put
        # before it.
        for later in range(position + 1, position + self.LOOK_AROUND + 1):
            moved = by_position.get(later)
            if moved is None:
                continue
            moved_values, moved_chain = moved
            if moved_chain != entry_hash(previous, position, moved_values):
                continue
            after = by_position.get(later + 1)
            if after is not None:
                after_values, after_chain = after
                if after_chain != entry_hash(moved_chain, position + 1, after_values):
                    continue
            count = later - position
            return ChainBreak(position, "inserted",
                              f"{count} entr{'y was' if count == 1 else 'ies were'} inserted "
                              f"at {position} (the entries after moved up)")
        here_values, here_chain = by_position[position]
        # The next entry follows this one's chain, but hashed further on: entries before this
        # one were removed and the rest renumbered down.
        following = by_position.get(position + 1)
        if following is not None:
            following_values, following_chain = following
            for shift in range(1, self.LOOK_AROUND + 1):
                if following_chain == entry_hash(here_chain, position + 1 + shift,
                                                 following_values):
                    return ChainBreak(position, "removed",
                                      f"entries {position}..{position + shift - 1} were removed "
                                      "(the entries after moved down)")
        candidates = {GENESIS, previous,
                      *(chain for _, chain in by_position.values() if chain is not None)}
        for other in sorted(by_position, key=lambda number: abs(number - position)):
            if other == position:
                continue
            for before in candidates:
                if here_chain != entry_hash(before, other, here_values):
                    continue
                if before == previous and other > position:
                    return ChainBreak(position, "removed",
                                      f"entries {position}..{other - 1} were removed (the "
                                      "entries after moved down)")
                return ChainBreak(position, "reordered",
                                  f"the entry at {position} was appended at {other} (entries "
                                  "swapped or reordered)")
        return ChainBreak(position, "changed",
                          f"entry {position} was changed (its envelope or stored bytes differ "
                          "from what was appended)")


# -- computing the chain of existing rows --------------------------------------------------------


class ChainWriter:
    """Computes the chain of rows already in the log: once for a store written before the chain
    existed (resumably, a page per transaction), or from a position on after rows were
    rewritten in place (a dictionary's first training, a rekey) in the caller's transaction."""

    PAGE = 5_000

    def __init__(self, table: str) -> None:
        self.table = table
        self._page = (f"SELECT rowid, {CHAIN_COLUMNS} FROM {table} WHERE rowid>? "
                      "ORDER BY rowid LIMIT ?")
        self._previous = f"SELECT chain FROM {table} WHERE rowid=?"
        self._set = f"UPDATE {table} SET chain=? WHERE rowid=?"

    def previous(self, cursor: apsw.Cursor, position: int) -> bytes | None:
        if position <= 1:
            return GENESIS
        row = cursor.execute(self._previous, (position - 1,)).fetchone()
        if row is None:
            return None
        (chain,) = row
        return cast("bytes | None", chain)

    def rechain_page(
        self, cursor: apsw.Cursor, after: int, previous: bytes,
    ) -> tuple[int, bytes, int]:
        """Chain up to PAGE rows after `after`: (last position, its hash, rows done)."""
        page = cast("list[_ChainedRow]", cursor.execute(self._page, (after, self.PAGE)).fetchall())
        updates: list[tuple[bytes, int]] = []
        last = after
        for last, *values in page:
            previous = entry_hash(previous, last, values)
            updates.append((previous, last))
        cursor.executemany(self._set, updates)
        return last, previous, len(page)

    def rechain_from(self, cursor: apsw.Cursor, position: int) -> None:
        """Chain every row from `position` to the end, in the caller's transaction."""
        previous = self.previous(cursor, position)
        if previous is None:
            return  # the chain is being computed by an upgrade: it reaches these rows too
        after, done = position - 1, self.PAGE
        while done == self.PAGE:
            after, previous, done = self.rechain_page(cursor, after, previous)


# -- the key of a store -----------------------------------------------------------------------


class StoreKeys:
    """Which key a store is sealed with (checked against `META_KEY_CHECK`), and the operations
    that change it: sealing a new store, re-encrypting a store under another key (`rekey`),
    encrypting a plain one in place, and reading the bytes the key protects besides the log's
    entries (quarantined items)."""

    PAGE = 5_000

    def __init__(self, table: str) -> None:
        self.table = table
        self._page = (f"SELECT rowid, {CHAIN_COLUMNS}, chain FROM {table} WHERE rowid>? "
                      "ORDER BY rowid LIMIT ?")
        self._update = f"UPDATE {table} SET state=?, chain=? WHERE rowid=?"

    def unlock(self, cursor: apsw.Cursor, datastore: Any, key: bytes | None, *, new: bool) -> None:
        """Give the datastore's codec the cipher of `key`, after checking it fits the store.
        `new`: the store was just created (in `cursor`'s write transaction) and is sealed with
        it."""
        # The cipher's name (text) and the key check (bytes).
        found: dict[str, Any] = dict(
            cast("list[tuple[str, Any]]",
                 cursor.execute(_GET_KEY_META, (META_CIPHER, META_KEY_CHECK)).fetchall()))
        name = found.get(META_CIPHER)
        if name is None:
            if key is None:
                return
            if not new:
                raise StoreKeyError("this store is not encrypted, and a key was given: "
                                    "`chatledger rekey` encrypts it in place")
            cipher = PayloadCipher(key)
            cursor.execute(_SET_KEY_META, (META_CIPHER, CIPHER_NAME))
            cursor.execute(_SET_KEY_META, (META_KEY_CHECK, cipher.key_check()))
            datastore.codec.cipher = cipher
            return
        if name != CIPHER_NAME:
            raise StoreKeyError(f"this store is encrypted with {name!r}, which this version of "
                                "chatledger cannot read")
        if key is None:
            raise StoreKeyError("this store is encrypted: open it with its key (--key-file or "
                                "--keyring)")
        cipher = PayloadCipher(key)
        if not cipher.fits(bytes(found.get(META_KEY_CHECK) or b"")):
            raise StoreKeyError("the key does not open this store (it was sealed with another)")
        datastore.codec.cipher = cipher

    # -- reading ---------------------------------------------------------------------------------

    @staticmethod
    def quarantined(codec: Any, quarantine_id: int, codec_id: int, stored: bytes) -> bytes:
        """A quarantined item's bytes as they arrived."""
        if codec.cipher is not None:
            stored = codec.cipher.open_numbered(b"qua1", quarantine_id, stored)
        return codec.decompress(codec_id, stored)

    @staticmethod
    def reencoded(codec: Any, position: int, stored: bytes) -> tuple[int, bytes, int]:
        """(codec, stored bytes, position) of a raw entry compressed with the newest dictionary
        (the first training re-encodes the entries stored before it), sealed again if sealed."""
        codec_id, compressed = codec.encode(codec.decode(0, stored, position))
        if codec.cipher is not None:
            compressed = codec.cipher.seal_entries([compressed], position, [codec_id])[0]
        return codec_id, compressed, position

    # -- changing the key ------------------------------------------------------------------------

    def rekey(self, datastore: Any, new_key: bytes | None) -> None:
        """Everything the key protects, re-encrypted under `new_key` (None: stored plain), in
        one write transaction, and the chain computed again over the new bytes."""
        codec = datastore.codec
        old: PayloadCipher | None = codec.cipher
        new = None if new_key is None else PayloadCipher(new_key)
        with datastore.transaction(commit=True) as cursor:
            self._reseal_entries(cursor, old, new)
            self._reseal_numbered(cursor, _QUARANTINE_ROWS, _QUARANTINE_UPDATE, b"qua1", old, new)
            self._reseal_numbered(cursor, _DICTIONARY_ROWS, _DICTIONARY_UPDATE, b"dic1", old, new)
            if new is None:
                cursor.execute(_DELETE_KEY_META, (META_CIPHER, META_KEY_CHECK))
            else:
                cursor.execute(_SET_KEY_META, (META_CIPHER, CIPHER_NAME))
                cursor.execute(_SET_KEY_META, (META_KEY_CHECK, new.key_check()))
        codec.cipher = new

    def _reseal_entries(
        self, cursor: apsw.Cursor, old: PayloadCipher | None, new: PayloadCipher | None,
    ) -> None:
        # One pass: the old chain is checked (a rekey must not launder changed entries into a
        # fresh chain), each payload re-encrypted, and the new chain computed.
        old_previous = new_previous = GENESIS
        after = 0
        while True:
            page = cast("list[_SealedRow]",
                        cursor.execute(self._page, (after, self.PAGE)).fetchall())
            updates: list[tuple[bytes, bytes | None, int]] = []
            for (position, originator_id, version, topic, stored, codec_id, source, received_at,
                 event_at, connection_id, chain) in page:
                values = (originator_id, version, topic, stored, codec_id, source, received_at,
                          event_at, connection_id)
                if chain is not None:
                    digest = entry_hash(old_previous, position, values)
                    if digest != chain:
                        raise StoreKeyError(
                            f"the log's chain breaks at entry {position} (`chatledger verify "
                            "--chain` says how): a rekey would chain the changed entries anew, "
                            "so it is refused")
                    old_previous = digest
                compressed = stored if old is None else old.open_entry(stored, position, codec_id)
                resealed = (compressed if new is None
                            else new.seal_entries([compressed], position, [codec_id])[0])
                if chain is not None:
                    new_previous = entry_hash(new_previous, position, (
                        originator_id, version, topic, resealed, codec_id, source, received_at,
                        event_at, connection_id))
                updates.append((resealed, None if chain is None else new_previous, position))
            cursor.executemany(self._update, updates)
            if len(page) < self.PAGE:
                return
            after = position  # the page's last

    @staticmethod
    def _reseal_numbered(
        cursor: apsw.Cursor, select: str, update: str, kind: bytes,
        old: PayloadCipher | None, new: PayloadCipher | None,
    ) -> None:
        rows = cast("list[tuple[int, bytes]]", cursor.execute(select).fetchall())
        resealed = []
        for number, stored in rows:
            plain = stored if old is None else old.open_numbered(kind, number, stored)
            resealed.append((plain if new is None else new.seal_numbered(kind, number, plain),
                             number))
        cursor.executemany(update, resealed)


_HAS_META = "SELECT 1 FROM chatledger_meta WHERE key=?"
_BEGIN = "BEGIN"  # deferred: a read transaction, one snapshot for the statements in it
_COMMIT = "COMMIT"
_GET_KEY_META = "SELECT key, value FROM chatledger_meta WHERE key IN (?, ?)"
_SET_KEY_META = ("INSERT INTO chatledger_meta (key, value) VALUES (?, ?) "
                 "ON CONFLICT (key) DO UPDATE SET value = excluded.value")
_DELETE_KEY_META = "DELETE FROM chatledger_meta WHERE key IN (?, ?)"
_QUARANTINE_ROWS = "SELECT id, raw FROM quarantine"
_QUARANTINE_UPDATE = "UPDATE quarantine SET raw=? WHERE id=?"
_DICTIONARY_ROWS = "SELECT id, data FROM zstd_dictionaries"
_DICTIONARY_UPDATE = "UPDATE zstd_dictionaries SET data=? WHERE id=?"


def check_file(path: str | os.PathLike[str], table: str = "stored_events",
               head: tuple[bytes, int] | None = None) -> ChainReport:
    """`ChainChecker.check` of a store's file through a read-only connection: for a sealed
    store whose key the checker does not have (the chain covers the stored bytes). Writes
    nothing; the file must have been opened once by this version (its chain computed)."""
    connection = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READONLY
                                 | apsw.SQLITE_OPEN_NOFOLLOW)
    try:
        connection.set_busy_timeout(5_000)
        pending = connection.execute(_HAS_META, (META_CHAIN_PENDING,)).fetchone()
        if pending is not None:
            raise StoreKeyError("the log's chain is still being computed: open the store once "
                                "(with its key) to finish it")
        return ChainChecker(table).check(lambda: _ReadOnly(connection), head)
    finally:
        connection.close()


class _ReadOnly:
    """A read transaction on a plain APSW connection, as `ChainChecker` takes them."""

    __slots__ = ("_connection",)

    def __init__(self, connection: apsw.Connection) -> None:
        self._connection = connection

    def __enter__(self) -> apsw.Cursor:
        cursor = self._connection.cursor()
        cursor.execute(_BEGIN)
        return cursor

    def __exit__(self, *exc: object) -> None:
        self._connection.execute(_COMMIT)


__all__ = [
    "StoreKeys",
    "check_file",
    "CIPHER_NAME",
    "ChainBreak",
    "ChainChecker",
    "ChainReport",
    "ChainWriter",
    "EntrySealer",
    "GENESIS",
    "StoreKeyError",
    "PayloadCipher",
    "SealError",
    "entry_hash",
    "format_head",
    "keyring_key",
    "new_key",
    "parse_head",
    "parse_key",
    "read_key_file",
    "store_keyring_key",
]
