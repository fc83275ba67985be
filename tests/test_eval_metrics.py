"""The metric code agrees with trec_eval (pytrec-eval-terrier) on the same runs."""

from __future__ import annotations

import random

import pytest
import pytrec_eval

from eval.metrics import evaluate, per_query, ranking

MEASURES = {"ndcg_cut.10", "recall.1,5,10,100", "map_cut.100", "recip_rank"}


def _reference(run: dict[str, dict[str, float]], qrels: dict[str, dict[str, int]]) -> dict[str, dict[str, float]]:
    full = pytrec_eval.RelevanceEvaluator(qrels, MEASURES).evaluate(run)
    # MRR@10: trec_eval's reciprocal rank over the run cut to its first 10 documents
    top10 = {q: {d: docs[d] for d in ranking(docs)[:10]} for q, docs in run.items()}
    cut = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"}).evaluate(top10)
    return {
        q: {
            "ndcg@10": m["ndcg_cut_10"],
            "recall@1": m["recall_1"],
            "recall@5": m["recall_5"],
            "recall@10": m["recall_10"],
            "recall@100": m["recall_100"],
            "map@100": m["map_cut_100"],
            "mrr@10": cut.get(q, {}).get("recip_rank", 0.0),
        }
        for q, m in full.items()
    }


def _assert_match(run: dict[str, dict[str, float]], qrels: dict[str, dict[str, int]]) -> None:
    ours = per_query(run, qrels)
    reference = _reference(run, qrels)
    for query_id, expected in reference.items():
        for metric, value in expected.items():
            assert ours[query_id][metric] == pytest.approx(value, abs=1e-9), (query_id, metric)


def test_hand_made_cases() -> None:
    qrels = {
        "one-relevant-first": {"d1": 1},
        "several-relevant": {"d1": 1, "d3": 1, "d7": 1},
        "graded": {"d1": 2, "d2": 1, "d5": 3},
        "none-retrieved": {"d9": 1},
        "ties": {"d2": 1, "d4": 1},
        "zero-judged": {"d1": 0, "d2": 1},
    }
    run = {
        "one-relevant-first": {"d1": 0.9, "d2": 0.5},
        "several-relevant": {f"d{i}": 1.0 - i / 20 for i in range(12)},
        "graded": {"d5": 0.2, "d2": 0.9, "d1": 0.5, "d8": 0.95},
        "none-retrieved": {"d1": 0.9, "d2": 0.8},
        "ties": {"d1": 0.5, "d2": 0.5, "d3": 0.5, "d4": 0.5, "d5": 0.4},
        "zero-judged": {"d1": 0.9, "d2": 0.1},
    }
    _assert_match(run, qrels)


def test_query_missing_from_run_scores_zero() -> None:
    qrels = {"q1": {"d1": 1}, "q2": {"d2": 1}}
    run = {"q1": {"d1": 1.0}}
    assert evaluate(run, qrels)["ndcg@10"] == pytest.approx(0.5)
    assert per_query(run, qrels)["q2"] == dict.fromkeys(per_query(run, qrels)["q2"], 0.0)


@pytest.mark.parametrize("seed", range(5))
def test_random_runs_with_ties_and_grades(seed: int) -> None:
    rng = random.Random(seed)
    docs = [f"doc{i}" for i in range(300)]
    qrels: dict[str, dict[str, int]] = {}
    run: dict[str, dict[str, float]] = {}
    for q in range(40):
        relevant = rng.sample(docs, rng.randint(1, 6))
        qrels[f"q{q}"] = {d: rng.choice([1, 1, 2, 3]) for d in relevant}
        retrieved = rng.sample(docs, rng.randint(5, 150))
        if rng.random() < 0.7:
            retrieved[: rng.randint(0, 3)] = relevant[:3]
        run[f"q{q}"] = {d: round(rng.random(), 1) for d in dict.fromkeys(retrieved)}  # rounding makes ties
    _assert_match(run, qrels)
