"""Retrieval strategies behind one small protocol, registered by name: `dense`, `bm25`, `hybrid`.

The server, the CLI and the eval harness all retrieve through `get_retriever`,
so what the eval harness scores is exactly what users get. Every retriever is
given the process's `Reader` (store, embedder, BM25 indexes) when it is built.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from enum import StrEnum
from typing import Protocol

import numpy as np

from ingest.errors import RagkbError
from ingest.vectorstore import Filters, StoredChunk, document_of

from .reader import Reader

__all__ = [
    "RETRIEVERS",
    "BM25Retriever",
    "DenseRetriever",
    "Filters",
    "Fusion",
    "HybridRetriever",
    "Retriever",
    "UnknownRetriever",
    "fuse_rrf",
    "fuse_weighted",
    "get_retriever",
    "retriever_names",
]


class UnknownRetriever(RagkbError):
    pass


# `hybrid` runs its BM25 side here while the request's own thread embeds the question and queries the
# vector index: both spend most of their time in native code (ONNX Runtime or torch, Chroma, NumPy) that
# releases the GIL, so on two cores the slower side sets the latency instead of the sum of both.
_LEXICAL_SIDE = ThreadPoolExecutor(max_workers=8, thread_name_prefix="ragkb-bm25")


class Retriever(Protocol):
    """Finds the chunks of a collection most relevant to a question, best first."""

    name: str

    def retrieve(
        self, question: str, *, collection: str, top_k: int, filters: Filters | None = None
    ) -> list[StoredChunk]: ...


class DenseRetriever:
    """Cosine nearest neighbours of the question embedding, from the vector store's index."""

    name = "dense"

    def __init__(self, reader: Reader) -> None:
        self.reader = reader

    def retrieve(
        self, question: str, *, collection: str, top_k: int, filters: Filters | None = None
    ) -> list[StoredChunk]:
        target = self.reader.collection(collection)
        vector = self.reader.embedder.embed_query(question)
        return self.reader.store.query(target, vector, k=top_k, filters=filters, with_text=True)

    def search(
        self, question: str, *, collection: str, k: int, filters: Filters | None = None
    ) -> list[tuple[str, float]]:
        """(chunk id, cosine) pairs, best first, without reading the chunks (a fusion keeps few of them)."""
        target = self.reader.collection(collection)
        return self.reader.store.nearest(target, self.reader.embedder.embed_query(question), k=k, filters=filters)


class BM25Retriever:
    """BM25 (bm25s, English stemming and stop words) over the collection's lexical index."""

    name = "bm25"

    def __init__(self, reader: Reader) -> None:
        self.reader = reader

    def search_both(
        self, question: str, *, collection: str, k: int, filters: Filters | None = None, documents: bool = True
    ) -> tuple[list[tuple[str, float]], list[tuple[str, float]], dict[str, str]]:
        """Chunk hits, (with `documents`) evidence-unit hits as (unit, score), and each chunk's unit, from one
        index read. Units are whole documents or their sections (`RAGKB_HYBRID_UNIT`)."""
        target = self.reader.collection(collection)
        index = self.reader.lexical(target)
        allowed = None if filters is None or filters.empty else self.reader.store.matching_ids(target, filters)
        chunk_hits = index.search(question, k, allowed)
        if not documents:
            return chunk_hits, [], index.unit_of
        allowed_units = None if allowed is None else {index.unit_of.get(i, document_of(i)) for i in allowed}
        return chunk_hits, index.search_documents(question, k, allowed_units), index.unit_of

    def search(
        self, question: str, *, collection: str, k: int, filters: Filters | None = None
    ) -> list[tuple[str, float]]:
        """(chunk id, BM25 score) pairs, best first, without fetching the chunks."""
        return self.search_both(question, collection=collection, k=k, filters=filters, documents=False)[0]

    def retrieve(
        self, question: str, *, collection: str, top_k: int, filters: Filters | None = None
    ) -> list[StoredChunk]:
        scored = self.search(question, collection=collection, k=top_k, filters=filters)
        return self.reader.chunks(self.reader.collection(collection), scored)


class Fusion(StrEnum):
    """How `HybridRetriever` combines the dense and BM25 rankings (one function per mode below)."""

    WEIGHTED = "weighted"
    RRF = "rrf"
    DOCUMENT_AWARE = "document-aware"


def _zscores(scores: list[float]) -> list[float]:
    if len(scores) < 2:
        return [1.0 for _ in scores]
    values = np.asarray(scores, dtype=np.float64)
    spread = float(values.std())
    if spread == 0:
        return [0.0 for _ in scores]
    return [float(z) for z in (values - values.mean()) / spread]


def fuse_weighted(
    dense: list[tuple[str, float]], lexical: list[tuple[str, float]], dense_weight: float
) -> dict[str, float]:
    """Z-score each list, then a weighted sum; a chunk missing from one list gets that list's lowest score."""
    dense_z = dict(zip([i for i, _ in dense], _zscores([s for _, s in dense]), strict=True))
    lexical_z = dict(zip([i for i, _ in lexical], _zscores([s for _, s in lexical]), strict=True))
    dense_floor = min(dense_z.values(), default=0.0)
    lexical_floor = min(lexical_z.values(), default=0.0)
    return {
        chunk_id: dense_weight * dense_z.get(chunk_id, dense_floor)
        + (1 - dense_weight) * lexical_z.get(chunk_id, lexical_floor)
        for chunk_id in dense_z.keys() | lexical_z.keys()
    }


