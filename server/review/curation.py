"""Curated answers administered by hand (scope `review`): list them, read one, withdraw a wrong one.

Withdrawal is otherwise automatic (a cited passage changed, a newer approval of the same question, a rejected
thumbs-down review of a curated answer); here a reviewer withdraws one directly. A key limited to some
collections neither sees nor withdraws another collection's curated answers (404, as for reviews).
Blocking: call it from a thread in async code.
"""

from __future__ import annotations

from ..metrics import CURATED
from ..state import Audit
from ..state.models import CuratedAnswer
from ..state.reviews import WITHDRAWN, ReviewStore
from .desk import Actor
from .errors import CuratedNotFound, CuratedWithdrawn
from .schemas import CuratedCitation, CuratedOut

_CITATION_FIELDS = set(CuratedCitation.model_fields)


class Curation:
    def __init__(self, store: ReviewStore, audit: Audit) -> None:
        self.store = store
        self.audit = audit

    def list(self, caller: Actor, *, collection: str | None, status: str | None, limit: int) -> list[CuratedOut]:
        """Curated answers the caller may see, newest approval first (`status` None: active and withdrawn)."""
        if collection is not None:
            if not caller.can_see(collection):
                return []
            collections: list[str] | None = [collection]
        else:
            collections = None if caller.collections is None else list(caller.collections)
        return [curated_of(c) for c in self.store.list_curated(status=status, collections=collections, limit=limit)]

    def load(self, curated_id: int, caller: Actor) -> CuratedAnswer:
        found = self.store.curated_by_id(curated_id)
        if found is None or not caller.can_see(found.collection):
            raise CuratedNotFound(f"no curated answer with id {curated_id}")
        return found

    def show(self, curated_id: int, caller: Actor) -> CuratedOut:
        return curated_of(self.load(curated_id, caller))

    def withdraw(self, curated_id: int, caller: Actor, *, request_id: str | None = None) -> CuratedOut:
        """Withdraw an active curated answer: the question is answered afresh (and reviewed as its collection's
        policy says). One conditional UPDATE: of two concurrent withdrawals one wins, the other gets 409.
        `request_id`: the HTTP request's, for the audit record."""
        curated = self.load(curated_id, caller)
        if curated.status == WITHDRAWN or not self.store.withdraw(curated_id):
            raise CuratedWithdrawn(f"curated answer {curated_id} is already withdrawn")
        CURATED.labels(event="withdrawn").inc()
        self.audit.record(
            "curated.withdraw",
            caller.key_name,
            collection=curated.collection,
            request_id=request_id,
            detail={"curated_id": curated.id, "review_id": curated.review_id, "question": curated.question},
        )
        return self.show(curated_id, caller)


def curated_of(curated: CuratedAnswer) -> CuratedOut:
    return CuratedOut(
        id=curated.id,
        collection=curated.collection,
        question=curated.question,
        answer=curated.answer,
        citations=[CuratedCitation(**{k: v for k, v in c.items() if k in _CITATION_FIELDS}) for c in curated.citations],
        review_id=curated.review_id,
        reviewer=curated.reviewer,
        approved_at=curated.approved_at,
        status=curated.status,  # type: ignore[arg-type]
        withdrawn_at=curated.withdrawn_at,
    )
