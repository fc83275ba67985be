"""The lexical (BM25) index of a collection, built with bm25s from the chunks in the vector store.

The store stays the source of truth. Every write or delete changes the
collection's generation (see `ingest/vectorstore.py`); a lexical index remembers
the generation it was built from, and one that is missing or stale is rebuilt
from the stored chunks on first use, so a deleted document never comes back from
the lexical side and a server never needs a restart to see a change.

Several processes may share one data dir (`ragkb serve --workers N`, a CLI run
beside a server). On disk each build is a folder of its own, published by an
atomic rename and a `CURRENT` pointer replaced atomically; a file lock lets one
process rebuild at a time while the others wait and then load its result.

`analyze` is the one text analyser of ragkb's lexical side (the extractive
provider scores sentences with it, so both agree on what a term is).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
import time
import uuid
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from filelock import FileLock, Timeout

from ingest.errors import RagkbError
from ingest.vectorstore import Collection, StoredChunk, VectorStore

log = logging.getLogger("ragkb.lexical")

REBUILD_LOCK_TIMEOUT = 600.0  # seconds a process waits for another one's rebuild


class IndexBusy(RagkbError):
    """Another process has been rebuilding the lexical index for too long (HTTP 503)."""


@dataclass(frozen=True, slots=True)
class LexicalConfig:
    """How text becomes BM25 terms. Changing any field rebuilds the index."""

    k1: float = 1.5
    b: float = 0.75
    stemmer: str | None = "english"  # a PyStemmer language, or None
    stopwords: str | None = "en"
    token_pattern: str = r"(?u)\b\w\w+\b"
    include_title: bool = True  # index "title + chunk text", so every chunk of a document matches its title
    unit: str = "document"  # the grain of the second index: whole documents, or pages/sections ("section")

    def fingerprint(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


DEFAULT_CONFIG = LexicalConfig()


@lru_cache(maxsize=4)
def _stemmer(language: str) -> Any:
    import Stemmer

    return Stemmer.Stemmer(language)


def analyze(texts: list[str], config: LexicalConfig = DEFAULT_CONFIG) -> list[list[str]]:
    """Lower-cased, stop-word-free, stemmed terms of each text: what BM25 indexes and matches."""
    import bm25s

    tokens = bm25s.tokenize(
        texts,
        stopwords=config.stopwords or [],
        stemmer=_stemmer(config.stemmer) if config.stemmer else None,
        token_pattern=config.token_pattern,
        return_ids=False,
        show_progress=False,
    )
    return [list(t) for t in tokens]


def indexed_text(chunk: StoredChunk, config: LexicalConfig) -> str:
    title = chunk.provenance().title
    if config.include_title and title and not chunk.text.startswith(title):
        return f"{title}\n{chunk.text}"
    return chunk.text


class _BM25:
    """One bm25s index over a list of ids (chunks or documents)."""

    def __init__(self, ids: list[str], bm25: Any) -> None:
        self.ids = ids
        self.bm25 = bm25
        self.positions = {item: i for i, item in enumerate(ids)}

    def search(self, terms: list[str], k: int, allowed: set[str] | None) -> list[tuple[str, float]]:
        if not self.ids or k <= 0:
            return []
        known = [t for t in terms if t and t in self.bm25.vocab_dict]
        if not known:  # no query term occurs in this collection: nothing can match
            return []
        mask = None
        if allowed is not None:
            mask = np.zeros(len(self.ids), dtype=np.float32)
            for item in allowed:
                position = self.positions.get(item)
                if position is not None:
                    mask[position] = 1.0
            if not mask.any():
                return []
        # What `BM25.retrieve` does for one query (scores, then numpy's sorted top k), without the thread pool
        # and progress bar it sets up on every call: ~3.5 ms of a ~4 ms search at 10k chunks.
        from bm25s.selection import topk

        scores, positions = topk(
            self.bm25.get_scores(known, weight_mask=mask), min(k, len(self.ids)), backend="numpy", sorted=True
        )
        return [(self.ids[int(i)], float(s)) for i, s in zip(positions, scores, strict=True) if s > 0]


class LexicalIndex:
    """BM25 over one collection, at two grains: chunks, and evidence units — whole documents, or their pages
    and sections (`LexicalConfig.unit`) — each unit's chunks joined.

    Unit-level BM25 sees a unit's full term statistics, which a chunk cut in the middle of an abstract does
    not; the hybrid retriever uses both. `unit_of` maps every chunk id to its unit.
    """

    def __init__(
        self, chunks: _BM25, documents: _BM25, config: LexicalConfig, generation: str, unit_of: dict[str, str]
    ) -> None:
        self.chunks = chunks
        self.documents = documents
        self.config = config
        self.generation = generation
        self.unit_of = unit_of

    @classmethod
    def build(
        cls,
        chunks: Iterable[tuple[str, str]],
        config: LexicalConfig,
        generation: str,
        documents: Iterable[tuple[str, str]] = (),
        unit_of: dict[str, str] | None = None,
    ) -> LexicalIndex:
        pairs = list(chunks)
        units = unit_of if unit_of is not None else {chunk_id: chunk_id.split(":", 1)[0] for chunk_id, _ in pairs}
        return cls(_index(pairs, config), _index(list(documents), config), config, generation, units)

    def terms(self, query: str) -> list[str]:
        return analyze([query], self.config)[0]

    def search(self, query: str, k: int, allowed: set[str] | None = None) -> list[tuple[str, float]]:
        """(chunk id, score), best first; `allowed` restricts the chunks that may match."""
        return self.chunks.search(self.terms(query), k, allowed)

    def search_documents(self, query: str, k: int, allowed: set[str] | None = None) -> list[tuple[str, float]]:
        """(unit, score), best first, over whole documents or their sections (`config.unit`)."""
        return self.documents.search(self.terms(query), k, allowed)

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True)
        for grain, part in (("chunks", self.chunks), ("documents", self.documents)):
            if part.ids:
                part.bm25.save(str(folder / grain))
        meta = {
            "generation": self.generation,
            "config": self.config.fingerprint(),
            "chunks": self.chunks.ids,
            "documents": self.documents.ids,
            "units": [self.unit_of[chunk_id] for chunk_id in self.chunks.ids],
        }
        (folder / "ragkb.json").write_text(json.dumps(meta))

    @classmethod
    def load(cls, folder: Path, config: LexicalConfig) -> LexicalIndex | None:
        """The index saved in `folder`, or None when it is missing, partial or built with another config."""
        import bm25s

        try:
            meta = json.loads((folder / "ragkb.json").read_text())
            if meta["config"] != config.fingerprint():
                return None
            parts = {
                grain: _BM25(list(meta[grain]), bm25s.BM25.load(str(folder / grain)) if meta[grain] else None)
                for grain in ("chunks", "documents")
            }
            unit_of = dict(zip(meta["chunks"], meta["units"], strict=True))
        except (OSError, ValueError, KeyError):
            return None
        return cls(parts["chunks"], parts["documents"], config, str(meta["generation"]), unit_of)


def _index(pairs: list[tuple[str, str]], config: LexicalConfig) -> _BM25:
    import bm25s

    bm25 = bm25s.BM25(k1=config.k1, b=config.b)
    if pairs:
        bm25.index(analyze([text for _, text in pairs], config), show_progress=False)
    return _BM25([item for item, _ in pairs], bm25)


def document_text(chunks: list[StoredChunk], config: LexicalConfig) -> str:
    """A document's text rebuilt from its chunks' offsets, each overlap counted once."""
    ordered = sorted(chunks, key=lambda c: c.provenance().start)
    pieces, covered = [], 0
    for chunk in ordered:
        where = chunk.provenance()
        if where.end <= covered:
            continue
        pieces.append(chunk.text[max(0, covered - where.start) :])
        covered = where.end
    joined = StoredChunk(ordered[0].chunk_id, " ".join(pieces), ordered[0].metadata)
    return indexed_text(joined, config)


class _Published:
    """A collection's builds on disk: `<root>/<name>/<build>/` folders and a `CURRENT` pointer."""

    def __init__(self, root: Path, name: str) -> None:
        self.folder = root / name
        self.lock = FileLock(str(root / f"{name}.lock"), timeout=REBUILD_LOCK_TIMEOUT)

    def current(self, config: LexicalConfig) -> LexicalIndex | None:
        try:
            build = (self.folder / "CURRENT").read_text().strip()
        except OSError:
            return None
        return LexicalIndex.load(self.folder / build, config) if build else None

    def publish(self, index: LexicalIndex) -> None:
        """Write a new build beside the others, point CURRENT at it, then drop all but it and the last."""
        self.folder.mkdir(parents=True, exist_ok=True)
        build = f"{time.time_ns()}-{uuid.uuid4().hex[:8]}"
        staging = self.folder / f".staging-{build}"
        index.save(staging)
        staging.rename(self.folder / build)  # a fresh name: the rename is atomic and never collides
        pointer = self.folder / f".CURRENT-{build}"
        pointer.write_text(build)
        previous = (self.folder / "CURRENT").read_text().strip() if (self.folder / "CURRENT").exists() else ""
        os.replace(pointer, self.folder / "CURRENT")
        for entry in self.folder.iterdir():
            if entry.is_dir() and entry.name not in (build, previous):
                shutil.rmtree(entry, ignore_errors=True)  # a reader still on `previous` is left alone


