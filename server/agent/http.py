"""Agent mode over HTTP: the JSON answer, or Server-Sent Events (`step` as each step ends, `error` if the LLM
breaks mid-draft, then `done` with the validated answer). Called by `POST /v1/query` with `mode: "agent"`."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from ..schemas import QueryResponse
from ..service import Done, Failure, Query, QueryService
from .runner import AgentEvent, AgentRunner, StepEvent


def sse(event: AgentEvent) -> str:
    if isinstance(event, StepEvent):
        name, data = "step", event.step.model_dump()
    elif isinstance(event, Failure):
        name, data = "error", {"error": event.error, "fallback": event.fallback}
    else:
        name, data = "done", event.response.model_dump()
    return f"event: {name}\ndata: {json.dumps(data)}\n\n"


async def agent_reply(
    service: QueryService,
    query: Query,
    *,
    stream: bool,
    request_id: str,
    answered: Callable[[QueryResponse], None] | None = None,
) -> Any:
    """Answer a checked query in agent mode; every request error is raised before a stream starts.
    `answered` (blocking; run in a thread) receives the final answer, e.g. to record it for feedback."""
    runner = AgentRunner(service)
    prepared = await run_in_threadpool(runner.lookup, query)
    if not stream:
        response = await runner.complete(prepared, request_id=request_id)
        if answered is not None:
            await run_in_threadpool(answered, response)
        return response

    async def events() -> AsyncIterator[str]:
        async for event in runner.run(prepared, request_id=request_id):
            if isinstance(event, Done) and answered is not None:
                await run_in_threadpool(answered, event.response)
            yield sse(event)

    return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


__all__ = ["agent_reply", "sse"]
