"""A circuit breaker for the LLM: after N failures in a row, stop calling it for a cool-down.

An LLM that accepts connections but never answers costs every query its full
timeout; with the breaker open, queries get the extractive answer at once
(flagged `degraded`) until the cool-down has passed, when one call is let
through to try again.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class CircuitBreaker:
    def __init__(self, failures: int, cooldown: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.failures, self.cooldown, self.clock = failures, cooldown, clock
        self._consecutive = 0
        self._open_until = 0.0
        self._lock = threading.Lock()

    def allows(self) -> bool:
        """False while open; after the cool-down, calls go through again (a failure reopens at once)."""
        if self.failures <= 0:
            return True
        with self._lock:
            return self.clock() >= self._open_until

    def seconds_left(self) -> float:
        with self._lock:
            return max(0.0, self._open_until - self.clock())

    def record(self, *, ok: bool) -> None:
        with self._lock:
            if ok:
                self._consecutive = 0
                return
            self._consecutive += 1
            if self.failures > 0 and self._consecutive >= self.failures:
                self._open_until = self.clock() + self.cooldown
