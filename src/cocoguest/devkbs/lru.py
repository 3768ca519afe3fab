"""A bounded, thread-safe least-recently-used map: the dev KBS's caches (verified tokens, TEE keys, verdicts).

Invariants:
    * At most ``capacity`` entries (``capacity >= 1``); putting one more drops the least recently used.
    * Every method takes the one lock, so concurrent request handlers see whole entries only.
    * A cache only remembers: what it answers for a key must be what computing it again would give (the
      callers' ``# SECURITY:`` comments say why that holds for their keys).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class BoundedLru(Generic[K, V]):
    """A map of at most ``capacity`` entries, least recently used dropped first."""

    __slots__ = ("_capacity", "_entries", "_lock")

    def __init__(self, capacity: int) -> None:
        """An empty map; ``capacity`` below 1 is taken as 1."""
        self._capacity = max(1, capacity)
        self._entries: OrderedDict[K, V] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: K) -> V | None:
        """The value of ``key`` (now the most recently used), or ``None``."""
        with self._lock:
            value = self._entries.get(key)
            if value is not None:
                self._entries.move_to_end(key)
            return value

    def put(self, key: K, value: V) -> None:
        """Remember ``value`` for ``key``, dropping the least recently used entries beyond the capacity."""
        with self._lock:
            self._entries[key] = value
            self._entries.move_to_end(key)
            while len(self._entries) > self._capacity:
                self._entries.popitem(last=False)

    def clear(self) -> None:
        """Forget everything."""
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)
