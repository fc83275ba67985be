"""The asker's side of review: feedback on any answer (`POST /v1/feedback`), and held answers
(`GET /v1/answers/{id}`, or wait for the decision on `GET /v1/answers/{id}/events`)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator

from fastapi import APIRouter
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool

from ...review.schemas import AnswerOutcome, FeedbackIn, FeedbackOut
from ..auth import ReadCaller
from ..deps import DeskDep as Desk
from .reviews import actor

router = APIRouter(prefix="/v1", tags=["answers"])
POLL_SECONDS = 0.5


@router.post(
    "/feedback",
    response_model=FeedbackOut,
    status_code=201,
    summary="Rate an answer (up/down), comment, and mark citations helpful or wrong.",
)
async def feedback(body: FeedbackIn, desk: Desk, caller: ReadCaller) -> JSONResponse:
    """`request_id` is the answered response's id. On a collection with review policy `flagged`, a thumbs
    down queues the answer for review."""
    record, review = await run_in_threadpool(desk.feedback, body, actor(caller))
    out = FeedbackOut(feedback_id=record.id, request_id=record.request_id, review_id=review.id if review else None)
    return JSONResponse(out.model_dump(), status_code=201)


@router.get("/answers/{review_id}", response_model=AnswerOutcome, summary="A held answer: pending, approved or not.")
def answer(review_id: str, desk: Desk, caller: ReadCaller) -> AnswerOutcome:
    return desk.outcome(review_id, actor(caller))


@router.get(
    "/answers/{review_id}/events",
    summary="Wait for a held answer: SSE `status` events until approved or rejected (or a `timeout` event after "
    "RAGKB_ANSWER_WAIT_SECONDS).",
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def answer_events(review_id: str, desk: Desk, caller: ReadCaller) -> StreamingResponse:
    who = actor(caller)
    first = await run_in_threadpool(desk.outcome, review_id, who)  # 404 before the stream starts
    deadline = time.monotonic() + desk.settings.answer_wait_seconds

    async def events() -> AsyncIterator[str]:
        outcome = first
        yield _event(outcome)
        while outcome.status == "pending" and time.monotonic() < deadline:
            await asyncio.sleep(POLL_SECONDS)
            latest = await run_in_threadpool(desk.outcome, review_id, who)
            if latest.status != outcome.status:
                yield _event(latest)
            outcome = latest
        if outcome.status == "pending":  # still waiting: say so, so the client knows to poll or reconnect
            waiting = {"review_id": review_id, "retry_url": f"/v1/answers/{review_id}"}
            yield f"event: timeout\ndata: {json.dumps(waiting)}\n\n"

    return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


def _event(outcome: AnswerOutcome) -> str:
    return f"event: status\ndata: {json.dumps(outcome.model_dump(mode='json'))}\n\n"
