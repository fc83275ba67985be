"""The worker side of the task engine: the Dramatiq actor that runs one ingestion job (`ragkb worker`).

Importing this module sets Dramatiq's broker from RAGKB_QUEUE_URL and declares the
actor; `ragkb worker --concurrency N` runs Dramatiq's worker processes on it.

What a job's life looks like (docs/ingestion.md has the why):
- the message is acknowledged only after the job ends, so a worker killed mid-job
  (even SIGKILL) leaves it to the broker, which hands it to another worker (Redis:
  after RAGKB_QUEUE_HEARTBEAT_TIMEOUT without a sign of life; RabbitMQ: when the
  dead worker's connection drops);
- running it twice is harmless: a file already written is `unchanged` the second
  time (document and chunk ids come from the source and the content), and a file
  written half-way is completed under the same ids;
- a transient error (store or broker unreachable) is raised to Dramatiq's Retries
  middleware: retried with exponential backoff, up to RAGKB_QUEUE_MAX_RETRIES, then
  dead-lettered; the job record says `retrying`, then `failed` with the reason;
- a file that cannot be ingested (corrupt PDF, ...) is that file's failure, at once,
  never retried; a job over RAGKB_JOB_TIME_LIMIT is interrupted and fails;
- SIGTERM: the worker takes no new job and finishes the current one (or, past
  Dramatiq's shutdown timeout, stops and leaves it to be redelivered);
- a worker process whose `ragkb worker` died (even by SIGKILL) dies with it within
  a second or so, leaving its job to be redelivered (`ingest/lifeline.py`);
- on an embedded store every worker process holds the data dir's lock shared, so no
  server can start beside it, nor it beside a server (`ingest/datadir.py`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import dramatiq
from dramatiq.middleware import CurrentMessage, Middleware
from dramatiq.middleware.time_limit import TimeLimitExceeded

from .config import Settings, get_settings
from .datadir import StoreLock, hold_for_worker
from .errors import IngestError, RagkbError
from .lifeline import coalesce_repeated_sigterm, die_with_parent
from .pipeline import Ingestor
from .queue import ACTOR_NAME, QUEUE_NAME, JobNotFound, JobRecords, is_transient, job_records, make_broker

log = logging.getLogger("ragkb.worker")


class JobRun:
    """One attempt at one job: its state record, updated as work moves on and on a heartbeat meanwhile."""

    def __init__(self, records: JobRecords, state: dict[str, Any], beat_seconds: float) -> None:
        self.records = records
        self.state = state
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._beat = threading.Thread(target=self._beating, args=(beat_seconds,), daemon=True)

    def update(self, **fields: Any) -> None:
        with self._lock:
            self.state.update(fields, updated_at=time.time())
            try:
                self.records.write(self.state)
            except OSError:  # a full or unreachable disk must not take the job down: the next update retries
                log.warning("cannot record the job's state", extra={"job_id": self.state.get("id")})

    def __enter__(self) -> JobRun:
        self._beat.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._beat.join()

    def _beating(self, every: float) -> None:
        while not self._stop.wait(every):
            self.update()

    def on_stage(self, stage: str, name: str, chunks: int) -> None:
        if stage == "parsing":
            self.update(stage="parsing", current_file=name)
        elif stage == "embedding":
            self.update(stage="embedding", chunks_pending=chunks)
        elif stage == "written":
            self.update(stage="writing", chunks_embedded=int(self.state.get("chunks_embedded", 0)) + chunks)

    def on_file_done(self, name: str) -> None:
        self.update(files_done=int(self.state.get("files_done", 0)) + 1)


class Runtime:
    """What a worker process keeps between jobs: the settings, the job records, the Ingestor (model loaded
    once; built lazily so a store that is down at start-up is retried like any transient error)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.records = job_records(settings)
        self._ingestor: Ingestor | None = None
        self._lock = threading.Lock()

    def ingestor(self) -> Ingestor:
        with self._lock:
            if self._ingestor is None:
                self._ingestor = Ingestor(self.settings)
            return self._ingestor

    def run(self, job_id: str, retries: int) -> None:
        """One attempt at a job (`retries` earlier attempts failed transiently). Raises what should be retried."""
        try:
            state = self.records.read(job_id)
        except JobNotFound:
            log.warning("job record gone (expired or deleted): dropping the job", extra={"job_id": job_id})
            return
        if state.get("status") in ("done", "failed"):
            return  # redelivered after it ended (the acknowledgement was lost): nothing to do
        beat = min(5.0, self.settings.queue_heartbeat_timeout / 3)
        state.update(
            status="running", stage="starting", attempts=int(state.get("attempts", 0)) + 1, files_done=0,
            chunks_embedded=0, worker=f"{socket.gethostname()}:{os.getpid()}", started_at=time.time(), error=None,
        )  # fmt: skip
        with JobRun(self.records, state, beat) as run:
            run.update()
            try:
                self._ingest(run)
            except Exception as exc:
                self._failed(run, exc, retries)
                raise

    def _ingest(self, run: JobRun) -> None:
        ingestor = self.ingestor()
        files = run.state["files"]
        report = ingestor.ingest_items(
            self._items(ingestor, files),
            collection=str(run.state["collection"]),
            on_file_done=run.on_file_done,
            on_stage=run.on_stage,
        )
        failed_all = report.failed > 0 and report.failed == len(files)
        error = "; ".join(f"{f.path}: {f.error}" for f in report.failures) or None
        self._release(ingestor, run)
        run.update(
            status="failed" if failed_all else "done", stage="finished", finished_at=time.time(), current_file=None,
            report=report.as_dict(), error=error,
        )  # fmt: skip

    @staticmethod
    def _items(ingestor: Ingestor, files: list[dict[str, str]]) -> Iterator[tuple[str, str, bytes]]:
        for ref in files:
            data = ingestor.blobs.get(ref["blob"])  # BlobNotFound is a RagkbError: the job fails with it
            yield ref["name"], ref["source"], data

    def _release(self, ingestor: Ingestor, run: JobRun) -> None:
        """The job no longer needs its originals: unpin them, and delete those no document uses (failed files)."""
        for ref in run.state["files"]:
            ingestor.blobs.unpin(ref["blob"], f"job-{run.state['id']}")
            try:
                ingestor.release_blob(ref["blob"])
            except Exception:  # the store is down: keep the original, a later delete or gc frees it
                log.warning("cannot check whether an original is still used", extra={"blob": ref["blob"]})

    def _failed(self, run: JobRun, exc: Exception, retries: int) -> None:
        if isinstance(exc, TimeLimitExceeded):
            reason = f"ran over its time limit of {self.settings.job_time_limit:g}s (RAGKB_JOB_TIME_LIMIT)"
        else:
            reason = f"{type(exc).__name__}: {exc}" if not isinstance(exc, IngestError) else str(exc)
        if is_transient(exc) and retries < self.settings.queue_max_retries:
            delay = min(self.settings.queue_min_backoff * 2**retries, self.settings.queue_max_backoff)
            log.warning("job hit a transient error; retrying", extra={"job_id": run.state["id"], "error": reason})
            run.update(status="retrying", stage="waiting to retry", error=reason, retry_in_seconds=round(delay, 1))
            return
        if is_transient(exc):
            reason = f"gave up after {retries + 1} attempts (RAGKB_QUEUE_MAX_RETRIES): {reason}"
        log.error("job failed", extra={"job_id": run.state["id"], "error": reason})
        with contextlib.suppress(Exception):  # the store is down: a later delete or gc frees the originals
            self._release(self.ingestor(), run)
        run.update(status="failed", stage="finished", finished_at=time.time(), error=reason, current_file=None)


