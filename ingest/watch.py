"""Keeping a collection in step with folders (`ragkb ingest DIR --watch`).

Polling, not file-system events: it works the same on every file system (network shares and container
volumes included, where inotify says nothing) and needs no dependency. Every `interval` seconds the
folders are walked with the same discovery as `ragkb ingest` (so the same globs) and each file's size and
modification time compared with the last walk. A change starts a quiet period: the collection is brought
in step only once nothing has changed for `debounce` seconds, so a burst of saves (an editor's temporary
files, a copy of a hundred files) is one pass. A pass is `Ingestor.ingest_paths(prune=True)`: new and
changed files ingested, unchanged ones skipped by content, deleted ones removed.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

from .discovery import discover
from .pipeline import Ingestor, IngestReport

log = logging.getLogger("ragkb.watch")

Snapshot = dict[str, tuple[int, int]]


class FolderWatcher:
    def __init__(
        self,
        ingestor: Ingestor,
        paths: list[Path],
        *,
        collection: str,
        include: list[str] | None = None,
        exclude: list[str] | None = None,
        interval: float = 1.0,
        debounce: float = 2.0,
        on_report: Callable[[IngestReport], None] | None = None,
    ) -> None:
        self.ingestor, self.paths, self.collection = ingestor, paths, collection
        self.include, self.exclude = include, exclude
        self.interval, self.debounce = interval, debounce
        self.on_report = on_report
        self.passes = 0

    def snapshot(self) -> Snapshot:
        """Each matched file's (size, mtime in ns); a file that vanishes while it is looked at is left out."""
        found = discover(self.paths, include=self.include, exclude=self.exclude)
        state: Snapshot = {}
        for path in found.files:
            try:
                stat = path.stat()
            except OSError:
                continue
            state[str(path)] = (stat.st_size, stat.st_mtime_ns)
        return state

    def sync(self) -> IngestReport:
        report = self.ingestor.ingest_paths(
            self.paths, collection=self.collection, include=self.include, exclude=self.exclude, prune=True
        )
        self.passes += 1
        log.info(
            "watch pass",
            extra={
                "collection": self.collection,
                "added": report.added,
                "updated": report.updated,
                "deleted": report.deleted,
                "failed": report.failed,
            },
        )
        if self.on_report:
            self.on_report(report)
        return report

    def run(self, stop: threading.Event) -> None:
        """One pass now, then one after every burst of changes, until `stop` is set (SIGTERM, Ctrl-C)."""
        last = self.snapshot()
        self.sync()
        changed_at: float | None = None
        while not stop.wait(self.interval):
            current = self.snapshot()
            if current != last:
                last, changed_at = current, time.monotonic()
                continue
            if changed_at is not None and time.monotonic() - changed_at >= self.debounce:
                changed_at = None
                self.sync()  # `last` stays what was seen before the pass: a change made during it is caught next
