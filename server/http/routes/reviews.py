"""The review queue (scope `review`): list, show, approve, reject or retry; curated answers (scope `review`):
list, show, withdraw; and each collection's review policy (read it with `read`, set it with `admin`). Every
action is in the audit trail."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query
from starlette.concurrency import run_in_threadpool

from ...review.curation import Curation
from ...review.desk import Actor
from ...review.schemas import (
    ApproveIn,
    CuratedList,
    CuratedOut,
    PolicyIn,
    PolicyOut,
    RejectIn,
    ReviewDetail,
    ReviewList,
)
from ...schemas import ErrorResponse
from ..auth import AdminCaller, Caller, ReadCaller, ReviewCaller
from ..deps import DeskDep as Desk
from ..deps import ReaderDep
from ..observability import request_id_var

router = APIRouter(prefix="/v1", tags=["reviews"])


def actor(caller: Caller) -> Actor:
    """The caller as the review desk knows them: a name for the record, the collections they may see."""
    identity = caller.identity
    collections = None if identity is None or identity.collections is None else sorted(identity.collections)
    return Actor(caller.key_name, collections)


@router.get("/reviews", response_model=ReviewList, summary="The review queue, oldest first.")
def reviews(
    desk: Desk,
    caller: ReviewCaller,
    status: Annotated[Literal["pending", "approved", "rejected"] | None, Query()] = "pending",
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> ReviewList:
    return ReviewList(reviews=desk.queue(actor(caller), status=status, limit=limit))


@router.get("/reviews/{review_id}", response_model=ReviewDetail, summary="One review: candidate, passages, history.")
def review(review_id: str, desk: Desk, caller: ReviewCaller) -> ReviewDetail:
    return desk.detail(review_id, actor(caller))


@router.post(
    "/reviews/{review_id}/approve",
    response_model=ReviewDetail,
    summary="Approve the candidate, or an edited answer; it reaches the asker and becomes a curated answer.",
    responses={409: {"description": "Already decided, or a cited passage changed or disappeared."}},
)
def approve(review_id: str, body: ApproveIn, desk: Desk, caller: ReviewCaller) -> ReviewDetail:
    return desk.approve(
        review_id, actor(caller), answer=body.answer, extra_chunks=body.extra_chunks, attempt=body.attempt
    )


@router.post(
    "/reviews/{review_id}/reject",
    response_model=ReviewDetail,
    summary="Reject for good, or retry: a new candidate is made and queued (up to RAGKB_REVIEW_MAX_ATTEMPTS).",
    responses={409: {"description": "Already decided, or the retry limit is reached."}},
)
async def reject(review_id: str, body: RejectIn, desk: Desk, caller: ReviewCaller) -> ReviewDetail:
    return await desk.reject(review_id, actor(caller), retry=body.retry, note=body.note)


def curation(desk: Desk) -> Curation:
    return Curation(desk.store, desk.audit)


Curated = Annotated[Curation, Depends(curation)]
CuratedId = Annotated[int, Path(ge=1, le=2**63 - 1, description="The curated answer's id.")]
NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorResponse, "description": "No curated answer with this id that the key may see."}
}


@router.get(
    "/curated",
    response_model=CuratedList,
    summary="Curated answers the key may see, newest approval first (active, withdrawn or all).",
)
def curated_list(
    curated: Curated,
    caller: ReviewCaller,
    collection: Annotated[str | None, Query(description="Only this collection.")] = None,
    status: Annotated[Literal["active", "withdrawn", "all"], Query()] = "active",
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> CuratedList:
    found = curated.list(actor(caller), collection=collection, status=None if status == "all" else status, limit=limit)
    return CuratedList(curated=found)


@router.get(
    "/curated/{curated_id}",
    response_model=CuratedOut,
    summary="One curated answer: question, answer, citations, who approved it, status.",
    responses=NOT_FOUND,
)
def curated_show(curated_id: CuratedId, curated: Curated, caller: ReviewCaller) -> CuratedOut:
    return curated.show(curated_id, actor(caller))


@router.delete(
    "/curated/{curated_id}",
    response_model=CuratedOut,
    summary="Withdraw a curated answer: the question is answered afresh (and reviewed per the collection's "
    "policy). Returns the withdrawn entry.",
    responses={
        **NOT_FOUND,
        409: {"model": ErrorResponse, "description": "The curated answer is already withdrawn."},
    },
)
def curated_withdraw(curated_id: CuratedId, curated: Curated, caller: ReviewCaller) -> CuratedOut:
    return curated.withdraw(curated_id, actor(caller), request_id=request_id_var.get())


@router.get("/collections/{name}/review-policy", response_model=PolicyOut, summary="A collection's review policy.")
def get_policy(name: str, desk: Desk, reader: ReaderDep, caller: ReadCaller) -> PolicyOut:
    collection = caller.collection(name)
    reader.store.get(collection)  # 404 for an unknown collection
    return PolicyOut(collection=collection, review=desk.policy(collection).value)


@router.put(
    "/collections/{name}/review-policy",
    response_model=PolicyOut,
    summary="Set a collection's review policy: off, flagged or required.",
)
async def set_policy(name: str, body: PolicyIn, desk: Desk, reader: ReaderDep, caller: AdminCaller) -> PolicyOut:
    collection = caller.collection(name)
    await run_in_threadpool(reader.collection, collection)  # 404 for an unknown collection
    policy = await run_in_threadpool(desk.set_policy, collection, body.review, caller.key_name)
    return PolicyOut(collection=collection, review=policy.value)