class Lifeline(Middleware):
    """As each worker process boots: die with the parent, take a stop signalled twice at once as one, and hold
    the embedded store's lock (shared) so that no server starts beside this process even if its parent is gone
    first. A store a server holds ends the boot."""

    def __init__(self) -> None:
        self.store_lock: StoreLock | None = None

    def after_process_boot(self, broker: Any) -> None:
        die_with_parent()
        coalesce_repeated_sigterm()
        try:
            self.store_lock = hold_for_worker(runtime.settings)
        except RagkbError as exc:
            log.critical("%s", exc)
            raise SystemExit(3) from None  # not an Exception: Dramatiq's boot does not swallow it


class WarmUp(Middleware):
    """Load the model when a worker process boots, not when its first job arrives."""

    def after_worker_boot(self, broker: Any, worker: Any) -> None:
        try:
            runtime.ingestor()
            log.info("ragkb worker ready (pid %s)", os.getpid())
        except Exception as exc:  # the store may be down: the first job retries it
            log.warning("worker warm-up failed; the first job will retry: %s", exc)


_settings = get_settings()
runtime = Runtime(_settings)
if _settings.queue_url:  # the API imports `ingest.queue` only; this module is the worker's
    _broker = make_broker(_settings)
    _broker.add_middleware(Lifeline())
    _broker.add_middleware(WarmUp())
    dramatiq.set_broker(_broker)
else:  # imported for `Runtime` (tests, tools) with no broker: the actor is declared on a stub one
    from dramatiq.brokers.stub import StubBroker

    dramatiq.set_broker(StubBroker())


@dramatiq.actor(actor_name=ACTOR_NAME, queue_name=QUEUE_NAME, time_limit=int(_settings.job_time_limit * 1000))
def ingest_job(job_id: str) -> None:
    message = CurrentMessage.get_current_message()
    retries = int(message.options.get("retries", 0)) if message is not None else 0
    runtime.run(job_id, retries)
