"""`ragkb serve --workers 2` as a real command against a Chroma server: both worker processes answer, and
/metrics adds them up."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from ingest.config import Settings
from ingest.embedder import Embedder
from ingest.pipeline import Ingestor

from .servers import ChromaServer, free_port, wait_for

QUERIES = 24
QUERY_COUNT = r'ragkb_http_request_seconds_count\{method="POST",route="/v1/query",status="200"\} (\S+)'


@pytest.mark.slow
def test_metrics_of_two_workers_are_summed(tmp_path: Path, embedder: Embedder) -> None:
    with ChromaServer(tmp_path / "chroma") as chroma_url:
        _two_workers(tmp_path, embedder, chroma_url)


def _two_workers(tmp_path: Path, embedder: Embedder, chroma_url: str) -> None:
    data_dir = tmp_path / "kb"
    (tmp_path / "ops.md").write_text("# Ops\n\nThe nightly backup copies the data directory to the archive.\n")
    settings = Settings(data_dir=data_dir, chroma_url=chroma_url)
    Ingestor(settings, embedder=embedder).ingest_paths([tmp_path / "ops.md"], collection="ops")
    metrics_dir = tmp_path / "prometheus"
    metrics_dir.mkdir()
    port = free_port()
    env = {
        **os.environ,
        "RAGKB_DATA_DIR": str(data_dir),
        "RAGKB_CHROMA_URL": chroma_url,
        "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
    }
    ragkb = str(Path(sys.executable).with_name("ragkb"))
    server = subprocess.Popen(
        [ragkb, "serve", "--port", str(port), "--workers", "2"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    served: re.Match[str] | None = None
    try:
        wait_for(f"{base}/readyz", server, timeout=120)
        with httpx.Client(base_url=base, timeout=60) as client:
            for i in range(QUERIES):  # new connections spread over both workers
                body = {"question": f"Where does the backup go? ({i})", "collection": "ops"}
                assert client.post("/v1/query", json=body, headers={"connection": "close"}).status_code == 200
            # a request's latency is recorded just after its reply is sent: give the last one a moment
            deadline = time.monotonic() + 10
            while True:
                text = client.get("/metrics").text
                served = re.search(QUERY_COUNT, text)
                if (served and float(served.group(1)) >= QUERIES) or time.monotonic() > deadline:
                    break
                time.sleep(0.1)
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert served is not None and float(served.group(1)) == QUERIES, "every worker's requests are counted"
    pids = {m.group(1) for m in re.finditer(r"_(\d+)\.db$", "\n".join(p.name for p in metrics_dir.iterdir()), re.M)}
    assert len(pids) >= 2, "both worker processes wrote their samples"
