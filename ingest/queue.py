"""The ingestion job queue on Redis: API replicas enqueue uploads, `ragkb worker` processes ingest them.

A job's bytes and state live in Redis under `ragkb:ingest:*`. Workers move a job
id from the queue to a processing list atomically (BLMOVE), so a worker that dies
leaves its job visible there for `requeue_stalled`; ingestion is idempotent by
content, so processing a job twice is harmless.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from .errors import RagkbError

log = logging.getLogger("ragkb.queue")

PREFIX = "ragkb:ingest:"
JOB_TTL_SECONDS = 7 * 24 * 3600
HEARTBEAT_SECONDS = 5.0
STALLED_AFTER_SECONDS = 30.0


class QueueUnavailable(RagkbError):
    """The Redis behind the job queue cannot be reached."""


class JobNotFound(RagkbError):
    pass


class QueueNotConfigured(RagkbError):
    """No job queue is configured: uploads are ingested at once, so there are no jobs to look up."""


class JobQueue:
    def __init__(self, url: str, *, prefix: str = PREFIX) -> None:
        import redis

        if not url.startswith(("redis://", "rediss://", "unix://")):
            raise RagkbError(f"RAGKB_QUEUE_URL must be a redis:// URL, got {url!r}")
        self.redis: Any = redis.Redis.from_url(url, socket_connect_timeout=2)  # returns bytes
        self.prefix = prefix
        self.pending = prefix + "queue"
        self.processing = prefix + "processing"

    def _job(self, job_id: str) -> str:
        return f"{self.prefix}job:{job_id}"

    def _blob(self, job_id: str) -> str:
        return f"{self.prefix}blob:{job_id}"

    def enqueue(self, *, collection: str, name: str, source: str, data: bytes) -> str:
        import redis

        job_id = uuid.uuid4().hex
        state = {"id": job_id, "status": "queued", "collection": collection, "name": name, "source": source,
                 "bytes": str(len(data)), "queued_at": str(time.time())}  # fmt: skip
        try:
            with self.redis.pipeline() as pipe:
                pipe.set(self._blob(job_id), data, ex=JOB_TTL_SECONDS)
                pipe.hset(self._job(job_id), mapping=state)
                pipe.expire(self._job(job_id), JOB_TTL_SECONDS)
                pipe.rpush(self.pending, job_id)
                pipe.execute()
        except redis.RedisError as exc:
            raise QueueUnavailable(f"cannot enqueue the ingestion job: {exc}") from exc
        return job_id

    def status(self, job_id: str) -> dict[str, Any]:
        import redis

        try:
            raw = self.redis.hgetall(self._job(job_id))
        except redis.RedisError as exc:
            raise QueueUnavailable(f"cannot read the ingestion job: {exc}") from exc
        if not raw:
            raise JobNotFound(f"no ingestion job {job_id!r} (jobs are kept for 7 days)")
        state: dict[str, Any] = {k.decode(): v.decode() for k, v in raw.items()}
        beat = float(state.get("heartbeat_at") or state.get("started_at") or 0)
        if state.get("status") == "running" and time.time() - beat > STALLED_AFTER_SECONDS:
            state["status"] = "stalled"  # its worker died: `ragkb worker --requeue-stalled` puts it back
        if "report" in state:
            state["report"] = json.loads(state["report"])
        return state

    def depth(self) -> dict[str, int]:
        return {"queued": int(self.redis.llen(self.pending)), "processing": int(self.redis.llen(self.processing))}

    def requeue_stalled(self) -> int:
        """Put back on the queue the jobs whose worker died: those in the processing list whose heartbeat
        is older than STALLED_AFTER_SECONDS (a live worker's jobs stay where they are)."""
        moved = 0
        for raw_id in self.redis.lrange(self.processing, 0, -1):
            job_id = raw_id.decode()
            try:
                stalled = self.status(job_id)["status"] == "stalled"
            except JobNotFound:
                stalled = True  # its state expired: nothing is running it
            if stalled and self.redis.lrem(self.processing, 1, job_id):
                self.redis.hset(self._job(job_id), "status", "queued")
                self.redis.rpush(self.pending, job_id)
                moved += 1
        return moved

    def work_one(self, ingest: Callable[[str, str, str, bytes], dict[str, Any]], *, timeout: float = 1.0) -> str | None:
        """Take one job (waiting up to `timeout` s), ingest it, record the outcome; returns its id, or None."""
        raw_id = self.redis.blmove(self.pending, self.processing, timeout, "LEFT", "RIGHT")
        if raw_id is None:
            return None
        job_id = str(raw_id.decode())
        key = self._job(job_id)
        now = str(time.time())
        self.redis.hset(key, mapping={"status": "running", "started_at": now, "heartbeat_at": now})
        beating = threading.Event()
        heart = threading.Thread(target=self._beat, args=(key, beating), daemon=True)
        heart.start()
        try:
            job = self.status(job_id)
            data = self.redis.get(self._blob(job_id))
            if data is None:
                raise RagkbError("the job's file has expired from the queue")
            report = ingest(job["collection"], job["name"], job["source"], data)
            status = "failed" if report.get("failed") else "done"
            self.redis.hset(
                key, mapping={"status": status, "report": json.dumps(report), "finished_at": str(time.time())}
            )
        except Exception as exc:  # a job never takes the worker down with it
            log.exception("ingestion job failed", extra={"job_id": job_id})
            self.redis.hset(key, mapping={"status": "failed", "error": str(exc), "finished_at": str(time.time())})
        finally:
            beating.set()
            heart.join()
            self.redis.delete(self._blob(job_id))
            self.redis.lrem(self.processing, 1, job_id)
        return job_id

    def _beat(self, key: str, stop: threading.Event) -> None:
        """While a job runs, say so every HEARTBEAT_SECONDS; `status` calls a silent running job stalled."""
        while not stop.wait(HEARTBEAT_SECONDS):
            try:
                self.redis.hset(key, "heartbeat_at", str(time.time()))
            except Exception:  # a Redis blip: the next beat tries again
                log.warning("cannot record the job's heartbeat", extra={"job": key})