class LexicalIndexes:
    """One fresh lexical index per collection: loaded from disk, or rebuilt when stale or missing."""

    def __init__(self, store: VectorStore, root: Path, config: LexicalConfig | None = None) -> None:
        self.store = store
        self.root = root
        self.config = config or DEFAULT_CONFIG
        self._loaded: dict[str, LexicalIndex] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def _lock(self, name: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(name, threading.Lock())

    def get(self, collection: Collection) -> LexicalIndex:
        name = collection.name
        generation = self.store.generation(name)
        index = self._loaded.get(name)
        if index is not None and index.generation == generation:
            return index
        with self._lock(name):
            index = self._loaded.get(name)
            if index is None or index.generation != generation:
                index = self._fresh(collection, generation)
                self._loaded[name] = index
            return index

    def _fresh(self, collection: Collection, generation: str) -> LexicalIndex:
        self.root.mkdir(parents=True, exist_ok=True)
        published = _Published(self.root, collection.name)
        index = published.current(self.config)
        if index is not None and index.generation == generation:
            return index
        try:
            published.lock.acquire()  # one process rebuilds; the others wait here, then load its build
        except Timeout:
            raise IndexBusy(
                f"the BM25 index of {collection.name!r} is being rebuilt by another process for over "
                f"{REBUILD_LOCK_TIMEOUT:.0f} s; try again shortly"
            ) from None
        try:
            index = published.current(self.config)
            if index is not None and index.generation == generation:
                return index
            index = self.rebuild(collection, generation)
            published.publish(index)
            return index
        finally:
            published.lock.release()

    def rebuild(self, collection: Collection, generation: str) -> LexicalIndex:
        """Build from the stored chunks, labelled with the generation read *before* reading them, so a
        write that lands meanwhile makes the build look stale (and rebuilt) rather than fresh."""
        started = time.perf_counter()
        log.info("building lexical index", extra={"collection": collection.name})
        pairs: list[tuple[str, str]] = []
        by_unit: dict[str, list[StoredChunk]] = {}
        unit_of: dict[str, str] = {}
        for page in self.store.iter_chunks(collection):
            for chunk in page:
                pairs.append((chunk.chunk_id, indexed_text(chunk, self.config)))
                unit = unit_of[chunk.chunk_id] = chunk.unit(self.config.unit)
                by_unit.setdefault(unit, []).append(chunk)
            log.info("lexical index progress", extra={"collection": collection.name, "done": len(pairs)})
        documents = [(unit, document_text(chunks, self.config)) for unit, chunks in by_unit.items()]
        index = LexicalIndex.build(pairs, self.config, generation, documents, unit_of)
        log.info(
            "lexical index ready",
            extra={
                "collection": collection.name,
                "chunks": len(pairs),
                "seconds": round(time.perf_counter() - started, 2),
            },
        )
        return index
