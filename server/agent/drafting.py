"""Turning the evidence of several searches into one answerable `Plan` for `QueryService.run`.

The agent does not answer by itself: it builds the same `Plan` that `QueryService.plan` builds (numbered
contexts within the token budget, the answer prompt, the extractive evidence, the abstention decision)
from the chunks its tool calls found, and `QueryService.run` generates, falls back, validates the
citations and shapes the response exactly as for a single-shot question.

With several sub-questions, the contexts interleave each search's best chunks (so every part is
represented within the budget), and the extractive evidence is chosen per sub-question: each part's best
sentences are quoted, so the answer covers every part instead of only the one its words favour.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, replace

from ingest.vectorstore import StoredChunk

from ..answering.citations import ValidatedAnswer
from ..answering.providers import Selection
from ..answering.providers.extractive import KEEP_SHARE, Pick
from ..answering.service import Plan, Query, QueryService, Retrieval
from ..answering.support import claim_sentences, has_claim
from ..schemas import QueryResponse

PICKS_PER_PART = 2  # quotes per sub-question when there are several (one part alone keeps the provider's 3)


@dataclass(frozen=True, slots=True)
class Draft:
    plan: Plan
    unanswered: list[int]  # sub-questions (0-based) whose evidence was too weak to quote


def interleave(rankings: Sequence[Sequence[StoredChunk]]) -> list[StoredChunk]:
    """The chunks of several rankings, best of each first, round-robin, without duplicates."""
    merged: dict[str, StoredChunk] = {}
    for rank in range(max((len(r) for r in rankings), default=0)):
        for ranking in rankings:
            if rank < len(ranking) and ranking[rank].chunk_id not in merged:
                merged[ranking[rank].chunk_id] = ranking[rank]
    return list(merged.values())


def _overlaps(a: Pick, b: Pick) -> bool:
    return a.context == b.context and a.start < b.end and b.start < a.end


def combine(parts: Sequence[Selection], threshold: float) -> tuple[list[Pick], list[int], float]:
    """The picks of every sub-question that the contexts answer (answerability >= `threshold`), best few
    of each, without overlaps; the sub-questions left unanswered; and the overall confidence (the mean
    answerability of the parts)."""
    picks: list[Pick] = []
    unanswered: list[int] = []
    keep = PICKS_PER_PART if len(parts) > 1 else None
    for number, part in enumerate(parts):
        if part.answerability < threshold or not part.picks:
            unanswered.append(number)
            continue
        best = part.picks[0].score
        chosen = [p for p in part.picks if p.score >= KEEP_SHARE * best][:keep]
        picks.extend(p for p in chosen if not any(_overlaps(p, q) for q in picks))
    confidence = sum(p.answerability for p in parts) / len(parts) if parts else 0.0
    return picks, unanswered, confidence


def draft_plan(
    service: QueryService,
    query: Query,
    questions: Sequence[str],
    rankings: Sequence[Sequence[StoredChunk]],
    *,
    started: float,
    search_ms: float,
) -> Draft:
    """The `Plan` of one answer to `query` from the chunks the searches found (blocking: one batched
    embedding per sub-question)."""
    merged = interleave(rankings)
    retrieval = Retrieval(merged, query.retriever, query.collection, search_ms)
    if not merged:
        return Draft(Plan(query, retrieval, None, started=started), list(range(len(questions))))
    request = service.request_for(query.question, merged)
    parts = service.evidence(request, questions)  # one part: exactly the single-shot selection
    threshold = service.settings.abstain_below
    picks, unanswered, confidence = combine(parts, threshold)
    evidence = replace(parts[0], picks=sorted(picks, key=lambda p: -p.score)) if len(parts) > 1 else parts[0]
    request = replace(request, evidence=evidence)
    abstain = not picks or confidence < threshold if len(parts) == 1 else not picks
    plan = Plan(query, retrieval, request, [], started=started, confidence=confidence, abstain=abstain)
    return Draft(plan, unanswered)


def without_unsupported(response: QueryResponse, plan: Plan, service: QueryService) -> tuple[QueryResponse, int]:
    """The response with every claim that lost its citation (its passage did not support it) dropped and
    the rest validated again; and how many claims were dropped."""
    if plan.request is None or response.abstained:
        return response, 0
    kept: list[str] = []
    dropped = 0
    for sentence, numbers in claim_sentences(response.answer):
        if numbers or not has_claim(sentence):
            markers = "".join(f"[{n}]" for n in numbers)
            body, end = (sentence[:-1], sentence[-1]) if sentence[-1:] in ".!?" else (sentence, "")
            kept.append(f"{body} {markers}{end}" if markers else sentence)
        else:
            dropped += 1
    if not dropped:
        return response, 0
    validated: ValidatedAnswer = service.validate(" ".join(kept), plan.request.contexts)
    update = {
        "answer": validated.text,
        "citations": validated.citations,
        "grounded": validated.grounded,
        "unsupported_citations": sorted({*response.unsupported_citations, *validated.unsupported_markers}),
    }
    return response.model_copy(update=update), dropped


def elapsed_ms(since: float) -> float:
    return round((time.perf_counter() - since) * 1000, 3)
