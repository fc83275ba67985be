"""Ingestion jobs on the task engine (Dramatiq; why: docs/ingestion.md): submitting them, and their state.

A job is a list of files (name, source, blob reference) for one collection. Its
bytes are in the blob store (`ingest/blobs.py`), pinned until the job ends; the
broker carries only the job id. The job's state is a small JSON record under
`<data_dir>/jobs/`, written by the API when it queues the job and by the worker
as it runs (stage, files done, chunks embedded, attempts, the worker, a heartbeat),
so `GET /v1/jobs/{id}` and `ragkb jobs` can show it whichever broker carries it.

The broker (`RAGKB_QUEUE_URL`) is Redis (`redis://`) or RabbitMQ (`amqp://`). The
worker side, the actor and its retry policy, is `ingest/tasks.py`.
"""

from __future__ import annotations

import json
import os
import random
import tempfile
import time
import uuid
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .blobs import BlobStore, open_blobs
from .config import Settings
from .errors import RagkbError

QUEUE_NAME = "ragkb-ingest"
ACTOR_NAME = "ingest_job"
NAMESPACE = "ragkb"  # Redis keys of the broker: ragkb:ragkb-ingest, ragkb:__heartbeats__, ...
JOB_TTL_SECONDS = 7 * 24 * 3600
# a worker process heartbeats on every broker call, at least once a second while it works (its delay-queue
# consumer polls); silent for RAGKB_QUEUE_HEARTBEAT_TIMEOUT (default 60 s) it is dead and its messages move back
MIN_HEARTBEAT_TIMEOUT = 3.0
MAINTENANCE_EVERY_CALL = 1_000_000  # Dramatiq's scale: out of a million calls; all of them look for dead workers

TERMINAL = ("done", "failed")
_JOB_ID = "0123456789abcdef"


class QueueUnavailable(RagkbError):
    """The broker behind the job queue cannot be reached."""


class NoWorkerCanRun(QueueUnavailable):
    """The store is embedded and a server holds it: no `ragkb worker` may write it, so a job would never run."""


class JobNotFound(RagkbError):
    pass


class QueueNotConfigured(RagkbError):
    """No job queue is configured: uploads are ingested at once, so there are no jobs to look up."""


@dataclass(frozen=True, slots=True)
class JobFile:
    """One file of a job: how it is named (its extension picks the loader), its source, its original."""

    name: str
    source: str
    blob: str


def is_transient(exc: BaseException) -> bool:
    """Errors worth retrying: something ragkb needs was unreachable for a while (the vector store, Redis, the
    network). Everything else (a corrupt file, a bug, the time limit) fails at once, with its reason."""
    import httpx
    import redis

    from .vectorstore import StoreUnavailable

    transient = (
        StoreUnavailable,
        QueueUnavailable,
        ConnectionError,
        TimeoutError,
        redis.RedisError,
        httpx.TransportError,
    )
    return isinstance(exc, transient)


def make_broker(settings: Settings) -> Any:
    """The Dramatiq broker named by RAGKB_QUEUE_URL, with ragkb's middleware (time limit, retries with
    exponential backoff for transient errors only; see `ingest/tasks.py`)."""
    import dramatiq.middleware as mw

    url = settings.queue_url or ""
    if settings.queue_heartbeat_timeout < MIN_HEARTBEAT_TIMEOUT:
        raise RagkbError(
            f"RAGKB_QUEUE_HEARTBEAT_TIMEOUT must be at least {MIN_HEARTBEAT_TIMEOUT:g}s (a worker process "
            f"heartbeats about once a second, so a shorter one would take live workers for dead and run their jobs "
            f"twice), got {settings.queue_heartbeat_timeout:g}"
        )
    middleware = [
        mw.AgeLimit(),
        mw.TimeLimit(time_limit=int(settings.job_time_limit * 1000), interval=1000),
        mw.ShutdownNotifications(),
        mw.CurrentMessage(),
        mw.Retries(
            max_retries=settings.queue_max_retries,
            min_backoff=int(settings.queue_min_backoff * 1000),
            max_backoff=int(settings.queue_max_backoff * 1000),
            retry_when=lambda retries, exc: is_transient(exc) and retries < settings.queue_max_retries,
        ),
    ]
    if url.startswith(("redis://", "rediss://", "unix://")):
        import redis
        from dramatiq.brokers.redis import RedisBroker

        client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=10)
        return RedisBroker(
            client=client,
            namespace=NAMESPACE,
            middleware=middleware,
            heartbeat_timeout=int(settings.queue_heartbeat_timeout * 1000),
            maintenance_chance=MAINTENANCE_EVERY_CALL,
        )
    if url.startswith(("amqp://", "amqps://")):
        from dramatiq.brokers.rabbitmq import RabbitmqBroker

        # RabbitMQ hands a dead consumer's unacknowledged messages back as soon as its connection drops
        return RabbitmqBroker(url=url, middleware=middleware, confirm_delivery=True)
    raise RagkbError(
        f"RAGKB_QUEUE_URL must be a redis://, rediss://, unix:// (Redis) or amqp:// (RabbitMQ) URL, got {url!r}"
    )


