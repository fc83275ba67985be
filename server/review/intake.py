"""Intake: what was shown is recorded (behind the response, in batches), held for a reviewer (policy
`required`), queued when doubtful (`flagged`) or on a thumbs-down."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from ..answering.service import Plan
from ..metrics import (
    FEEDBACK,
)
from ..schemas import Citation, QueryResponse
from ..state.models import AnswerRecord, FeedbackRecord, ReviewRecord, utcnow
from .curated import text_hash
from .errors import (
    AnswerNotFound,
    InvalidFeedback,
)
from .parts import Actor, DeskParts, passages_of
from .policy import Reason, ReviewPolicy, flag_reasons
from .schemas import (
    FeedbackIn,
)

log = logging.getLogger("ragkb.review")

RETRY_TEMPLATE = "answer-retry"
NOT_ANSWERED = "A reviewer declined to answer this question from the documents."


class Intake(DeskParts):
    """Recording answers, holding them, queuing them for review, and feedback."""

    def record(self, plan: Plan | None, response: QueryResponse, key_name: str | None, question: str) -> None:
        """Keep what was answered, so feedback and reviews refer to exactly what was shown."""
        self.store.record_answer(answer_record(plan, response, key_name, question))

    def _record_batched(self, plan: Plan | None, response: QueryResponse, key_name: str | None, question: str) -> None:
        """`record` behind the response, written with others in one transaction (the writer's batch)."""
        self.writer.add(lambda: answer_row(plan, response, key_name, question))

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


# the citations of the last row as JSON values, by the list they came from (holding it: its id stays unique);
# a row's largest part, and the same for every hit of a question (the rows only read them)
_last_citations: tuple[list[Citation], list[dict[str, Any]]] = ([], [])


def answer_record(plan: Plan | None, response: QueryResponse, key_name: str | None, question: str) -> AnswerRecord:
    """What was shown, by request id (`answer_row`), as a record."""
    return AnswerRecord(**answer_row(plan, response, key_name, question))


def answer_row(plan: Plan | None, response: QueryResponse, key_name: str | None, question: str) -> dict[str, Any]:
    """What was shown, by request id: the passages' numbers as shown, and each passage's text hash then; the
    `answers` table's columns (the background writer inserts these rows without building ORM objects)."""
    if plan is not None and plan.request is not None:
        shown = [
            {"n": n, "chunk_id": c.chunk_id, "text_hash": text_hash(c.text)}
            for n, c in enumerate(plan.request.contexts, start=1)
        ]
    else:  # a cached or curated answer: its citations, by their numbers, are what it was made from
        shown = [{"n": c.n, "chunk_id": c.chunk_id, "text_hash": None} for c in response.citations]
    chunk_ids = [p["chunk_id"] for p in shown] or [c.chunk_id for c in response.related]
    global _last_citations
    citations, dumped = _last_citations
    if citations is not response.citations:  # fast-path hits share one list (answering/recall.py)
        dumped = [c.model_dump(mode="json") for c in response.citations]
        _last_citations = (response.citations, dumped)
    return {
        "request_id": response.request_id,
        "at": utcnow(),
        "key_name": key_name,
        "collection": response.collection,
        "question": question,
        "answer": response.answer,
        "citations": dumped,
        "chunk_ids": chunk_ids,
        "prompt": f"{response.prompt.name}:{response.prompt.version}",
        "provider": response.provider,
        "model": response.model,
        "confidence": response.confidence,
        "origin": response.origin,
        "abstained": response.abstained,
        "detail": {
            "unsupported_citations": response.unsupported_citations,
            "retriever": response.retriever,
            "passages": shown,  # the numbers [n] meant when shown, and each passage's text hash then
        },
    }
