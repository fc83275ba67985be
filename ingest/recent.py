"""Values read from a shared store, kept for a moment: a cache hit must not wait on Chroma or the state
database for facts that change rarely (a collection's generation, its review policy).

A `Recent` cache keeps each value for `ttl` seconds, and forgets all of them at once when its `Epoch`
moves: every write made in this process bumps the epoch, so this process sees its own writes at once;
another process's writes are seen within `ttl` (0 turns the cache off)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class Epoch:
    """A counter bumped by every write of one kind in this process."""

    def __init__(self) -> None:
        self._value = 0
        self._lock = threading.Lock()

    @property
    def value(self) -> int:
        return self._value

    def bump(self) -> None:
        with self._lock:
            self._value += 1


class Recent(Generic[K, V]):
    def __init__(self, epoch: Epoch, ttl: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.epoch = epoch
        self.ttl = ttl
        self._clock = clock
        self._values: dict[K, tuple[V, int, float]] = {}

    def peek(self, key: K) -> tuple[bool, V | None]:
        """(True, value) when a fresh value is kept for `key`, else (False, None): nothing is read."""
        found = self._values.get(key)
        if found is not None and found[1] == self.epoch.value and self._clock() < found[2]:
            return True, found[0]
        return False, None

    def get(self, key: K, load: Callable[[], V]) -> V:
        """The value kept for `key`, or `load()`'s (kept from now on)."""
        now, epoch = self._clock(), self.epoch.value
        found = self._values.get(key)
        if found is not None and found[1] == epoch and now < found[2]:
            return found[0]
        value = load()
        if self.ttl > 0:
            if len(self._values) > 10_000:  # bounded: names come from requests
                self._values.clear()
            self._values[key] = (value, epoch, now + self.ttl)
        return value
