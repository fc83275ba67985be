"""The review desk: model output -> a person's review -> approve (the answer goes out and is curated), or
reject (for good, or retry with another candidate).

The query route asks the desk three things: is there a curated answer for this question
(`curated_answer`), and after answering, record what was shown and queue it if the collection's
policy says so (`after_answer`, or `hold` for policy `required`, where the asker gets a review id
instead of the answer). Reviewers act through `approve` and `reject`. Everything blocking here
(database, store, embedder) is called from a thread; `reject` is async because a retry answers the
question again through `QueryService`, the one answering path.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from starlette.concurrency import run_in_threadpool

from ingest.config import Settings
from ingest.vectorstore import Filters, StoredChunk, validate_collection_name

from ..answering.citations import validate
from ..answering.markers import MARKER, marker_numbers
from ..answering.prompting import load_template
from ..answering.questions import question_key
from ..answering.service import Plan, Query, QueryService
from ..metrics import (
    CURATED,
    FEEDBACK,
    REVIEW_DECISIONS,
    REVIEW_RETRIES,
    REVIEW_SECONDS,
    REVIEWS_PENDING,
    REVIEWS_QUEUED,
)
from ..schemas import Citation, CuratedInfo, PromptInfo, QueryResponse, Timings
from ..state import Audit
from ..state.models import AnswerRecord, CuratedAnswer, FeedbackRecord, ReviewAttempt, ReviewRecord, utcnow
from ..state.reviews import APPROVED, PENDING, REJECTED, ReviewStore
from ..state.writer import BackgroundWriter
from .curated import CuratedAnswers, Lookup, text_hash
from .errors import (
    AnswerNotFound,
    InvalidEdit,
    InvalidFeedback,
    RetryLimitReached,
    ReviewDecided,
    ReviewNotFound,
    StaleChunk,
)
from .policy import Reason, ReviewPolicy, flag_reasons
from .schemas import (
    AnswerOutcome,
    Attempt,
    CitedPassage,
    FeedbackIn,
    Passage,
    ReviewDetail,
    ReviewSummary,
)

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


class ReviewDesk:
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

    # -- the query side (blocking) -----------------------------------------------------

    def cached_policy(self, collection: str) -> ReviewPolicy | None:
        """The policy if it is kept in memory, else None (nothing is read)."""
        kept, found = self.store.cached_policy(collection)
        if not kept:
            return None
        return ReviewPolicy.OFF if found is None else ReviewPolicy.parse(found)

    def may_have_curated(self, collection: str) -> bool:
        """False only when this process knows the collection has no curated answer (nothing is read)."""
        return self.store.cached_has_curated(collection) is not False

    def policy(self, collection: str) -> ReviewPolicy:
        found = self.store.policy(collection)
        return ReviewPolicy.OFF if found is None else ReviewPolicy.parse(found)

    def set_policy(self, collection: str, policy: str, by: str | None) -> ReviewPolicy:
        return set_policy(self.store, self.audit, collection, policy, by)

    def curated_answer(self, query: Query, request_id: str, started: float) -> tuple[QueryResponse | None, Lookup]:
        """A curated answer to serve for this question, if any (withdrawing stale ones on the way)."""
        lookup = self.curated.lookup(query.question, query.collection)
        for withdrawn in lookup.withdrawn:
            CURATED.labels(event="withdrawn").inc()
            log.info(
                "curated answer %s withdrawn: a cited passage changed", withdrawn.id, extra={"request_id": request_id}
            )
        if lookup.found is None:
            return None, lookup
        CURATED.labels(event=lookup.found.match).inc()
        curated = lookup.found.curated
        info = CuratedInfo(
            review_id=curated.review_id,
            reviewer=curated.reviewer,
            approved_at=curated.approved_at,
            match=lookup.found.match,
            similarity=lookup.found.similarity,
        )
        return self._approved_response(
            curated.answer, curated.citations, query.collection, request_id, started, info, bool(curated.citations)
        ), lookup

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

    def record(self, plan: Plan | None, response: QueryResponse, key_name: str | None, question: str) -> None:
        """Keep what was answered, so feedback and reviews refer to exactly what was shown."""
        self.store.record_answer(answer_record(plan, response, key_name, question))

    def _record_batched(self, plan: Plan | None, response: QueryResponse, key_name: str | None, question: str) -> None:
        """`record` behind the response, written with others in one transaction (the writer's batch)."""
        self.writer.add(lambda: answer_record(plan, response, key_name, question))

    def after_answer(
        self,
        plan: Plan,
        response: QueryResponse,
        *,
        key_name: str | None,
        policy: ReviewPolicy,
        withdrawn: bool = False,
    ) -> ReviewRecord | None:
        """Record a shown answer; with policy `flagged` (or a withdrawn curated answer) queue it if doubtful."""
        self.record(plan, response, key_name, plan.query.question)
        reasons: list[Reason] = [Reason.SOURCE_CHANGED] if withdrawn else []
        if policy is ReviewPolicy.FLAGGED:
            reasons += flag_reasons(response, confidence_below=self.settings.review_flag_below)
        if not reasons:
            return None
        return self._queue(plan, response, reasons, held=False, asked_by=key_name)

    def after_answer_later(
        self,
        plan: Plan,
        response: QueryResponse,
        *,
        key_name: str | None,
        policy: ReviewPolicy,
        withdrawn: bool = False,
    ) -> None:
        """`after_answer` behind the response (the writer's thread): the asker already has the answer; a state
        database outage loses only its record for feedback and review (logged and counted)."""
        if policy is ReviewPolicy.OFF and not withdrawn:  # only the record: batched with others
            self._record_batched(plan, response, key_name, plan.query.question)
            return
        self.writer.submit(
            lambda: self.after_answer(plan, response, key_name=key_name, policy=policy, withdrawn=withdrawn)
        )

    def record_later(
        self, response: QueryResponse, key_name: str | None, question: str, policy: ReviewPolicy = ReviewPolicy.OFF
    ) -> None:
        """`record_answer` behind the response."""
        if policy is ReviewPolicy.FLAGGED and response.origin not in ("curated", "reviewed"):
            self.writer.submit(lambda: self.record_answer(response, key_name, question, policy))
        else:
            self._record_batched(None, response, key_name, question)

    def record_answer(
        self, response: QueryResponse, key_name: str | None, question: str, policy: ReviewPolicy = ReviewPolicy.OFF
    ) -> None:
        """Record an answer made without a plan of this desk's (curated, agent mode); with policy `flagged`, a
        doubtful one is queued from its record."""
        self.record(None, response, key_name, question)
        if policy is ReviewPolicy.FLAGGED and response.origin not in ("curated", "reviewed"):
            reasons = flag_reasons(response, confidence_below=self.settings.review_flag_below)
            recorded = self.store.answer(response.request_id)
            if reasons and recorded is not None and recorded.key_name == key_name:
                self._queue_recorded(recorded, key_name, reasons)

    def hold(
        self, plan: Plan, response: QueryResponse, *, key_name: str | None, withdrawn: bool = False
    ) -> ReviewRecord:
        """Policy `required`: record the candidate and hold it for a reviewer; the asker gets the review id."""
        self.record(plan, response, key_name, plan.query.question)
        reasons = [Reason.REQUIRED] + ([Reason.SOURCE_CHANGED] if withdrawn else [])
        return self._queue(plan, response, reasons, held=True, asked_by=key_name)

    def _queue(
        self, plan: Plan, response: QueryResponse, reasons: list[Reason], *, held: bool, asked_by: str | None
    ) -> ReviewRecord:
        query = plan.query
        options = {
            "confidence": response.confidence,  # shown in the queue's list
            "top_k": query.top_k,
            "retriever": query.retriever,
            "filters": None if query.filters is None else query.filters.to_dict(),
        }
        return self._create(
            request_id=response.request_id,
            collection=query.collection,
            question=query.question,
            options=options,
            held=held,
            reasons=reasons,
            asked_by=asked_by,
            by=asked_by,
            candidate=response.model_dump(mode="json"),
            context=self._context(plan, response),
        )

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

    def _context(self, plan: Plan, response: QueryResponse) -> list[dict[str, Any]]:
        """The numbered passages the candidate could cite (the prompt's context, in its order)."""
        if plan.request is not None:
            return passages_of(plan.request.contexts)
        # a cached answer has no prompt: its citations, read back from the store, are its context
        cited = sorted(response.citations, key=lambda c: c.n)
        chunks = {c.chunk_id: c for c in self._read_chunks(response.collection, [c.chunk_id for c in cited])}
        return [passages_of([chunks[c.chunk_id]], first=c.n)[0] for c in cited if c.chunk_id in chunks]

    def _read_chunks(self, collection: str, ids: Sequence[str]) -> list[StoredChunk]:
        if not ids:
            return []
        return self.service.reader.store.chunks(self.service.reader.collection(collection), list(ids))

    # -- feedback ----------------------------------------------------------------------

    def feedback(self, body: FeedbackIn, caller: Actor) -> tuple[FeedbackRecord, ReviewRecord | None]:
        self.flush()
        answer = self.store.answer(body.request_id)
        if answer is None or not caller.can_see(answer.collection):
            raise AnswerNotFound(f"no answer with request id {body.request_id!r} (feedback refers to a response's id)")
        numbers = {int(c["n"]) for c in answer.citations}
        wrong = sorted({v.n for v in body.citations} - numbers)
        if wrong:
            valid = ", ".join(str(n) for n in sorted(numbers)) or "none: the answer cites nothing"
            raise InvalidFeedback(f"the answer has no citation {wrong}; its citations are: {valid}")
        record = self.store.add_feedback(
            FeedbackRecord(
                request_id=body.request_id,
                at=utcnow(),
                key_name=caller.key_name,
                rating=body.rating,
                comment=body.comment,
                citations=[v.model_dump() for v in body.citations] or None,
            )
        )
        FEEDBACK.labels(rating=body.rating).inc()
        review = None
        if (
            body.rating == "down"
            and self.policy(answer.collection) is ReviewPolicy.FLAGGED
            and self.store.open_review_for(answer.request_id) is None
        ):
            review = self._queue_recorded(answer, caller.key_name)
        return record, review

    def _queue_recorded(
        self, answer: AnswerRecord, key_name: str | None, reasons: Sequence[Reason] = (Reason.THUMBS_DOWN,)
    ) -> ReviewRecord:
        """Queue an answer already shown (thumbs down), rebuilding its context from the recorded chunk ids."""
        shown = list((answer.detail or {}).get("passages") or [])
        chunks = {c.chunk_id: c for c in self._read_chunks(answer.collection, [str(p["chunk_id"]) for p in shown])}
        context = []
        for p in shown:  # the numbers the answer used; a passage changed since is shown as such and cannot be cited
            chunk = chunks.get(str(p["chunk_id"]))
            if chunk is not None and p.get("text_hash") in (None, text_hash(chunk.text)):
                context.append(passages_of([chunk], first=int(p["n"]))[0])
            else:
                gone = "(this passage changed or was deleted after the answer was shown)"
                context.append(
                    {
                        **p,
                        "text": gone,
                        "text_hash": p.get("text_hash") or "",
                        "document_id": "",
                        "source": "",
                        "title": "",
                        "page": None,
                        "heading": None,
                    }
                )
        candidate = {
            "answer": answer.answer,
            "citations": answer.citations,
            "confidence": answer.confidence,
            "abstained": answer.abstained,
            "provider": answer.provider,
            "prompt": {"name": answer.prompt.split(":")[0], "version": answer.prompt.split(":")[-1]},
        }
        return self._create(
            request_id=answer.request_id,
            collection=answer.collection,
            question=answer.question,
            options={"confidence": answer.confidence},
            held=False,
            reasons=reasons,
            asked_by=answer.key_name,
            by=key_name,
            candidate=candidate,
            context=context,
        )

    # -- the reviewer's side -------------------------------------------------------------

    def load(self, review_id: str, caller: Actor) -> tuple[ReviewRecord, list[ReviewAttempt]]:
        self.flush()
        found = self.store.review(review_id)
        if found is None or not caller.can_see(found[0].collection):
            raise ReviewNotFound(f"no review with id {review_id!r}")
        return found

    def detail(self, review_id: str, caller: Actor) -> ReviewDetail:
        return detail_of(*self.load(review_id, caller))

    def queue(self, caller: Actor, *, status: str | None, limit: int) -> list[ReviewSummary]:
        self.flush()
        return [
            summary_of(r, n) for r, n in self.store.reviews(status=status, collections=caller.collections, limit=limit)
        ]

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

    # -- the asker's side ----------------------------------------------------------------

    def outcome(self, review_id: str, caller: Actor) -> AnswerOutcome:
        self.flush()
        found = self.store.review(review_id)
        if found is None or not found[0].held or not caller.can_see(found[0].collection):
            raise AnswerNotFound(f"no held answer with id {review_id!r}")
        review = found[0]
        if review.status == PENDING:
            return AnswerOutcome(review_id=review.id, status="pending", message="Waiting for a reviewer.")
        if review.status == REJECTED:
            return AnswerOutcome(review_id=review.id, status="rejected", message=NOT_ANSWERED)
        final = review.final or {}
        info = CuratedInfo(
            review_id=review.id,
            reviewer=review.decided_by,
            approved_at=review.decided_at or utcnow(),
            match="review",
        )
        response = self._approved_response(
            str(final.get("answer", "")),
            list(final.get("citations", [])),
            review.collection,
            review.request_id,
            time.perf_counter(),
            info,
            grounded=bool(final.get("grounded", True)),
        )
        return AnswerOutcome(review_id=review.id, status="approved", answer=response, message="Approved by a reviewer.")


def answer_record(plan: Plan | None, response: QueryResponse, key_name: str | None, question: str) -> AnswerRecord:
    """What was shown, by request id: the passages' numbers as shown, and each passage's text hash then."""
    if plan is not None and plan.request is not None:
        shown = [
            {"n": n, "chunk_id": c.chunk_id, "text_hash": text_hash(c.text)}
            for n, c in enumerate(plan.request.contexts, start=1)
        ]
    else:  # a cached or curated answer: its citations, by their numbers, are what it was made from
        shown = [{"n": c.n, "chunk_id": c.chunk_id, "text_hash": None} for c in response.citations]
    chunk_ids = [p["chunk_id"] for p in shown] or [c.chunk_id for c in response.related]
    return AnswerRecord(
        request_id=response.request_id,
        at=utcnow(),
        key_name=key_name,
        collection=response.collection,
        question=question,
        answer=response.answer,
        citations=[c.model_dump(mode="json") for c in response.citations],
        chunk_ids=chunk_ids,
        prompt=f"{response.prompt.name}:{response.prompt.version}",
        provider=response.provider,
        model=response.model,
        confidence=response.confidence,
        origin=response.origin,
        abstained=response.abstained,
        detail={
            "unsupported_citations": response.unsupported_citations,
            "retriever": response.retriever,
            "passages": shown,  # the numbers [n] meant when shown, and each passage's text hash then
        },
    )


def set_policy(store: ReviewStore, audit: Audit, collection: str, policy: str, by: str | None) -> ReviewPolicy:
    """Set (and audit) a collection's review policy."""
    parsed = ReviewPolicy.parse(policy)
    validate_collection_name(collection)
    store.set_policy(collection, parsed.value, by)
    audit.record("collection.review_policy", by, collection=collection, detail={"review": parsed.value})
    return parsed


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
