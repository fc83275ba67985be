"""The task engine with real brokers and real `ragkb worker` processes (slow).

Redis: two workers, twenty jobs (each done once, both workers used) and a corrupt PDF (fails at once, not
retried); a worker SIGKILLed in the middle of a multi-file job (another finishes it: the same chunks as a clean
run, none twice); the Chroma server stopped for a few seconds (retried with backoff, then done).
RabbitMQ: the same engine with `amqp://` as the one setting that changes.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from ingest.config import Settings
from ingest.embedder import Embedder
from ingest.pipeline import Ingestor
from ingest.queue import NAMESPACE, TERMINAL, JobQueue

from .processes import alive, children_of
from .servers import ChromaServer

pytestmark = pytest.mark.slow

REDIS_URL = "redis://127.0.0.1:6379/13"
AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"
SENTENCES = [
    "The turbine blades are inspected every {n} hours for cracks and erosion.",
    "Hydraulic fluid in circuit {n} is replaced when its acidity rises above the limit.",
    "Technicians record torque values for panel {n} in the maintenance log.",
    "The auxiliary power unit {n} is started before the engines on cold mornings.",
]


def text_file(n: int, paragraphs: int = 1) -> bytes:
    body = "\n\n".join(" ".join(s.format(n=n * 100 + p) for s in SENTENCES) * 3 for p in range(paragraphs))
    return f"# Procedure {n}\n\n{body}\n".encode()


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


class Workers:
    """`ragkb worker` processes sharing one environment; each logs to its own file."""

    def __init__(self, env: dict[str, str], logs: Path) -> None:
        self.env, self.logs = env, logs
        self.processes: list[subprocess.Popen[bytes]] = []

    def start(self, concurrency: int = 1, shutdown_timeout: float = 5) -> subprocess.Popen[bytes]:
        ragkb = str(Path(sys.executable).with_name("ragkb"))
        log = (self.logs / f"worker-{len(self.processes)}.log").open("wb")
        process = subprocess.Popen(
            [ragkb, "worker", "--concurrency", str(concurrency), "--shutdown-timeout", str(shutdown_timeout)],
            env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        self.processes.append(process)
        return process

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)


def environment(tmp_path: Path, chroma_url: str, queue_url: str) -> tuple[Settings, dict[str, str]]:
    values = {
        "RAGKB_DATA_DIR": str(tmp_path / "kb"),
        "RAGKB_CHROMA_URL": chroma_url,
        "RAGKB_QUEUE_URL": queue_url,
        "RAGKB_QUEUE_HEARTBEAT_TIMEOUT": "3",
        "RAGKB_QUEUE_MIN_BACKOFF": "0.5",
        "RAGKB_QUEUE_MAX_BACKOFF": "2",
        "RAGKB_QUEUE_MAX_RETRIES": "20",
        "RAGKB_INGEST_FLUSH_CHUNKS": "8",
    }
    settings = Settings(**{key.removeprefix("RAGKB_").lower(): value for key, value in values.items()})
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", **values}
    return settings, env


def flush_broker(settings: Settings) -> None:
    queue = JobQueue(settings)
    queue.broker.flush_all()
    queue.close()
    if settings.queue_url and settings.queue_url.startswith("redis://"):
        db = redis.Redis.from_url(settings.queue_url)
        for key in db.scan_iter(match=NAMESPACE + ":*"):
            db.delete(key)


@pytest.fixture
def redis_setup(tmp_path: Path) -> Iterator[tuple[Settings, dict[str, str], ChromaServer, Workers]]:
    chroma = ChromaServer(tmp_path / "chroma")
    chroma_url = chroma.__enter__()
    settings, env = environment(tmp_path, chroma_url, REDIS_URL)
    flush_broker(settings)
    workers = Workers(env, tmp_path)
    try:
        yield settings, env, chroma, workers
    finally:
        workers.stop()
        chroma.stop()
        flush_broker(settings)


def states(queue: JobQueue, ids: list[str]) -> list[dict[str, Any]]:
    return [queue.status(job_id) for job_id in ids]


def test_workers_share_jobs_survive_sigkill_and_store_outages(
    redis_setup: tuple[Settings, dict[str, str], ChromaServer, Workers], embedder: Embedder, shared_pdfs: Path
) -> None:
    settings, _env, chroma, workers = redis_setup
    first, second = workers.start(), workers.start()
    queue = JobQueue(settings)

    # two workers, twenty jobs and a corrupt PDF
    ids = [queue.enqueue_bytes(collection="fleet", items=[(f"p{n}.md", f"upload://p{n}.md", text_file(n))])
           for n in range(20)]  # fmt: skip
    broken = shared_pdfs / "docling" / "multi_page.pdf"
    corrupt = queue.enqueue_bytes(
        collection="fleet", items=[("broken.pdf", "upload://broken.pdf", broken.read_bytes()[:3000])]
    )
    wait_until(lambda: all(s["status"] in TERMINAL for s in states(queue, [*ids, corrupt])), 180, "twenty jobs")
    done = states(queue, ids)
    assert [s["status"] for s in done] == ["done"] * 20 and {s["attempts"] for s in done} == {1}
    assert sum(s["report"]["added"] for s in done) == 20, "every job done once"
    assert len({s["worker"] for s in done}) == 2, "both workers were used"
    failed = queue.status(corrupt)
    assert failed["status"] == "failed" and failed["attempts"] == 1 and "broken.pdf" in failed["error"]

    # SIGKILL whichever worker runs a multi-file job in the middle of it: the other one finishes it
    items = [(f"m{n}.md", f"upload://m{n}.md", text_file(1000 + n)) for n in range(12)]
    job = queue.enqueue_bytes(collection="killed", items=items)
    wait_until(lambda: queue.status(job).get("files_done", 0) > 0, 60, "the job to be under way")
    victim_pid = int(queue.status(job)["worker"].rsplit(":", 1)[1])
    os.killpg(os.getpgid(victim_pid), signal.SIGKILL)  # the whole `ragkb worker`, as if its machine died
    killed_at = time.time()
    assert queue.status(job)["files_done"] < len(items), "killed in the middle"
    wait_until(lambda: queue.status(job)["status"] in TERMINAL, 120, "the redelivered job")
    finished = queue.status(job)
    assert finished["status"] == "done" and finished["attempts"] == 2
    assert finished["started_at"] - killed_at < settings.queue_heartbeat_timeout + 5, "redelivered in bounded time"
    clean = Ingestor(settings, embedder=embedder)
    assert clean.ingest_items(items, collection="clean").added == len(items)
    killed_ids = {c.chunk_id for page in clean.store.iter_chunks(clean.open_collection("killed")) for c in page}
    clean_ids = {c.chunk_id for page in clean.store.iter_chunks(clean.open_collection("clean")) for c in page}
    assert killed_ids == clean_ids and clean.store.count(clean.open_collection("killed")) == len(clean_ids)

    # the vector store is down for a few seconds: retried with backoff, then done
    chroma.stop()
    outage = queue.enqueue_bytes(collection="fleet", items=[("late.md", "upload://late.md", text_file(77))])
    wait_until(lambda: queue.status(outage)["status"] == "retrying", 60, "a retry")
    assert "unreachable" in queue.status(outage)["error"]
    chroma.process = None
    chroma.__enter__()  # the same port and data
    wait_until(lambda: queue.status(outage)["status"] in TERMINAL, 60, "the retried job")
    recovered = queue.status(outage)
    assert recovered["status"] == "done" and recovered["attempts"] >= 2 and recovered["report"]["added"] == 1
    assert (first.poll(), second.poll()).count(None) == 1, "the survivor is still running"
    queue.close()


def test_a_worker_killed_alone_takes_its_processes_along_and_sigterm_still_finishes_the_job(
    redis_setup: tuple[Settings, dict[str, str], ChromaServer, Workers],
) -> None:
    """`kill -9` of the `ragkb worker` main process only (not its group): its worker processes end within a few
    seconds instead of living on with parent 1, and the job they had is redelivered and done by a new worker.
    SIGTERM, even to the whole process group, still lets the running job finish."""
    settings, _env, _chroma, workers = redis_setup
    first = workers.start(concurrency=2)
    queue = JobQueue(settings)
    items = [(f"o{n}.md", f"upload://o{n}.md", text_file(2000 + n, paragraphs=2)) for n in range(12)]
    job = queue.enqueue_bytes(collection="orphans", items=items)
    wait_until(lambda: queue.status(job).get("files_done", 0) > 0, 120, "the job to be under way")
    runner = int(queue.status(job)["worker"].rsplit(":", 1)[1])
    children = children_of(first.pid)
    assert runner in children and len(children) == 2, (runner, children)

    os.kill(first.pid, signal.SIGKILL)  # the main process alone, as `kill -9 PID` does
    first.wait(timeout=10)
    try:
        took = wait_for_processes_to_end(children, 10)
    finally:  # orphans would take the jobs of later tests
        for pid in filter(alive, children):
            os.kill(pid, signal.SIGKILL)
    assert took < 5, f"worker processes outlived their parent by {took:.1f}s"
    assert queue.status(job)["files_done"] < len(items), "killed in the middle"
    assert not any(alive(pid) for pid in children), "no orphan left to take the next jobs"

    second = workers.start(shutdown_timeout=300)
    wait_until(lambda: queue.status(job)["status"] in TERMINAL, 180, "the redelivered job")
    finished = queue.status(job)
    assert finished["status"] == "done" and finished["attempts"] == 2, finished
    assert finished["files_done"] == len(items)
    assert int(finished["worker"].rsplit(":", 1)[1]) in children_of(second.pid), "done by the new worker"

    # SIGTERM to the whole process group (systemd's default stop; each worker process gets it twice, from the
    # group and from the main process; Dramatiq alone would take the second as "drop the job"): the job finishes
    graceful = queue.enqueue_bytes(
        collection="graceful", items=[(f"g{n}.md", f"upload://g{n}.md", text_file(3000 + n, 2)) for n in range(12)]
    )
    wait_until(lambda: queue.status(graceful).get("files_done", 0) > 0, 120, "the second job to be under way")
    os.killpg(second.pid, signal.SIGTERM)
    assert second.wait(timeout=300) == 0
    ended = queue.status(graceful)
    assert ended["status"] == "done" and ended["attempts"] == 1 and ended["files_done"] == 12, ended
    queue.close()


def wait_for_processes_to_end(pids: list[int], timeout: float) -> float:
    start = time.monotonic()
    wait_until(lambda: not any(alive(pid) for pid in pids), timeout, f"processes {pids} to end")
    return time.monotonic() - start


def test_rabbitmq_is_the_same_engine_with_one_setting(tmp_path: Path, shared_pdfs: Path) -> None:
    with ChromaServer(tmp_path / "chroma") as chroma_url:
        settings, env = environment(tmp_path, chroma_url, AMQP_URL)
        flush_broker(settings)
        workers = Workers(env, tmp_path)
        workers.start()
        queue = JobQueue(settings)
        try:
            good = queue.enqueue_bytes(collection="rabbit", items=[("a.md", "upload://a.md", text_file(1))])
            bad = queue.enqueue_bytes(collection="rabbit", items=[("b.pdf", "upload://b.pdf", b"%PDF-1.7 broken")])
            wait_until(lambda: all(s["status"] in TERMINAL for s in states(queue, [good, bad])), 120, "rabbit jobs")
            assert queue.status(good)["status"] == "done" and queue.status(good)["report"]["added"] == 1
            assert queue.status(bad)["status"] == "failed" and queue.status(bad)["attempts"] == 1
        finally:
            workers.stop()
            queue.close()
            flush_broker(settings)
