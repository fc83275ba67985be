"""Values read from a shared store, kept for a moment: a cache hit must not wait on Chroma or the state
database for facts that change rarely (a collection's generation, its review policy).

A `Recent` cache keeps each value for `ttl` seconds, and forgets all of them at once when its `Epoch`
moves: every write made in this process bumps the epoch, so this process sees its own writes at once;
another process's writes are seen within `ttl` (0 turns the cache off).

A value still in use is read again before it lapses (`peek(key, reload)`, the `Refresher`): once past half
its time, one background re-read replaces it, so a steady stream of cache hits never finds it lapsed. A
lapsed value sent every request of that moment down the slow path (a thread, the databases, the route):
about one request in two hundred at 4,000 a second, and an eighth of the server's CPU."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

log = logging.getLogger("ragkb.recent")

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


class Refresher:
    """One daemon thread that runs re-reads of kept values, each key at most once at a time. A re-read that
    fails is dropped (logged): the value then lapses and the slow path reads it, and says why."""

    def __init__(self) -> None:
        self._pending: set[Hashable] = set()
        self._lock = threading.Lock()
        self._work: queue.SimpleQueue[tuple[Hashable, Callable[[], None]]] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    def submit(self, key: Hashable, work: Callable[[], None]) -> None:
        """Run `work` soon on the refresher's thread, unless a re-read of `key` is already waiting or running."""
        with self._lock:
            if key in self._pending:
                return
            self._pending.add(key)
            if self._thread is None or not self._thread.is_alive():  # (none yet, or a forked child's)
                self._thread = threading.Thread(target=self._run, name="ragkb-refresh", daemon=True)
                self._thread.start()
        self._work.put((key, work))

    def idle(self, timeout: float = 5.0) -> bool:
        """Wait until no re-read is waiting or running (tests; a process about to read its own kept values)."""
        deadline = time.monotonic() + timeout
        while self._pending:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.005)
        return True

    def _run(self) -> None:
        while True:
            key, work = self._work.get()
            try:
                work()
            except Exception as exc:  # the value lapses instead; the slow path reports the failure
                log.debug("re-reading a kept value failed: %s", exc)
            finally:
                with self._lock:
                    self._pending.discard(key)


REFRESHER = Refresher()


class Recent(Generic[K, V]):
    def __init__(self, epoch: Epoch, ttl: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.epoch = epoch
        self.ttl = ttl
        self._clock = clock
        self._values: dict[K, tuple[V, int, float]] = {}

    def peek(self, key: K, reload: Callable[[], V] | None = None) -> tuple[bool, V | None]:
        """(True, value) when a fresh value is kept for `key`, else (False, None): nothing is read here. With
        `reload`, a value past half its time is read again in the background (`REFRESHER`)."""
        found = self._values.get(key)
        if found is not None and found[1] == self.epoch.value:
            now = self._clock()
            if now < found[2]:
                if reload is not None and now >= found[2] - self.ttl / 2:
                    REFRESHER.submit((id(self), key), lambda: self._reload(key, reload))
                return True, found[0]
        return False, None

    def _reload(self, key: K, load: Callable[[], V]) -> None:
        epoch = self.epoch.value  # read before loading: a write during the load leaves the result stale
        value = load()
        self._values[key] = (value, epoch, self._clock() + self.ttl)

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
