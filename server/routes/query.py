"""`POST /v1/query` (JSON or Server-Sent Events) and `POST /v1/retrieve` (scope `read`; the collection, named
or the default, must be one the key may see)."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, BackgroundTasks, Depends
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool

from ingest.vectorstore import Filters

from ..agent.http import agent_reply
from ..auth import ReadCaller
from ..components import query_service, review_desk
from ..observability import request_id_var
from ..review.curated import NO_LOOKUP
from ..review.desk import ReviewDesk
from ..review.policy import ReviewPolicy
from ..review.schemas import HeldAnswer
from ..schemas import QueryFilters, QueryRequest, QueryResponse, RetrievedChunk, RetrieveRequest, RetrieveResponse
from ..service import Done, Event, Failure, QueryService, Token

router = APIRouter(prefix="/v1", tags=["query"])
Service = Annotated[QueryService, Depends(query_service)]
Desk = Annotated[ReviewDesk, Depends(review_desk)]


def filters_of(model: QueryFilters | None) -> Filters | None:
    if model is None:
        return None
    return Filters(document_ids=tuple(model.document_ids), source_glob=model.source_glob, where=dict(model.where))


def _sse(event: Token | Failure | Done) -> str:
    if isinstance(event, Token):
        name, data = "token", {"text": event.text}
    elif isinstance(event, Failure):
        name, data = "error", {"error": event.error, "fallback": event.fallback}
    else:
        name, data = "done", event.response.model_dump()
    return f"event: {name}\ndata: {json.dumps(data)}\n\n"


@router.post(
    "/query",
    response_model=QueryResponse,
    summary="Answer a question with validated citations.",
    responses={
        200: {"content": {"text/event-stream": {}}, "description": "JSON, or SSE when stream=true."},
        202: {
            "model": HeldAnswer,
            "description": "The collection's review policy is `required`: the answer is "
            "held for a reviewer; fetch it at `answer_url`.",
        },
    },
)
async def query(
    body: QueryRequest, service: Service, desk: Desk, caller: ReadCaller, background: BackgroundTasks
) -> Any:
    """With `stream: true` the answer comes as Server-Sent Events: `token` events, an `error` event if the
    LLM fails mid-answer (the extractive answer follows), then one `done` event with the validated answer.
    Every request error (unknown collection, bad filter, ...) is answered with its status before the
    stream starts.

    A curated answer (approved by a reviewer for the same or a similar question) comes first, before the
    cache. When the collection's review policy is `required`, the answer is held: `202` with a review id."""
    started = time.perf_counter()
    request_id = request_id_var.get()
    asked = service.query(
        body.question,
        collection=caller.collection(body.collection),
        top_k=body.top_k,
        filters=filters_of(body.filters),
        retriever=body.retriever,
    )
    policy = await run_in_threadpool(desk.policy, asked.collection)
    # a curated answer was approved for the question, not for a filtered view of the collection
    curated, lookup = (
        await run_in_threadpool(desk.curated_answer, asked, request_id, started)
        if asked.filters is None
        else (None, NO_LOOKUP)
    )
    if curated is not None:
        background.add_task(desk.record_quietly, curated, caller.key_name, asked.question)
        return await _reply(body.stream, _single(curated))
    if body.mode == "agent" and policy is not ReviewPolicy.REQUIRED:  # agent mode: server/agent, docs/agent.md
        return await agent_reply(
            service,
            asked,
            stream=body.stream,
            request_id=request_id,
            answered=lambda response: desk.record_quietly(response, caller.key_name, asked.question, policy),
        )
    plan = await run_in_threadpool(service.plan, asked)
    withdrawn = bool(lookup.withdrawn)  # a curated answer went stale: its question is reviewed again
    if policy is ReviewPolicy.REQUIRED:
        candidate = await service.complete(plan, request_id=request_id)
        review = await run_in_threadpool(desk.hold, plan, candidate, key_name=caller.key_name, withdrawn=withdrawn)
        held = HeldAnswer(
            review_id=review.id,
            request_id=request_id,
            answer_url=f"/v1/answers/{review.id}",
            events_url=f"/v1/answers/{review.id}/events",
        )
        return JSONResponse(held.model_dump(), status_code=202)
    if not body.stream:
        response = await service.complete(plan, request_id=request_id)
        background.add_task(
            desk.after_answer_quietly, plan, response, key_name=caller.key_name, policy=policy, withdrawn=withdrawn
        )
        return response

    async def events() -> AsyncIterator[Event]:
        async for event in service.run(plan, request_id=request_id):
            if isinstance(event, Done):
                await run_in_threadpool(
                    desk.after_answer_quietly,
                    plan,
                    event.response,
                    key_name=caller.key_name,
                    policy=policy,
                    withdrawn=withdrawn,
                )
            yield event

    return await _reply(True, events())


async def _single(response: QueryResponse) -> AsyncIterator[Event]:
    yield Token(response.answer)
    yield Done(response)


async def _reply(stream: bool, events: AsyncIterator[Event]) -> Any:
    """The events as SSE, or (not streaming) the final response."""
    if stream:

        async def sse() -> AsyncIterator[str]:
            async for event in events:
                yield _sse(event)

        return StreamingResponse(sse(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
    async for event in events:
        if isinstance(event, Done):
            return event.response
    raise RuntimeError("the answer stream ended without a Done event")


@router.post("/retrieve", response_model=RetrieveResponse, summary="Retrieve chunks, no LLM.")
async def retrieve(body: RetrieveRequest, service: Service, caller: ReadCaller) -> RetrieveResponse:
    query = service.query(
        body.question,
        collection=caller.collection(body.collection),
        top_k=body.top_k,
        filters=filters_of(body.filters),
        retriever=body.retriever,
    )
    result = await run_in_threadpool(service.retrieve, query)
    return RetrieveResponse(
        chunks=[RetrievedChunk.of(c) for c in result.chunks],
        retriever=result.retriever,
        collection=result.collection,
        timings={"retrieve_ms": round(result.milliseconds, 3)},
        request_id=request_id_var.get(),
    )
