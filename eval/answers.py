"""Answer-level evaluation: the full query path on a sample of queries, scored for grounding and citations."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from server.answering.service import QueryService

from .beir import read_qrels, read_queries
from .harness import beir_id, collection_for, ingest_corpus, percentile


async def _evaluate_answers(
    service: QueryService, dataset: Path, split: str, sample: int, on_query: Callable[[int, int], None] | None
) -> dict[str, Any]:
    collection = collection_for(dataset, service.reader.embedder.identity)
    await asyncio.to_thread(ingest_corpus, service.reader, dataset, collection)
    queries = read_queries(dataset)
    qrels = read_qrels(dataset, split)
    query_ids = [q for q in qrels if q in queries][:sample]

    grounded = abstained = citations = valid = relevant_cited = 0
    latencies: list[float] = []
    cached_per_pass = [0, 0]
    total_steps = 2 * len(query_ids)
    for pass_number in (0, 1):
        for index, query_id in enumerate(query_ids, start=1):
            response = await service.answer(queries[query_id], collection=collection, request_id=f"eval-{query_id}")
            cached_per_pass[pass_number] += int(response.cached)
            if on_query:
                on_query(pass_number * len(query_ids) + index, total_steps)
            if pass_number == 1:
                continue
            latencies.append(response.timings.total_ms)
            grounded += int(response.grounded)
            abstained += int(response.abstained)
            query = service.query(queries[query_id], collection=collection)
            retrieved = {c.chunk_id: c for c in service.retrieve(query).chunks}
            for citation in response.citations:
                citations += 1
                chunk = retrieved.get(citation.chunk_id)
                if chunk is not None:
                    valid += 1
                    relevant_cited += int(qrels[query_id].get(beir_id(chunk), 0) > 0)
    count = max(len(query_ids), 1)
    return {
        "dataset": dataset.resolve().name,
        "split": split,
        **service.describe(),
        "num_queries": len(query_ids),
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "metrics": {
            "grounded_rate": round(grounded / count, 4),
            "abstention_rate": round(abstained / count, 4),
            "citation_validity": round(valid / citations, 4) if citations else 1.0,
            "citation_precision": round(relevant_cited / citations, 4) if citations else 0.0,
            "cache_hit_rate_first_pass": round(cached_per_pass[0] / count, 4),
            "cache_hit_rate_second_pass": round(cached_per_pass[1] / count, 4),
        },
        "latency_ms": {"p50": round(percentile(latencies, 0.5), 3), "p95": round(percentile(latencies, 0.95), 3)},
    }


def evaluate_answers(
    service: QueryService,
    dataset: Path,
    *,
    split: str,
    sample: int,
    on_query: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    async def run() -> dict[str, Any]:
        try:
            return await _evaluate_answers(service, dataset, split, sample, on_query)
        finally:
            await service.aclose()

    return asyncio.run(run())
