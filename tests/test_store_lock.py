"""One embedded store: a server, or workers, never both (ingest/datadir.py), whichever starts first.

Real `ragkb serve` and `ragkb worker` processes in both orders of start; the two sides started at the same
instant many times (exactly one wins each time); `serve` with a queue on an embedded store refused, naming the
two fixes. Queueing while a server holds the store: tests/test_queue.py.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import subprocess
from collections.abc import Iterator
from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import Any

import pytest
import redis
import uvicorn
from typer.testing import CliRunner

from ingest.config import Settings, get_settings
from ingest.datadir import DataDirBusy, hold_for_server, hold_for_worker, served
from ingest.queue import NAMESPACE
from ragkb.cli import app as cli_app

from .processes import alive, children_of, clean_env, ragkb_command, run_ragkb, wait_until
from .servers import emptied_queue, free_port

QUEUE_URL = "redis://127.0.0.1:6379/11"  # the reliability helper's spare database: the workers here poll it empty


@pytest.fixture
def queue_url() -> Iterator[str]:
    with emptied_queue(QUEUE_URL) as url:
        yield url


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=30)


def test_serve_with_a_queue_on_an_embedded_store_refuses_naming_both_fixes(
    cli_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[Any] = []
    monkeypatch.setattr(uvicorn, "run", lambda *args, **kwargs: calls.append(kwargs))
    root = logging.getLogger()  # `serve` configures logging: undone afterwards
    monkeypatch.setattr(root, "handlers", root.handlers[:])
    monkeypatch.setattr(root, "level", root.level)
    monkeypatch.setenv("RAGKB_QUEUE_URL", QUEUE_URL)
    get_settings.cache_clear()
    refused = CliRunner().invoke(cli_app, ["serve", "--port", str(free_port())])
    assert refused.exit_code == 2, refused.output
    message = " ".join(refused.stderr.split())
    assert "queued uploads would never run" in message
    assert "set RAGKB_CHROMA_URL to a Chroma server" in message and "unset RAGKB_QUEUE_URL" in message
    assert calls == [] and not served(Settings(data_dir=cli_env)), "refused before serving or locking anything"

    monkeypatch.setenv("RAGKB_CHROMA_URL", "http://127.0.0.1:1")  # a shared Chroma server: workers may run
    get_settings.cache_clear()
    assert CliRunner().invoke(cli_app, ["serve", "--port", str(free_port())]).exit_code == 0
    assert len(calls) == 1


@pytest.mark.slow
def test_serve_first_then_a_worker_is_refused(tmp_path: Path, queue_url: str) -> None:
    data_dir = tmp_path / "kb"
    settings = Settings(data_dir=data_dir)
    server = subprocess.Popen(
        [ragkb_command(), "serve", "--port", str(free_port())], env=clean_env(RAGKB_DATA_DIR=str(data_dir)),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        wait_until(lambda: served(settings), 60, "the server to hold the store")
        worker = run_ragkb(["worker"], clean_env(RAGKB_DATA_DIR=str(data_dir), RAGKB_QUEUE_URL=queue_url))
        message = " ".join(worker.stderr.split())
        assert worker.returncode == 2, worker.stderr
        assert f"a ragkb server (pid {server.pid}) is serving the embedded store" in message
        assert "RAGKB_CHROMA_URL" in message and "unset RAGKB_QUEUE_URL" in message
        assert redis.Redis.from_url(queue_url).zcard(f"{NAMESPACE}:__heartbeats__") == 0, "no worker ever polled"
    finally:
        _stop(server)
    assert not served(settings), "the kernel dropped the lock with the server"


@pytest.mark.slow
def test_a_worker_first_then_serve_is_refused_until_every_worker_process_is_gone(
    tmp_path: Path, queue_url: str
) -> None:
    data_dir = tmp_path / "kb"
    settings = Settings(data_dir=data_dir)
    log = tmp_path / "worker.log"
    with log.open("wb") as out:
        worker = subprocess.Popen(
            [ragkb_command(), "worker", "--concurrency", "2"],
            env=clean_env(RAGKB_DATA_DIR=str(data_dir), RAGKB_QUEUE_URL=queue_url),
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        wait_until(lambda: log.read_text().count("Worker process is ready") == 2, 120, "two worker processes")
        children = children_of(worker.pid)
        assert len(children) == 2
        refused = run_ragkb(["serve", "--port", str(free_port())], clean_env(RAGKB_DATA_DIR=str(data_dir)))
        assert refused.returncode == 2, refused.stderr
        assert "`ragkb worker` processes are writing the embedded store" in " ".join(refused.stderr.split())

        # the main process dies without a word: its worker processes follow it, and only then may a server start
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait(timeout=10)
        took = wait_until(lambda: not any(alive(pid) for pid in children), 10, "the orphaned worker processes to end")
        assert took < 5, f"worker processes outlived their parent by {took:.1f}s"
        lock = hold_for_server(settings)
        assert lock is not None
        lock.release()
    finally:
        _stop(worker)
        for pid in children_of(worker.pid):
            os.kill(pid, signal.SIGKILL)


def _contender(data_dir: Path, role: str, start: Barrier, results: Any) -> None:
    settings = Settings(data_dir=data_dir)
    start.wait()
    try:
        lock = hold_for_server(settings) if role == "server" else hold_for_worker(settings)
    except DataDirBusy as exc:
        results.put((role, False, str(exc)))
        return
    results.put((role, True, ""))
    start.wait()  # hold it until the other side has tried
    assert lock is not None
    lock.release()


@pytest.mark.slow
def test_a_server_and_a_worker_started_at_the_same_instant_never_both_hold_the_store(tmp_path: Path) -> None:
    context = multiprocessing.get_context("fork")
    for round_ in range(25):
        data_dir = tmp_path / f"kb{round_}"
        start, results = context.Barrier(2, timeout=30), context.Queue()
        sides = [
            context.Process(target=_contender, args=(data_dir, role, start, results)) for role in ("server", "worker")
        ]
        for side in sides:
            side.start()
        outcomes = [results.get(timeout=30) for _ in sides]
        if any(won for _, won, _ in outcomes):
            start.wait()  # let the winner release
        for side in sides:
            side.join(timeout=30)
        winners = [role for role, won, _ in outcomes if won]
        assert len(winners) == 1, f"round {round_}: {outcomes}"
        [(loser, _, message)] = [o for o in outcomes if not o[1]]
        expected = "ragkb worker` processes are writing" if loser == "server" else "is serving the embedded store"
        assert expected in message, message


def test_workers_share_the_store_and_cli_writers_go_on_beside_them(cli_env: Path, tmp_path: Path) -> None:
    settings = Settings(data_dir=cli_env)
    first, second = hold_for_worker(settings), hold_for_worker(settings)
    assert first is not None and second is not None, "any number of workers"
    try:
        note = tmp_path / "n.txt"
        note.write_text("A note about the rota.\n")
        assert CliRunner().invoke(cli_app, ["ingest", str(note)]).exit_code == 0
        with pytest.raises(DataDirBusy, match="`ragkb worker` processes are writing"):
            hold_for_server(settings)
    finally:
        first.release()
        second.release()
    lock = hold_for_server(settings)
    assert lock is not None
    with pytest.raises(DataDirBusy, match=r"a ragkb server \(pid \d+\) is serving"):
        hold_for_worker(settings)
    lock.release()
    assert hold_for_worker(Settings(data_dir=cli_env, chroma_url="http://127.0.0.1:1")) is None, "nothing to guard"
