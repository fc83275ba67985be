"""One rate limit shared by two real `ragkb serve` processes through Redis: the burst spent across both
servers, then a 429 with Retry-After from either, then allowed again once the bucket has refilled."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from .servers import free_port, wait_for

REDIS_URL = "redis://127.0.0.1:6379/14"
BURST, PER_MINUTE = 4, 30  # one token every 2 s


@pytest.fixture
def shared_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAGKB_")}
    env.update(
        HF_HUB_OFFLINE="1",
        RAGKB_DATABASE_URL=f"sqlite:///{tmp_path / 'state.sqlite3'}",  # one state database for both servers
        RAGKB_RATE_LIMIT_URL=REDIS_URL,
        RAGKB_RATE_LIMIT_BURST=str(BURST),
        RAGKB_RATE_LIMIT_PER_MINUTE=str(PER_MINUTE),
        RAGKB_DATA_DIR=str(tmp_path / "cli"),
    )
    return env


def _ragkb() -> str:
    return str(Path(sys.executable).with_name("ragkb"))


@pytest.fixture
def two_servers(shared_env: dict[str, str], tmp_path: Path) -> Iterator[list[str]]:
    """Each server has its own embedded store (one writer per data dir) and the same state DB and Redis."""
    processes: list[subprocess.Popen[bytes]] = []
    urls = []
    try:
        for n in (1, 2):
            port = free_port()
            env = {**shared_env, "RAGKB_DATA_DIR": str(tmp_path / f"server{n}")}
            processes.append(
                subprocess.Popen(
                    [_ragkb(), "serve", "--host", "127.0.0.1", "--port", str(port)],
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
            urls.append(f"http://127.0.0.1:{port}")
        for url, process in zip(urls, processes, strict=True):
            wait_for(f"{url}/readyz", process, timeout=120)
        yield urls
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()


@pytest.mark.slow
def test_two_servers_share_one_bucket_per_key(shared_env: dict[str, str], two_servers: list[str]) -> None:
    name = f"rl-{uuid.uuid4().hex[:8]}"  # a fresh bucket in the shared Redis
    made = subprocess.run(
        [_ragkb(), "keys", "create", "--name", name, "--scope", "read", "--all", "--json"],
        env=shared_env,
        capture_output=True,
        check=True,
    )
    headers = {"Authorization": f"Bearer {json.loads(made.stdout)['token']}"}
    first, second = two_servers
    deadline = time.monotonic() + 10  # the servers see the new key within the key cache's 5 s
    while httpx.get(f"{first}/v1/collections", headers=headers).status_code == 401:
        assert time.monotonic() < deadline, "the key made by the CLI never reached the server"
        time.sleep(0.5)
    # that call spent one token; spend the rest of the burst alternating between the servers
    spent = [httpx.get(f"{url}/v1/collections", headers=headers).status_code for url in [second, first, second]]
    assert spent == [200, 200, 200]
    for url in (first, second):
        refused = httpx.get(f"{url}/v1/collections", headers=headers)
        assert refused.status_code == 429 and refused.json()["code"] == "rate_limited"
        assert 1 <= int(refused.headers["retry-after"]) <= 60 / PER_MINUTE
    time.sleep(60 / PER_MINUTE + 0.2)  # one token back
    assert httpx.get(f"{second}/v1/collections", headers=headers).status_code == 200
    assert httpx.get(f"{first}/v1/collections", headers=headers).status_code == 429
    assert httpx.get(f"{first}/healthz").status_code == 200  # never limited
