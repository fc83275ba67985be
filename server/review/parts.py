"""What every part of the review desk shares: the query service, the review store, the audit trail,
the settings, the curated answers and the writer behind the response; who acts (`Actor`); the numbered
passages a reviewer reads; opening a review and reading one back."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ingest.config import Settings
from ingest.vectorstore import StoredChunk, validate_collection_name

from ..answering.prompting import load_template
from ..answering.service import Plan, QueryService
from ..metrics import (
    REVIEWS_PENDING,
    REVIEWS_QUEUED,
)
from ..schemas import Citation, CuratedInfo, PromptInfo, QueryResponse, Timings
from ..state import Audit
from ..state.models import ReviewAttempt, ReviewRecord
from ..state.reviews import ReviewStore
from ..state.writer import BackgroundWriter
from .curated import CuratedAnswers, text_hash
from .errors import (
    ReviewNotFound,
)
from .policy import Reason, ReviewPolicy
from .schemas import Attempt, CitedPassage, Passage, ReviewDetail, ReviewSummary

log = logging.getLogger("ragkb.review")

RETRY_TEMPLATE = "answer-retry"
NOT_ANSWERED = "A reviewer declined to answer this question from the documents."


@dataclass(frozen=True, slots=True)
class Actor:
    """Who acts (None on a server without keys) and which collections they may see (None: all)."""

    key_name: str | None
    collections: Sequence[str] | None = None

    def can_see(self, collection: str) -> bool:
        return self.collections is None or collection in self.collections


def passages_of(chunks: Sequence[StoredChunk], first: int = 1) -> list[dict[str, Any]]:
    """Numbered passages as stored with an attempt: enough to show them and to notice a change."""
    out = []
    for n, chunk in enumerate(chunks, start=first):
        where = chunk.provenance()
        out.append(
            {
                "n": n,
                "chunk_id": chunk.chunk_id,
                "text_hash": text_hash(chunk.text),
                "text": chunk.text,
                "document_id": where.document_id,
                "source": where.display_source,
                "title": where.title,
                "page": where.page,
                "heading": where.heading,
            }
        )
    return out


class DeskParts:
    """The desk's state and the steps its parts share."""

    def __init__(
        self,
        service: QueryService,
        store: ReviewStore,
        audit: Audit,
        settings: Settings,
        writer: BackgroundWriter | None = None,
    ) -> None:
        self.service = service
        self.store = store
        self.audit = audit
        self.settings = settings
        self.curated = CuratedAnswers(store, service.reader, settings.curated_match_threshold)
        self._retry_template = load_template(RETRY_TEMPLATE)
        # what is written behind the response: answer records and the reviews queued from them
        self.writer = writer or BackgroundWriter(settings.record_queue, sink=store.record_answers)

    def flush(self) -> None:
        """Wait for the records queued in this process (a read of them sees its own answers)."""
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()

    def _approved_response(
        self,
        answer: str,
        citations: list[dict[str, Any]],
        collection: str,
        request_id: str,
        started: float,
        info: CuratedInfo,
        grounded: bool = True,
    ) -> QueryResponse:
        fields = set(Citation.model_fields)
        return QueryResponse(
            answer=answer,
            citations=[Citation(**{k: v for k, v in c.items() if k in fields}) for c in citations],
            grounded=grounded,
            cached=False,
            model="reviewer",
            provider="review",
            prompt=PromptInfo(name="review", version="1"),
            timings=Timings(retrieve_ms=0.0, llm_ms=0.0, total_ms=round((time.perf_counter() - started) * 1000, 3)),
            request_id=request_id,
            collection=collection,
            retriever="curated",
            confidence=1.0,
            origin="curated" if info.match != "review" else "reviewed",
            curated=info,
        )

    def _read_chunks(self, collection: str, ids: Sequence[str]) -> list[StoredChunk]:
        if not ids:
            return []
        return self.service.reader.store.chunks(self.service.reader.collection(collection), list(ids))

    def _create(
        self,
        *,
        request_id: str,
        collection: str,
        question: str,
        options: dict[str, Any],
        held: bool,
        reasons: Sequence[Reason],
        asked_by: str | None,
        by: str | None,
        candidate: dict[str, Any],
        context: list[dict[str, Any]],
    ) -> ReviewRecord:
        """Open a review with its first candidate; count, gauge and audit it (`by`: who queued it)."""
        review = self.store.create_review(
            request_id=request_id,
            collection=collection,
            question=question,
            options=options,
            held=held,
            reasons=[r.value for r in reasons],
            asked_by=asked_by,
            candidate=candidate,
            context=context,
            strategy="first",
        )
        for reason in reasons:
            REVIEWS_QUEUED.labels(reason=reason.value).inc()
        REVIEWS_PENDING.set(self.store.pending_count())
        self.audit.record(
            "review.queue",
            by,
            collection=collection,
            request_id=request_id,
            detail={"review_id": review.id, "reasons": [r.value for r in reasons], "held": held},
        )
        return review

    def load(self, review_id: str, caller: Actor) -> tuple[ReviewRecord, list[ReviewAttempt]]:
        self.flush()
        found = self.store.review(review_id)
        if found is None or not caller.can_see(found[0].collection):
            raise ReviewNotFound(f"no review with id {review_id!r}")
        return found

    def policy(self, collection: str) -> ReviewPolicy:
        found = self.store.policy(collection)
        return ReviewPolicy.OFF if found is None else ReviewPolicy.parse(found)

    def detail(self, review_id: str, caller: Actor) -> ReviewDetail:
        return detail_of(*self.load(review_id, caller))

    def _context(self, plan: Plan, response: QueryResponse) -> list[dict[str, Any]]:
        """The numbered passages the candidate could cite (the prompt's context, in its order)."""
        if plan.request is not None:
            return passages_of(plan.request.contexts)
        # a cached answer has no prompt: its citations, read back from the store, are its context
        cited = sorted(response.citations, key=lambda c: c.n)
        chunks = {c.chunk_id: c for c in self._read_chunks(response.collection, [c.chunk_id for c in cited])}
        return [passages_of([chunks[c.chunk_id]], first=c.n)[0] for c in cited if c.chunk_id in chunks]


