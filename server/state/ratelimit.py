"""Per-key rate limits: a token bucket per key name, in this process or shared through Redis.

A bucket holds at most `burst` tokens and refills at `per_minute / 60` tokens a second; a request
takes one token or is refused with the seconds until one is there (the `Retry-After` to send).
`LocalRateLimiter` limits one process; with `serve --workers N` or several hosts each process would
allow the full rate, so `RedisRateLimiter` keeps the buckets in Redis, updated by one Lua script so
that concurrent processes never both spend the last token, and timed by Redis's clock so hosts with
skewed clocks agree.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from ingest.errors import RagkbError

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    retry_after: float  # seconds until a request would be allowed; 0.0 when allowed

    @property
    def retry_after_header(self) -> str:
        """`Retry-After` takes whole seconds: round up, so a client that waits that long gets through."""
        return str(max(1, int(-(-self.retry_after // 1))))


class RateLimiter(Protocol):
    blocking: bool  # True: `allow` waits on the network (call it from a thread)

    def allow(self, key_name: str) -> Decision: ...


class RateLimitUnavailable(RagkbError):
    """The shared rate-limit store (Redis) could not be reached and the limiter fails closed."""


def _check(per_minute: float, burst: int) -> float:
    if per_minute <= 0:
        raise ValueError(f"rate limit per minute must be positive, got {per_minute} (leave the limiter out to disable)")
    if burst < 1:
        raise ValueError(f"rate limit burst must be at least 1, got {burst}")
    return per_minute / 60.0


MAX_LOCAL_BUCKETS = 10_000


class LocalRateLimiter:
    """Token buckets in this process's memory (thread-safe); state is lost on restart."""

    blocking = False

    def __init__(self, per_minute: float, burst: int, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = _check(per_minute, burst)
        self.burst = burst
        self._clock = clock
        self._lock = threading.Lock()
        self._buckets: dict[str, tuple[float, float]] = {}  # key name -> (tokens, updated at)

    def allow(self, key_name: str) -> Decision:
        now = self._clock()
        with self._lock:
            if len(self._buckets) > MAX_LOCAL_BUCKETS:
                self._forget_full(now)
            tokens, updated = self._buckets.get(key_name, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + max(0.0, now - updated) * self.rate)
            if tokens >= 1.0:
                self._buckets[key_name] = (tokens - 1.0, now)
                return Decision(True, 0.0)
            self._buckets[key_name] = (tokens, now)
            return Decision(False, (1.0 - tokens) / self.rate)

    def _forget_full(self, now: float) -> None:
        """Drop buckets that have refilled: forgetting them changes nothing (a new bucket starts full), and
        one bucket per client host in open mode would otherwise grow without end."""
        self._buckets = {
            name: (tokens, updated)
            for name, (tokens, updated) in self._buckets.items()
            if tokens + (now - updated) * self.rate < self.burst
        }


# KEYS[1] the bucket; ARGV: rate (tokens/s), burst. Returns {allowed, retry_after} as strings, since
# Redis turns Lua numbers into integers. Idle buckets expire once they would be full anyway.
_BUCKET_SCRIPT = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1]) or burst
local ts = tonumber(state[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - ts) * rate)
local allowed = 0
local retry = 0
if tokens >= 1 then
  tokens = tokens - 1
  allowed = 1
else
  retry = (1 - tokens) / rate
end
redis.call('HSET', KEYS[1], 'tokens', string.format('%.6f', tokens), 'ts', string.format('%.6f', now))
redis.call('PEXPIRE', KEYS[1], math.ceil((burst - tokens) / rate * 1000) + 1000)
return {allowed, string.format('%.6f', retry)}
"""


class RedisRateLimiter:
    """Token buckets in Redis, shared by every process that uses the same URL and prefix.

    When Redis cannot be reached the limiter fails open by default (the request is allowed and a
    warning logged): a rate limit protects capacity, and an outage of its store should not turn into
    an outage of the API. `fail_open=False` raises `RateLimitUnavailable` instead.
    """

    blocking = True

    def __init__(
        self,
        url_or_client: str | Any,
        per_minute: float,
        burst: int,
        *,
        prefix: str = "ragkb:ratelimit:",
        fail_open: bool = True,
    ) -> None:
        import redis

        self.rate = _check(per_minute, burst)
        self.burst = burst
        self.prefix = prefix
        self.fail_open = fail_open
        if isinstance(url_or_client, str):
            self._redis = redis.Redis.from_url(url_or_client, socket_timeout=0.5, socket_connect_timeout=0.5)
        else:
            self._redis = url_or_client
        self._script = self._redis.register_script(_BUCKET_SCRIPT)
        self._errors: tuple[type[Exception], ...] = (redis.RedisError, OSError)

    def allow(self, key_name: str) -> Decision:
        try:
            allowed, retry = self._script(keys=[self.prefix + key_name], args=[repr(self.rate), self.burst])
        except self._errors as exc:
            if not self.fail_open:
                raise RateLimitUnavailable(f"rate-limit store (Redis) is unavailable: {exc}") from exc
            log.warning("rate-limit store unavailable, allowing the request: %s", exc)
            return Decision(True, 0.0)
        return Decision(bool(int(allowed)), float(retry))


def make_rate_limiter(per_minute: float, burst: int, redis_url: str | None = None) -> RateLimiter:
    """Redis-backed when a `redis://` URL is given (several processes share it), else in-process."""
    if redis_url:
        return RedisRateLimiter(redis_url, per_minute, burst)
    return LocalRateLimiter(per_minute, burst)
