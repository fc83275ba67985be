"""The ingestion pipeline: files -> extracted text -> chunks -> embeddings -> Chroma.

Work is grouped across files so the embedder always sees full batches: a
knowledge base of many small files embeds as fast as one big file.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

from .blobs import BlobStore, open_blobs
from .chunking import Chunker, ChunkingConfig
from .config import Settings, get_settings
from .discovery import Failure, discover
from .embedder import Embedder, get_embedder
from .errors import DocumentNotFound, DuplicateSource, EmptyDocument, FileTooLarge, IngestError, RagkbError
from .extraction import Extractor, extract_in_process
from .linked import Carried, carried, descendants
from .loaders import loader_for
from .metrics import INGEST_ATTACHMENTS, INGEST_CHUNKS, INGEST_FILES, INGEST_SECONDS
from .models import Chunk, DocumentInfo, ExtractedDocument
from .originals import Originals
from .store import open_store
from .vectorstore import Collection, DocumentVersion, VectorStore, document_id_for, fallback_display_source

log = logging.getLogger("ragkb.ingest")

ProgressCallback = Callable[[str], None]
"""Called once per file when it is done (ingested, skipped or failed), with its path."""

StageCallback = Callable[[str, str, int], None]
"""Called as work moves on, with (stage, file, chunks): ("parsing", name, 0) before a file is parsed,
("embedding", "", n) before n chunks are embedded, ("written", "", n) once they are stored."""


def display_source_for(path: Path, roots: list[Path]) -> str:
    """How a file ingested from disk is shown to API clients (its `source`, the absolute path, stays its
    identity): `<directory name>/<path inside it>` for a file found in a directory given on the command
    line, else the file's name. Never an absolute path."""
    for root in roots:
        try:
            relative = path.relative_to(root).as_posix()
        except ValueError:
            continue
        name = root.name or root.resolve().name  # `.` or `..` name no directory: use the one they point at
        return f"{name}/{relative}" if name else relative
    return path.name


@dataclass(slots=True)
class IngestReport:
    """What one ingestion run did. `as_dict()` is the `ragkb ingest --json` contract."""

    collection: str
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    failed: int = 0
    skipped: int = 0
    deleted: int = 0
    attachments: int = 0  # attachment documents added or updated (`ingest/linked.py`); not in added/updated
    chunks_added: int = 0
    tokens_embedded: int = 0
    seconds: float = 0.0
    failures: list[Failure] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    documents: list[dict[str, Any]] = field(default_factory=list)
    interrupted: bool = False

    @property
    def ok(self) -> bool:
        return self.failed == 0

    def fail(self, path: str, error: str) -> None:
        self.failed += 1
        self.failures.append(Failure(path, error))

    def as_dict(self) -> dict[str, Any]:
        return {
            "collection": self.collection,
            "added": self.added,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "failed": self.failed,
            "skipped": self.skipped,
            "deleted": self.deleted,
            "attachments": self.attachments,
            "chunks_added": self.chunks_added,
            "tokens_embedded": self.tokens_embedded,
            "seconds": round(self.seconds, 3),
            "failures": [f.as_dict() for f in self.failures],
            "warnings": self.warnings,
            "documents": self.documents,
            "interrupted": self.interrupted,
        }


@dataclass(slots=True)
class _Pending:
    path: str
    source: str
    document_id: str
    version: str
    is_update: bool
    extracted: ExtractedDocument
    chunks: list[Chunk]
    display_source: str
    blob: str
    previous_blobs: set[str] = field(default_factory=set)  # the replaced version's originals: released once written
    parent_id: str = ""  # an attachment's: the document id of the message carrying it (`ingest/linked.py`)
    parent: str = ""  # an attachment's: the message's display source
    drops: list[DocumentInfo] = field(default_factory=list)  # attachments gone from this version: deleted once written


def _drop(originals: Originals, digest: str | None, pending: list[_Pending]) -> None:
    """A failed file's original goes, unless a file of this batch waiting to be written has the same bytes
    or something else uses it."""
    if digest is None or any(p.blob == digest for p in pending):
        return
    originals.release(digest)


