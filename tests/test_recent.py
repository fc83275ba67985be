"""Kept values are read again before they lapse (ingest/recent.py's `Refresher`): a steady stream of cache hits
never finds the collection's generation, the review policy, the cached answer or the caller's key lapsed,
and what another process changed is still seen within the same time as before (sooner, when it is read
again early)."""

from __future__ import annotations

import json
import threading
from pathlib import Path

from ingest.recent import REFRESHER, Epoch, Recent
from server.answering.cache import AnswerCache, SQLiteBackend
from server.state import KeyStore, StateDB


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_value_past_half_its_time_is_read_again_in_the_background() -> None:
    clock, reads = Clock(), []
    kept: Recent[str, str] = Recent(Epoch(), ttl=1.0, clock=clock)

    def load() -> str:
        reads.append(threading.current_thread().name)
        return f"generation {len(reads)}"

    assert kept.get("kb", load) == "generation 1"
    clock.now += 0.4
    assert kept.peek("kb", load) == (True, "generation 1") and REFRESHER.idle()
    assert reads == ["MainThread"]  # not yet half its time: nothing read
    clock.now += 0.2
    assert kept.peek("kb", load) == (True, "generation 1")  # served as kept, and read again behind it
    assert REFRESHER.idle() and reads == ["MainThread", "ragkb-refresh"]
    clock.now += 0.9  # past the first value's time: the re-read one is kept a whole second from its read
    assert kept.peek("kb", load) == (True, "generation 2")
    clock.now += 1.1
    assert kept.peek("kb") == (False, None)  # without `reload`, a value lapses as before


def test_a_write_during_the_re_read_leaves_its_result_stale() -> None:
    clock, epoch = Clock(), Epoch()
    kept: Recent[str, str] = Recent(epoch, ttl=1.0, clock=clock)
    kept.get("kb", lambda: "old")
    clock.now += 0.6

    def load_while_written() -> str:
        epoch.bump()  # this process writes while the value is read
        return "read before the write"

    kept.peek("kb", load_while_written)
    assert REFRESHER.idle()
    assert kept.peek("kb") == (False, None)  # neither the old value nor the re-read one: the slow path reads


def test_a_cached_answer_is_read_again_kept_as_the_same_object_or_forgotten(tmp_path: Path) -> None:
    backend = SQLiteBackend(tmp_path / "cache.sqlite3", ttl=3600, max_entries=100)
    cache = AnswerCache(backend, memory_seconds=0.2)
    answer = {"answer": "Thirty days [1].", "citations": []}
    backend.set("memo", json.dumps(answer))
    held = cache.get("memo")
    assert held == answer and cache.peek("memo") is held
    REFRESHER.idle()
    threading.Event().wait(0.12)  # past half its time in memory
    assert cache.peek("memo") is held and REFRESHER.idle()
    assert cache.peek("memo") is held  # unchanged in the backend: the same object, kept another 0.2 s
    threading.Event().wait(0.12)
    backend.set("memo", json.dumps({**answer, "answer": "Sixty days [1]."}))
    cache.peek("memo")
    assert REFRESHER.idle()
    changed = cache.peek("memo")
    assert changed is not None and changed["answer"] == "Sixty days [1]."
    threading.Event().wait(0.12)
    assert backend.clear() == 1  # `ragkb cache clear` in another process
    cache.peek("memo")
    assert REFRESHER.idle()
    assert cache.peek("memo") is None  # forgotten, not served for the rest of its time


def test_a_key_revoked_elsewhere_is_dropped_by_the_re_read(state_db: StateDB) -> None:
    clock = Clock()
    server, cli = KeyStore(state_db, cache_ttl=5.0, clock=clock), KeyStore(state_db)
    _, token = cli.create("ci", "read", None)
    _, other = cli.create("bot", "write", None)
    assert server.authenticate(token) is not None and server.authenticate(other) is not None
    assert server.cached_any_keys() is None and server.any_keys() is True
    cli.revoke("ci")
    clock.now += 2.6  # past half of the 5 s
    assert server.cached_identity(token) is not None  # still within its time: served, and read again
    assert server.cached_identity(other) is not None and server.cached_any_keys() is True
    assert REFRESHER.idle()
    assert server.cached_identity(token) is None  # gone from the database: no longer known
    clock.now += 4.0  # past the first reads' time; the re-read ones are kept from their read
    assert server.cached_identity(other) is not None and server.cached_any_keys() is True
