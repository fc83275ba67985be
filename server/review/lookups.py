"""The query side's questions to the desk, answered from memory when they can be: the collection's review
policy, and a curated answer for the question (withdrawing stale ones on the way)."""

from __future__ import annotations

import logging

from ..answering.service import Query
from ..metrics import (
    CURATED,
)
from ..schemas import CuratedInfo, QueryResponse
from .curated import Lookup
from .parts import DeskParts, set_policy
from .policy import ReviewPolicy

log = logging.getLogger("ragkb.review")

RETRY_TEMPLATE = "answer-retry"
NOT_ANSWERED = "A reviewer declined to answer this question from the documents."


class Lookups(DeskParts):
    """Review policies and curated answers for the answering entry."""

    def cached_policy(self, collection: str) -> ReviewPolicy | None:
        """The policy if it is kept in memory, else None (nothing is read)."""
        kept, found = self.store.cached_policy(collection)
        if not kept:
            return None
        return ReviewPolicy.OFF if found is None else ReviewPolicy.parse(found)

    def may_have_curated(self, collection: str) -> bool:
        """False only when this process knows the collection has no curated answer (nothing is read)."""
        return self.store.cached_has_curated(collection) is not False

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
