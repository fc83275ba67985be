"""Retrieval strategies behind one small protocol, registered by name: `dense`, `bm25`, `hybrid`.

The server, the CLI and the eval harness all retrieve through `get_retriever`,
so what the eval harness scores is exactly what users get.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import numpy as np

from ingest.errors import RagkbError
from ingest.pipeline import Ingestor
from ingest.store import StoredChunk


class UnknownRetriever(RagkbError):
    pass


@dataclass(frozen=True, slots=True)
class Filters:
    """Metadata filters: document ids, a glob on the source, and equality on any stored field."""

    document_ids: list[str] = field(default_factory=list)
    source_glob: str | None = None
    where: dict[str, Any] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        return not (self.document_ids or self.source_glob or self.where)

    def chroma_where(self) -> dict[str, Any] | None:
        clauses: list[dict[str, Any]] = [{key: value} for key, value in self.where.items()]
        if self.document_ids:
            clauses.append({"document_id": {"$in": list(self.document_ids)}})
        if not clauses:
            return None
        return clauses[0] if len(clauses) == 1 else {"$and": clauses}

    def accepts(self, chunk: StoredChunk) -> bool:
        """Checks what Chroma cannot: the source glob."""
        return self.source_glob is None or fnmatch.fnmatch(str(chunk.metadata.get("source", "")), self.source_glob)


class Retriever(Protocol):
    """Finds the chunks of a collection most relevant to a question, best first."""

    name: str

    def retrieve(
        self, question: str, *, collection: str, top_k: int, filters: Filters | None = None
    ) -> list[StoredChunk]: ...


def hydrate(ingestor: Ingestor, collection: str, scored: list[tuple[str, float]]) -> list[StoredChunk]:
    """The chunks behind (id, score) pairs, in that order, read from Chroma; ids it no longer has are
    dropped, so nothing deleted is ever returned whatever an index remembers."""
    if not scored:
        return []
    target = ingestor.open_collection(collection, create=False)
    stored = {c.chunk_id: c for c in ingestor.store.chunks(target, [chunk_id for chunk_id, _ in scored])}
    return [
        StoredChunk(chunk_id, stored[chunk_id].text, stored[chunk_id].metadata, score=score)
        for chunk_id, score in scored
        if chunk_id in stored
    ]


class DenseRetriever:
    """Cosine nearest neighbours of the question embedding, from Chroma's HNSW index."""

    name = "dense"

    def __init__(self, ingestor: Ingestor) -> None:
        self.ingestor = ingestor

    def retrieve(
        self, question: str, *, collection: str, top_k: int, filters: Filters | None = None, with_text: bool = True
    ) -> list[StoredChunk]:
        """Best chunks first; `with_text=False` leaves the text out (a fusion that keeps few of them)."""
        filters = filters or Filters()
        target = self.ingestor.open_collection(collection, create=False)
        vector = self.ingestor.embedder.embed_query(question)
        # a source glob is applied after the search, so ask for more to still return top_k
        fetch = top_k if filters.source_glob is None else max(top_k * 10, 100)
        hits = self.ingestor.store.query(target, vector, k=fetch, where=filters.chroma_where(), with_text=with_text)
        return [hit for hit in hits if filters.accepts(hit)][:top_k]


class BM25Retriever:
    """BM25 (bm25s, English stemming and stop words) over the collection's lexical index."""

    name = "bm25"

    def __init__(self, ingestor: Ingestor) -> None:
        self.ingestor = ingestor

    def _allowed(self, target: Any, filters: Filters) -> set[str] | None:
        if filters.empty:
            return None
        found = target.get(where=filters.chroma_where(), include=["metadatas"])
        return {
            chunk_id
            for chunk_id, meta in zip(found["ids"], found["metadatas"], strict=True)
            if filters.accepts(StoredChunk(chunk_id, "", dict(meta or {})))
        }

    def search(
        self, question: str, *, collection: str, k: int, filters: Filters | None = None
    ) -> list[tuple[str, float]]:
        """(chunk id, BM25 score) pairs, best first, without fetching the chunks."""
        return self.search_both(question, collection=collection, k=k, filters=filters, documents=False)[0]

    def search_both(
        self, question: str, *, collection: str, k: int, filters: Filters | None = None, documents: bool = True
    ) -> tuple[list[tuple[str, float]], list[tuple[str, float]]]:
        """Chunk hits and (with `documents`) whole-document hits as (document id, score), from one index read."""
        target = self.ingestor.open_collection(collection, create=False)
        index = self.ingestor.lexical.get(collection, target)
        allowed = self._allowed(target, filters or Filters())
        chunk_hits = index.search(question, k, allowed)
        if not documents:
            return chunk_hits, []
        allowed_documents = None if allowed is None else {document_of(i) for i in allowed}
        return chunk_hits, index.search_documents(question, k, allowed_documents)

    def retrieve(
        self, question: str, *, collection: str, top_k: int, filters: Filters | None = None
    ) -> list[StoredChunk]:
        return hydrate(
            self.ingestor, collection, self.search(question, collection=collection, k=top_k, filters=filters)
        )