# An estimate from samples can be off; a file is refused on one only when it is this far past the budget (closer
# ones are chunked and refused on the exact count).
ESTIMATE_MARGIN = 1.25


class Budget:
    """The work one file, and one call, may cost: extracted characters, chunks and the tokens to embed (clear
    errors past them). `max_tokens` is an upload request's: what it may embed inside the request."""

    def __init__(self, settings: Settings, max_chunks: int | None, max_tokens: int | None = None) -> None:
        self.max_chars = settings.max_extracted_chars
        self.max_file_chunks = settings.max_chunks_per_file
        self.left = max_chunks
        self.max_tokens = max_tokens
        self.tokens_left = max_tokens

    def check_text(self, name: str, characters: int) -> None:
        if characters > self.max_chars:
            raise FileTooLarge(
                f"{name}: {characters:,} characters of text is over the {self.max_chars:,}-character budget "
                "per file (RAGKB_MAX_EXTRACTED_CHARS)"
            )

    def check_tokens(self, name: str, estimated: Callable[[], int]) -> None:
        """Refuse a file whose estimated tokens are well past what is left of the request's token budget before
        it is chunked (chunking a megabyte of punctuation takes seconds); `spend` checks the exact count."""
        if self.tokens_left is None:
            return
        tokens = estimated()
        if tokens > self.tokens_left * ESTIMATE_MARGIN:
            self._over_tokens(name, f"about {tokens:,} tokens (estimated from samples)")

    def _over_tokens(self, name: str, tokens: str) -> None:
        assert self.max_tokens is not None and self.tokens_left is not None
        spent = f"what is left of it ({self.tokens_left:,}) of " if self.tokens_left != self.max_tokens else ""
        raise FileTooLarge(
            f"{name}: {tokens} to embed is over {spent}the {self.max_tokens:,}-token budget of one upload request "
            "(RAGKB_MAX_TOKENS_PER_REQUEST); upload it on its own, raise the budget, ingest it with `ragkb ingest`, "
            "or queue uploads for workers (RAGKB_QUEUE_URL)"
        )

    def spend(self, name: str, chunks: int, tokens: int = 0) -> None:
        """Spend one file's chunks and tokens, or refuse the file (nothing spent) with the budget it is over."""
        if chunks > self.max_file_chunks:
            raise FileTooLarge(
                f"{name}: {chunks:,} chunks is over the {self.max_file_chunks:,}-chunk budget per file "
                "(RAGKB_MAX_CHUNKS_PER_FILE)"
            )
        if self.left is not None and chunks > self.left:
            raise FileTooLarge(
                f"{name}: {chunks:,} chunks is over what is left of this request's chunk budget "
                f"({self.left:,} of RAGKB_MAX_CHUNKS_PER_REQUEST); upload it on its own"
            )
        if self.tokens_left is not None and tokens > self.tokens_left:
            self._over_tokens(name, f"{tokens:,} tokens")
        if self.left is not None:
            self.left -= chunks
        if self.tokens_left is not None:
            self.tokens_left -= tokens


