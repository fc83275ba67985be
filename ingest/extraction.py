"""Turning a file's bytes into text, in this process or in a pool of worker processes.

Parsing is pure-Python work (pypdf, BeautifulSoup) that holds the GIL: in a server
process, a large or hostile upload parsed in-process slows every other request
of that process. `ProcessExtractor` parses large files in a separate process,
with a time limit after which the worker is killed and the file fails alone.
"""

from __future__ import annotations

import logging
import multiprocessing
import threading
from multiprocessing.pool import Pool
from typing import Protocol

from .errors import CorruptDocument
from .loaders import load_bytes
from .models import ExtractedDocument

log = logging.getLogger("ragkb.extraction")


class Extractor(Protocol):
    def __call__(self, data: bytes, name: str) -> ExtractedDocument: ...


def extract_in_process(data: bytes, name: str) -> ExtractedDocument:
    return load_bytes(data, name)


class ProcessExtractor:
    """Files of at least `min_bytes` are parsed in a worker process (spawned, so no model or lock is
    inherited), one at a time, each within `timeout` seconds of its own parse; smaller files are parsed
    here, where a process hop would cost more than the parse."""

    def __init__(self, *, workers: int = 1, timeout: float = 120.0, min_bytes: int = 256 * 1024) -> None:
        self.workers, self.timeout, self.min_bytes = workers, timeout, min_bytes
        self._pool: Pool | None = None
        self._lock = threading.Lock()  # one large file at a time: its time limit then counts only its own parse

    def __call__(self, data: bytes, name: str) -> ExtractedDocument:
        if len(data) < self.min_bytes:
            return load_bytes(data, name)
        with self._lock:
            if self._pool is None:
                self._pool = multiprocessing.get_context("spawn").Pool(self.workers)
            pending = self._pool.apply_async(load_bytes, (data, name))
            try:
                result: ExtractedDocument = pending.get(self.timeout)
            except multiprocessing.TimeoutError:
                log.warning("extraction timed out; restarting the extraction worker", extra={"path": name})
                self._end_pool()  # the only way to stop a parse that runs away is to end its process
                raise CorruptDocument(
                    f"{name}: reading the file took longer than {self.timeout:g} s (RAGKB_EXTRACT_TIMEOUT); "
                    "it may be damaged or built to be slow"
                ) from None
        return result

    def _end_pool(self) -> None:
        if self._pool is not None:
            self._pool.terminate()
            self._pool.join()
            self._pool = None

    def close(self) -> None:
        with self._lock:
            self._end_pool()
