"""Looking at real processes from tests (Linux /proc): children of a pid, whether a pid still runs, `ragkb`
commands started with an environment of their own."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path


def ragkb_command() -> str:
    return str(Path(sys.executable).with_name("ragkb"))


def clean_env(**values: str) -> dict[str, str]:
    """This process's environment without any RAGKB_* setting, plus `values` (offline, one thread)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("RAGKB_")}
    return {**base, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", **values}


def _stat(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()  # after "pid (comm) ": state, ppid, ...


def alive(pid: int) -> bool:
    """Running (a zombie waiting for its reaper counts as gone: it runs nothing and holds no lock)."""
    fields = _stat(pid)
    return fields is not None and fields[0] not in ("Z", "X")


def children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat(int(entry.name))
            if fields is not None and int(fields[1]) == pid and fields[0] not in ("Z", "X"):
                found.append(int(entry.name))
    return found


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> float:
    """Seconds it took; AssertionError past `timeout`."""
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)
    return time.monotonic() - start


def run_ragkb(args: list[str], env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([ragkb_command(), *args], env=env, capture_output=True, text=True, timeout=timeout)
