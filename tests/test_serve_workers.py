"""`ragkb serve --workers 2` as a real command: both worker processes answer, and /metrics adds them up."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from ingest.config import Settings
from ingest.embedder import Embedder
from ingest.pipeline import Ingestor

from .servers import free_port, wait_for

QUERIES = 24


@pytest.mark.slow
def test_metrics_of_two_workers_are_summed(tmp_path: Path, embedder: Embedder) -> None:
    data_dir = tmp_path / "kb"
    (tmp_path / "ops.md").write_text("# Ops\n\nThe nightly backup copies the data directory to the archive.\n")
    Ingestor(Settings(data_dir=data_dir), embedder=embedder).ingest_paths([tmp_path / "ops.md"], collection="ops")
    metrics_dir = tmp_path / "prometheus"
    metrics_dir.mkdir()
    port = free_port()
    env = {**os.environ, "RAGKB_DATA_DIR": str(data_dir), "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}
    ragkb = str(Path(sys.executable).with_name("ragkb"))
    server = subprocess.Popen(
        [ragkb, "serve", "--port", str(port), "--workers", "2"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(f"{base}/readyz", server, timeout=120)
        with httpx.Client(base_url=base, timeout=60) as client:
            for i in range(QUERIES):  # new connections spread over both workers
                body = {"question": f"Where does the backup go? ({i})", "collection": "ops"}
                assert client.post("/v1/query", json=body, headers={"connection": "close"}).status_code == 200
            text = client.get("/metrics").text
    finally:
        server.terminate()
        server.wait(timeout=30)
    served = re.search(r'ragkb_http_request_seconds_count\{method="POST",route="/v1/query",status="200"\} (\S+)', text)
    assert served is not None and float(served.group(1)) == QUERIES, "every worker's requests are counted"
    pids = {m.group(1) for m in re.finditer(r"_(\d+)\.db$", "\n".join(p.name for p in metrics_dir.iterdir()), re.M)}
    assert len(pids) >= 2, "both worker processes wrote their samples"
