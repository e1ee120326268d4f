"""A log entry as the projections see it: what every handler of `projections.projector` gets."""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["Item"]


class Item(NamedTuple):
    """One entry of the log, its payload decompressed (never decoded: each handler decodes what
    it reads, once)."""

    position: int
    type: str
    stream: str
    payload: bytes
    received_at: int

    def with_payload(self, payload: bytes) -> Item:
        """The same entry carrying another payload (a screened copy of its own)."""
        return self._replace(payload=payload)
