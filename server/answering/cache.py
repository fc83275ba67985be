"""The answer cache in front of the LLM: SQLite on disk by default, Redis when `RAGKB_CACHE_URL` is set.

The key covers everything that could change the answer: the normalized
question, the collection, the ids and content hashes of the retrieved chunks,
the prompt name and version, the provider, model and generation parameters.
Re-ingesting a changed document changes its chunks' hashes, so nothing stale
is served. A broken cache (Redis down, disk full) is bypassed with a warning;
it never fails a query.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sqlite3
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

from ingest.config import Settings
from ingest.errors import RagkbError
from ingest.recent import REFRESHER
from ingest.vectorstore import StoredChunk

from ..metrics import CACHE_EVENTS
from .questions import question_key

log = logging.getLogger("ragkb.cache")
_HITS = CACHE_EVENTS.labels(outcome="hit")  # found once: a fast-path hit counts itself on every request


class CacheUnavailable(RagkbError):
    """The answer cache cannot be reached for an explicit cache operation (queries just bypass it)."""


class KeyMode(StrEnum):
    """The three keys an answer is cached under; each is a hash of what could change that answer."""

    MEMO = "memo"  # the fast path: the question, the retrieval options and the collection's generation
    EXACT = "exact"  # the question and the retrieved chunks' ids and content hashes
    AGENT = "agent"  # the fast path's material plus the agent's planner and bounds


def answer_key(mode: KeyMode, material: Mapping[str, Any]) -> str:
    digest = hashlib.sha256(json.dumps(material, sort_keys=True, default=str).encode()).hexdigest()
    return digest if mode is KeyMode.EXACT else f"{mode.value}:{digest}"


def cache_key(
    *,
    question: str,
    collection: str,
    chunks: Sequence[StoredChunk],
    prompt_name: str,
    prompt_version: str,
    provider: str,
    model: str,
    parameters: dict[str, Any],
) -> str:
    """The exact key: the same question over the same chunks with the same prompt and model."""
    material = {
        "q": question_key(question),
        "collection": collection,
        "chunks": [[c.chunk_id, c.content_hash] for c in chunks],
        "prompt": [prompt_name, prompt_version],
        "provider": provider,
        "model": model,
        "params": parameters,
    }
    return answer_key(KeyMode.EXACT, material)


class CacheBackend(Protocol):
    name: str

    def get(self, key: str) -> str | None: ...
    def set(self, key: str, value: str) -> None: ...
    def clear(self) -> int: ...
    def count(self) -> int: ...
    def incr(self, counter: str, by: int = 1) -> None: ...
    def counters(self) -> dict[str, int]: ...
    def ping(self) -> None: ...


class SQLiteBackend:
    """One SQLite file; expired rows are ignored on read and the oldest rows evicted past the size bound."""

    name = "sqlite"

    def __init__(self, path: Path, *, ttl: int, max_entries: int) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path, self.ttl, self.max_entries = path, ttl, max_entries
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=5)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS entries (key TEXT PRIMARY KEY, value TEXT NOT NULL, "
            "created REAL NOT NULL, expires REAL NOT NULL)"
        )
        self._db.execute("CREATE INDEX IF NOT EXISTS entries_created ON entries(created)")
        self._db.execute("CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL)")
        self._writes = 0
        # counting rows on every write would be wasteful: the table may briefly hold up to 10% extra
        self._evict_every = min(100, max(1, max_entries // 10))

    def get(self, key: str) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT value, expires FROM entries WHERE key = ?", (key,)).fetchone()
        if row is None or row[1] < time.time():
            return None
        return str(row[0])

    def set(self, key: str, value: str) -> None:
        now = time.time()
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO entries (key, value, created, expires) VALUES (?, ?, ?, ?)",
                (key, value, now, now + self.ttl),
            )
            self._writes += 1
            if self._writes % self._evict_every == 0:
                self._evict(now)

    def _evict(self, now: float) -> None:
        self._db.execute("DELETE FROM entries WHERE expires < ?", (now,))
        (count,) = self._db.execute("SELECT COUNT(*) FROM entries").fetchone()
        if count > self.max_entries:
            self._db.execute(
                "DELETE FROM entries WHERE key IN (SELECT key FROM entries ORDER BY created LIMIT ?)",
                (count - self.max_entries,),
            )

    def clear(self) -> int:
        with self._lock:
            removed = self._db.execute("DELETE FROM entries").rowcount
            self._db.execute("DELETE FROM counters")
        return int(removed)

    def count(self) -> int:
        with self._lock:
            return int(
                self._db.execute("SELECT COUNT(*) FROM entries WHERE expires >= ?", (time.time(),)).fetchone()[0]
            )

    def incr(self, counter: str, by: int = 1) -> None:
        with self._lock:
            self._db.execute(
                "INSERT INTO counters (name, value) VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET value = value + ?",
                (counter, by, by),
            )

    def ping(self) -> None:
        with self._lock:
            self._db.execute("SELECT 1").fetchone()

    def counters(self) -> dict[str, int]:
        with self._lock:
            return {str(n): int(v) for n, v in self._db.execute("SELECT name, value FROM counters")}


class RedisBackend:
    """A Redis shared by every replica; entries expire by TTL (size is bounded by Redis's maxmemory policy)."""

    name = "redis"
    PREFIX = "ragkb:cache:"

    def __init__(self, url: str, *, ttl: int) -> None:
        import redis

        self.url, self.ttl = url, ttl
        self._redis = redis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)

    def get(self, key: str) -> str | None:
        value = self._redis.get(self.PREFIX + key)
        return value.decode() if isinstance(value, bytes) else None

    def set(self, key: str, value: str) -> None:
        self._redis.set(self.PREFIX + key, value, ex=self.ttl)

    def _keys(self) -> list[bytes]:
        return list(self._redis.scan_iter(match=self.PREFIX + "*", count=1000))

    def clear(self) -> int:
        keys = self._keys()
        entries = [k for k in keys if not k.startswith((self.PREFIX + "counter:").encode())]
        if keys:
            self._redis.delete(*keys)
        return len(entries)

    def count(self) -> int:
        return sum(1 for k in self._keys() if not k.startswith((self.PREFIX + "counter:").encode()))

    def incr(self, counter: str, by: int = 1) -> None:
        self._redis.incrby(f"{self.PREFIX}counter:{counter}", by)

    def ping(self) -> None:
        self._redis.ping()

    def counters(self) -> dict[str, int]:
        names = ["hits", "misses"]
        values = self._redis.mget([f"{self.PREFIX}counter:{n}" for n in names])
        return {n: int(v or 0) for n, v in zip(names, values, strict=True)}


