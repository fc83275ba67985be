"""Per-key token buckets: in-process, and shared through the real Redis on 127.0.0.1:6379 by two
limiters standing for two server processes. Rates are high and bursts small so refills take ms."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator

import pytest
import redis

from server.state import Decision, LocalRateLimiter, RateLimiter, RateLimitUnavailable, RedisRateLimiter
from server.state.ratelimit import make_rate_limiter

REDIS_URL = "redis://127.0.0.1:6379/0"


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    """A prefix no other test uses; its keys are deleted afterwards."""
    prefix = f"ragkb-test:ratelimit:{uuid.uuid4().hex}:"
    yield prefix
    client = redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(match=prefix + "*"))
    if keys:
        client.delete(*keys)
    client.close()


def _allowed(limiter: RateLimiter, key: str, times: int) -> int:
    return sum(limiter.allow(key).allowed for _ in range(times))


# -- in-process ----------------------------------------------------------------------------------


def test_local_bucket_allows_the_burst_then_says_when_to_retry() -> None:
    clock = FakeClock()
    limiter = LocalRateLimiter(per_minute=60, burst=3, clock=clock)  # one token a second
    assert _allowed(limiter, "ci", 3) == 3
    refused = limiter.allow("ci")
    assert not refused.allowed and refused.retry_after == pytest.approx(1.0)
    assert refused.retry_after_header == "1"
    clock.now += 0.25
    assert limiter.allow("ci").retry_after == pytest.approx(0.75)
    clock.now += 0.75
    assert limiter.allow("ci") == Decision(True, 0.0)
    assert not limiter.allow("ci").allowed


def test_local_bucket_refills_up_to_the_burst_only() -> None:
    clock = FakeClock()
    limiter = LocalRateLimiter(per_minute=120, burst=2, clock=clock)
    assert _allowed(limiter, "ci", 5) == 2
    clock.now += 3600
    assert _allowed(limiter, "ci", 5) == 2


def test_local_buckets_are_per_key() -> None:
    limiter = LocalRateLimiter(per_minute=1, burst=2, clock=FakeClock())
    assert _allowed(limiter, "a", 5) == 2
    assert _allowed(limiter, "b", 5) == 2


def test_local_bucket_is_thread_safe() -> None:
    limiter = LocalRateLimiter(per_minute=1, burst=50, clock=FakeClock())
    counts: list[int] = []
    barrier = threading.Barrier(8)

    def hammer() -> None:
        barrier.wait()
        counts.append(_allowed(limiter, "ci", 100))

    _run_threads(hammer, 8)
    assert sum(counts) == 50


# -- Redis: one bucket, several processes --------------------------------------------------------


def test_two_processes_share_one_bucket(redis_prefix: str) -> None:
    first = RedisRateLimiter(REDIS_URL, per_minute=60, burst=4, prefix=redis_prefix)
    second = RedisRateLimiter(REDIS_URL, per_minute=60, burst=4, prefix=redis_prefix)
    decisions = [limiter.allow("ci") for _ in range(3) for limiter in (first, second)]
    assert [d.allowed for d in decisions] == [True, True, True, True, False, False]
    refused = decisions[-1]
    assert 0.5 < refused.retry_after <= 1.0  # a token a second, and the last was taken moments ago
    assert refused.retry_after_header == "1"
    assert second.allow("other-key").allowed  # buckets are per key


def test_shared_bucket_refills_over_time(redis_prefix: str) -> None:
    first = RedisRateLimiter(REDIS_URL, per_minute=600, burst=2, prefix=redis_prefix)  # 10 a second
    second = RedisRateLimiter(REDIS_URL, per_minute=600, burst=2, prefix=redis_prefix)
    assert _allowed(first, "ci", 2) == 2
    refused = second.allow("ci")
    assert not refused.allowed
    time.sleep(refused.retry_after + 0.01)
    assert second.allow("ci").allowed
    assert not first.allow("ci").allowed
    time.sleep(0.4)  # 4 tokens' worth, but the bucket holds 2
    assert _allowed(first, "ci", 2) + _allowed(second, "ci", 2) == 2


def test_shared_bucket_never_overspends_under_concurrency(redis_prefix: str) -> None:
    limiters = [RedisRateLimiter(REDIS_URL, per_minute=0.6, burst=10, prefix=redis_prefix) for _ in range(2)]
    counts: list[int] = []
    barrier = threading.Barrier(6)

    def hammer(limiter: RedisRateLimiter) -> Callable[[], None]:
        def run() -> None:
            barrier.wait()
            counts.append(_allowed(limiter, "ci", 20))

        return run

    threads = [threading.Thread(target=hammer(limiters[i % 2])) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(counts) == 10


def test_idle_buckets_expire(redis_prefix: str) -> None:
    limiter = RedisRateLimiter(REDIS_URL, per_minute=600, burst=5, prefix=redis_prefix)
    limiter.allow("ci")
    client = redis.Redis.from_url(REDIS_URL)
    ttl_ms = client.pttl(redis_prefix + "ci")
    client.close()
    assert 0 < ttl_ms <= 1100 + 100  # refilled after 0.1 s, plus a second's margin


def test_unreachable_redis_fails_open_or_closed_as_asked() -> None:
    open_limiter = RedisRateLimiter("redis://127.0.0.1:1/0", per_minute=60, burst=1)
    assert open_limiter.allow("ci") == Decision(True, 0.0)
    closed = RedisRateLimiter("redis://127.0.0.1:1/0", per_minute=60, burst=1, fail_open=False)
    with pytest.raises(RateLimitUnavailable, match="rate-limit store"):
        closed.allow("ci")


# -- configuration -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("per_minute", "burst", "message"),
    [(0, 10, "must be positive"), (-5, 10, "must be positive"), (60, 0, "burst must be at least 1")],
)
def test_bad_limits_are_refused(per_minute: float, burst: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        LocalRateLimiter(per_minute, burst)


def test_make_rate_limiter_picks_the_backend() -> None:
    assert isinstance(make_rate_limiter(120, 30), LocalRateLimiter)
    assert isinstance(make_rate_limiter(120, 30, REDIS_URL), RedisRateLimiter)


@pytest.mark.parametrize(("retry_after", "header"), [(0.0, "1"), (0.01, "1"), (1.0, "1"), (1.01, "2"), (29.5, "30")])
def test_retry_after_header_rounds_up_to_whole_seconds(retry_after: float, header: str) -> None:
    assert Decision(False, retry_after).retry_after_header == header


def _run_threads(target: Callable[[], None], count: int) -> None:
    threads = [threading.Thread(target=target) for _ in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def test_the_local_limiter_forgets_buckets_that_have_refilled(monkeypatch: pytest.MonkeyPatch) -> None:
    from server.state import ratelimit

    monkeypatch.setattr(ratelimit, "MAX_LOCAL_BUCKETS", 5)
    now = [0.0]
    limiter = ratelimit.LocalRateLimiter(60, 2, clock=lambda: now[0])
    for host in range(10):
        limiter.allow(f"anonymous@{host}")
    now[0] += 10  # every bucket has refilled
    limiter.allow("anonymous@late")
    assert len(limiter._buckets) <= 2
