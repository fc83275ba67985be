"""Rebuild a collection from its originals with other settings (model, chunk size), then switch to it at once.

No re-upload: every document's original is in the blob store (`ingest/blobs.py`),
named by its chunks' `blob`. The new version is built in a collection of its own
(`VectorStore.begin_version`) while the collection keeps serving the current one;
documents written or deleted meanwhile are caught up; then one atomic write makes
the new version current (`switch_version`). Readers follow within the store's
resolve interval, so the old version is dropped only after a grace period (and a
last catch-up for writes that reached it in that window). A rebuild that dies
leaves the current version serving and its half-built one is dropped by the next.
Attachments (`ingest/linked.py`) are not rebuilt on their own: their messages bring them along.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import PurePosixPath
from typing import Any

from filelock import FileLock, Timeout

from .config import Settings
from .embedder import Embedder
from .errors import RagkbError
from .models import DocumentInfo
from .pipeline import Ingestor
from .vectorstore import Collection, VectorStore

log = logging.getLogger("ragkb.reindex")

GRACE_SECONDS = 3.0  # > the store's resolve interval: every reader has moved to the new version by then


class ReindexError(RagkbError):
    """A reindex cannot start or could not finish; the collection still serves its current version."""


class ReindexBusy(ReindexError):
    """Another reindex of the same collection is under way."""


@dataclass(slots=True)
class ReindexProgress:
    """Where a reindex stands; `as_dict()` is what `GET /v1/collections/{name}/reindex` answers."""

    collection: str
    settings: dict[str, Any]
    status: str = "running"  # running, done, failed
    stage: str = "starting"  # starting, building, catching up, switching, dropping old version, finished
    documents_total: int = 0
    documents_done: int = 0
    chunks_embedded: int = 0
    started_at: float = field(default_factory=time.time)
    updated_at: float = field(default_factory=time.time)
    finished_at: float | None = None
    switched_at: float | None = None
    eta_seconds: float | None = None
    error: str | None = None
    chunks_before: int = 0
    chunks_after: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


ProgressHook = Callable[[ReindexProgress], None]


def source_name(document: DocumentInfo) -> str:
    """The file name a document's loader is picked by (`upload://a.pdf` -> `a.pdf`, `/x/b.md` -> `b.md`)."""
    source = document.source.split("://", 1)[-1]
    return PurePosixPath(source.replace("\\", "/")).name or document.display_source


def reindex_settings(
    settings: Settings, *, model: str | None = None, chunk_tokens: int | None = None, chunk_overlap: int | None = None
) -> Settings:
    """The settings a reindex builds with: the current ones, with these changed (checked like the originals)."""
    changes: dict[str, Any] = {}
    if model:
        changes["embed_model"] = model
    if chunk_tokens is not None:
        changes["chunk_tokens"] = chunk_tokens
        if chunk_overlap is None and settings.chunk_overlap >= chunk_tokens:
            changes["chunk_overlap"] = chunk_tokens // 4  # the default overlap would not fit a small chunk
    if chunk_overlap is not None:
        changes["chunk_overlap"] = chunk_overlap
    try:
        return Settings.model_validate({**settings.model_dump(), **changes})
    except ValueError as exc:
        raise ReindexError(f"invalid reindex settings: {exc}") from None


