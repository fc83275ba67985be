"""Writing behind the response: answer records, review bookkeeping and their audit events are queued here and
written by one thread, so no request waits on the state database's disk.

The queue is bounded (`RAGKB_RECORD_QUEUE`): when it is full the newest job is dropped and counted in
`ragkb_records_dropped_total{reason="full"}`, never blocking a request. A failing job is logged and counted
(`reason="error"`); the jobs after it still run. `flush()` waits until everything queued so far is written
(a read of the records in this process calls it first, so a caller always sees its own answers); `close()`
flushes and stops the thread (the server's shutdown, the CLI's exit).
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable

from ingest.errors import RagkbError

from ..metrics import RECORDS_DROPPED, RECORDS_QUEUED, RECORDS_WRITTEN

log = logging.getLogger("ragkb.state")

Job = Callable[[], object]
_STOP = object()


class BackgroundWriter:
    """One daemon thread that runs queued jobs in order."""

    def __init__(self, capacity: int = 10_000, *, name: str = "ragkb-writer") -> None:
        self._jobs: queue.Queue[Job | object] = queue.Queue(maxsize=max(1, capacity))
        self._lock = threading.Lock()
        self._closed = False
        self._thread = threading.Thread(target=self._drain, name=name, daemon=True)
        self._thread.start()

    def submit(self, job: Job) -> bool:
        """Queue a job; False (counted) when the queue is full or the writer is closed."""
        if self._closed:
            RECORDS_DROPPED.labels(reason="closed").inc()
            return False
        try:
            self._jobs.put_nowait(job)
        except queue.Full:
            RECORDS_DROPPED.labels(reason="full").inc()
            log.warning("record dropped: the background writer's queue is full")
            return False
        RECORDS_QUEUED.inc()
        return True

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until every job queued before this call has run (True), or `timeout` seconds (False)."""
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
            job = self._jobs.get()
            if job is _STOP:
                return
            if isinstance(job, threading.Event):  # a flush: everything queued before it has run
                job.set()
                continue
            assert callable(job)
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