class AnswerCache:
    """Cache with hit/miss accounting that degrades to a pass-through when its backend fails.

    In front of the backend, the newest entries are also kept in this process's memory for `memory_seconds`
    (`peek`): a repeated question is answered without leaving the event loop. An entry's key never changes
    meaning (the fast-path key holds the collection's generation), so only a `clear` makes one stale: this
    process's clears are seen at once, another process's within `memory_seconds`. Hit and miss counts are
    added up in memory and written to the backend once a second, never on a request's path."""

    def __init__(self, backend: CacheBackend, *, memory_seconds: float = 1.0, memory_entries: int = 4096) -> None:
        self.backend = backend
        self.memory_seconds = memory_seconds
        self.memory_entries = memory_entries
        self._memory: OrderedDict[str, tuple[dict[str, Any], float]] = OrderedDict()
        self._lock = threading.Lock()
        self._counts: dict[str, int] = {}
        self._flusher: threading.Thread | None = None
        self._stop = threading.Event()

    @classmethod
    def from_settings(cls, settings: Settings) -> AnswerCache:
        memory = settings.generation_cache_seconds
        if settings.cache_url:
            if not settings.cache_url.startswith(("redis://", "rediss://", "unix://")):
                raise ValueError(f"RAGKB_CACHE_URL must be a redis:// URL, got {settings.cache_url!r}")
            return cls(RedisBackend(settings.cache_url, ttl=settings.cache_ttl_seconds), memory_seconds=memory)
        path = settings.data_dir / "cache.sqlite3"
        backend = SQLiteBackend(path, ttl=settings.cache_ttl_seconds, max_entries=settings.cache_max_entries)
        return cls(backend, memory_seconds=memory)

    def peek(self, key: str) -> dict[str, Any] | None:
        """The value if this process holds it in memory (counted as a hit), else None (ask `get`)."""
        now = time.monotonic()
        with self._lock:
            found = self._memory.get(key)
            if found is None or found[1] <= now:
                return None
            self._memory.move_to_end(key)
        if now >= found[1] - self.memory_seconds / 2:  # read it again before it lapses (ingest/recent.py)
            REFRESHER.submit((id(self), key), lambda: self._reread(key, found[0]))
        self._count("hits")
        _HITS.inc()
        return found[0]

    def get(self, key: str, *, count_miss: bool = True) -> dict[str, Any] | None:
        """The cached value, or None. `count_miss=False` for a lookup that another one backs up."""
        try:
            raw = self.backend.get(key)
        except Exception as exc:
            self._bypass("read", exc)
            return None
        outcome = "hit" if raw is not None else "miss"
        if raw is not None or count_miss:
            self._count("hits" if raw is not None else "misses")
            CACHE_EVENTS.labels(outcome=outcome).inc()
        if raw is None:
            return None
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            return None
        if not isinstance(value, dict):
            return None
        self._keep(key, value)
        return value

    def set(self, key: str, value: dict[str, Any]) -> None:
        try:
            self.backend.set(key, json.dumps(value))
        except Exception as exc:
            self._bypass("write", exc)
        self._keep(key, value)

    def remember_answer(
        self,
        keys: Sequence[str],
        *,
        text: str,
        citations: Sequence[Any],
        confidence: float,
        response: Mapping[str, Any] | None = None,
    ) -> None:
        """A validated, grounded answer under each key (`response`: the whole response, for agent mode)."""
        value: dict[str, Any] = {
            "answer": text,
            "citations": [c.model_dump() for c in citations],
            "confidence": confidence,
        }
        if response is not None:
            value["response"] = dict(response)
        for key in keys:
            self.set(key, value)

    def remember_abstention(self, keys: Sequence[str], *, confidence: float, related: Sequence[Any]) -> None:
        """The documents did not answer it: remembered under the fast-path key only (it holds the
        generation, so a new or changed document makes the question be tried again)."""
        value = {"abstained": True, "confidence": confidence, "related": [c.model_dump() for c in related]}
        for key in keys:
            self.set(key, value)

    def _reread(self, key: str, kept: dict[str, Any]) -> None:
        """The refresher's re-read of a value held in memory: the same value is kept on (the same object, so
        what was made from it stays valid: recall.py), a changed one replaces it, a gone one (expired, or
        `ragkb cache clear` in another process) is forgotten. Not counted as a hit or a miss."""
        raw = self.backend.get(key)
        value = None if raw is None else json.loads(raw)
        with self._lock:
            found = self._memory.get(key)
            if found is None or found[0] is not kept:  # replaced or dropped meanwhile: that stands
                return
            if not isinstance(value, dict):
                del self._memory[key]
                return
            self._memory[key] = (kept if value == kept else value, time.monotonic() + self.memory_seconds)

    def _keep(self, key: str, value: dict[str, Any]) -> None:
        if self.memory_seconds <= 0:
            return
        with self._lock:
            self._memory[key] = (value, time.monotonic() + self.memory_seconds)
            self._memory.move_to_end(key)
            while len(self._memory) > self.memory_entries:
                self._memory.popitem(last=False)

    def _count(self, counter: str) -> None:
        with self._lock:
            self._counts[counter] = self._counts.get(counter, 0) + 1
            if self._flusher is None:
                self._flusher = threading.Thread(
                    target=self._flush_every_second, name="ragkb-cache-counts", daemon=True
                )
                self._flusher.start()

    def _flush_every_second(self) -> None:
        while not self._stop.wait(1.0):
            self.flush_counts()

    def flush_counts(self) -> None:
        """Add the counts made since the last flush to the backend's counters."""
        with self._lock:
            counts, self._counts = self._counts, {}
        try:
            for counter, by in counts.items():
                self.backend.incr(counter, by)
        except Exception as exc:
            self._bypass("write", exc)

    def close(self) -> None:
        self._stop.set()
        self.flush_counts()

    def stats(self) -> dict[str, Any]:
        self.flush_counts()
        counters = self.backend.counters()
        hits, misses = counters.get("hits", 0), counters.get("misses", 0)
        return {
            "backend": self.backend.name,
            "entries": self.backend.count(),
            "hits": hits,
            "misses": misses,
            "hit_rate": round(hits / (hits + misses), 4) if hits + misses else 0.0,
        }

    def clear(self) -> int:
        with self._lock:
            self._memory.clear()
        return self.backend.clear()

    def health(self) -> str:
        """ "ok", or why the cache is being bypassed (queries still work, just uncached)."""
        try:
            self.backend.ping()
        except Exception as exc:
            return f"degraded: the {self.backend.name} cache is unreachable and bypassed ({type(exc).__name__})"
        return "ok"

    def _bypass(self, action: str, exc: Exception) -> None:
        CACHE_EVENTS.labels(outcome="error").inc()
        log.warning("cache %s failed, bypassing the cache: %s", action, exc, extra={"backend": self.backend.name})