def set_policy(store: ReviewStore, audit: Audit, collection: str, policy: str, by: str | None) -> ReviewPolicy:
    """Set (and audit) a collection's review policy."""
    parsed = ReviewPolicy.parse(policy)
    validate_collection_name(collection)
    store.set_policy(collection, parsed.value, by)
    audit.record("collection.review_policy", by, collection=collection, detail={"review": parsed.value})
    return parsed


def summary_of(review: ReviewRecord, attempts: int, confidence: float | None = None) -> ReviewSummary:
    return ReviewSummary(
        id=review.id,
        status=review.status,  # type: ignore[arg-type]
        question=review.question,
        collection=review.collection,
        reasons=[str(r) for r in review.reasons],
        confidence=confidence if confidence is not None else float(review.options.get("confidence", 0.0) or 0.0),
        held=review.held,
        created_at=review.created_at,
        attempts=attempts,
    )


def _attempt(attempt: ReviewAttempt) -> Attempt:
    candidate = attempt.candidate
    prompt = candidate.get("prompt") or {}
    fields = set(Citation.model_fields)
    return Attempt(
        n=attempt.n,
        at=attempt.at,
        answer=str(candidate.get("answer", "")),
        citations=[Citation(**{k: v for k, v in c.items() if k in fields}) for c in candidate.get("citations", [])],
        confidence=float(candidate.get("confidence", 0.0)),
        abstained=bool(candidate.get("abstained", False)),
        provider=str(candidate.get("provider", "")),
        prompt=f"{prompt.get('name', '')}:{prompt.get('version', '')}",
        strategy=attempt.strategy,
        note=attempt.note,
    )


def detail_of(review: ReviewRecord, attempts: list[ReviewAttempt]) -> ReviewDetail:
    history = [_attempt(a) for a in attempts]
    latest, context = history[-1], attempts[-1].context
    by_n = {int(p["n"]): p for p in context}
    cited = [
        CitedPassage(**c.model_dump(), text=str(by_n[c.n]["text"]) if c.n in by_n else c.snippet)
        for c in latest.citations
    ]
    passages = [Passage(**{k: p[k] for k in Passage.model_fields if k in p}) for p in context]
    final = review.final or {}
    summary = summary_of(review, len(attempts), confidence=latest.confidence)
    return ReviewDetail(
        **summary.model_dump(),
        request_id=review.request_id,
        answer=latest.answer,
        citations=cited,
        context=passages,
        history=history,
        decided_by=review.decided_by,
        decided_at=review.decided_at,
        note=review.note,
        final_answer=final.get("answer"),
    )
