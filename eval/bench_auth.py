"""What authentication adds to a `/v1/query` cache hit: p50 with keys on vs off, in the same run.

Two uvicorn servers on loopback in this process over the same store, model and answer cache: one with no
API key (open), one with a key (every request authenticated, scope and collection checked, rate-limited).
The same cached question is asked N times of each, interleaved, over keep-alive connections.

    .venv/bin/python -m eval.bench_auth [--requests 300]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from ingest.config import Settings
from ingest.pipeline import Ingestor
from server.answering.reader import Reader
from server.answering.service import QueryService
from server.http.api import create_app
from server.state import Scope


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


QUESTION = {"question": "How are API keys limited to collections?", "collection": "bench"}


def _serve(settings: Settings, reader: Reader) -> tuple[uvicorn.Server, str, Any]:
    app = create_app(settings, QueryService(settings, reader=reader))
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    return server, f"http://127.0.0.1:{port}", app


def _timed(client: httpx.Client, url: str, headers: dict[str, str]) -> float:
    started = time.perf_counter()
    response = client.post(f"{url}/v1/query", json=QUESTION, headers=headers)
    elapsed = (time.perf_counter() - started) * 1000
    if response.status_code != 200 or not response.json()["cached"]:
        raise RuntimeError(f"expected a cached 200, got {response.status_code}: {response.text[:200]}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--requests", type=int, default=300)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="ragkb-bench-auth-"))
    (root / "docs").mkdir()
    (root / "docs" / "keys.md").write_text("# Keys\n\nAn API key has a scope and may be limited to collections.\n")
    base = Settings(data_dir=root / "kb", rate_limit_burst=10_000_000, rate_limit_per_minute=10_000_000)
    ingestor = Ingestor(base, embedder=None)
    ingestor.ingest_paths([root / "docs"], collection="bench")
    reader = Reader(base, store=ingestor.store, embedder=ingestor.embedder)
    open_server, open_url, _ = _serve(base.model_copy(update={"database_url": f"sqlite:///{root}/open.db"}), reader)
    keyed_server, keyed_url, keyed_app = _serve(
        base.model_copy(update={"database_url": f"sqlite:///{root}/keyed.db"}), reader
    )
    token = keyed_app.state.components.keys.create("bench", Scope.READ, ["bench"])[1]
    auth = {"Authorization": f"Bearer {token}"}
    timings: dict[str, list[float]] = {"off": [], "on": []}
    with httpx.Client(timeout=30) as client:
        client.post(f"{open_url}/v1/query", json=QUESTION)  # fills the shared answer cache
        for _ in range(30):  # warm-up: connections, key cache, code paths
            _timed(client, open_url, {})
            _timed(client, keyed_url, auth)
        for _ in range(args.requests):
            timings["off"].append(_timed(client, open_url, {}))
            timings["on"].append(_timed(client, keyed_url, auth))
    off, on = statistics.median(timings["off"]), statistics.median(timings["on"])
    print(f"/v1/query cache hits, {args.requests} each, p50: keys off {off:.3f} ms, keys on {on:.3f} ms")
    print(f"added by authentication: {on - off:+.3f} ms (p50)")
    open_server.should_exit = keyed_server.should_exit = True


if __name__ == "__main__":
    main()
