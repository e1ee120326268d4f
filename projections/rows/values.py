"""Values as the read tables keep them (server times: `projections.rowtime`)."""

from __future__ import annotations

__all__ = ["as_flag"]


def as_flag(value: bool | None) -> int:
    """A boolean as the tables keep it: 1 or 0 (absent is 0)."""
    return 1 if value else 0
