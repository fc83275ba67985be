"""A reviewer's decisions: approve (as is or edited, validated like model output; the answer becomes
curated), reject for good, or reject and retry with another candidate (up to the limit, under a lock)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from starlette.concurrency import run_in_threadpool

from ingest.vectorstore import Filters, StoredChunk

from ..answering.citations import validate
from ..answering.markers import MARKER, marker_numbers
from ..answering.questions import question_key
from ..answering.service import Query
from ..metrics import (
    CURATED,
    REVIEW_DECISIONS,
    REVIEW_RETRIES,
    REVIEW_SECONDS,
    REVIEWS_PENDING,
)
from ..state.models import CuratedAnswer, ReviewRecord, utcnow
from ..state.reviews import APPROVED, PENDING, REJECTED
from .curated import text_hash
from .errors import (
    InvalidEdit,
    RetryLimitReached,
    ReviewDecided,
    StaleChunk,
)
from .parts import Actor, DeskParts, passages_of
from .schemas import (
    ReviewDetail,
)

log = logging.getLogger("ragkb.review")

RETRY_TEMPLATE = "answer-retry"
NOT_ANSWERED = "A reviewer declined to answer this question from the documents."


class Decisions(DeskParts):
    """Approve, reject, retry."""

    def approve(
        self,
        review_id: str,
        caller: Actor,
        *,
        answer: str | None = None,
        extra_chunks: Sequence[str] = (),
        attempt: int | None = None,
    ) -> ReviewDetail:
        """Approve the newest candidate, or an edited answer validated like model output. The approved answer
        reaches a waiting asker and becomes the collection's curated answer to this question. `attempt` is the
        candidate the reviewer read: if a retry made a newer one meanwhile, the approval is refused (409)."""
        review, attempts = self.load(review_id, caller)
        if review.status != PENDING:
            raise ReviewDecided(f"review {review_id} is already {review.status}")
        latest = attempts[-1]
        if attempt is not None and attempt != latest.n:
            raise ReviewDecided(
                f"review {review_id} has a newer candidate ({latest.n}) than the one approved ({attempt}): read it"
            )
        context = list(latest.context)
        edited = answer is not None
        text = (answer if answer is not None else str(latest.candidate.get("answer", ""))).strip()
        if not text:
            raise InvalidEdit("the approved answer is empty: write the answer, or reject the review")
        if not edited and latest.candidate.get("abstained"):
            raise InvalidEdit("the candidate says the documents do not contain the answer: edit it, or reject")
        last = max((int(p["n"]) for p in context), default=0)  # passages keep their numbers (gaps possible)
        extra = self._extra_passages(review.collection, extra_chunks, first=last + 1)
        by_n = {int(p["n"]): p for p in context + extra}
        numbers = [n for match in MARKER.finditer(text) for n in marker_numbers(match)]
        bad = sorted({n for n in numbers if n not in by_n})
        if bad:
            valid = ", ".join(f"[{n}]" for n in sorted(by_n)) or "none"
            raise InvalidEdit(
                f"the answer cites {bad}, which is no passage: the candidate's passages are {valid} (extra_chunks "
                f"follow from [{last + 1}])"
            )
        if not numbers:
            raise InvalidEdit("the approved answer cites no passage: cite each claim with [n]")
        cited = [by_n[n] for n in sorted(set(numbers))]
        chunks = self._current(review.collection, cited)
        # every marker is valid and every cited chunk is current: the citations are built the usual way
        ordered = chunks_in_order(by_n, chunks)
        validated = validate(text, ordered, None)
        support = validate(text, ordered, self.service.support)
        final: dict[str, Any] = {
            "answer": validated.text,
            "citations": [
                dict(c.model_dump(mode="json"), text_hash=text_hash(chunks[c.chunk_id].text))
                for c in validated.citations
            ],
            "edited": edited,
            "unsupported_citations": support.unsupported_markers,
            "grounded": support.grounded,
        }
        embedding = self.curated.embed(review.question)  # before the decision: nothing can fail after it but I/O
        if not self.store.decide(review_id, status=APPROVED, by=caller.key_name, final=final):
            raise ReviewDecided(f"review {review_id} was decided by someone else a moment ago")
        if review.held:  # what the asker is shown is now the approved answer: feedback refers to it
            self.store.update_answer(review.request_id, answer=validated.text, citations=final["citations"])
        self.store.withdraw_question(review.collection, question_key(review.question))  # the newest approval rules
        self.store.add_curated(
            CuratedAnswer(
                collection=review.collection,
                question=review.question,
                question_key=question_key(review.question),
                embedding=embedding,
                model=self.service.reader.embedder.identity,
                answer=validated.text,
                citations=final["citations"],
                review_id=review.id,
                reviewer=caller.key_name,
                approved_at=utcnow(),
                status="active",
            )
        )
        self._decided(review, "edited" if edited else "approved", caller, detail={"edited": edited})
        return self.detail(review_id, caller)

    def _extra_passages(self, collection: str, ids: Sequence[str], *, first: int) -> list[dict[str, Any]]:
        if not ids:
            return []
        found = {c.chunk_id: c for c in self._read_chunks(collection, list(dict.fromkeys(ids)))}
        missing = [i for i in ids if i not in found]
        if missing:
            raise StaleChunk(f"no chunk {missing[0]!r} in collection {collection!r}: it was deleted or never existed")
        return passages_of([found[i] for i in ids], first=first)

    def _current(self, collection: str, cited: list[dict[str, Any]]) -> dict[str, StoredChunk]:
        """The cited passages' chunks as the store has them now; gone or changed is refused."""
        found = {c.chunk_id: c for c in self._read_chunks(collection, [str(p["chunk_id"]) for p in cited])}
        for passage in cited:
            chunk = found.get(str(passage["chunk_id"]))
            if chunk is None:
                raise StaleChunk(
                    f"passage [{passage['n']}] ({passage['source']}) no longer exists: its document was re-ingested "
                    "or deleted. Reject with retry to answer from the current documents."
                )
            if text_hash(chunk.text) != passage["text_hash"]:
                raise StaleChunk(
                    f"passage [{passage['n']}] ({passage['source']}) changed since the candidate was made. "
                    "Reject with retry to answer from the current documents."
                )
        return found

    async def reject(self, review_id: str, caller: Actor, *, retry: bool, note: str | None) -> ReviewDetail:
        review, attempts = await run_in_threadpool(self.load, review_id, caller)
        if review.status != PENDING:
            raise ReviewDecided(f"review {review_id} is already {review.status}")
        if not retry:
            if not await run_in_threadpool(
                self.store.decide, review_id, status=REJECTED, by=caller.key_name, note=note
            ):
                raise ReviewDecided(f"review {review_id} was decided by someone else a moment ago")
            shown = await run_in_threadpool(self.store.answer, review.request_id)
            if shown is not None and shown.origin == "curated":  # a reviewer rejected a curated answer: no more
                withdrawn = await run_in_threadpool(
                    self.store.withdraw_question, review.collection, question_key(review.question)
                )
                CURATED.labels(event="withdrawn").inc(withdrawn)
            await run_in_threadpool(self._decided, review, "rejected", caller, {"note": note})
            return await run_in_threadpool(self.detail, review_id, caller)
        limit = self.settings.review_max_attempts
        if len(attempts) >= limit:
            REVIEW_RETRIES.labels(outcome="limit").inc()
            raise RetryLimitReached(
                f"review {review_id} has had {len(attempts)} candidates, the limit "
                f"(RAGKB_REVIEW_MAX_ATTEMPTS={limit}): "
                "approve one (edited if need be) or reject without retry"
            )
        query, strategy = self._retry_query(review, len(attempts) + 1)
        plan = await run_in_threadpool(
            self.service.plan,
            query,
            template=self._retry_template,
            variables={"reviewer_note": note or "(no note)"},
            use_cache=False,
        )
        response = await self.service.complete(plan, request_id=review.request_id)
        added = await run_in_threadpool(
            self.store.add_attempt,
            review_id,
            candidate=response.model_dump(mode="json"),
            context=self._context(plan, response),
            note=note,
            strategy=strategy,
            limit=limit,
        )
        if added is None:  # decided, or another retry took the last slot, while this candidate was being made
            raise ReviewDecided(f"review {review_id} was decided or retried by someone else meanwhile")
        REVIEW_RETRIES.labels(outcome="abstained" if response.abstained else "answered").inc()
        REVIEW_DECISIONS.labels(decision="retried").inc()
        await run_in_threadpool(
            self.audit.record,
            "review.retry",
            caller.key_name,
            collection=review.collection,
            request_id=review.request_id,
            detail={"review_id": review_id, "attempt": len(attempts) + 1, "strategy": strategy, "note": note},
        )
        return await run_in_threadpool(self.detail, review_id, caller)

    def _retry_query(self, review: ReviewRecord, attempt: int) -> tuple[Query, str]:
        """Another attempt: twice the context each time and the other retriever every second attempt."""
        options = review.options or {}
        base_k = int(options.get("top_k") or self.settings.top_k)
        top_k = min(100, base_k * 2 ** (attempt - 1))
        first = str(options.get("retriever") or self.settings.retriever)
        retriever = first if attempt % 2 == 1 else ("dense" if first != "dense" else "hybrid")
        raw = options.get("filters")
        filters = Filters.from_dict(raw) if raw else None
        query = self.service.query(
            review.question, collection=review.collection, top_k=top_k, filters=filters, retriever=retriever
        )
        return query, f"retry:top_k={top_k},retriever={retriever},prompt={RETRY_TEMPLATE}"

    def _decided(self, review: ReviewRecord, decision: str, caller: Actor, detail: dict[str, Any] | None) -> None:
        REVIEW_DECISIONS.labels(decision=decision).inc()
        REVIEW_SECONDS.observe(max(0.0, (utcnow() - review.created_at).total_seconds()))
        REVIEWS_PENDING.set(self.store.pending_count())
        self.audit.record(
            f"review.{'approve' if decision in ('approved', 'edited') else 'reject'}",
            caller.key_name,
            collection=review.collection,
            request_id=review.request_id,
            detail={"review_id": review.id, **(detail or {})},
        )


def chunks_in_order(by_n: dict[int, dict[str, Any]], chunks: dict[str, StoredChunk]) -> list[StoredChunk]:
    """The passages as chunks at position n-1 for [n], as `validate` reads them. A number with no passage,
    or an uncited passage that is gone, gets a placeholder that nothing cites."""
    out: list[StoredChunk] = []
    for n in range(1, max(by_n, default=0) + 1):
        p = by_n.get(n)
        if p is None:
            out.append(StoredChunk(f"missing-{n}", "", {}))
        else:
            out.append(chunks.get(str(p["chunk_id"])) or StoredChunk(str(p["chunk_id"]), str(p["text"]), {}))
    return out