class Ingestor:
    """The write side: ingests files into a collection; holds the model, chunker and store for the process."""

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        store: VectorStore | None = None,
        embedder: Embedder | None = None,
        extractor: Extractor | None = None,
        blobs: BlobStore | None = None,
    ) -> None:
        self.settings = settings or get_settings()
        self.blobs = blobs or open_blobs(self.settings)
        self.extract: Extractor = extractor or extract_in_process
        self.stop = threading.Event()  # set it (SIGTERM, shutdown) to stop between files and batches
        self.embedder = embedder or get_embedder(settings=self.settings)
        self.store = store or open_store(self.settings)
        self.chunker = Chunker(
            self.embedder.tokenizer,
            ChunkingConfig(self.settings.chunk_tokens, self.settings.chunk_overlap),
            window=self.embedder.window,
        )

    def open_collection(self, name: str, *, create: bool = True) -> Collection:
        """Open a collection to write to; a generation left pending by a writer that died is bumped now."""
        collection = self.store.open(
            name, model=self.embedder.identity, dimension=self.embedder.dimension, create=create
        )
        self.store.repair_generation(collection)
        return collection

    def version_of(self, data: bytes) -> str:
        """A version changes with the bytes, the chunking settings or the model, and nothing else."""
        digest = hashlib.sha256(data)
        digest.update(f"|{self.chunker.config.fingerprint()}|{self.embedder.identity}".encode())
        return digest.hexdigest()[:16]

    # -- public entry points ---------------------------------------------------------

    def ingest_paths(
        self,
        paths: list[Path],
        *,
        collection: str,
        include: list[str] | None = None,
        exclude: list[str] | None = None,
        on_discovered: Callable[[int], None] | None = None,
        on_file_done: ProgressCallback | None = None,
        prune: bool = False,
        on_stage: StageCallback | None = None,
    ) -> IngestReport:
        """Ingest files and directories. With `prune`, documents stored from inside the given directories
        whose files are gone (deleted, or no longer matched by the globs) are deleted too."""
        started = time.perf_counter()
        report = IngestReport(collection=collection)
        found = discover(paths, include=include, exclude=exclude)
        report.skipped = len(found.skipped)
        report.warnings.extend(found.warnings)
        for failure in found.failures:
            report.fail(failure.path, failure.error)
        if on_discovered:
            on_discovered(len(found.files))
        target = self.open_collection(collection)
        roots = [p for p in paths if p.is_dir()]
        items = ((str(p), str(p.resolve()), p) for p in found.files)
        displays = {str(p.resolve()): display_source_for(p, roots) for p in found.files}
        self._ingest(target, items, report, on_file_done, displays=displays, on_stage=on_stage)
        if prune:
            self._prune(target, [p for p in paths if p.is_dir()], {str(p.resolve()) for p in found.files}, report)
        report.seconds = time.perf_counter() - started
        return report

    def _prune(self, collection: Collection, roots: list[Path], present: set[str], report: IngestReport) -> None:
        prefixes = tuple(str(root.resolve()) + os.sep for root in roots)
        if not prefixes:
            return
        listing = self.store.documents(collection)
        for document in listing:
            # an attachment goes with its message (`remove`), never on its own: its source is no file
            if document.source.startswith(prefixes) and document.source not in present and not document.parent_id:
                for gone in self.remove(collection, document, listing):
                    report.deleted += 1
                    report.documents.append({"path": gone.source, "document_id": gone.document_id,
                                             "status": "deleted", "chunks": gone.chunk_count})  # fmt: skip

    def ingest_items(
        self,
        items: Iterable[tuple[str, str, bytes]],
        *,
        collection: str,
        on_file_done: ProgressCallback | None = None,
        max_chunks: int | None = None,
        on_stage: StageCallback | None = None,
        displays: Mapping[str, str] | None = None,
        target: Collection | None = None,
        max_tokens: int | None = None,
    ) -> IngestReport:
        """Ingest in-memory documents given as (name, source, bytes); the name's extension picks the loader.
        `source` names a document in citations and listings (an upload's is `upload://<file name>`).
        `max_chunks` and `max_tokens` (tokens to embed) are budgets for the whole call (an upload request):
        files past them fail with a reason, before they are embedded."""
        started = time.perf_counter()
        report = IngestReport(collection=collection)
        target = target or self.open_collection(collection)
        self._ingest(target, items, report, on_file_done, max_chunks, displays, on_stage, max_tokens)
        report.seconds = time.perf_counter() - started
        return report

    def delete(self, collection: str, id_or_source: str) -> tuple[DocumentInfo, int]:
        """Delete a document and its attachments (`ingest/linked.py`); the chunks removed, in all."""
        target = self.open_collection(collection, create=False)
        document = self.store.find_document(target, id_or_source)
        gone = self.remove(target, document, self.store.documents(target), release=self.release_blob)
        return document, sum(d.chunk_count for d in gone)

    def remove(
        self,
        collection: Collection,
        document: DocumentInfo,
        listing: list[DocumentInfo],
        *,
        release: Callable[[str], object] | None = None,
    ) -> list[DocumentInfo]:
        """Delete a document and the attachments it carries (found in `listing`), attachments first; each
        original nothing else uses goes too (`release`, by default `release_quietly`). What was deleted, with
        `chunk_count` the chunks removed."""
        release = release or self.release_quietly
        gone: list[DocumentInfo] = []
        for each in [*descendants(listing, document.document_id), document]:
            try:
                removed = self.store.delete_document(collection, each.document_id)
            except DocumentNotFound:
                if each is document:
                    raise
                continue  # deleted meanwhile (by another writer, or on its own)
            if each.blob:
                release(each.blob)
            gone.append(replace(each, chunk_count=removed))
        if len(gone) > 1:
            log.info("deleted a document with its attachments",
                     extra={"document_id": document.document_id, "attachments": len(gone) - 1})  # fmt: skip
        return gone

    def _blobs_of(self, collection: Collection, document_id: str) -> set[str]:
        """The originals the stored versions of a document name (two after an interrupted replace)."""
        chunks = self.store.document_chunks(collection, document_id)
        return {str(c.metadata["blob"]) for c in chunks if c.metadata.get("blob")}

    def release_quietly(self, digest: str) -> None:
        """`release_blob` where the caller's own work is done: a store that cannot say whether the original
        is still used keeps it (a later delete frees it) and the work is not failed for it."""
        try:
            self.release_blob(digest)
        except (RagkbError, OSError) as exc:
            log.warning("original kept: cannot tell whether it is used", extra={"blob": digest, "error": str(exc)})

    def release_blob(self, digest: str) -> bool:
        """Delete an original that no document of any collection uses and no queued job pins (True if
        deleted). Decided from what uses it, so a crash never leaves a wrong count behind."""
        if self.blobs.pinned(digest) or self.store.blob_in_use(digest):
            return False
        return self.blobs.delete(digest)

    # -- the work --------------------------------------------------------------------

    def _read(self, item: Path | bytes, name: str) -> bytes:
        limit = self.settings.max_file_bytes
        if isinstance(item, bytes):
            data = item
        else:
            size = item.stat().st_size
            if size > limit:
                raise FileTooLarge(f"{name}: {size:,} bytes is over the {limit:,}-byte limit (RAGKB_MAX_FILE_BYTES)")
            data = item.read_bytes()
        if len(data) > limit:
            raise FileTooLarge(f"{name}: {len(data):,} bytes is over the {limit:,}-byte limit (RAGKB_MAX_FILE_BYTES)")
        return data  # empty or binary content is the loader's to refuse, for every type alike

    def _ingest(
        self,
        collection: Collection,
        items: Iterable[tuple[str, str, Path | bytes]],
        report: IngestReport,
        on_file_done: ProgressCallback | None,
        max_chunks: int | None = None,
        displays: Mapping[str, str] | None = None,
        on_stage: StageCallback | None = None,
        max_tokens: int | None = None,
    ) -> None:
        """`displays` maps a source to how it is shown (`display_source`); others show the fallback."""
        originals = Originals(self.blobs, self.release_quietly, holder="ingest")
        budget = Budget(self.settings, max_chunks, max_tokens)
        try:
            self._ingest_files(collection, items, report, on_file_done, budget, displays, on_stage, originals)
        finally:
            originals.close()

    def _ingest_files(
        self,
        collection: Collection,
        items: Iterable[tuple[str, str, Path | bytes]],
        report: IngestReport,
        on_file_done: ProgressCallback | None,
        budget: Budget,
        displays: Mapping[str, str] | None,
        on_stage: StageCallback | None,
        originals: Originals,
    ) -> None:
        committed = self.store.committed_versions(collection)
        listed: list[list[DocumentInfo]] = []

        def listing() -> list[DocumentInfo]:  # read once, and only when a file with attachments is replaced
            if not listed:
                listed.append(self.store.documents(collection))
            return listed[0]

        pending: list[_Pending] = []
        pending_chunks = 0
        seen: set[str] = set()
        for name, source, item in items:
            blob: str | None = None
            if self.stop.is_set():
                report.interrupted = True
                self._failed(report, name, "not ingested: ingestion was stopped (shutdown or Ctrl-C)", on_file_done)
                continue
            try:
                loader_for(name)  # unknown types fail before any bytes are read
                data = self._read(item, name)
                document_id = document_id_for(source)
                if document_id in seen:  # two versions of one document in one write would delete each other
                    raise DuplicateSource(f"{name}: {source} appears twice in this batch; only the first is ingested")
                seen.add(document_id)
                blob = originals.put(data)  # the original, kept once by content (for reindex and serving)
                version = self.version_of(data)
                known = committed.get(document_id, set())
                if version in known:
                    if len(known) > 1:  # an earlier replace was interrupted before its cleanup
                        self.store.delete_stale_versions(collection, document_id, keep=version)
                    originals.written(blob)  # the stored version names it already
                    report.unchanged += 1
                    INGEST_FILES.labels(outcome="unchanged").inc()
                    if on_file_done:
                        on_file_done(name)
                    continue
                if on_stage:
                    on_stage("parsing", name, 0)
                extracted = self.extract(data, name)
                budget.check_text(name, len(extracted.text))
                budget.check_tokens(name, partial(self.chunker.estimate_tokens, extracted.text))
                chunks = self.chunker.chunk(extracted)
                if not chunks:
                    raise EmptyDocument(f"{name}: no text to index after extraction")
                budget.spend(name, len(chunks), sum(chunk.token_count for chunk in chunks))
                report.warnings.extend(f"{name}: {w}" for w in extracted.warnings)
                shown = (displays or {}).get(source) or fallback_display_source(source)
                previous = self._blobs_of(collection, document_id) if known else set()
                parent = _Pending(
                    name, source, document_id, version, bool(known), extracted, chunks, shown, blob, previous
                )
                attachments = self._carried(collection, committed, parent, budget, report, originals, listing, pending)
                pending.extend([parent, *attachments])
                pending_chunks += sum(len(doc.chunks) for doc in (parent, *attachments))
            except IngestError as exc:
                _drop(originals, blob, pending)
                self._failed(report, name, str(exc), on_file_done)
                continue
            except OSError as exc:
                _drop(originals, blob, pending)
                self._failed(report, name, f"cannot read: {exc.strerror or exc}", on_file_done)
                continue
            if pending_chunks >= self.settings.ingest_flush_chunks:
                self._flush(collection, pending, report, on_file_done, on_stage, originals)
                pending, pending_chunks = [], 0
        # chunks already made are still written
        self._flush(collection, pending, report, on_file_done, on_stage, originals)

    def _carried(
        self,
        collection: Collection,
        committed: Mapping[str, set[str]],
        parent: _Pending,
        budget: Budget,
        report: IngestReport,
        originals: Originals,
        listing: Callable[[], list[DocumentInfo]],
        waiting: list[_Pending],
    ) -> list[_Pending]:
        """The attachments of a file about to be written, as documents of their own (`ingest/linked.py`): a new
        or changed one is made ready to write beside it, an unchanged one stays as stored, one that cannot be
        stored is a warning; those stored for the version it replaces and gone from it become its `drops`."""
        made: list[_Pending] = []
        present: set[str] = set()
        for item in carried(parent.path, parent.source, parent.display_source, parent.extracted):
            document_id = document_id_for(item.source)
            present.add(document_id)
            blob = originals.put(item.data)
            version = self.version_of(item.data)
            known = committed.get(document_id, set())
            if version in known:
                originals.written(blob)  # the stored attachment names it already
                INGEST_ATTACHMENTS.labels(outcome="unchanged").inc()
                continue
            try:
                chunks = self._chunks_of(item, budget)
            except IngestError as exc:
                _drop(originals, blob, [*waiting, parent, *made])
                report.warnings.append(f"{item.name}: attachment not stored: {exc}")
                INGEST_ATTACHMENTS.labels(outcome="not_stored").inc()
                continue
            report.warnings.extend(f"{item.name}: {w}" for w in item.document.warnings)
            previous = self._blobs_of(collection, document_id) if known else set()
            made.append(
                _Pending(item.name, item.source, document_id, version, bool(known), item.document, chunks,
                         item.display_source, blob, previous, parent_id=document_id_for(item.parent_source),
                         parent=item.parent_display)
            )  # fmt: skip
        if parent.is_update:
            parent.drops = [d for d in descendants(listing(), parent.document_id) if d.document_id not in present]
        return made

    def _chunks_of(self, item: Carried, budget: Budget) -> list[Chunk]:
        budget.check_text(item.name, len(item.document.text))
        chunks = self.chunker.chunk(item.document)
        if not chunks:
            raise EmptyDocument(f"{item.name}: no text to index after extraction")
        budget.spend(item.name, len(chunks))
        return chunks

    def _failed(self, report: IngestReport, name: str, error: str, on_file_done: ProgressCallback | None) -> None:
        log.warning("ingest failed", extra={"path": name, "error": error})
        report.fail(name, error)
        INGEST_FILES.labels(outcome="failed").inc()
        if on_file_done:
            on_file_done(name)

    def _flush(
        self,
        collection: Collection,
        pending: list[_Pending],
        report: IngestReport,
        on_file_done: ProgressCallback | None,
        on_stage: StageCallback | None,
        originals: Originals,
    ) -> None:
        if not pending:
            return
        texts = [chunk.text for doc in pending for chunk in doc.chunks]
        if on_stage:
            on_stage("embedding", "", len(texts))
        started = time.perf_counter()
        vectors = self.embedder.embed(texts)
        INGEST_SECONDS.labels(stage="embed").observe(time.perf_counter() - started)
        now = datetime.now(UTC).isoformat(timespec="seconds")
        versions: list[DocumentVersion] = []
        offset = 0
        for doc in pending:
            count = len(doc.chunks)
            base = {
                "source": doc.source,
                "display_source": doc.display_source,
                "title": doc.extracted.title,
                "kind": doc.extracted.kind,
                "ingested_at": now,
                "embed_model": self.embedder.identity,
                "blob": doc.blob,
            }
            if doc.parent_id:
                base.update(parent_id=doc.parent_id, parent=doc.parent)
            versions.append(
                DocumentVersion(
                    document_id=doc.document_id,
                    version=doc.version,
                    base_metadata=base,
                    chunks=doc.chunks,
                    embeddings=vectors[offset : offset + count],
                    replaces_existing=doc.is_update,
                )
            )
            offset += count
        started = time.perf_counter()
        self.store.write_documents(collection, versions)
        INGEST_SECONDS.labels(stage="write").observe(time.perf_counter() - started)
        for doc in pending:
            originals.written(doc.blob)
        for doc in pending:
            for old in doc.previous_blobs - {doc.blob}:  # the replaced version's original, if nothing else uses it
                self.release_quietly(old)
        self._drop_attachments(collection, pending, report)
        if on_stage:
            on_stage("written", "", len(texts))
        for doc in pending:
            count = len(doc.chunks)
            outcome = "updated" if doc.is_update else "added"
            if doc.parent_id:
                report.attachments += 1
            elif doc.is_update:
                report.updated += 1
            else:
                report.added += 1
            report.chunks_added += count
            report.tokens_embedded += sum(c.token_count for c in doc.chunks)
            entry: dict[str, Any] = {
                "path": doc.path,
                "document_id": doc.document_id,
                "status": outcome,
                "chunks": count,
            }
            if doc.parent_id:
                entry["parent_id"] = doc.parent_id
            report.documents.append(entry)
            (INGEST_ATTACHMENTS if doc.parent_id else INGEST_FILES).labels(outcome=outcome).inc()
            INGEST_CHUNKS.inc(count)
            if on_file_done and not doc.parent_id:  # progress counts the files given, not what they carry
                on_file_done(doc.path)

    def _drop_attachments(self, collection: Collection, pending: list[_Pending], report: IngestReport) -> None:
        """Delete the attachments that the versions just written no longer carry (deepest first)."""
        for doc in pending:
            for gone in doc.drops:
                try:
                    removed = self.store.delete_document(collection, gone.document_id)
                except DocumentNotFound:
                    continue
                if gone.blob:
                    self.release_quietly(gone.blob)
                report.deleted += 1
                INGEST_ATTACHMENTS.labels(outcome="dropped").inc()
                report.documents.append({"path": gone.source, "document_id": gone.document_id, "status": "deleted",
                                         "chunks": removed, "parent_id": gone.parent_id})  # fmt: skip
