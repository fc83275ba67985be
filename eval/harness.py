"""The offline retrieval evaluation: ingest a BEIR corpus once, retrieve for every query, score, report.

Retrieval goes through `server.answering.retrieval.get_retriever`, the very code the API uses.
A BEIR document may be split into several chunks; it is scored at document level
by its best chunk (the highest-ranked chunk decides the document's rank).
"""

from __future__ import annotations

import re
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ingest.pipeline import Ingestor, IngestReport
from ingest.vectorstore import StoredChunk
from server.answering.reader import Reader
from server.answering.retrieval import get_retriever

from .beir import DatasetError, read_corpus, read_qrels, read_queries
from .metrics import evaluate

SOURCE_PREFIX = "beir://"
CHUNK_FETCH_FACTOR = 3  # chunks fetched per wanted document, since documents span several chunks


def collection_for(dataset: Path, model: str) -> str:
    """One collection per dataset and model, so a rerun reuses the index and models never mix."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", f"eval-{dataset.resolve().name}-{model.rsplit('/', 1)[-1]}")
    return slug.strip("-._")[:63]


def beir_id(chunk: StoredChunk) -> str:
    return str(chunk.metadata.get("source", "")).rsplit("/", 1)[-1]


def ingest_corpus(
    reader: Reader, dataset: Path, collection: str, on_progress: Callable[[int, int], None] | None = None
) -> IngestReport:
    """Ingest every corpus document as title + text through the normal pipeline (unchanged ones are skipped),
    with a write side that shares the reader's store and model."""
    ingestor = Ingestor(reader.settings, store=reader.store, embedder=reader.embedder)
    corpus = read_corpus(dataset)
    done = 0

    def advance(_: str) -> None:
        nonlocal done
        done += 1
        if on_progress:
            on_progress(done, len(corpus))

    items = (
        (f"{doc.doc_id}.txt", f"{SOURCE_PREFIX}{dataset.resolve().name}/{doc.doc_id}", doc.content.encode("utf-8"))
        for doc in corpus
    )
    return ingestor.ingest_items(items, collection=collection, on_file_done=advance)


def document_ranking(chunks: list[StoredChunk], limit: int) -> dict[str, float]:
    """BEIR doc id -> score of its best chunk, for the top `limit` documents."""
    best: dict[str, float] = {}
    for chunk in chunks:
        doc = beir_id(chunk)
        if doc not in best:
            best[doc] = chunk.score
            if len(best) >= limit:
                break
    return best


def read_query_ids(path: Path) -> list[str]:
    """Query ids, one a line (blank lines ignored); a missing file is a DatasetError naming it."""
    try:
        return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except OSError as exc:
        raise DatasetError(f"cannot read query ids from {path}: {exc.strerror or exc}") from None


def percentile(values: list[float], q: float) -> float:
    """The nearest-rank q-quantile (0 for no values); one definition for reports and benchmarks."""
    if not values:
        return 0.0
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


@dataclass(slots=True)
class EvalOptions:
    split: str = "test"
    retriever: str = "dense"
    top_k: int = 100
    limit_queries: int | None = None
    query_ids_file: Path | None = None  # score only these queries (one id per line, e.g. eval/splits/*-check.txt)


