"""Resolutions a replica computed a moment ago, kept for `resolve_cache_seconds`.

A fleet asks for the same fine-tune hundreds of times a second; each resolution is a
query and a thread hop. Kept this briefly, a deleted fine-tune, a new final checkpoint or
a rebuilt archive is seen within that time on every replica, as a revoked key is
(service/accounts.py). A blob that went away meanwhile (derived-data eviction) is not
served from here: the caller drops the entry and resolves again (server/resolving.py).
"""

from __future__ import annotations

import time
from collections.abc import Hashable
from typing import Generic, TypeVar

V = TypeVar("V")
MAX_ENTRIES = 10_000


class Recent(Generic[V]):
    """Values by key, each for `seconds` after it was put (0: nothing is kept)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._entries: dict[Hashable, tuple[float, V]] = {}

    def get(self, key: Hashable) -> V | None:
        hit = self._entries.get(key)
        if hit is None:
            return None
        if time.monotonic() - hit[0] >= self.seconds:
            del self._entries[key]
            return None
        return hit[1]

    def put(self, key: Hashable, value: V) -> None:
        if not self.seconds:
            return
        if len(self._entries) >= MAX_ENTRIES:  # drop the oldest: dicts keep insertion order
            del self._entries[next(iter(self._entries))]
        self._entries.pop(key, None)
        self._entries[key] = (time.monotonic(), value)

    def drop(self, key: Hashable) -> None:
        self._entries.pop(key, None)

    def ageing(self, key: Hashable) -> bool:
        """Past half its time: worth looking up again before it lapses."""
        hit = self._entries.get(key)
        return hit is not None and time.monotonic() - hit[0] >= self.seconds / 2
