"""Payload compression: zstd with a dictionary trained on the user's own events.

Chat events repeat the same keys, user objects and channel fields over and over, so a dictionary
trained on a sample of them compresses each small payload several times better than zstd alone.
Every row records which dictionary encoded it (`codec`); dictionaries are never changed or
removed once used, so every stored payload decompresses to exactly the bytes that arrived.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, cast

import apsw
import zstandard

if TYPE_CHECKING:
    from chatledger.eventstore.seal import PayloadCipher

RAW = 0
ZSTD_PLAIN = -1  # zstd without a dictionary (quarantine: huge, odd payloads)

# The most a dictionary may hold (zstd makes it smaller when the samples are few). 256 KiB against
# 112 KiB: payloads of the benchmark mix compress to 194 bytes instead of 206 (trained on the first
# 2,000, level 3, same speed to compress and decompress): the file of 100,000 events 0.8 MB smaller.
DICTIONARY_SIZE = 256 * 1024
LEVEL = 3
# Payloads smaller than this gain little from compression and are kept raw.
MIN_COMPRESS_SIZE = 64

_SELECT_DICTIONARIES_AFTER = (
    "SELECT id, level, data FROM zstd_dictionaries WHERE id > ? ORDER BY id")
_NEXT_DICTIONARY_ID = "SELECT COALESCE(MAX(id), 0) + 1 FROM zstd_dictionaries"
_INSERT_DICTIONARY = ("INSERT INTO zstd_dictionaries (id, created_at, trained_on, level, data) "
                      "VALUES (?,?,?,?,?)")

# Reads a dictionary that another connection stored after this one loaded the file.
DictionaryLoader = Callable[[int], "tuple[int, bytes] | None"]


class _PerThread(threading.local):
    """zstd contexts are not safe to share between threads: each thread gets its own."""

    def __init__(self) -> None:
        self.compressor: zstandard.ZstdCompressor | None = None
        self.compressor_for: int = RAW
        self.decompressors: dict[int, zstandard.ZstdDecompressor] = {}


class PayloadCodec:
    """Encodes and decodes payloads for one database file, from any thread.

    Until a dictionary exists, payloads are stored raw; `train()` creates one from samples and
    from then on `encode` compresses with it.
    """

    def __init__(self, loader: DictionaryLoader | None = None) -> None:
        self._dictionaries: dict[int, tuple[int, zstandard.ZstdCompressionDict]] = {}
        self.dictionary_id: int = RAW
        self._loader = loader
        self._lock = threading.Lock()
        self._local = _PerThread()
        # A sealed store's cipher (`seal.PayloadCipher`): stored bytes are decrypted before they
        # are decompressed, and dictionaries are stored encrypted. None: a plain store.
        self.cipher: PayloadCipher | None = None

    @property
    def active(self) -> bool:
        return self.dictionary_id != RAW

    # -- dictionaries --------------------------------------------------------------------------

    def load(self, cursor: apsw.Cursor) -> None:
        """Read the dictionaries of a file; the newest one encodes from now on."""
        self.refresh(cursor)

    def refresh(self, cursor: apsw.Cursor) -> None:
        """Pick up dictionaries stored since the last look (by another connection, say)."""
        known = max(self._dictionaries, default=0)
        for dictionary_id, level, data in cursor.execute(_SELECT_DICTIONARIES_AFTER, (known,)):
            self._add(dictionary_id, level, self.open_dictionary(dictionary_id, data))

    def open_dictionary(self, dictionary_id: int, stored: bytes) -> bytes:
        """A dictionary's bytes as trained, from the bytes stored in the file."""
        if self.cipher is None:
            return stored
        return self.cipher.open_numbered(b"dic1", dictionary_id, stored)

    def seal_dictionary(self, dictionary_id: int, data: bytes) -> bytes:
        """The bytes to store for a dictionary (encrypted in a sealed store)."""
        if self.cipher is None:
            return data
        return self.cipher.seal_numbered(b"dic1", dictionary_id, data)

    def _add(self, dictionary_id: int, level: int, data: bytes) -> None:
        dictionary = zstandard.ZstdCompressionDict(data)
        dictionary.precompute_compress(level=level)
        with self._lock:
            self._dictionaries[dictionary_id] = (level, dictionary)
            self.dictionary_id = max(self.dictionary_id, dictionary_id)

    def train(self, cursor: apsw.Cursor, samples: Sequence[bytes], trained_on: int) -> int:
        """Train a dictionary on `samples`, store it in the file, and encode with it from now on."""
        # One thread: training on every core took both CPUs for 0.2-0.3 s, and an application's
        # event loop on the other thread stalled for 3-6 ms behind it (benchmarks/loop.py).
        dictionary = zstandard.train_dictionary(
            DICTIONARY_SIZE, list(samples), level=LEVEL, k=0, d=8, steps=4, threads=1
        )
        data = dictionary.as_bytes()
        # The id is chosen first: a sealed store binds the encrypted bytes to it.
        (dictionary_id,) = cast("tuple[int]", cursor.execute(_NEXT_DICTIONARY_ID).fetchone())
        cursor.execute(
            _INSERT_DICTIONARY,
            (dictionary_id, time.time_ns() // 1000, trained_on, LEVEL,
             self.seal_dictionary(dictionary_id, data)),
        )
        self._add(dictionary_id, LEVEL, data)
        return dictionary_id

    def forget_since(self, dictionary_id: int) -> None:
        """Drop dictionaries from `dictionary_id` on (their transaction rolled back)."""
        with self._lock:
            for key in [k for k in self._dictionaries if k >= dictionary_id]:
                del self._dictionaries[key]
            self.dictionary_id = max(self._dictionaries, default=RAW)

    # -- per-thread zstd contexts --------------------------------------------------------------

    def _compressor(self) -> zstandard.ZstdCompressor | None:
        local = self._local
        dictionary_id = self.dictionary_id
        if local.compressor_for != dictionary_id:
            if dictionary_id == RAW:
                local.compressor = None
            else:
                level, dictionary = self._dictionaries[dictionary_id]
                # No checksum or dictionary id in the frames: the row says which dictionary,
                # and SQLite checks its own pages.
                local.compressor = zstandard.ZstdCompressor(
                    level=level, dict_data=dictionary, write_checksum=False,
                    write_content_size=True, write_dict_id=False,
                )
            local.compressor_for = dictionary_id
        return local.compressor

    def _decompressor(self, codec: int) -> zstandard.ZstdDecompressor:
        decompressors = self._local.decompressors
        decompressor = decompressors.get(codec)
        if decompressor is None:
            if codec == ZSTD_PLAIN:
                decompressor = zstandard.ZstdDecompressor()
            else:
                entry = self._dictionaries.get(codec) or self._load_missing(codec)
                decompressor = zstandard.ZstdDecompressor(dict_data=entry[1])
            decompressors[codec] = decompressor
        return decompressor

    def _load_missing(self, codec: int) -> tuple[int, zstandard.ZstdCompressionDict]:
        found = self._loader(codec) if self._loader is not None else None
        if found is None:
            raise LookupError(f"payload encoded with dictionary {codec}, which is not in the file")
        level, stored = found
        self._add(codec, level, self.open_dictionary(codec, stored))
        return self._dictionaries[codec]

    # -- encoding ------------------------------------------------------------------------------

    def encode(self, payload: bytes) -> tuple[int, bytes]:
        """(codec, stored bytes) for a payload."""
        compressor = self._compressor()
        if compressor is None or len(payload) < MIN_COMPRESS_SIZE:
            return RAW, payload
        return self._local.compressor_for, compressor.compress(payload)

    def encode_many(self, payloads: list[bytes]) -> list[tuple[int, bytes]]:
        """(codec, stored bytes) for each payload, compressed in one native call without the GIL."""
        compressor = self._compressor()
        if compressor is None or len(payloads) < 16:
            return [self.encode(p) for p in payloads]
        big = [i for i, p in enumerate(payloads) if len(p) >= MIN_COMPRESS_SIZE]
        out: list[tuple[int, bytes]] = [(RAW, p) for p in payloads]
        if not big:
            return out
        # One thread: on this machine kind more zstd threads measured slower, and the caller
        # runs this beside the decoding of the same batch.
        frames = compressor.multi_compress_to_buffer([payloads[i] for i in big], threads=1)
        dictionary_id = self._local.compressor_for
        for frame_index, payload_index in enumerate(big):
            out[payload_index] = (dictionary_id, frames[frame_index].tobytes())
        return out

    def encode_plain(self, payload: bytes) -> tuple[int, bytes]:
        """zstd without a dictionary: for payloads unlike the user's events."""
        return ZSTD_PLAIN, zstandard.ZstdCompressor(level=LEVEL).compress(payload)

    def decode(self, codec: int, stored: bytes, position: int | None = None) -> bytes:
        """The payload of a log entry from its codec and stored bytes. A sealed store needs the
        entry's `position` too: the ciphertext is bound to it."""
        if self.cipher is not None:
            stored = self.open_entry(codec, stored, position)
        if codec == RAW:
            return stored
        return self._decompressor(codec).decompress(stored)

    def decompress(self, codec: int, compressed: bytes) -> bytes:
        """Bytes already decrypted (or never encrypted), decompressed."""
        if codec == RAW:
            return compressed
        return self._decompressor(codec).decompress(compressed)

    def open_entry(self, codec: int, stored: bytes, position: int | None) -> bytes:
        """The compressed bytes of a sealed entry (`stored` itself in a plain store)."""
        if self.cipher is None:
            return stored
        if position is None:
            raise ValueError("a sealed store's payloads are read with their log position")
        return self.cipher.open_entry(stored, position, codec)

    def decode_many(
        self, codec: int, stored: Sequence[bytes], positions: Sequence[int] | None = None,
    ) -> list[bytes]:
        """`decode` of several rows of one codec (a page of messages): the decompressor is looked
        up once, not once per row. (zstandard's `multi_decompress_to_buffer` would be one native
        call, but it aborts the process on a truncated frame: double free, zstandard 0.25.)"""
        if self.cipher is not None:
            if positions is None:
                raise ValueError("a sealed store's payloads are read with their log positions")
            stored = [self.cipher.open_entry(s, p, codec) for s, p in zip(stored, positions)]
        if codec == RAW:
            return list(stored)
        decompress = self._decompressor(codec).decompress
        return [decompress(s) for s in stored]

    def warm_up(self) -> None:
        """Make this thread's decompressor for the newest dictionary now (building its tables
        takes ~0.1 ms), as the first read of any message would."""
        if self.dictionary_id != RAW:
            self._decompressor(self.dictionary_id)