class Reindexer:
    """One reindex of one collection. `run()` does it all; `progress` can be read from another thread."""

    def __init__(
        self,
        settings: Settings,
        name: str,
        *,
        store: VectorStore | None = None,
        embedder: Embedder | None = None,
        on_progress: ProgressHook | None = None,
        grace: float = GRACE_SECONDS,
    ) -> None:
        self.settings = settings
        self.name = name
        self.grace = grace
        self.on_progress = on_progress
        shown = {"embed_model": settings.embed_model, "chunk_tokens": settings.chunk_tokens,
                 "chunk_overlap": settings.chunk_overlap}  # fmt: skip
        self.progress = ReindexProgress(collection=name, settings=shown)
        self.ingestor = Ingestor(settings, store=store, embedder=embedder)
        self.store = self.ingestor.store
        self._lock_path = settings.data_dir / "reindex" / f"{hashlib.sha256(name.encode()).hexdigest()[:16]}.lock"

    def _update(self, **fields: Any) -> None:
        for key, value in fields.items():
            setattr(self.progress, key, value)
        p = self.progress
        p.updated_at = time.time()
        if p.documents_done and p.documents_total and p.status == "running":
            rate = p.documents_done / max(p.updated_at - p.started_at, 1e-6)
            p.eta_seconds = round((p.documents_total - p.documents_done) / rate, 1)
        if self.on_progress:
            self.on_progress(p)

    def run(self) -> ReindexProgress:
        self._lock_path.parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(self._lock_path), timeout=0)
        try:
            lock.acquire()
        except Timeout:
            raise ReindexBusy(f"a reindex of collection {self.name!r} is already running") from None
        try:
            self._run()
        except Exception as exc:
            self._update(status="failed", stage="finished", error=str(exc), finished_at=time.time())
            raise
        finally:
            lock.release()
        return self.progress

    def _run(self) -> None:
        store, blobs = self.store, self.ingestor.blobs
        current = store.get(self.name)
        documents = store.documents(current)
        missing = [d.display_source for d in documents if not d.blob or not blobs.exists(d.blob)]
        if missing:
            shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
            raise ReindexError(
                f"collection {self.name!r} has {len(missing)} document(s) without a kept original ({shown}): they "
                "were ingested before originals were kept. Ingest or upload them again once, then reindex."
            )
        files = [d for d in documents if not d.parent_id]  # attachments are rebuilt with their messages
        self._update(documents_total=len(files), chunks_before=store.count(current), stage="building")
        embedder = self.ingestor.embedder
        version = store.begin_version(self.name, model=embedder.identity, dimension=embedder.dimension)
        try:
            self._write(version, files)
            self._update(stage="catching up")
            for _ in range(3):  # writes made to the current version while this one was built
                if not self._catch_up(current, version):
                    break
            self._update(stage="switching")
            previous = store.switch_version(self.name, version)
        except BaseException:
            store.drop_version(version)
            raise
        self._update(stage="dropping old version", switched_at=time.time())
        time.sleep(self.grace)  # readers that resolved the name just before the switch finish meanwhile
        self._catch_up(previous, version)
        store.drop_version(previous)
        self._update(
            status="done", stage="finished", finished_at=time.time(), eta_seconds=0.0, chunks_after=store.count(version)
        )

    def _write(self, version: Collection, documents: list[DocumentInfo]) -> None:
        blobs = self.ingestor.blobs

        def items() -> Iterator[tuple[str, str, bytes]]:
            for document in documents:
                yield source_name(document), document.source, blobs.get(document.blob)

        def file_done(_: str) -> None:
            self._update(documents_done=self.progress.documents_done + 1)

        def stage(step: str, _: str, chunks: int) -> None:
            if step == "written":
                self._update(chunks_embedded=self.progress.chunks_embedded + chunks)

        report = self.ingestor.ingest_items(
            items(), collection=self.name, target=version, on_file_done=file_done, on_stage=stage,
            displays={d.source: d.display_source for d in documents},
        )  # fmt: skip
        if report.failed:
            failures = "; ".join(f"{f.path}: {f.error}" for f in report.failures[:5])
            raise ReindexError(f"{report.failed} document(s) could not be rebuilt with the new settings: {failures}")

    def _catch_up(self, source: Collection, version: Collection) -> bool:
        """Make `version` hold what `source` holds (by document and original); True if anything changed."""
        have = {d.document_id: d for d in self.store.documents(version)}
        want = {d.document_id: d for d in self.store.documents(source)}
        changed = [
            d
            for d in want.values()
            if d.blob and not d.parent_id and (d.document_id not in have or have[d.document_id].blob != d.blob)
        ]
        gone = [doc_id for doc_id in have if doc_id not in want]
        for doc_id in gone:
            self.store.delete_document(version, doc_id)
        if changed:
            self.progress.documents_total += len(changed)
            self._write(version, changed)
        return bool(changed or gone)


def reindex_in_thread(reindexer: Reindexer) -> threading.Thread:
    """Run a reindex in the background (the API's way); its `progress` says how it goes."""

    def target() -> None:
        try:
            reindexer.run()
        except Exception:
            log.exception("reindex failed", extra={"collection": reindexer.name})

    thread = threading.Thread(target=target, name=f"reindex-{reindexer.name}", daemon=True)
    thread.start()
    return thread


def describe(progress: ReindexProgress) -> str:
    p = progress
    eta = f", ETA {p.eta_seconds:.0f}s" if p.eta_seconds else ""
    return f"{p.stage}: {p.documents_done}/{p.documents_total} documents, {p.chunks_embedded:,} chunks{eta}"
