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
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ingest.errors import RagkbError

from ..metrics import RECORDS_DROPPED, RECORDS_QUEUED, RECORDS_WRITTEN

log = logging.getLogger("ragkb.state")

Job = Callable[[], object]
BATCH = 500  # rows written in one call of the sink at most


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
    ) -> None:
        self._jobs: queue.Queue[object] = queue.Queue(maxsize=max(1, capacity))
        self._sink = sink
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
        try:
            self._jobs.put_nowait(work)
        except queue.Full:
            RECORDS_DROPPED.labels(reason="full").inc()
            log.warning("record dropped: the background writer's queue is full")
            return False
        RECORDS_QUEUED.inc()
        return True

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until all work queued before this call is done (True), or `timeout` seconds (False)."""
        if self._closed or not self._thread.is_alive():
            return True
        done = threading.Event()
        try:
            self._jobs.put(done, timeout=timeout)
        except queue.Full:
            return False
        return done.wait(timeout)

    def close(self, timeout: float = 30.0) -> None:
        """Write what is queued, then stop the thread."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        try:
            self._jobs.put(_STOP, timeout=timeout)
        except queue.Full:
            log.warning("background writer did not drain in %.0f s; %d record(s) lost", timeout, self._jobs.qsize())
            return
        self._thread.join(timeout)

    def _drain(self) -> None:
        while True:
            work = [self._jobs.get()]
            while len(work) < BATCH:  # whatever else is waiting goes in the same round
                try:
                    work.append(self._jobs.get_nowait())
                except queue.Empty:
                    break
            rows: list[_Row] = []
            for item in work:
                if isinstance(item, _Row):
                    rows.append(item)
                    continue
                self._write(rows)  # in order: rows queued before a job are written before it runs
                rows = []
                if item is _STOP:
                    return
                if isinstance(item, threading.Event):  # a flush: everything queued before it is done
                    item.set()
                elif callable(item):
                    self._run(item)
            self._write(rows)

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
