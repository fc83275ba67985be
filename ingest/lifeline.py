"""A worker process dies with the `ragkb worker` that started it.

`ragkb worker` is Dramatiq's main process plus one worker process per `--concurrency`.
Killed with SIGKILL, the main process cannot pass anything on, and its worker
processes would live on with parent 1, taking jobs with whatever settings they
started with. So each worker process, as it boots:

- asks the kernel for SIGKILL when its parent dies (`prctl(PR_SET_PDEATHSIG)`, Linux),
- and watches `os.getppid()` on a thread as well (other systems, and the moment
  between its start and the `prctl` call), killing itself the same way when the
  parent is gone.

Dying by SIGKILL is what a worker whose machine fails does, and the queue is built
for it: the job's message was never acknowledged, so the broker hands it to another
worker (Redis: once the dead one has been silent for RAGKB_QUEUE_HEARTBEAT_TIMEOUT;
RabbitMQ: when its connection drops), and running a job again is harmless
(docs/ingestion.md). SIGTERM is unaffected: the main process passes it on and waits
for its workers, which finish their running job first (`coalesce_repeated_sigterm`
keeps a group-wide SIGTERM, which reaches each worker process twice, from dropping it).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import logging
import os
import signal
import sys
import threading
import time
from types import FrameType

PARENT_ENV = "RAGKB_WORKER_PARENT_PID"  # set by `ragkb worker` to its own pid before it starts the workers
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>

log = logging.getLogger("ragkb.worker")


def set_parent_death_signal(signum: int = signal.SIGKILL) -> bool:
    """Have the kernel send `signum` to this process when its parent dies; False where that is not possible."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        return int(libc.prctl(PR_SET_PDEATHSIG, signum, 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


def expected_parent() -> int:
    """The parent this process must outlive no longer than: the pid `ragkb worker` recorded, else the current one."""
    recorded = os.environ.get(PARENT_ENV, "")
    return int(recorded) if recorded.isdigit() else os.getppid()


def _orphaned(parent: int) -> None:
    with contextlib.suppress(OSError, ValueError):  # stderr may be a closed pipe by now
        print(f"ragkb worker process {os.getpid()}: its parent {parent} is gone; stopping", file=sys.__stderr__)
    os.kill(os.getpid(), signal.SIGKILL)


def _watch(parent: int, every: float) -> None:
    while True:
        if os.getppid() != parent:
            _orphaned(parent)
        threading.Event().wait(every)


def coalesce_repeated_sigterm(window: float = 2.0) -> None:
    """Dramatiq's worker process takes a second SIGTERM as "stop now, drop the running job". A stop signalled to
    the whole process group (`kill -TERM -PGID`, systemd's default KillMode=control-group) delivers two at once:
    one from the group, one passed on by the main process. Within `window` seconds of the first, a repeat is
    that same stop and is ignored; a deliberate second SIGTERM later still stops at once."""
    original = signal.getsignal(signal.SIGTERM)
    if not callable(original):
        return
    first: float | None = None

    def handler(signum: int, frame: FrameType | None) -> None:
        nonlocal first
        now = time.monotonic()
        if first is not None and now - first < window:
            return
        first = first if first is not None else now
        original(signum, frame)

    signal.signal(signal.SIGTERM, handler)


def die_with_parent(parent: int | None = None, *, poll_seconds: float = 1.0) -> threading.Thread:
    """Called once in each worker process at boot; returns the watcher thread (a daemon)."""
    parent = expected_parent() if parent is None else parent
    if not set_parent_death_signal():
        log.info("no parent-death signal on this system; watching the parent every %.1fs instead", poll_seconds)
    if os.getppid() != parent:  # it died before the signal was asked for
        _orphaned(parent)
    watcher = threading.Thread(target=_watch, args=(parent, poll_seconds), name="ragkb-lifeline", daemon=True)
    watcher.start()
    return watcher
