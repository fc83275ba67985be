"""BM25 and hybrid retrieval: exact terms, filters on both sides, and a lexical index that stays in step
with Chroma across updates, deletes, other processes and restarts."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from ingest.config import Settings
from ingest.embedder import Embedder
from ingest.pipeline import Ingestor
from server.answering.lexical import IndexBusy, document_text
from server.answering.reader import Reader
from server.answering.retrieval import (
    BM25Retriever,
    Filters,
    HybridRetriever,
    UnknownRetriever,
    fuse_rrf,
    fuse_weighted,
    get_retriever,
    retriever_names,
)

from .helpers import reader_for

DOCS = {
    "pump.md": "# Pump maintenance\n\nReplace the impeller seal on pump model XK-4471-B every 2,000 hours.\n",
    "valves.md": "# Valves\n\nGate valves should be exercised quarterly so they do not seize.\n",
    "drugs.txt": "Metformin lowers hepatic glucose production and is first-line therapy for type 2 diabetes.\n",
    "safety.html": "<html><title>Safety</title><body><h1>Safety</h1><p>Wear gloves when handling "
    "hydraulic fluid; it irritates skin.</p></body></html>",
}


@pytest.fixture
def kb(tmp_path: Path, settings: Settings, embedder: Embedder) -> tuple[Reader, Path]:
    root = tmp_path / "docs"
    root.mkdir()
    for name, text in DOCS.items():
        (root / name).write_text(text)
    ingestor = Ingestor(settings, embedder=embedder)
    assert ingestor.ingest_paths([root], collection="plant").added == len(DOCS)
    return reader_for(ingestor), root


def _sources(chunks: list) -> list[str]:  # type: ignore[type-arg]
    return [Path(c.metadata["source"]).name for c in chunks]


def test_registry_names_and_unknown_names(kb: tuple[Reader, Path]) -> None:
    reader, _ = kb
    assert retriever_names() == ["bm25", "dense", "hybrid", "hybrid-rrf", "hybrid-weighted"]
    with pytest.raises(UnknownRetriever, match="choose one of: bm25, dense, hybrid"):
        get_retriever("sparse", reader)


def test_bm25_finds_exact_part_numbers(kb: tuple[Reader, Path]) -> None:
    reader, _ = kb
    hits = BM25Retriever(reader).retrieve("XK-4471-B", collection="plant", top_k=3)
    assert _sources(hits)[0] == "pump.md"
    assert hits[0].score > 0 and hits[0].text.startswith("# Pump maintenance")
    assert BM25Retriever(reader).retrieve("the of and", collection="plant", top_k=3) == []


@pytest.mark.slow
@pytest.mark.parametrize("name", ["hybrid", "hybrid-rrf", "hybrid-weighted"])
def test_hybrid_ranks_the_right_document_first(kb: tuple[Reader, Path], name: str) -> None:
    reader, _ = kb
    retriever = get_retriever(name, reader)
    assert _sources(retriever.retrieve("pump XK-4471-B seal", collection="plant", top_k=2))[0] == "pump.md"
    assert _sources(retriever.retrieve("medicine for diabetes", collection="plant", top_k=2))[0] == "drugs.txt"
    scores = [c.score for c in retriever.retrieve("valves", collection="plant", top_k=4)]
    assert scores == sorted(scores, reverse=True)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["bm25", "hybrid", "dense"])
def test_filters_apply_on_every_side(kb: tuple[Reader, Path], name: str) -> None:
    reader, _ = kb
    retriever = get_retriever(name, reader)
    only_html = retriever.retrieve(
        "pump seal gloves", collection="plant", top_k=5, filters=Filters(where={"kind": "html"})
    )
    assert _sources(only_html) == ["safety.html"]
    by_glob = retriever.retrieve(
        "pump seal gloves valves", collection="plant", top_k=5, filters=Filters(source_glob="*/valves.md")
    )
    assert _sources(by_glob) == ["valves.md"]
    docs = reader.documents("plant")
    pump = next(d for d in docs if d.source.endswith("pump.md"))
    by_id = retriever.retrieve(
        "seal gloves", collection="plant", top_k=5, filters=Filters(document_ids=[pump.document_id])
    )
    assert _sources(by_id) == ["pump.md"]


@pytest.mark.parametrize(
    "filters", [None, Filters(where={"kind": "markdown"}), Filters(source_glob="*/valves.md")], ids=str
)
@pytest.mark.slow
def test_nearest_gives_the_ids_and_scores_of_a_full_query(kb: tuple[Reader, Path], filters: Filters | None) -> None:
    """The hybrid's dense side reads ids and distances only; it must rank exactly as a query reading it all."""
    reader, _ = kb
    target = reader.collection("plant")
    vector = reader.embedder.embed_query("how often are valves exercised")
    full = reader.store.query(target, vector, k=3, filters=filters, with_text=True)
    assert full, "the query found nothing to compare"
    assert reader.store.nearest(target, vector, k=3, filters=filters) == [(c.chunk_id, c.score) for c in full]


