"""Writing behind the response: answer records, review bookkeeping and their audit events are queued here and
written by one thread, so no request waits on the state database's disk.

Two kinds of work: `add(make)` queues a row (`make()` builds it on the writer's thread) that is written with
the others queued at the same time in one call of `sink` (one transaction for many answers); `submit(job)`
queues a job run on its own, in order (queuing a review, which needs the record before it). The queue is
bounded (`RAGKB_RECORD_QUEUE`): when it is full the newest work is dropped and counted in
`ragkb_records_dropped_total{reason="full"}`, never blocking a request. A failing job or batch is logged
and counted (`reason="error"`); the work after it still runs. `flush()` waits until everything queued so far
is written (a read of the records in this process calls it first, so a caller always sees its own answers);
`close()` flushes and stops the thread (the server's shutdown, the CLI's exit).

Queuing takes no lock and wakes no thread: the writer wakes every `linger` seconds (50 ms) and writes what
has come in, or at once when `BATCH` rows wait, a flush is asked for or the writer closes. (A queue.Queue
wakes the writer on every put: one transaction per answer at low rates, and a thread hand-off on each
request's path.)
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ingest.errors import RagkbError

from ..metrics import RECORDS_DROPPED, RECORDS_QUEUED, RECORDS_WRITTEN

log = logging.getLogger("ragkb.state")

Job = Callable[[], object]
BATCH = 500  # rows written in one call of the sink at most; this many waiting wake the writer at once
LINGER = 0.05  # seconds queued work may wait for company before it is written


@dataclass(frozen=True, slots=True)
class _Row:
    make: Callable[[], Any]


_STOP = object()


class BackgroundWriter:
    """One daemon thread that runs queued work in order."""

    def __init__(
        self,
        capacity: int = 10_000,
        *,
        sink: Callable[[Sequence[Any]], None] | None = None,
        name: str = "ragkb-writer",
        linger: float = LINGER,
    ) -> None:
        self._queue: deque[object] = deque()  # append and popleft are atomic: no lock on the request's path
        self._capacity = max(1, capacity)
        self._sink = sink
        self._linger = linger
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._closed = False
        self._thread = threading.Thread(target=self._drain, name=name, daemon=True)
        self._thread.start()

    def submit(self, job: Job) -> bool:
        """Queue a job; False (counted) when the queue is full or the writer is closed."""
        return self._put(job)

    def add(self, make: Callable[[], Any]) -> bool:
        """Queue a row for the sink (`make()` builds it on the writer's thread)."""
        if self._sink is None:
            raise RuntimeError("this writer has no sink for rows")
        return self._put(_Row(make))

    def _put(self, work: object) -> bool:
        if self._closed:
            RECORDS_DROPPED.labels(reason="closed").inc()
            return False
        waiting = len(self._queue)
        if waiting >= self._capacity:
            RECORDS_DROPPED.labels(reason="full").inc()
            log.warning("record dropped: the background writer's queue is full")
            return False
        self._queue.append(work)
        RECORDS_QUEUED.inc()
        if waiting + 1 >= BATCH:
            self._wake.set()
        return True

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until all work queued before this call is done (True), or `timeout` seconds (False)."""
        if self._closed or not self._thread.is_alive():
            return True
        done = threading.Event()
        self._queue.append(done)
        self._wake.set()
        return done.wait(timeout)

    def close(self, timeout: float = 30.0) -> None:
        """Write what is queued, then stop the thread."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._queue.append(_STOP)
        self._wake.set()
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.warning("background writer did not drain in %.0f s; %d record(s) lost", timeout, len(self._queue))

    def _drain(self) -> None:
        while True:
            self._wake.wait(self._linger)
            self._wake.clear()  # a wake-up set after this finds its work below or wakes the next wait at once
            while self._queue:
                work: list[object] = []
                while self._queue and len(work) < BATCH:
                    work.append(self._queue.popleft())
                if self._handle(work):
                    return

    def _handle(self, work: list[object]) -> bool:
        """Write and run one round of work in order; True when it held the stop marker."""
        rows: list[_Row] = []
        for item in work:
            if isinstance(item, _Row):
                rows.append(item)
                continue
            self._write(rows)  # in order: rows queued before a job are written before it runs
            rows = []
            if item is _STOP:
                return True
            if isinstance(item, threading.Event):  # a flush: everything queued before it is done
                item.set()
            elif callable(item):
                self._run(item)
        self._write(rows)
        return False

    def _write(self, rows: list[_Row]) -> None:
        if not rows:
            return
        RECORDS_QUEUED.dec(len(rows))
        try:
            assert self._sink is not None
            self._sink([row.make() for row in rows])
        except Exception as exc:
            RECORDS_DROPPED.labels(reason="error").inc(len(rows))
            log.warning("%d record(s) not written: %s", len(rows), exc, exc_info=not isinstance(exc, RagkbError))
        else:
            RECORDS_WRITTEN.inc(len(rows))

    def _run(self, job: Job) -> None:
        RECORDS_QUEUED.dec()
        try:
            job()
        except RagkbError as exc:
            RECORDS_DROPPED.labels(reason="error").inc()
            log.warning("record not written: %s", exc)
        except Exception:
            RECORDS_DROPPED.labels(reason="error").inc()
            log.exception("record not written")
        else:
            RECORDS_WRITTEN.inc()
