"""The read side: what answering a question needs, built once per process and passed in explicitly.

A `Reader` owns the vector store, the embedder and the lexical (BM25) indexes.
Retrievers, the query service and the eval harness receive it in their
constructors; none of them builds its own, and none of them reaches the write
side (`ingest.pipeline.Ingestor`), which ingestion keeps for itself.
"""

from __future__ import annotations

from collections.abc import Sequence

from ingest.config import Settings, get_settings
from ingest.embedder import Embedder, get_embedder
from ingest.models import DocumentInfo
from ingest.store import open_store
from ingest.vectorstore import Collection, CollectionSummary, StoredChunk, VectorStore

from .lexical import LexicalConfig, LexicalIndex, LexicalIndexes


class Reader:
    """Read-only access to the knowledge base: collections, chunks, vectors and BM25."""

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        store: VectorStore | None = None,
        embedder: Embedder | None = None,
        lexical: LexicalIndexes | None = None,
    ) -> None:
        self.settings = settings or get_settings()
        self.embedder = embedder or get_embedder(settings=self.settings)
        self.store = store or open_store(self.settings)
        config = LexicalConfig(unit=self.settings.hybrid_unit)
        self.lexical_indexes = lexical or LexicalIndexes(self.store, self.settings.data_dir / "lexical", config)

    def collection(self, name: str) -> Collection:
        """An existing collection, checked against this process's embedding model."""
        return self.store.open(name, model=self.embedder.identity, dimension=self.embedder.dimension, create=False)

    def collections(self) -> list[CollectionSummary]:
        return self.store.collections()

    def documents(self, name: str) -> list[DocumentInfo]:
        return self.store.documents(self.collection(name))

    def generation(self, name: str) -> str:
        return self.store.generation(name)

    def cached_generation(self, name: str) -> str | None:
        return self.store.cached_generation(name)

    def lexical(self, collection: Collection) -> LexicalIndex:
        return self.lexical_indexes.get(collection)

    def chunks(self, collection: Collection, scored: Sequence[tuple[str, float]]) -> list[StoredChunk]:
        """The chunks behind (id, score) pairs, in that order; ids the store no longer has are dropped, so
        nothing deleted is ever returned whatever an index remembers."""
        if not scored:
            return []
        stored = {c.chunk_id: c for c in self.store.chunks(collection, [chunk_id for chunk_id, _ in scored])}
        return [stored[chunk_id].with_score(score) for chunk_id, score in scored if chunk_id in stored]

    def count_tokens(self, texts: list[str]) -> list[int]:
        """Length of each text in the embedder's tokens (the unit of RAGKB_CONTEXT_TOKENS)."""
        encoded = self.embedder.tokenizer(texts, add_special_tokens=False)["input_ids"]
        return [len(ids) for ids in encoded]