class JobRecords:
    """Job states as JSON files under `<data_dir>/jobs` (written whole, then renamed: never half a record)."""

    def __init__(self, root: Path, *, stalled_after: float) -> None:
        self.root = root
        self.stalled_after = stalled_after

    def _path(self, job_id: str) -> Path:
        if len(job_id) != 32 or any(c not in _JOB_ID for c in job_id):
            raise JobNotFound(f"no ingestion job {job_id!r} (jobs are kept for 7 days)")
        return self.root / f"{job_id}.json"

    def write(self, state: dict[str, Any]) -> None:
        path = self._path(str(state["id"]))
        self.root.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".job-")
        try:
            with os.fdopen(fd, "w") as out:
                json.dump(state, out)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def read(self, job_id: str) -> dict[str, Any]:
        try:
            state: dict[str, Any] = json.loads(self._path(job_id).read_text())
        except FileNotFoundError:
            raise JobNotFound(f"no ingestion job {job_id!r} (jobs are kept for 7 days)") from None
        return state

    def status(self, job_id: str) -> dict[str, Any]:
        """The job as clients see it: a running job whose worker went silent is `stalled` (its worker died;
        the broker hands it to another worker within RAGKB_QUEUE_HEARTBEAT_TIMEOUT), never running forever."""
        return self.view(self.read(job_id))

    def view(self, state: dict[str, Any]) -> dict[str, Any]:
        silent = time.time() - float(state.get("updated_at") or 0)
        if state.get("status") == "running" and silent > self.stalled_after:
            state["status"] = "stalled"
            state["note"] = (
                f"its worker ({state.get('worker', '?')}) has not reported for {silent:.0f}s and is presumed dead; "
                "the job is redelivered to another worker"
            )
        return state

    def recent(self, limit: int = 20) -> list[dict[str, Any]]:
        if not self.root.is_dir():
            return []
        paths = sorted(self.root.glob("*.json"), key=lambda p: p.stat().st_mtime, reverse=True)[:limit]
        found = []
        for path in paths:
            try:
                found.append(self.view(json.loads(path.read_text())))
            except (OSError, ValueError):  # removed or being replaced meanwhile
                continue
        return found

    def prune(self, older_than: float = JOB_TTL_SECONDS) -> int:
        """Forget finished jobs older than the TTL (called when jobs are queued)."""
        removed = 0
        cutoff = time.time() - older_than
        for path in self.root.glob("*.json") if self.root.is_dir() else []:
            try:
                if path.stat().st_mtime < cutoff:
                    path.unlink()
                    removed += 1
            except OSError:
                continue
        return removed


def job_records(settings: Settings) -> JobRecords:
    return JobRecords(settings.data_dir / "jobs", stalled_after=settings.queue_heartbeat_timeout)


class JobQueue:
    """What the API (and `ragkb ingest --queue`) uses: queue jobs, read their state."""

    def __init__(self, settings: Settings, *, blobs: BlobStore | None = None) -> None:
        if not settings.queue_url:
            raise QueueNotConfigured("RAGKB_QUEUE_URL is not set")
        self.settings = settings
        self.broker = make_broker(settings)
        self.broker.declare_queue(QUEUE_NAME)
        self.blobs = blobs or open_blobs(settings)
        self.records = job_records(settings)

    def enqueue(self, *, collection: str, files: Iterable[JobFile]) -> str:
        """Queue one job for these files (their originals already in the blob store); returns its id."""
        import dramatiq

        self.refuse_if_unrunnable()
        job_id = uuid.uuid4().hex
        refs = [asdict(f) for f in files]
        for ref in refs:
            self.blobs.pin(ref["blob"], f"job-{job_id}")
        now = time.time()
        self.records.write({
            "id": job_id, "collection": collection, "status": "queued", "stage": "queued", "attempts": 0,
            "files_total": len(refs), "files_done": 0, "chunks_embedded": 0, "current_file": None,
            "queued_at": now, "updated_at": now, "files": refs,
        })  # fmt: skip
        message: Any = dramatiq.Message(
            queue_name=QUEUE_NAME, actor_name=ACTOR_NAME, args=(job_id,), kwargs={}, options={}
        )
        try:
            self.broker.enqueue(message)
        except Exception as exc:  # redis.RedisError, pika/dramatiq connection errors
            for ref in refs:
                self.blobs.unpin(ref["blob"], f"job-{job_id}")
            self.records.write({**self.records.read(job_id), "status": "failed", "error": f"not queued: {exc}"})
            raise QueueUnavailable(f"cannot enqueue the ingestion job: {type(exc).__name__}: {exc}") from exc
        if random.random() < 0.02:  # now and then, forget jobs past their TTL
            self.records.prune()
        return job_id

    def refuse_if_unrunnable(self) -> None:
        """Never accept a job no worker may run: on an embedded store a server holds, workers are refused
        (`ingest/datadir.py`), so the job would stay `queued` until that server stops."""
        from .datadir import served

        if served(self.settings):
            raise NoWorkerCanRun(
                f"cannot queue the ingestion job: a ragkb server holds the embedded store in {self.settings.data_dir}"
                ", so no `ragkb worker` may run it. Use a Chroma server (RAGKB_CHROMA_URL) shared by the server and "
                "the workers, or unset RAGKB_QUEUE_URL so the server ingests uploads itself"
            )

    def enqueue_bytes(self, *, collection: str, items: Iterable[tuple[str, str, bytes]]) -> str:
        """Store the originals, then queue one job for them (tests, scripts)."""
        self.refuse_if_unrunnable()  # before anything is stored
        files = [JobFile(name, source, self.blobs.put(data)) for name, source, data in items]
        return self.enqueue(collection=collection, files=files)

    def status(self, job_id: str) -> dict[str, Any]:
        return self.records.status(job_id)

    def close(self) -> None:
        self.broker.close()
