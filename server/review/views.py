"""What reviewers and askers read: a review's detail, the queue, a held answer's outcome."""

from __future__ import annotations

import logging
import time

from ..schemas import CuratedInfo
from ..state.models import utcnow
from ..state.reviews import PENDING, REJECTED
from .errors import (
    AnswerNotFound,
)
from .parts import Actor, DeskParts, summary_of
from .schemas import (
    AnswerOutcome,
    ReviewSummary,
)

log = logging.getLogger("ragkb.review")

RETRY_TEMPLATE = "answer-retry"
NOT_ANSWERED = "A reviewer declined to answer this question from the documents."


class Views(DeskParts):
    """Reading reviews and held answers."""

    def queue(self, caller: Actor, *, status: str | None, limit: int) -> list[ReviewSummary]:
        self.flush()
        return [
            summary_of(r, n) for r, n in self.store.reviews(status=status, collections=caller.collections, limit=limit)
        ]

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
