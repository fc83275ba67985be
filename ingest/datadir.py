"""One embedded store, one writer process: the lock `ragkb serve` holds on an embedded data dir.

Embedded Chroma keeps its index in the memory of the process that opened it, so a
write made by another process (a CLI `ragkb ingest` beside a running server) is not
seen by the server until it restarts. Rather than serve stale answers, a server on
an embedded store holds `<data_dir>/serve.lock`, and writers in other processes
refuse to start while it is held, saying what to do instead. With a Chroma server
(`RAGKB_CHROMA_URL`) every process sees every write, and none of this applies.
"""

from __future__ import annotations

import os
from pathlib import Path

from filelock import FileLock, Timeout

from .config import Settings
from .errors import RagkbError


class DataDirBusy(RagkbError):
    """Another process serves this embedded data dir."""


def _lock_path(settings: Settings) -> Path:
    return settings.data_dir / "serve.lock"


def hold_for_server(settings: Settings) -> FileLock | None:
    """Taken by `ragkb serve` for its lifetime (None with a Chroma server: nothing to guard)."""
    if settings.chroma_url:
        return None
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(_lock_path(settings)), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise DataDirBusy(
            f"another ragkb server already serves the embedded store in {settings.data_dir}; stop it first, or "
            "run several servers against a Chroma server (RAGKB_CHROMA_URL)"
        ) from None
    (settings.data_dir / "serve.pid").write_text(str(os.getpid()))
    return lock


def refuse_if_served(settings: Settings, action: str) -> None:
    """Called by CLI writers: a running server on the same embedded store would not see their writes."""
    if settings.chroma_url or not _lock_path(settings).exists():
        return
    probe = FileLock(str(_lock_path(settings)), timeout=0)
    try:
        probe.acquire()
    except Timeout:
        pid = (
            (settings.data_dir / "serve.pid").read_text().strip() if (settings.data_dir / "serve.pid").exists() else "?"
        )
        raise DataDirBusy(
            f"a ragkb server (pid {pid}) is serving the embedded store in {settings.data_dir}, and it would not "
            f"see a {action} made from here until it restarts. Upload or delete through its API instead "
            "(POST /v1/collections/NAME/documents, DELETE /v1/collections/NAME/documents/ID), or stop it, or "
            "use a Chroma server (RAGKB_CHROMA_URL) that every process shares"
        ) from None
    probe.release()
