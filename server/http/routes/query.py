"""`POST /v1/query` (JSON or Server-Sent Events) and `POST /v1/retrieve` (scope `read`; the collection, named
or the default, must be one the key may see). The answering itself is `Answerer.ask` (server/answering.py);
this module parses the request and shapes the reply."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from ...answering.entry import Asker, Held, Mode
from ...answering.service import Query
from ...review.schemas import HeldAnswer
from ...schemas import QueryRequest, QueryResponse, RetrievedChunk, RetrieveRequest, RetrieveResponse, filters_of
from ..auth import Caller, ReadCaller
from ..deps import AnswererDep, ServiceDep
from ..observability import request_id_var
from .events import event_stream

router = APIRouter(prefix="/v1", tags=["query"])


def checked_query(check: Callable[..., Query], body: RetrieveRequest, caller: Caller) -> Query:
    """The request as a checked query (`check`: `Answerer.query` or `QueryService.query`), on a collection the
    caller may see (422 / 404 before anything runs)."""
    return check(
        body.question,
        collection=caller.collection(body.collection),
        top_k=body.top_k,
        filters=filters_of(body.filters),
        retriever=body.retriever,
    )


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
async def query(body: QueryRequest, answerer: AnswererDep, caller: ReadCaller) -> Any:
    """With `stream: true` the answer comes as Server-Sent Events: `token` events (`step` events in agent
    mode), an `error` event if the LLM fails mid-answer (the extractive answer follows), then one `done`
    event with the validated answer. Every request error (unknown collection, bad filter, ...) is answered
    with its status before the stream starts.

    A curated answer (approved by a reviewer for the same or a similar question) comes first, before the
    cache. When the collection's review policy is `required`, the answer is held: `202` with a review id."""
    asked = checked_query(answerer.query, body, caller)
    reply = await answerer.ask(asked, mode=Mode(body.mode), asker=Asker(caller.key_name, request_id_var.get()))
    if isinstance(reply, Held):
        return JSONResponse(reply.model().model_dump(), status_code=202)
    if body.stream:
        return event_stream(reply.events)
    return await reply.response()


@router.post("/retrieve", response_model=RetrieveResponse, summary="Retrieve chunks, no LLM.")
async def retrieve(body: RetrieveRequest, service: ServiceDep, caller: ReadCaller) -> RetrieveResponse:
    query = checked_query(service.query, body, caller)
    result = await run_in_threadpool(service.retrieve, query)
    return RetrieveResponse(
        chunks=[RetrievedChunk.of(c) for c in result.chunks],
        retriever=result.retriever,
        collection=result.collection,
        timings={"retrieve_ms": round(result.milliseconds, 3)},
        request_id=request_id_var.get(),
    )
