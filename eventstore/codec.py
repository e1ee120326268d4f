"""Payload compression: zstd with a dictionary trained on the user's own events.

Chat events repeat the same keys, user objects and channel fields over and over, so a dictionary
trained on a sample of them compresses each small payload several times better than zstd alone.
Every row records which dictionary encoded it (`codec`); dictionaries are never changed or
removed once used, so every stored payload decompresses to exactly the bytes that arrived.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import apsw
import zstandard

RAW = 0
ZSTD_PLAIN = -1  # zstd without a dictionary (quarantine: huge, odd payloads)

DICTIONARY_SIZE = 112 * 1024
LEVEL = 3
# Payloads smaller than this gain little from compression and are kept raw.
MIN_COMPRESS_SIZE = 64


class PayloadCodec:
    """Encodes and decodes payloads for one database file.

    Until a dictionary exists, payloads are stored raw; `train()` creates one from samples and
    from then on `encode` compresses with it.
    """

    def __init__(self) -> None:
        self._compressor: zstandard.ZstdCompressor | None = None
        self.dictionary_id: int = RAW
        self._decompressors: dict[int, zstandard.ZstdDecompressor] = {
            ZSTD_PLAIN: zstandard.ZstdDecompressor()
        }
        self._plain = zstandard.ZstdCompressor(level=LEVEL)

    @property
    def active(self) -> bool:
        return self._compressor is not None

    def load(self, cursor: apsw.Cursor) -> None:
        """Read the dictionaries of a file; the newest one encodes from now on."""
        for dictionary_id, level, data in cursor.execute(
            "SELECT id, level, data FROM zstd_dictionaries ORDER BY id"
        ):
            self._use(dictionary_id, level, data)

    def _use(self, dictionary_id: int, level: int, data: bytes) -> None:
        dictionary = zstandard.ZstdCompressionDict(data)
        dictionary.precompute_compress(level=level)
        # Headers without checksum, content size or dictionary id: the row says which
        # dictionary and SQLite already checks its pages, so those bytes buy nothing.
        self._compressor = zstandard.ZstdCompressor(
            level=level,
            dict_data=dictionary,
            write_checksum=False,
            write_content_size=True,
            write_dict_id=False,
        )
        self._decompressors[dictionary_id] = zstandard.ZstdDecompressor(dict_data=dictionary)
        self.dictionary_id = dictionary_id

    def train(self, cursor: apsw.Cursor, samples: Sequence[bytes], trained_on: int) -> int:
        """Train a dictionary on `samples`, store it in the file, and encode with it from now on."""
        dictionary = zstandard.train_dictionary(DICTIONARY_SIZE, list(samples), level=LEVEL)
        data = dictionary.as_bytes()
        cursor.execute(
            "INSERT INTO zstd_dictionaries (created_at, trained_on, level, data) VALUES (?,?,?,?)",
            (int(time.time() * 1_000_000), trained_on, LEVEL, data),
        )
        dictionary_id = cursor.connection.last_insert_rowid()
        self._use(dictionary_id, LEVEL, data)
        return dictionary_id

    def encode(self, payload: bytes) -> tuple[int, bytes]:
        """(codec, stored bytes) for a payload."""
        if self._compressor is None or len(payload) < MIN_COMPRESS_SIZE:
            return RAW, payload
        return self.dictionary_id, self._compressor.compress(payload)

    def encode_plain(self, payload: bytes) -> tuple[int, bytes]:
        """zstd without a dictionary: for payloads unlike the user's events."""
        return ZSTD_PLAIN, self._plain.compress(payload)

    def decode(self, codec: int, stored: bytes) -> bytes:
        if codec == RAW:
            return stored
        try:
            decompressor = self._decompressors[codec]
        except KeyError:
            raise LookupError(f"payload encoded with dictionary {codec}, which is not in the file") from None
        return decompressor.decompress(stored)