Fusion = Literal["weighted", "rrf", "document-aware"]


def document_of(chunk_id: str) -> str:
    """Chunk ids are `<document id>:<version>:<index>` (see ingest.store)."""
    return chunk_id.split(":", 1)[0]


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


class HybridRetriever:
    """Dense and BM25 candidates fused into one ranking.

    - `rrf`: reciprocal rank fusion of the two chunk rankings.
    - `weighted`: z-scored dense and BM25 chunk scores, summed with `hybrid_dense_weight`.
    - `document-aware` (the default, best measured): the `weighted` chunk score, mixed with the same
      fusion done for whole documents (dense: a document's best chunk; BM25: the whole-document index),
      weighted by `hybrid_doc_weight`. A chunk of a document that matches as a whole ranks higher.
    """

    def __init__(self, ingestor: Ingestor, fusion: Fusion = "document-aware", name: str = "hybrid") -> None:
        settings = ingestor.settings
        self.name = name
        self.ingestor = ingestor
        self.fusion: Fusion = fusion
        self.dense = DenseRetriever(ingestor)
        self.lexical = BM25Retriever(ingestor)
        self.dense_weight = settings.hybrid_dense_weight
        self.doc_weight = settings.hybrid_doc_weight
        self.rrf_k = settings.hybrid_rrf_k
        self.candidates = settings.hybrid_candidates

    def _fuse(
        self, question: str, collection: str, pool: int, filters: Filters | None, dense: list[tuple[str, float]]
    ) -> dict[str, float]:
        lexical, lexical_documents = self.lexical.search_both(
            question, collection=collection, k=pool, filters=filters, documents=self.fusion == "document-aware"
        )
        if self.fusion == "rrf":
            return fuse_rrf([dense, lexical], self.rrf_k)
        chunks = fuse_weighted(dense, lexical, self.dense_weight)
        if self.fusion == "weighted":
            return chunks
        best_dense: dict[str, float] = {}
        for chunk_id, score in dense:
            best_dense.setdefault(document_of(chunk_id), score)  # dense is sorted: the first is the best
        documents = fuse_weighted(list(best_dense.items()), lexical_documents, self.dense_weight)
        floor = min(documents.values(), default=0.0)
        return {
            chunk_id: self.doc_weight * documents.get(document_of(chunk_id), floor) + (1 - self.doc_weight) * score
            for chunk_id, score in chunks.items()
        }

    def retrieve(
        self, question: str, *, collection: str, top_k: int, filters: Filters | None = None
    ) -> list[StoredChunk]:
        pool = max(top_k, self.candidates)
        dense = self.dense.retrieve(question, collection=collection, top_k=pool, filters=filters, with_text=False)
        fused = self._fuse(question, collection, pool, filters, [(c.chunk_id, c.score) for c in dense])
        ranked = sorted(fused.items(), key=lambda item: (-item[1], item[0]))[:top_k]
        return hydrate(self.ingestor, collection, [(chunk_id, round(score, 6)) for chunk_id, score in ranked])


RetrieverFactory = Callable[[Ingestor], Retriever]

RETRIEVERS: dict[str, RetrieverFactory] = {
    "dense": DenseRetriever,
    "bm25": BM25Retriever,
    "hybrid": HybridRetriever,
    "hybrid-weighted": lambda ingestor: HybridRetriever(ingestor, "weighted", "hybrid-weighted"),
    "hybrid-rrf": lambda ingestor: HybridRetriever(ingestor, "rrf", "hybrid-rrf"),
}


def retriever_names() -> list[str]:
    return sorted(RETRIEVERS)


def get_retriever(name: str, ingestor: Ingestor) -> Retriever:
    try:
        factory = RETRIEVERS[name]
    except KeyError:
        raise UnknownRetriever(f"unknown retriever {name!r}; choose one of: {', '.join(retriever_names())}") from None
    return factory(ingestor)
