"""Retrieval strategies behind one small protocol, registered by name.

The server, the CLI and the eval harness all retrieve through `get_retriever`,
so what the eval harness scores is exactly what users get.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

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


class DenseRetriever:
    """Cosine nearest neighbours of the question embedding, from Chroma's HNSW index."""

    name = "dense"

    def __init__(self, ingestor: Ingestor) -> None:
        self.ingestor = ingestor

    def retrieve(
        self, question: str, *, collection: str, top_k: int, filters: Filters | None = None
    ) -> list[StoredChunk]:
        filters = filters or Filters()
        target = self.ingestor.open_collection(collection, create=False)
        vector = self.ingestor.embedder.embed_query(question)
        # a source glob is applied after the search, so ask for more to still return top_k
        fetch = top_k if filters.source_glob is None else max(top_k * 10, 100)
        fetch = min(fetch, max(target.count(), 1))
        hits = self.ingestor.store.query(target, vector, k=fetch, where=filters.chroma_where())
        return [hit for hit in hits if filters.accepts(hit)][:top_k]


RetrieverFactory = Callable[[Ingestor], Retriever]

RETRIEVERS: dict[str, RetrieverFactory] = {"dense": DenseRetriever}


def retriever_names() -> list[str]:
    return sorted(RETRIEVERS)


def get_retriever(name: str, ingestor: Ingestor) -> Retriever:
    try:
        factory = RETRIEVERS[name]
    except KeyError:
        raise UnknownRetriever(f"unknown retriever {name!r}; choose one of: {', '.join(retriever_names())}") from None
    return factory(ingestor)
