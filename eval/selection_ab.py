"""The extractive selection with the question encoded in the candidates' batch (before) or taken from the
embedder's question cache (after), in one process over the same retrieved passages.

    python -m eval.selection_ab check --data-dir DIR --collection NAME (--questions FILE | --beir DIR) [--limit N]
    python -m eval.selection_ab time  --data-dir DIR --collection NAME --beir DIR [--limit N] [--offset N]

`check` plans each question both ways (cache bypassed) and compares answer text, picked spans, outcome,
abstention and confidence (4 dp); exits 1 on any difference. `time` retrieves once per question, then times
the selection both ways, alternating which goes first, and prints the medians and the per-question ratio.
Two processes cannot show this: the dense side's deep tail differs slightly per process (docs/speed.md).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from ingest.config import Settings
from server.answering.providers import Selection
from server.answering.service import Query, QueryService

from .answer_snapshot import question_items


def _outcome(service: QueryService, query: Query, cached: bool) -> tuple[Any, ...]:
    service.fallback.embed_question = service.reader.embedder.embed_query if cached else None
    plan = service.plan(query, use_cache=False)
    evidence = plan.request.evidence if plan.request is not None else None
    if plan.request is None or not isinstance(evidence, Selection):
        return (None, plan.outcome, round(plan.confidence, 4), plan.abstain)
    picks = [(p.chunk_id, p.start, p.end) for p in evidence.picks]
    text = service.fallback.answer(plan.request)
    return (text, plan.outcome, round(plan.confidence, 4), plan.abstain, picks)


def check(service: QueryService, questions: list[str], collection: str) -> int:
    different = 0
    for question in questions:
        query = service.query(question, collection=collection)
        before, after = _outcome(service, query, False), _outcome(service, query, True)
        if before != after:
            different += 1
            print(f"differs: {question[:70]!r}: {before[1:4]} -> {after[1:4]}")
    print(f"{len(questions)} questions over {collection}: {len(questions) - different} identical, {different} differ")
    return different


def timed(service: QueryService, questions: list[str], collection: str) -> None:
    question_vector = service.reader.embedder.embed_query
    times: dict[bool, list[float]] = {False: [], True: []}
    for number, question in enumerate(questions):
        query = service.query(question, collection=collection)
        request = service.request_for(query.question, service.retrieve(query).chunks)
        for cached in (False, True) if number % 2 else (True, False):
            service.fallback.embed_question = question_vector if cached else None
            started = time.perf_counter()
            service.fallback.select(request)
            times[cached].append((time.perf_counter() - started) * 1000)
    ratio = statistics.median(a / b for a, b in zip(times[True], times[False], strict=True))
    print(
        f"{len(questions)} questions, selection p50: question in the batch {statistics.median(times[False]):.1f} ms, "
        f"cached question vector {statistics.median(times[True]):.1f} ms; per-question ratio p50 {ratio:.3f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=("check", "time"))
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--collection", required=True)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--questions", type=Path, help="a question set (JSONL with `question`)")
    source.add_argument("--beir", type=Path, help="a BEIR dataset folder (its queries.jsonl)")
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--offset", type=int, default=0)
    parser.add_argument("--backend", default="torch", help="RAGKB_EMBED_BACKEND of the collection")
    args = parser.parse_args()
    service = QueryService(Settings(data_dir=args.data_dir, embed_backend=args.backend))
    questions = [question for _, question in question_items(args)]
    if args.mode == "check":
        sys.exit(1 if check(service, questions, args.collection) else 0)
    timed(service, questions, args.collection)


if __name__ == "__main__":
    main()