def run_eval(
    reader: Reader,
    dataset: Path,
    options: EvalOptions,
    *,
    on_ingest: Callable[[int, int], None] | None = None,
    on_query: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    settings = reader.settings
    collection = collection_for(dataset, reader.embedder.identity)
    started = time.perf_counter()
    ingest_report = ingest_corpus(reader, dataset, collection, on_ingest)
    ingest_seconds = time.perf_counter() - started
    if ingest_report.failed:
        first = ingest_report.failures[0]
        raise RuntimeError(
            f"{ingest_report.failed} corpus documents failed to ingest, e.g. {first.path}: {first.error}"
        )

    queries = read_queries(dataset)
    qrels = read_qrels(dataset, options.split)
    query_ids = [q for q in qrels if q in queries]
    if options.query_ids_file is not None:
        wanted = set(read_query_ids(options.query_ids_file))
        query_ids = [q for q in query_ids if q in wanted]
    if options.limit_queries:
        query_ids = query_ids[: options.limit_queries]
    qrels = {q: qrels[q] for q in query_ids}
    retriever = get_retriever(options.retriever, reader)
    run: dict[str, dict[str, float]] = {}
    latencies: list[float] = []
    for number, query_id in enumerate(query_ids, start=1):
        t0 = time.perf_counter()
        chunks = retriever.retrieve(queries[query_id], collection=collection, top_k=options.top_k * CHUNK_FETCH_FACTOR)
        latencies.append((time.perf_counter() - t0) * 1000)
        run[query_id] = document_ranking(chunks, options.top_k)
        if on_query:
            on_query(number, len(query_ids))

    metrics = evaluate(run, qrels)
    return {
        "dataset": dataset.resolve().name,
        "split": options.split,
        "retriever": options.retriever,
        "model": reader.embedder.identity,
        "num_queries": len(query_ids),
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "metrics": {k: round(v, 6) for k, v in metrics.items()},
        "latency_ms": {
            "p50": round(percentile(latencies, 0.5), 3),
            "p95": round(percentile(latencies, 0.95), 3),
            "mean": round(statistics.fmean(latencies), 3) if latencies else 0.0,
        },
        "settings": {
            "collection": collection,
            "top_k": options.top_k,
            "chunk_tokens": settings.chunk_tokens,
            "chunk_overlap": settings.chunk_overlap,
            "document_scoring": "max over chunks (a document ranks where its best chunk ranks)",
            "chunks_fetched_per_query": options.top_k * CHUNK_FETCH_FACTOR,
            "limit_queries": options.limit_queries,
            "query_ids": options.query_ids_file.name if options.query_ids_file else None,
        },
        "corpus": {
            "documents_added": ingest_report.added + ingest_report.updated,
            "documents_unchanged": ingest_report.unchanged,
            "ingest_seconds": round(ingest_seconds, 2),
        },
    }


def metrics_table(report: dict[str, Any]) -> list[str]:
    """A report's metrics and latency as Markdown table lines (retrieval and answer reports alike)."""
    return [
        "| metric | value |",
        "| --- | ---: |",
        *[f"| {name} | {value:.4f} |" for name, value in report["metrics"].items()],
        f"| latency p50 (ms) | {report['latency_ms']['p50']:.1f} |",
        f"| latency p95 (ms) | {report['latency_ms']['p95']:.1f} |",
        "",
    ]


def markdown_summary(report: dict[str, Any]) -> str:
    lines = [
        f"### Retrieval eval: {report['dataset']} ({report['split']}), retriever `{report['retriever']}`",
        "",
        f"Model `{report['model']}`, {report['num_queries']} queries, {report['created_at']}. "
        "Documents are scored by their best chunk.",
        "",
        *metrics_table(report),
    ]
    return "\n".join(lines)


def compare_reports(
    baseline: dict[str, Any], candidate: dict[str, Any], max_drop: float, headline: tuple[str, ...]
) -> tuple[str, list[str]]:
    """A Markdown table of deltas, and the headline metrics that dropped by more than `max_drop`."""
    rows = ["| metric | baseline | candidate | delta |", "| --- | ---: | ---: | ---: |"]
    regressions = []
    for name in sorted(set(baseline["metrics"]) | set(candidate["metrics"])):
        base, cand = baseline["metrics"].get(name), candidate["metrics"].get(name)
        if base is None or cand is None:
            rows.append(f"| {name} | {base if base is not None else '-'} | {cand if cand is not None else '-'} | |")
            continue
        delta = cand - base
        flag = ""
        if name in headline and delta < -max_drop:
            regressions.append(name)
            flag = " ❌"
        rows.append(f"| {name} | {base:.4f} | {cand:.4f} | {delta:+.4f}{flag} |")
    return "\n".join(rows), regressions
