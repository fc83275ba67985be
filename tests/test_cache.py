"""The answer cache on SQLite and on a real Redis (127.0.0.1:6379), and its pass-through when broken."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from ingest.config import Settings
from ingest.store import StoredChunk
from server.answering.cache import AnswerCache, RedisBackend, SQLiteBackend, cache_key
from server.answering.questions import question_key

from .servers import free_port

REDIS_URL = "redis://127.0.0.1:6379/0"


def _chunk(chunk_id: str, content_hash: str) -> StoredChunk:
    return StoredChunk(chunk_id, "text", {"content_hash": content_hash})


BASE = {
    "question": "How do backups work?",
    "collection": "ops",
    "chunks": [_chunk("a:v1:0", "h1"), _chunk("b:v1:2", "h2")],
    "prompt_name": "answer",
    "prompt_version": "1",
    "provider": "openai",
    "model": "m",
    "parameters": {"temperature": 0.0, "max_tokens": 256},
}


@pytest.mark.parametrize(
    "change",
    [
        {"collection": "other"},
        {"chunks": [_chunk("a:v1:0", "h1"), _chunk("b:v1:2", "CHANGED")]},
        {"chunks": [_chunk("b:v1:2", "h2"), _chunk("a:v1:0", "h1")]},
        {"prompt_version": "2"},
        {"prompt_name": "summary"},
        {"provider": "extractive"},
        {"model": "other"},
        {"parameters": {"temperature": 0.7, "max_tokens": 256}},
        {"question": "How do restores work?"},
    ],
    ids=lambda c: next(iter(c)),
)
def test_key_changes_with_everything_that_changes_the_answer(change: dict[str, object]) -> None:
    assert cache_key(**{**BASE, **change}) != cache_key(**BASE)  # type: ignore[arg-type]


def test_key_ignores_case_spacing_and_trailing_punctuation() -> None:
    variant = {**BASE, "question": "  how do   BACKUPS work "}
    assert cache_key(**variant) == cache_key(**BASE)  # type: ignore[arg-type]
    assert question_key("Ｆｕｌｌ width?") == "full width"


class TestSQLite:
    def test_roundtrip_stats_and_clear(self, tmp_path: Path) -> None:
        cache = AnswerCache(SQLiteBackend(tmp_path / "c.sqlite3", ttl=60, max_entries=100))
        assert cache.get("k") is None
        cache.set("k", {"answer": "A [1]", "citations": []})
        assert cache.get("k") == {"answer": "A [1]", "citations": []}
        assert cache.stats() == {"backend": "sqlite", "entries": 1, "hits": 1, "misses": 1, "hit_rate": 0.5}
        assert cache.clear() == 1 and cache.get("k") is None

    def test_entries_expire(self, tmp_path: Path) -> None:
        cache = AnswerCache(SQLiteBackend(tmp_path / "c.sqlite3", ttl=1, max_entries=100))
        cache.set("k", {"answer": "x"})
        time.sleep(1.1)
        assert cache.get("k") is None

    def test_size_is_bounded_oldest_first(self, tmp_path: Path) -> None:
        backend = SQLiteBackend(tmp_path / "c.sqlite3", ttl=60, max_entries=10)
        cache = AnswerCache(backend)
        for i in range(150):
            cache.set(f"k{i}", {"i": i})
        assert backend.count() == 10
        assert cache.get("k0") is None and cache.get("k149") == {"i": 149}

    def test_survives_a_restart(self, tmp_path: Path) -> None:
        AnswerCache(SQLiteBackend(tmp_path / "c.sqlite3", ttl=60, max_entries=10)).set("k", {"a": 1})
        assert AnswerCache(SQLiteBackend(tmp_path / "c.sqlite3", ttl=60, max_entries=10)).get("k") == {"a": 1}


@pytest.fixture
def redis_cache() -> Iterator[AnswerCache]:
    """A real Redis; a unique key prefix keeps parallel runs apart, and everything is removed after."""
    backend = RedisBackend(REDIS_URL, ttl=60)
    backend.PREFIX = f"ragkb-test-{uuid.uuid4().hex[:8]}:"
    yield AnswerCache(backend)
    backend.clear()


class TestRedis:
    def test_roundtrip_ttl_and_stats(self, redis_cache: AnswerCache) -> None:
        redis_cache.set("k", {"answer": "A [1]"})
        assert redis_cache.get("k") == {"answer": "A [1]"}
        assert redis_cache.get("missing") is None
        backend = redis_cache.backend
        assert isinstance(backend, RedisBackend)
        ttl = redis.Redis.from_url(REDIS_URL).ttl(backend.PREFIX + "k")
        assert 0 < ttl <= 60
        stats = redis_cache.stats()
        assert (stats["backend"], stats["entries"], stats["hits"], stats["misses"]) == ("redis", 1, 1, 1)
        assert redis_cache.clear() == 1 and redis_cache.get("k") is None

    def test_shared_between_two_clients(self, redis_cache: AnswerCache) -> None:
        backend = redis_cache.backend
        assert isinstance(backend, RedisBackend)
        other = RedisBackend(REDIS_URL, ttl=60)
        other.PREFIX = backend.PREFIX
        redis_cache.set("shared", {"answer": "from replica 1"})
        assert AnswerCache(other).get("shared") == {"answer": "from replica 1"}

    def test_from_settings_picks_redis(self, tmp_path: Path) -> None:
        cache = AnswerCache.from_settings(Settings(data_dir=tmp_path, cache_url=REDIS_URL))
        assert cache.backend.name == "redis"


def test_redis_down_bypasses_the_cache_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    cache = AnswerCache(RedisBackend(f"redis://127.0.0.1:{free_port()}/0", ttl=60))
    with caplog.at_level("WARNING", logger="ragkb.cache"):
        cache.set("k", {"answer": "x"})
        assert cache.get("k") is None
    assert any("bypassing the cache" in r.getMessage() for r in caplog.records)


def test_non_redis_cache_url_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="redis://"):
        AnswerCache.from_settings(Settings(data_dir=tmp_path, cache_url="memcached://x"))