def test_bm25_search_ranks_exactly_as_bm25s_retrieve(kb: tuple[Reader, Path]) -> None:
    """`_BM25.search` scores and selects without bm25s's per-call thread pool; the ranking must not change."""
    reader, _ = kb
    index = reader.lexical(reader.collection("plant"))
    part = index.chunks
    mask = np.zeros(len(part.ids), dtype=np.float32)
    mask[::2] = 1.0
    allowed = {part.ids[i] for i in range(0, len(part.ids), 2)}
    compared = 0
    for question in ("pump seal hours", "gloves hydraulic fluid skin", "valves quarterly seize", "glucose"):
        terms = [t for t in index.terms(question) if t in part.bm25.vocab_dict]
        for weights, subset in ((None, None), (mask, allowed)):
            ids, scores = part.bm25.retrieve([terms], k=3, weight_mask=weights, show_progress=False, n_threads=1)
            expected = [(part.ids[int(i)], float(s)) for i, s in zip(ids[0], scores[0], strict=True) if s > 0]
            assert expected or subset is not None, f"nothing matched {question!r}"
            assert part.search(terms, 3, subset) == expected
            compared += len(expected)
    assert compared >= 6  # the masked searches matched something too


@pytest.mark.slow
def test_deleted_document_never_comes_back_from_the_lexical_side(kb: tuple[Reader, Path]) -> None:
    reader, root = kb
    bm25 = BM25Retriever(reader)
    assert _sources(bm25.retrieve("XK-4471-B", collection="plant", top_k=3)) == ["pump.md"]
    Ingestor(reader.settings, store=reader.store, embedder=reader.embedder).delete(
        "plant", str((root / "pump.md").resolve())
    )
    assert bm25.retrieve("XK-4471-B impeller", collection="plant", top_k=3) == []
    assert "pump.md" not in _sources(get_retriever("hybrid", reader).retrieve("XK-4471-B", collection="plant", top_k=4))


@pytest.mark.slow
def test_changes_by_another_process_are_seen_without_a_restart(
    kb: tuple[Reader, Path], settings: Settings, embedder: Embedder
) -> None:
    server_side, root = kb
    bm25 = BM25Retriever(server_side)
    assert bm25.retrieve("centrifuge", collection="plant", top_k=3) == []  # index built and cached now
    (root / "valves.md").write_text("# Valves\n\nThe centrifuge bypass valve opens at 6 bar.\n")
    cli_side = Ingestor(settings, embedder=embedder)  # another process: its own store client
    report = cli_side.ingest_paths([root], collection="plant")
    assert report.updated == 1
    assert _sources(bm25.retrieve("centrifuge", collection="plant", top_k=3)) == ["valves.md"]
    assert bm25.retrieve("exercised quarterly seize", collection="plant", top_k=3) == []  # old version gone


@pytest.mark.slow
def test_restart_with_a_stale_or_missing_lexical_index_rebuilds_it(
    kb: tuple[Reader, Path], settings: Settings, embedder: Embedder
) -> None:
    reader, root = kb
    BM25Retriever(reader).retrieve("pump", collection="plant", top_k=1)
    folder = settings.data_dir / "lexical" / "plant"
    assert (folder / "CURRENT").exists()
    stale = folder.with_name("plant-stale-copy")
    shutil.copytree(folder, stale)
    (root / "new.md").write_text("# Boiler\n\nThe boiler feedwater pump is the Grundfos CR-95.\n")
    Ingestor(settings, embedder=embedder).ingest_paths([root], collection="plant")
    # "restart": a new process finds the stale index on disk (built before new.md) and must rebuild it
    shutil.rmtree(folder)
    stale.rename(folder)
    restarted = Reader(settings, embedder=embedder)
    assert _sources(BM25Retriever(restarted).retrieve("Grundfos CR-95", collection="plant", top_k=2)) == ["new.md"]
    # and with no index on disk at all
    shutil.rmtree(folder)
    again = Reader(settings, embedder=embedder)
    assert _sources(BM25Retriever(again).retrieve("Grundfos", collection="plant", top_k=1)) == ["new.md"]


