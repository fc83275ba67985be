"""Queued ingestion (in-process parts): uploads become jobs with blob references, job state and progress,
the worker's job runner, clear errors. Real worker processes on real brokers: tests/test_tasks_workers.py."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from ingest.config import Settings
from ingest.datadir import hold_for_server
from ingest.embedder import Embedder
from ingest.errors import RagkbError
from ingest.pipeline import Ingestor
from ingest.queue import NAMESPACE, JobQueue, NoWorkerCanRun, QueueUnavailable
from ingest.tasks import Runtime
from ragkb.cli import app as cli_app
from server.answering.service import QueryService
from server.http.api import create_app

from .helpers import reader_for
from .servers import emptied_queue, free_port

QUEUE_URL = "redis://127.0.0.1:6379/12"  # a database of its own (the worker tests use 13), emptied around each test
NOTE = b"# Runbook\n\nRotate the TLS certificates every March.\n"


@pytest.fixture
def queue_url() -> Iterator[str]:
    with emptied_queue(QUEUE_URL) as url:
        yield url


@pytest.mark.slow
def test_uploads_become_jobs_carrying_blob_references(queue_url: str, tmp_path: Path, embedder: Embedder) -> None:
    settings = Settings(data_dir=tmp_path / "kb", queue_url=queue_url)
    ingestor = Ingestor(settings, embedder=embedder)
    service = QueryService(settings, reader=reader_for(ingestor))
    files = [
        ("files", ("runbook.md", NOTE, "text/markdown")),
        ("files", ("broken.pdf", b"%PDF-1.4 not really", "application/pdf")),
    ]
    with TestClient(create_app(settings, service)) as client:
        queued = client.post("/v1/collections/ops/documents", files=files)
        assert queued.status_code == 202, queued.text
        jobs = {job["name"]: job for job in queued.json()["jobs"]}
        state = client.get(jobs["runbook.md"]["status_url"]).json()
        assert state["status"] == "queued" and state["files_total"] == 1 and state["attempts"] == 0
        assert "files" not in state, "blob references stay internal"
        assert redis.Redis.from_url(queue_url).llen(f"{NAMESPACE}:ragkb-ingest") == 2
        record = client.app.state.components.queue.records.read(jobs["runbook.md"]["id"])  # type: ignore[attr-defined]
        [ref] = record["files"]
        assert ingestor.blobs.get(ref["blob"]) == NOTE and ingestor.blobs.pinned(ref["blob"])

        # the worker's job runner, in this process (real worker processes: tests/test_tasks_workers.py)
        runtime = Runtime(settings)
        runtime._ingestor = ingestor
        runtime.run(jobs["runbook.md"]["id"], retries=0)
        runtime.run(jobs["broken.pdf"]["id"], retries=0)
        done = client.get(jobs["runbook.md"]["status_url"]).json()
        assert done["status"] == "done" and done["report"]["added"] == 1 and done["files_done"] == 1
        assert done["chunks_embedded"] == 1 and done["attempts"] == 1 and done["stage"] == "finished"
        assert not ingestor.blobs.pinned(ref["blob"]) and ingestor.blobs.exists(ref["blob"]), "kept: a document uses it"
        failed = client.get(jobs["broken.pdf"]["status_url"]).json()
        assert failed["status"] == "failed" and failed["attempts"] == 1 and "not a readable PDF" in failed["error"]
        failed_blob = client.app.state.components.queue.records.read(jobs["broken.pdf"]["id"])["files"][0]["blob"]  # type: ignore[attr-defined]
        assert not ingestor.blobs.exists(failed_blob), "an original no document uses is released with its job"

        runtime.run(jobs["runbook.md"]["id"], retries=0)  # redelivered after it ended: nothing happens
        assert client.get(jobs["runbook.md"]["status_url"]).json()["attempts"] == 1
        answer = client.post("/v1/query", json={"question": "When are TLS certificates rotated?", "collection": "ops"})
        assert answer.json()["citations"][0]["source"] == "upload://runbook.md"
        missing = client.get("/v1/jobs/0123abcd")
        assert missing.status_code == 404 and missing.json()["code"] == "job_not_found"


def test_a_job_whose_worker_died_shows_as_stalled(queue_url: str, tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "kb", queue_url=queue_url, queue_heartbeat_timeout=10)
    queue = JobQueue(settings)
    job_id = queue.enqueue_bytes(collection="ops", items=[("a.txt", "upload://a.txt", b"text")])
    state = queue.records.read(job_id)
    queue.records.write({**state, "status": "running", "worker": "host:123", "updated_at": time.time()})
    assert queue.status(job_id)["status"] == "running"
    queue.records.write({**state, "status": "running", "worker": "host:123", "updated_at": time.time() - 120})
    stalled = queue.status(job_id)
    assert stalled["status"] == "stalled" and "host:123" in stalled["note"] and "redelivered" in stalled["note"]
    queue.close()


def test_unreachable_broker_is_a_clear_error(tmp_path: Path, embedder: Embedder) -> None:
    settings = Settings(data_dir=tmp_path / "kb", queue_url=f"redis://127.0.0.1:{free_port()}/0")
    queue = JobQueue(settings.model_copy(update={"data_dir": tmp_path / "direct"}))
    with pytest.raises(QueueUnavailable, match="cannot enqueue"):
        queue.enqueue_bytes(collection="ops", items=[("a.txt", "upload://a.txt", b"x")])
    ingestor = Ingestor(settings, embedder=embedder)
    service = QueryService(settings, reader=reader_for(ingestor))
    with TestClient(create_app(settings, service)) as client:
        reply = client.post("/v1/collections/ops/documents", files=[("files", ("a.md", NOTE, "text/markdown"))])
        assert reply.status_code == 503 and reply.json()["code"] == "queue_unavailable"
        assert list(ingestor.blobs.digests()) == [], "an upload that was not queued keeps no original"
    with pytest.raises(Exception, match="must be a redis://"):
        JobQueue(Settings(data_dir=tmp_path / "kb", queue_url="kafka://x"))


def test_worker_without_a_queue_url_explains(cli_env: Path) -> None:
    result = CliRunner().invoke(cli_app, ["worker"])
    assert result.exit_code == 2 and "RAGKB_QUEUE_URL is not set" in result.stderr
    listing = CliRunner().invoke(cli_app, ["jobs", "--json"])
    assert listing.exit_code == 0 and listing.stdout.strip() == "[]"


def test_no_job_is_queued_that_no_worker_may_run(queue_url: str, tmp_path: Path, embedder: Embedder) -> None:
    """A server holds the embedded store (so every `ragkb worker` is refused): queueing is refused too, with the
    fixes, and keeps nothing; the upload route answers 503, never 202 for a job that would wait forever."""
    settings = Settings(data_dir=tmp_path / "kb", queue_url=queue_url)
    lock = hold_for_server(settings)
    assert lock is not None
    try:
        queue = JobQueue(settings)
        with pytest.raises(NoWorkerCanRun, match="no `ragkb worker` may run it") as refused:
            queue.enqueue_bytes(collection="ops", items=[("a.txt", "upload://a.txt", b"text")])
        assert "RAGKB_CHROMA_URL" in str(refused.value) and "unset RAGKB_QUEUE_URL" in str(refused.value)
        assert queue.records.recent() == [] and redis.Redis.from_url(queue_url).llen(f"{NAMESPACE}:ragkb-ingest") == 0
        queue.close()
        ingestor = Ingestor(settings, embedder=embedder)
        service = QueryService(settings, reader=reader_for(ingestor))
        with TestClient(create_app(settings, service)) as client:
            reply = client.post("/v1/collections/ops/documents", files=[("files", ("a.md", NOTE, "text/markdown"))])
            assert reply.status_code == 503 and reply.json()["code"] == "queue_unavailable", reply.text
            assert "no `ragkb worker` may run it" in reply.json()["error"] and reply.json()["request_id"]
            assert list(ingestor.blobs.digests()) == [], "a refused upload keeps no original"
    finally:
        lock.release()
    queue = JobQueue(settings)  # the server is gone: workers may start, so jobs are accepted again
    assert queue.status(queue.enqueue_bytes(collection="ops", items=[("a.txt", "upload://a.txt", b"x")]))["status"] == (
        "queued"
    )
    queue.close()


def test_a_heartbeat_timeout_that_would_take_live_workers_for_dead_is_refused(tmp_path: Path) -> None:
    with pytest.raises(RagkbError, match="RAGKB_QUEUE_HEARTBEAT_TIMEOUT must be at least 3s"):
        JobQueue(Settings(data_dir=tmp_path / "kb", queue_url=QUEUE_URL, queue_heartbeat_timeout=1))
