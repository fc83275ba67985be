"""Task-engine benchmark: queued ingestion with 1 and 2 worker processes, redelivery after a worker's death,
and a reindex while a client queries.

    python -m eval.bench_workers [--dataset DIR] [--docs 1000] [--files-per-job 25] [--broker redis://...]

Everything is real: a `chroma run` server, the broker (Redis by default), `ragkb worker` processes. It prints
one JSON object:
- `throughput`: the same `--docs` SciFact abstracts (one .txt file each, `--files-per-job` files per job) into
  a fresh collection with 1 and then 2 worker processes: seconds from the first enqueue to the last job done,
  documents/s, chunks/s, and the 2-worker speed-up (the machine's cores bound it: `cpus` says how many);
- `redelivery`: a worker killed (SIGKILL, its whole process group) in the middle of a job; seconds from the
  kill until the job runs again on the other worker, with the heartbeat timeout used;
- `reindex`: the 1-worker collection rebuilt with `--reindex-chunk-tokens`, while a thread keeps retrieving:
  seconds, queries made and failed (must be 0), chunks before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from ingest.config import Settings
from ingest.queue import TERMINAL, JobQueue
from ingest.reindex import Reindexer, reindex_settings
from server.answering.reader import Reader

from .beir import read_corpus

DEFAULT_DATASET = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "scifact-train"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait(check: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


def _chroma(path: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    chroma = shutil.which("chroma") or str(Path(sys.executable).with_name("chroma"))
    process = subprocess.Popen(
        [chroma, "run", "--path", str(path), "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            return httpx.get(f"{url}/api/v2/heartbeat", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    _wait(up, 60, "the Chroma server")
    return process, url


class Workers:
    def __init__(self, env: dict[str, str], logs: Path) -> None:
        self.env, self.logs = env, logs
        self.processes: list[subprocess.Popen[bytes]] = []

    def start(self, count: int) -> None:
        ragkb = str(Path(sys.executable).with_name("ragkb"))
        for _ in range(count):
            log = (self.logs / f"worker-{len(self.processes)}.log").open("wb")
            self.processes.append(
                subprocess.Popen(
                    [ragkb, "worker", "--concurrency", "1"],
                    env=self.env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
        logs = [self.logs / f"worker-{n}.log" for n in range(len(self.processes))]
        _wait(lambda: all("ragkb worker ready" in p.read_text(errors="replace") for p in logs), 300, "workers")

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
        self.processes = []


def _run_jobs(queue: JobQueue, collection: str, files: list[tuple[str, str, bytes]], per_job: int) -> dict[str, Any]:
    started = time.perf_counter()
    ids = [
        queue.enqueue_bytes(collection=collection, items=files[start : start + per_job])
        for start in range(0, len(files), per_job)
    ]
    _wait(lambda: all(queue.status(i)["status"] in TERMINAL for i in ids), 3600, f"{len(ids)} jobs")
    seconds = time.perf_counter() - started
    states = [queue.status(i) for i in ids]
    chunks = sum(s["report"]["chunks_added"] for s in states if s.get("report"))
    return {
        "jobs": len(ids),
        "documents": sum(s["report"]["added"] for s in states if s.get("report")),
        "failed_jobs": sum(s["status"] != "done" for s in states),
        "seconds": round(seconds, 2),
        "documents_per_s": round(len(files) / seconds, 1),
        "chunks_per_s": round(chunks / seconds, 1),
        "workers_used": len({s.get("worker") for s in states}),
    }


def _redelivery(queue: JobQueue, files: list[tuple[str, str, bytes]]) -> dict[str, Any]:
    job = queue.enqueue_bytes(collection="bench-redelivery", items=files[:200])
    _wait(lambda: queue.status(job).get("files_done", 0) > 0, 300, "the job to be under way")
    victim = int(queue.status(job)["worker"].rsplit(":", 1)[1])
    os.killpg(os.getpgid(victim), signal.SIGKILL)
    killed = time.time()
    _wait(lambda: queue.status(job).get("attempts", 0) >= 2, 300, "the job to run again")
    again = float(queue.status(job)["started_at"])
    _wait(lambda: queue.status(job)["status"] in TERMINAL, 600, "the redelivered job")
    return {"seconds_to_running_again": round(again - killed, 2), "final_status": queue.status(job)["status"]}


def _reindex(settings: Settings, collection: str, chunk_tokens: int) -> dict[str, Any]:
    reader = Reader(settings)
    questions = ["What protects against viral infection?", "How does insulin resistance develop?",
                 "Which genes are linked to cancer risk?"]  # fmt: skip
    made, failed, stop = [0], [0], threading.Event()

    def query() -> None:
        while not stop.is_set():
            try:
                vector = reader.embedder.embed([questions[made[0] % len(questions)]])[0]
                reader.store.query(reader.collection(collection), vector, k=5, filters=None, with_text=True)
            except Exception:
                failed[0] += 1
            made[0] += 1

    client = threading.Thread(target=query)
    client.start()
    started = time.perf_counter()
    try:
        result = Reindexer(reindex_settings(settings, chunk_tokens=chunk_tokens), collection).run()
    finally:
        stop.set()
        client.join()
    return {
        "seconds": round(time.perf_counter() - started, 2),
        "chunk_tokens": chunk_tokens,
        "documents": result.documents_done,
        "chunks_before": result.chunks_before,
        "chunks_after": result.chunks_after,
        "queries": made[0],
        "query_errors": failed[0],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", type=Path, default=DEFAULT_DATASET)
    parser.add_argument("--docs", type=int, default=1000)
    parser.add_argument("--files-per-job", type=int, default=25)
    parser.add_argument("--broker", default="redis://127.0.0.1:6379/12")
    parser.add_argument("--heartbeat-timeout", type=float, default=10.0)
    parser.add_argument("--reindex-chunk-tokens", type=int, default=128)
    args = parser.parse_args()

    files = [(f"{d.doc_id}.txt", f"scifact://{d.doc_id}.txt", d.content.encode()) for d in
             read_corpus(args.dataset, limit=args.docs)]  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="ragkb-bench-workers-") as tmp:
        root = Path(tmp)
        chroma, chroma_url = _chroma(root / "chroma")
        values = {"RAGKB_DATA_DIR": str(root / "kb"), "RAGKB_CHROMA_URL": chroma_url, "RAGKB_QUEUE_URL": args.broker,
                  "RAGKB_QUEUE_HEARTBEAT_TIMEOUT": str(args.heartbeat_timeout)}  # fmt: skip
        env = {**os.environ, "HF_HUB_OFFLINE": "1", **values}
        settings = Settings(data_dir=root / "kb", chroma_url=chroma_url, queue_url=args.broker,
                            queue_heartbeat_timeout=args.heartbeat_timeout)  # fmt: skip
        queue = JobQueue(settings)
        queue.broker.flush_all()
        workers = Workers(env, root)
        report: dict[str, Any] = {"docs": len(files), "files_per_job": args.files_per_job, "cpus": os.cpu_count()}
        try:
            report["throughput"] = {}
            for count in (1, 2):
                workers.start(count)
                report["throughput"][f"{count}_worker"] = _run_jobs(queue, f"bench-{count}w", files, args.files_per_job)
                if count == 1:
                    workers.stop()
            one, two = report["throughput"]["1_worker"], report["throughput"]["2_worker"]
            report["throughput"]["speedup_2_vs_1"] = round(one["seconds"] / two["seconds"], 2)
            report["redelivery"] = {**_redelivery(queue, files), "heartbeat_timeout": args.heartbeat_timeout}
            workers.stop()
            report["reindex"] = _reindex(settings, "bench-1w", args.reindex_chunk_tokens)
        finally:
            workers.stop()
            queue.broker.flush_all()
            queue.close()
            chroma.terminate()
            chroma.wait(timeout=30)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