def fuse_rrf(rankings: list[list[tuple[str, float]]], k: int) -> dict[str, float]:
    """Reciprocal rank fusion: each list adds 1 / (k + rank) to a chunk (rank from 1)."""
    fused: dict[str, float] = {}
    for ranking in rankings:
        for rank, (chunk_id, _) in enumerate(ranking, start=1):
            fused[chunk_id] = fused.get(chunk_id, 0.0) + 1.0 / (k + rank)
    return fused


def fuse_document_aware(
    dense: list[tuple[str, float]],
    lexical: list[tuple[str, float]],
    lexical_units: list[tuple[str, float]],
    unit_of: Callable[[str], str],
    dense_weight: float,
    document_weight: float,
) -> dict[str, float]:
    """The weighted chunk score mixed with the same fusion over evidence units (dense: a unit's best chunk;
    BM25: the unit-level index), so a chunk of a document or page that matches as a whole ranks higher."""
    chunks = fuse_weighted(dense, lexical, dense_weight)
    best_dense: dict[str, float] = {}
    for chunk_id, score in dense:
        best_dense.setdefault(unit_of(chunk_id), score)  # dense is sorted: the first is the best
    units = fuse_weighted(list(best_dense.items()), lexical_units, dense_weight)
    floor = min(units.values(), default=0.0)
    return {
        chunk_id: document_weight * units.get(unit_of(chunk_id), floor) + (1 - document_weight) * score
        for chunk_id, score in chunks.items()
    }


class HybridRetriever:
    """Dense and BM25 candidates fused into one ranking; see `Fusion` for the modes."""

    def __init__(self, reader: Reader, fusion: Fusion = Fusion.DOCUMENT_AWARE, name: str = "hybrid") -> None:
        settings = reader.settings
        self.name = name
        self.reader = reader
        self.fusion = fusion
        self.dense = DenseRetriever(reader)
        self.lexical = BM25Retriever(reader)
        self.dense_weight = settings.hybrid_dense_weight
        self.doc_weight = settings.hybrid_doc_weight
        self.rrf_k = settings.hybrid_rrf_k
        self.candidates = settings.hybrid_candidates

    def _fuse(
        self,
        dense: list[tuple[str, float]],
        lexical: list[tuple[str, float]],
        lexical_units: list[tuple[str, float]],
        unit_of: dict[str, str],
    ) -> dict[str, float]:
        """`unit_of` is the lexical index's map of every chunk to its unit (computed by `StoredChunk.unit`
        with the same grain when the index was built), so the dense candidates need no metadata; a chunk
        newer than the index counts as its own document's."""
        if self.fusion is Fusion.RRF:
            return fuse_rrf([dense, lexical], self.rrf_k)
        if self.fusion is Fusion.WEIGHTED:
            return fuse_weighted(dense, lexical, self.dense_weight)

        def unit(chunk_id: str) -> str:
            return unit_of.get(chunk_id) or document_of(chunk_id)

        return fuse_document_aware(dense, lexical, lexical_units, unit, self.dense_weight, self.doc_weight)

    def retrieve(
        self, question: str, *, collection: str, top_k: int, filters: Filters | None = None
    ) -> list[StoredChunk]:
        pool = max(top_k, self.candidates)
        target = self.reader.collection(collection)  # unknown collection or model mismatch: refused before any work
        # the BM25 side in another thread (with this request's context: its logs keep the request id)
        lexical_side = _LEXICAL_SIDE.submit(
            contextvars.copy_context().run,
            self.lexical.search_both,
            question,
            collection=collection,
            k=pool,
            filters=filters,
            documents=self.fusion is Fusion.DOCUMENT_AWARE,
        )
        try:
            # candidates as ids and scores: only the fused top_k are read from the store, once, below
            dense = self.dense.search(question, collection=collection, k=pool, filters=filters)
        finally:
            # waited for even when the dense side fails, so no search outlives its request
            lexical, lexical_units, unit_of = lexical_side.result()
        fused = self._fuse(dense, lexical, lexical_units, unit_of)
        ranked = sorted(fused.items(), key=lambda item: (-item[1], item[0]))[:top_k]
        return self.reader.chunks(target, [(chunk_id, round(score, 6)) for chunk_id, score in ranked])


RetrieverFactory = Callable[[Reader], Retriever]

RETRIEVERS: dict[str, RetrieverFactory] = {
    "dense": DenseRetriever,
    "bm25": BM25Retriever,
    "hybrid": HybridRetriever,
    "hybrid-weighted": lambda reader: HybridRetriever(reader, Fusion.WEIGHTED, "hybrid-weighted"),
    "hybrid-rrf": lambda reader: HybridRetriever(reader, Fusion.RRF, "hybrid-rrf"),
}


def retriever_names() -> list[str]:
    return sorted(RETRIEVERS)


def get_retriever(name: str, reader: Reader) -> Retriever:
    try:
        factory = RETRIEVERS[name]
    except KeyError:
        raise UnknownRetriever(f"unknown retriever {name!r}; choose one of: {', '.join(retriever_names())}") from None
    return factory(reader)
