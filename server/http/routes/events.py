"""Server-Sent Events for an answer under way: `token` (single-shot text), `step` (an agent step as it ends),
`error` (the LLM failed mid-answer; the fallback follows) and one final `done` with the validated answer."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

from fastapi.responses import StreamingResponse

from ...agent.runner import StepEvent
from ...answering.entry import AnswerEvent
from ...answering.service import Failure, Token


def sse(event: AnswerEvent) -> str:
    if isinstance(event, Token):
        name, data = "token", {"text": event.text}
    elif isinstance(event, StepEvent):
        name, data = "step", event.step.model_dump()
    elif isinstance(event, Failure):
        name, data = "error", {"error": event.error, "fallback": event.fallback}
    else:
        name, data = "done", event.response.model_dump()
    return f"event: {name}\ndata: {json.dumps(data)}\n\n"


def event_stream(events: AsyncIterator[AnswerEvent]) -> StreamingResponse:
    async def encoded() -> AsyncIterator[str]:
        async for event in events:
            yield sse(event)

    return StreamingResponse(encoded(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
