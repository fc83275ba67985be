"""Who may write an embedded store: one lock on the data dir that servers and workers both take.

Embedded Chroma keeps its index in the memory of the process that opened it, so a
write made by another process (a CLI `ragkb ingest` or a `ragkb worker` beside a
running server) is not seen by the server until it restarts. The data dir's
`serve.lock` settles it with one kernel lock (`flock`), so nothing depends on the
order in which processes start or on a pid file being current:

- `ragkb serve` takes it **exclusively** for its lifetime;
- `ragkb worker` (the main process and every Dramatiq worker process it starts)
  takes it **shared**: any number of workers, no server;
- CLI writers (`ragkb ingest`, `delete`, `reindex`) check it shared and refuse
  while a server holds it.

Whoever comes second is refused with what to do instead. The kernel drops a lock
when its process dies (SIGKILL included), so a crash never leaves the store locked.
A server on an embedded store with a queue (`RAGKB_QUEUE_URL`) is refused before
any of this: no worker could ever take the lock beside it, so its queued uploads
would never run. With a Chroma server (`RAGKB_CHROMA_URL`) every process sees
every write, and none of this applies.
"""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path
from typing import IO

from .config import Settings
from .errors import RagkbError


class DataDirBusy(RagkbError):
    """Another process holds this embedded data dir in a way that excludes what was asked."""


class StoreLock:
    """A held `flock` on `<data_dir>/serve.lock` (exclusive for a server, shared for workers).
    The file is never deleted: a new file at the same path would be a second, unrelated lock."""

    def __init__(self, handle: IO[bytes], exclusive: bool) -> None:
        self._handle: IO[bytes] | None = handle
        self.exclusive = exclusive

    @property
    def held(self) -> bool:
        return self._handle is not None

    def release(self) -> None:
        if self._handle is not None:
            fcntl.flock(self._handle.fileno(), fcntl.LOCK_UN)
            self._handle.close()
            self._handle = None


def lock_path(settings: Settings) -> Path:
    return settings.data_dir / "serve.lock"


def _server_pid_path(settings: Settings) -> Path:
    return settings.data_dir / "serve.pid"


def _try_lock(settings: Settings, exclusive: bool) -> StoreLock | None:
    """The lock, or None when a conflicting holder has it (never waits)."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    handle = open(lock_path(settings), "ab")  # noqa: SIM115 (held for the lock's lifetime, closed by release)
    try:
        fcntl.flock(handle.fileno(), (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    except BaseException:
        handle.close()
        raise
    return StoreLock(handle, exclusive)


def served(settings: Settings) -> bool:
    """Whether a server holds the embedded store (a shared probe fails only then); False with a Chroma server."""
    if settings.chroma_url or not lock_path(settings).exists():
        return False
    probe = _try_lock(settings, exclusive=False)
    if probe is None:
        return True
    probe.release()
    return False


def _server_pid(settings: Settings) -> str:
    try:
        return _server_pid_path(settings).read_text().strip() or "?"
    except OSError:
        return "?"


def refuse_queue_without_workers(settings: Settings) -> None:
    """`ragkb serve` with a queue and an embedded store: every job it queued would wait forever, because no
    `ragkb worker` may write the store while the server holds it. Refused at start, naming the two fixes."""
    if settings.queue_url and not settings.chroma_url:
        raise DataDirBusy(
            f"RAGKB_QUEUE_URL is set but the store is embedded (in {settings.data_dir}): while this server holds "
            "it no `ragkb worker` may write it, so queued uploads would never run. Either set RAGKB_CHROMA_URL to "
            "a Chroma server that the server and its workers share, or unset RAGKB_QUEUE_URL so that the server "
            "ingests uploads itself"
        )


def hold_for_server(settings: Settings) -> StoreLock | None:
    """Taken by `ragkb serve` for its lifetime (None with a Chroma server: nothing to guard)."""
    if settings.chroma_url:
        return None
    lock = _try_lock(settings, exclusive=True)
    for _ in range(10):  # a CLI writer's check holds it shared for an instant: not a reason to refuse
        if lock is not None:
            break
        time.sleep(0.05)
        lock = _try_lock(settings, exclusive=True)
    if lock is None:
        if served(settings):
            raise DataDirBusy(
                f"another ragkb server already serves the embedded store in {settings.data_dir} (pid "
                f"{_server_pid(settings)}); stop it first, or run several servers against a Chroma server "
                "(RAGKB_CHROMA_URL)"
            )
        raise DataDirBusy(
            f"`ragkb worker` processes are writing the embedded store in {settings.data_dir}, and a server "
            "would not see their writes. Stop them first (their queued jobs stay queued), or use a Chroma server "
            "(RAGKB_CHROMA_URL) that the server and the workers share"
        )
    _server_pid_path(settings).write_text(str(os.getpid()))  # for the messages above; the lock decides
    return lock


def hold_for_worker(settings: Settings) -> StoreLock | None:
    """Taken (shared) by `ragkb worker` and each of its worker processes for their lifetime; None with a
    Chroma server. Refused while a server holds the embedded store: it would not see the jobs' writes."""
    if settings.chroma_url:
        return None
    lock = _try_lock(settings, exclusive=False)
    if lock is None:
        raise DataDirBusy(
            f"a ragkb server (pid {_server_pid(settings)}) is serving the embedded store in {settings.data_dir}, "
            "and it would not see what a worker writes. Run workers against a Chroma server (RAGKB_CHROMA_URL) "
            "that the server shares, or stop the server, or unset RAGKB_QUEUE_URL so the server ingests uploads "
            "itself"
        )
    return lock


def refuse_if_served(settings: Settings, action: str) -> None:
    """Called by CLI writers: a running server on the same embedded store would not see their writes."""
    if served(settings):
        raise DataDirBusy(
            f"a ragkb server (pid {_server_pid(settings)}) is serving the embedded store in {settings.data_dir}, "
            f"and it would not see the {action} made from here until it restarts. Upload or delete through its API "
            "instead (POST /v1/collections/NAME/documents, DELETE /v1/collections/NAME/documents/ID), or stop it, "
            "or use a Chroma server (RAGKB_CHROMA_URL) that every process shares"
        )
