"""The lexical (BM25) index of a collection, built with bm25s from the chunks stored in Chroma.

Chroma stays the source of truth. Every write or delete bumps the collection's
generation (see `ChunkStore.bump_generation`); a lexical index remembers the
generation it was built from, and one that is missing or stale is rebuilt from
the stored chunks on first use, in any process, so a deleted document can never
come back from the lexical side and a server never needs a restart to see a
change. (Chroma's own sparse/BM25 index exists only in its hosted and
distributed editions; this class sits behind the same retriever protocol so one
can replace it.)
"""

from __future__ import annotations

import json
import logging
import shutil
import threading
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .store import ChunkStore

log = logging.getLogger("ragkb.lexical")

PAGE = 5000


@dataclass(frozen=True, slots=True)
class LexicalConfig:
    """How text becomes BM25 terms. Changing any field rebuilds the index."""

    k1: float = 1.5
    b: float = 0.75
    stemmer: str | None = "english"  # a PyStemmer language, or None
    stopwords: str | None = "en"
    token_pattern: str = r"(?u)\b\w\w+\b"
    include_title: bool = True  # index "title + chunk text", so every chunk of a document matches its title

    def fingerprint(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


def indexed_text(text: str, metadata: dict[str, Any], config: LexicalConfig) -> str:
    title = str(metadata.get("title") or "")
    if config.include_title and title and not text.startswith(title):
        return f"{title}\n{text}"
    return text


class _BM25:
    """One bm25s index over a list of ids (chunks or documents)."""

    def __init__(self, ids: list[str], bm25: Any) -> None:
        self.ids = ids
        self.bm25 = bm25
        self.positions = {item: i for i, item in enumerate(ids)}

    def search(self, tokens: Any, k: int, allowed: set[str] | None) -> list[tuple[str, float]]:
        if not self.ids or k <= 0:
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
        try:
            results, scores = self.bm25.retrieve(
                tokens, k=min(k, len(self.ids)), show_progress=False, weight_mask=mask, n_threads=1
            )
        except (ValueError, KeyError):  # every query term unknown to the vocabulary
            return []
        return [(self.ids[int(i)], float(s)) for i, s in zip(results[0], scores[0], strict=True) if s > 0]


class LexicalIndex:
    """BM25 over one collection, at two grains: chunks, and whole documents (their chunks joined).

    Document-level BM25 sees a document's full term statistics, which a chunk cut in the middle of
    an abstract does not; the hybrid retriever uses both.
    """

    def __init__(self, chunks: _BM25, documents: _BM25, config: LexicalConfig, generation: str) -> None:
        self.chunks = chunks
        self.documents = documents
        self.config = config
        self.generation = generation

    def _stemmer(self) -> Any:
        if not self.config.stemmer:
            return None
        import Stemmer

        return Stemmer.Stemmer(self.config.stemmer)

    def _tokenize(self, texts: list[str]) -> Any:
        import bm25s

        return bm25s.tokenize(
            texts,
            stopwords=self.config.stopwords or [],
            stemmer=self._stemmer(),
            token_pattern=self.config.token_pattern,
            return_ids=False,
            show_progress=False,
        )

    @classmethod
    def build(
        cls,
        chunks: Iterable[tuple[str, str]],
        config: LexicalConfig,
        generation: str,
        documents: Iterable[tuple[str, str]] = (),
    ) -> LexicalIndex:
        index = cls(_BM25([], None), _BM25([], None), config, generation)
        index.chunks = index._index(list(chunks))
        index.documents = index._index(list(documents))
        return index

    def _index(self, pairs: list[tuple[str, str]]) -> _BM25:
        import bm25s

        bm25 = bm25s.BM25(k1=self.config.k1, b=self.config.b)
        if pairs:
            bm25.index(self._tokenize([text for _, text in pairs]), show_progress=False)
        return _BM25([item for item, _ in pairs], bm25)

    def _query_tokens(self, query: str) -> Any:
        tokens = self._tokenize([query])
        return tokens if tokens and tokens[0] else None

    def search(self, query: str, k: int, allowed: set[str] | None = None) -> list[tuple[str, float]]:
        """(chunk id, score), best first; `allowed` restricts the chunks that may match."""
        tokens = self._query_tokens(query)
        return self.chunks.search(tokens, k, allowed) if tokens is not None else []

    def search_documents(self, query: str, k: int, allowed: set[str] | None = None) -> list[tuple[str, float]]:
        """(document id, score), best first, over whole documents."""
        tokens = self._query_tokens(query)
        return self.documents.search(tokens, k, allowed) if tokens is not None else []

    def save(self, folder: Path) -> None:
        tmp = folder.with_name(folder.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        for grain, part in (("chunks", self.chunks), ("documents", self.documents)):
            if part.ids:
                part.bm25.save(str(tmp / grain))
        meta = {
            "generation": self.generation,
            "config": self.config.fingerprint(),
            "chunks": self.chunks.ids,
            "documents": self.documents.ids,
        }
        (tmp / "ragkb.json").write_text(json.dumps(meta))
        shutil.rmtree(folder, ignore_errors=True)
        tmp.rename(folder)  # readers see the old index or the new one, never half of one

    @classmethod
    def load(cls, folder: Path, config: LexicalConfig) -> LexicalIndex | None:
        import bm25s

        try:
            meta = json.loads((folder / "ragkb.json").read_text())
            if meta["config"] != config.fingerprint():
                return None
            parts = {
                grain: _BM25(list(meta[grain]), bm25s.BM25.load(str(folder / grain)) if meta[grain] else None)
                for grain in ("chunks", "documents")
            }
        except (OSError, ValueError, KeyError):
            return None
        return cls(parts["chunks"], parts["documents"], config, str(meta["generation"]))


class LexicalIndexes:
    """One fresh lexical index per collection: loaded from disk, or rebuilt when stale or missing."""

    def __init__(self, store: ChunkStore, root: Path, config: LexicalConfig | None = None) -> None:
        self.store = store
        self.root = root
        self.config = config or LexicalConfig()
        self._loaded: dict[str, LexicalIndex] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def _lock(self, name: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(name, threading.Lock())

    def get(self, name: str, collection: Any) -> LexicalIndex:
        generation = self.store.generation(name)
        index = self._loaded.get(name)
        if index is not None and index.generation == generation:
            return index
        with self._lock(name):
            index = self._loaded.get(name)
            if index is not None and index.generation == generation:
                return index
            folder = self.root / name
            index = LexicalIndex.load(folder, self.config)
            if index is None or index.generation != generation:
                index = self.rebuild(name, collection, generation)
                index.save(folder)
            self._loaded[name] = index
            return index

    def _document_text(self, parts: list[tuple[int, int, str, dict[str, Any]]]) -> str:
        """A document's text rebuilt from its chunks' offsets, each overlap counted once."""
        parts.sort(key=lambda part: part[0])
        pieces, covered = [], 0
        for start, end, text, _ in parts:
            if end <= covered:
                continue
            pieces.append(text[max(0, covered - start) :])
            covered = end
        return indexed_text(" ".join(pieces), parts[0][3], self.config)

    def rebuild(self, name: str, collection: Any, generation: str) -> LexicalIndex:
        started = time.perf_counter()
        total = collection.count()
        log.info("building lexical index", extra={"collection": name, "chunks": total})
        pairs: list[tuple[str, str]] = []
        spans: dict[str, list[tuple[int, int, str, dict[str, Any]]]] = {}
        for offset in range(0, total, PAGE):
            page = collection.get(include=["documents", "metadatas"], limit=PAGE, offset=offset)
            for chunk_id, text, meta in zip(page["ids"], page["documents"], page["metadatas"], strict=True):
                meta = dict(meta or {})
                pairs.append((chunk_id, indexed_text(text or "", meta, self.config)))
                spans.setdefault(str(meta.get("document_id")), []).append(
                    (int(meta.get("start", 0)), int(meta.get("end", 0)), text or "", meta)
                )
            log.info("lexical index progress", extra={"collection": name, "done": len(pairs), "chunks": total})
        documents = [(doc_id, self._document_text(parts)) for doc_id, parts in spans.items()]
        index = LexicalIndex.build(pairs, self.config, generation, documents)
        log.info(
            "lexical index ready",
            extra={"collection": name, "chunks": len(pairs), "seconds": round(time.perf_counter() - started, 2)},
        )
        return index
