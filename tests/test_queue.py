"""Scale-out ingestion: uploads queued on a real Redis, processed by `ragkb worker`."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from ingest.config import Settings
from ingest.embedder import Embedder
from ingest.pipeline import Ingestor
from ingest.queue import PREFIX, JobQueue, QueueUnavailable
from ragkb.cli import app as cli_app
from server.api import create_app
from server.service import QueryService

from .helpers import reader_for
from .servers import free_port

QUEUE_URL = "redis://127.0.0.1:6379/13"  # a database of its own, emptied around each test


@pytest.fixture
def queue_url() -> Iterator[str]:
    db = redis.Redis.from_url(QUEUE_URL)
    for key in db.scan_iter(match=PREFIX + "*"):
        db.delete(key)
    yield QUEUE_URL
    for key in db.scan_iter(match=PREFIX + "*"):
        db.delete(key)


def test_uploads_are_queued_then_ingested_by_a_worker(
    queue_url: str, tmp_path: Path, embedder: Embedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = Settings(data_dir=tmp_path / "kb", queue_url=queue_url)
    ingestor = Ingestor(settings, embedder=embedder)
    service = QueryService(settings, reader=reader_for(ingestor))
    files = [
        ("files", ("runbook.md", b"# Runbook\n\nRotate the TLS certificates every March.\n", "text/markdown")),
        ("files", ("broken.pdf", b"%PDF-1.4 not really", "application/pdf")),
    ]
    with TestClient(create_app(settings, service)) as client:
        queued = client.post("/v1/collections/ops/documents", files=files)
        assert queued.status_code == 202, queued.text
        jobs = {job["name"]: job for job in queued.json()["jobs"]}
        assert client.get(jobs["runbook.md"]["status_url"]).json()["status"] == "queued"
        assert JobQueue(queue_url).depth() == {"queued": 2, "processing": 0}

        # a worker in another process: same store, its own Ingestor, driven through the CLI
        monkeypatch.setenv("RAGKB_DATA_DIR", str(tmp_path / "kb"))
        monkeypatch.setenv("RAGKB_QUEUE_URL", queue_url)
        from ingest.config import get_settings

        get_settings.cache_clear()
        try:
            result = CliRunner().invoke(cli_app, ["worker", "--once"])
        finally:
            get_settings.cache_clear()
        assert result.exit_code == 0, result.output

        done = client.get(jobs["runbook.md"]["status_url"]).json()
        assert done["status"] == "done" and done["report"]["added"] == 1
        failed = client.get(jobs["broken.pdf"]["status_url"]).json()
        assert failed["status"] == "failed" and "not a readable PDF" in failed["report"]["failures"][0]["error"]
        assert JobQueue(queue_url).depth() == {"queued": 0, "processing": 0}

        answer = client.post("/v1/query", json={"question": "When are TLS certificates rotated?", "collection": "ops"})
        assert answer.json()["citations"][0]["source"] == "upload://runbook.md"
        assert client.get("/v1/jobs/0123abcd").status_code == 404


def test_a_dead_workers_job_can_be_requeued(queue_url: str) -> None:
    queue = JobQueue(queue_url)
    job_id = queue.enqueue(collection="ops", name="a.txt", source="upload://a.txt", data=b"text")
    live_id = queue.enqueue(collection="ops", name="b.txt", source="upload://b.txt", data=b"more")
    for job, beat in ((job_id, time.time() - 120), (live_id, time.time())):  # a dead worker's, a live one's
        queue.redis.lmove(queue.pending, queue.processing, "LEFT", "RIGHT")
        queue.redis.hset(queue._job(job), mapping={"status": "running", "started_at": beat, "heartbeat_at": beat})
    assert queue.depth() == {"queued": 0, "processing": 2}
    assert queue.requeue_stalled() == 1, "only the job whose worker stopped beating goes back"
    assert queue.depth() == {"queued": 1, "processing": 1}
    assert queue.status(job_id)["status"] == "queued"
    seen = []
    assert queue.work_one(lambda *job: seen.append(job) or {"failed": 0, "added": 1}) == job_id
    assert seen == [("ops", "a.txt", "upload://a.txt", b"text")]
    assert json.loads(json.dumps(queue.status(job_id)))["status"] == "done"


def test_unreachable_queue_is_a_clear_error() -> None:
    queue = JobQueue(f"redis://127.0.0.1:{free_port()}/0")
    with pytest.raises(QueueUnavailable, match="cannot enqueue"):
        queue.enqueue(collection="ops", name="a.txt", source="upload://a.txt", data=b"x")


def test_worker_without_a_queue_url_explains(cli_env: Path) -> None:
    result = CliRunner().invoke(cli_app, ["worker", "--once"])
    assert result.exit_code == 2 and "RAGKB_QUEUE_URL is not set" in result.stderr


def test_a_job_whose_worker_died_shows_as_stalled(queue_url: str) -> None:
    queue = JobQueue(queue_url)
    job_id = queue.enqueue(collection="ops", name="a.txt", source="upload://a.txt", data=b"text")
    queue.redis.lmove(queue.pending, queue.processing, "LEFT", "RIGHT")
    beat = time.time()
    queue.redis.hset(queue._job(job_id), mapping={"status": "running", "started_at": beat, "heartbeat_at": beat})
    assert queue.status(job_id)["status"] == "running"
    old = beat - 120  # the worker was killed two minutes ago: no heartbeat since
    queue.redis.hset(queue._job(job_id), "heartbeat_at", old)
    assert queue.status(job_id)["status"] == "stalled"
