"""Worker processes die with their parent (ingest/lifeline.py), each way on its own: the kernel's parent-death
signal without the watcher, the watcher without the signal, and a doubled SIGTERM taken as one. The whole
`ragkb worker` killed with SIGKILL: tests/test_tasks_workers.py and tests/test_store_lock.py."""

from __future__ import annotations

import os
import signal
import sys
import time
from types import FrameType

import pytest

from ingest.lifeline import _watch, coalesce_repeated_sigterm, set_parent_death_signal

from .processes import alive, wait_until


def _read_pid(fd: int) -> int:
    with os.fdopen(fd) as pipe:
        return int(pipe.readline())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_the_kernel_kills_a_process_whose_parent_died() -> None:
    read, write = os.pipe()
    middle = os.fork()
    if middle == 0:  # the parent-to-be: starts a child that asks for the signal, then waits to be killed
        os.close(read)
        child = os.fork()
        if child == 0:
            ok = set_parent_death_signal()
            os.write(write, f"{os.getpid() if ok else -1}\n".encode())
            time.sleep(60)
            os._exit(0)
        time.sleep(60)
        os._exit(0)
    os.close(write)
    child = _read_pid(read)
    assert child > 0, "prctl(PR_SET_PDEATHSIG) failed"
    assert alive(child)
    os.kill(middle, signal.SIGKILL)
    os.waitpid(middle, 0)
    took = wait_until(lambda: not alive(child), 5, "the child of a dead parent to end")
    assert took < 1


def test_the_watcher_ends_a_process_whose_parent_is_gone() -> None:
    child = os.fork()
    if child == 0:  # no parent-death signal here: only the watcher, told the parent was someone else
        _watch(parent=os.getppid() + 1_000_000, every=0.2)
        os._exit(0)  # not reached: the watcher kills this process
    _, status = os.waitpid(child, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL


def test_a_sigterm_repeated_at_once_is_the_same_stop_and_a_later_one_is_not(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[int] = []

    def dramatiq_like(signum: int, frame: FrameType | None) -> None:
        seen.append(signum)

    monkeypatch.setattr(signal, "signal", _recording_signal(monkeypatch))
    signal.signal(signal.SIGTERM, dramatiq_like)
    coalesce_repeated_sigterm(window=0.5)
    handler = signal.getsignal(signal.SIGTERM)
    assert callable(handler) and handler is not dramatiq_like
    handler(signal.SIGTERM, None)
    handler(signal.SIGTERM, None)  # the group's copy and the main process's, together
    assert seen == [signal.SIGTERM]
    time.sleep(0.6)
    handler(signal.SIGTERM, None)  # a deliberate second stop
    assert seen == [signal.SIGTERM, signal.SIGTERM]


def _recording_signal(monkeypatch: pytest.MonkeyPatch) -> object:
    """signal.signal/getsignal on a table of our own, so the test process's real SIGTERM handler is untouched."""
    table: dict[int, object] = {}

    def fake_signal(signum: int, handler: object) -> object:
        previous = table.get(signum, signal.SIG_DFL)
        table[signum] = handler
        return previous

    monkeypatch.setattr(signal, "getsignal", lambda signum: table.get(signum, signal.SIG_DFL))
    return fake_signal