def test_weighted_fusion_normalizes_each_side() -> None:
    dense = [("a", 0.9), ("b", 0.8), ("c", 0.1)]
    lexical = [("c", 30.0), ("d", 10.0), ("a", 2.0)]
    fused = fuse_weighted(dense, lexical, dense_weight=0.5)
    assert set(fused) == {"a", "b", "c", "d"}
    assert max(fused, key=fused.__getitem__) in {"a", "c"}
    only_dense = fuse_weighted(dense, lexical, dense_weight=1.0)
    assert sorted(only_dense, key=only_dense.__getitem__, reverse=True)[:2] == ["a", "b"]
    assert only_dense["d"] == only_dense["c"], "missing from the dense list means the dense list's lowest score"
    assert fuse_weighted([], [], 0.5) == {}


def test_rrf_adds_reciprocal_ranks() -> None:
    fused = fuse_rrf([[("a", 9.0), ("b", 1.0)], [("b", 5.0), ("c", 4.0)]], k=60)
    assert fused["b"] == pytest.approx(1 / 62 + 1 / 61)
    assert fused["a"] == pytest.approx(1 / 61) and fused["c"] == pytest.approx(1 / 62)


@pytest.mark.slow
def test_hybrid_of_an_empty_lexical_side_is_dense(kb: tuple[Reader, Path]) -> None:
    reader, _ = kb
    hybrid = HybridRetriever(reader)
    dense = get_retriever("dense", reader)
    question = "the of and"  # only stop words: BM25 has nothing
    assert [c.chunk_id for c in hybrid.retrieve(question, collection="plant", top_k=3)] == [
        c.chunk_id for c in dense.retrieve(question, collection="plant", top_k=3)
    ]


def test_document_index_sees_each_document_once_with_overlaps_removed(tmp_path: Path, embedder: Embedder) -> None:
    settings = Settings(data_dir=tmp_path, chunk_tokens=40, chunk_overlap=12)
    ingestor = Ingestor(settings, embedder=embedder)
    sentences = [f"Sentence {i} mentions the word {'zebra' if i == 17 else 'horse'}." for i in range(30)]
    (tmp_path / "long.txt").write_text(" ".join(sentences) + "\n")
    (tmp_path / "short.txt").write_text("A short note about zebra crossings.\n")
    ingestor.ingest_paths([tmp_path / "long.txt", tmp_path / "short.txt"], collection="grains")
    reader = reader_for(ingestor)
    collection = reader.collection("grains")
    assert reader.store.count(collection) > 5, "the long document is split into overlapping chunks"
    index = reader.lexical(collection)
    documents = reader.documents("grains")
    assert sorted(index.documents.ids) == sorted(d.document_id for d in documents)
    long_id = next(d.document_id for d in documents if d.source.endswith("long.txt"))
    rebuilt = document_text(reader.store.document_chunks(collection, long_id), index.config)
    assert rebuilt.split() == ["long", *" ".join(sentences).split()]  # the title, then every word exactly once
    hits = index.search_documents("zebra", 5)
    assert {doc for doc, _ in hits} == {d.document_id for d in documents}


@pytest.mark.slow
def test_hybrid_runs_its_bm25_side_beside_the_dense_side(
    kb: tuple[Reader, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    import contextvars
    import threading

    reader, _ = kb
    hybrid = HybridRetriever(reader)
    marker: contextvars.ContextVar[str] = contextvars.ContextVar("marker", default="unset")
    seen: dict[str, str] = {}
    search_both = hybrid.lexical.search_both

    def watched(*args: object, **kwargs: object) -> object:
        seen["thread"], seen["marker"] = threading.current_thread().name, marker.get()
        return search_both(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(hybrid.lexical, "search_both", watched)
    marker.set("request-42")
    assert _sources(hybrid.retrieve("impeller seal XK-4471-B", collection="plant", top_k=2))[0] == "pump.md"
    assert seen["thread"].startswith("ragkb-bm25") and seen["thread"] != threading.current_thread().name
    assert seen["marker"] == "request-42"  # the request's context (its request id) goes along

    def broken(*args: object, **kwargs: object) -> object:
        raise IndexBusy("the lexical index of 'plant' is being rebuilt by another process")

    monkeypatch.setattr(hybrid.lexical, "search_both", broken)
    with pytest.raises(IndexBusy, match="being rebuilt"):
        hybrid.retrieve("impeller seal", collection="plant", top_k=2)
