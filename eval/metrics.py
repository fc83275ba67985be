"""IR metrics with trec_eval's conventions, so figures match the reference implementations.

- A run is `{doc_id: score}` per query. Ranking sorts by score descending and breaks ties by doc id
  descending, exactly as trec_eval does (so tied scores give the same numbers as pytrec_eval).
- Relevant means relevance > 0; nDCG uses the graded relevance as linear gain (trec_eval's `ndcg_cut`).
- Queries are those in the qrels; a query with no retrieved documents scores 0. A query whose qrels
  hold no relevant document scores 0 on every metric (as in trec_eval).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

Run = Mapping[str, Mapping[str, float]]
Qrels = Mapping[str, Mapping[str, int]]

HEADLINE = ("ndcg@10", "recall@10", "recall@100", "mrr@10", "map@100")
ALL_METRICS = ("ndcg@10", "recall@1", "recall@5", "recall@10", "recall@100", "mrr@10", "map@100")


def ranking(scores: Mapping[str, float]) -> list[str]:
    return [doc for doc, _ in sorted(scores.items(), key=lambda item: (item[1], item[0]), reverse=True)]


def ndcg_at(ranked: list[str], relevance: Mapping[str, int], k: int) -> float:
    dcg = sum(relevance.get(doc, 0) / math.log2(i + 2) for i, doc in enumerate(ranked[:k]) if relevance.get(doc, 0) > 0)
    ideal = sorted((r for r in relevance.values() if r > 0), reverse=True)[:k]
    idcg = sum(r / math.log2(i + 2) for i, r in enumerate(ideal))
    return dcg / idcg if idcg > 0 else 0.0


def recall_at(ranked: list[str], relevance: Mapping[str, int], k: int) -> float:
    relevant = {doc for doc, r in relevance.items() if r > 0}
    if not relevant:
        return 0.0
    return len(relevant.intersection(ranked[:k])) / len(relevant)


def mrr_at(ranked: list[str], relevance: Mapping[str, int], k: int) -> float:
    for i, doc in enumerate(ranked[:k]):
        if relevance.get(doc, 0) > 0:
            return 1.0 / (i + 1)
    return 0.0


def average_precision_at(ranked: list[str], relevance: Mapping[str, int], k: int) -> float:
    relevant = sum(1 for r in relevance.values() if r > 0)
    if not relevant:
        return 0.0
    hits, total = 0, 0.0
    for i, doc in enumerate(ranked[:k]):
        if relevance.get(doc, 0) > 0:
            hits += 1
            total += hits / (i + 1)
    return total / relevant


def per_query(run: Run, qrels: Qrels) -> dict[str, dict[str, float]]:
    scores: dict[str, dict[str, float]] = {}
    for query_id, relevance in qrels.items():
        ranked = ranking(run.get(query_id, {}))
        scores[query_id] = {
            "ndcg@10": ndcg_at(ranked, relevance, 10),
            "recall@1": recall_at(ranked, relevance, 1),
            "recall@5": recall_at(ranked, relevance, 5),
            "recall@10": recall_at(ranked, relevance, 10),
            "recall@100": recall_at(ranked, relevance, 100),
            "mrr@10": mrr_at(ranked, relevance, 10),
            "map@100": average_precision_at(ranked, relevance, 100),
        }
    return scores


def evaluate(run: Run, qrels: Qrels) -> dict[str, float]:
    """Mean of each metric over the queries in `qrels`."""
    scores = per_query(run, qrels)
    if not scores:
        return dict.fromkeys(ALL_METRICS, 0.0)
    return {metric: sum(s[metric] for s in scores.values()) / len(scores) for metric in ALL_METRICS}
