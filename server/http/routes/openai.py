"""OpenAI's chat-completions protocol (docs/doors.md): `GET /v1/models` lists the collections a key may read as
models (`ragkb:<collection>`, and `ragkb:<collection>:agent` for agent mode); `POST /v1/chat/completions`
answers the last user message through the one answering entry (`Answerer.ask`), so curated answers, review
policies, recording and access control hold here too. Earlier messages make a follow-up standalone before
retrieval (`server/answering/followup.py`).

The answer text keeps its `[n]` markers; the sources come as `ragkb_citations` on the message (on the final
chunk's delta when streaming) and, unless `RAGKB_OPENAI_SOURCES_IN_TEXT=false`, as a "Sources:" list appended
to the text, so a client that knows nothing of ragkb still shows them. Errors on these routes, and only
these, have OpenAI's shape: `{"error": {"message", "type", "code", "param"}}`."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from fastapi.routing import APIRoute
from starlette.concurrency import run_in_threadpool

from ingest.errors import CollectionNotFound, RagkbError

from ...answering.entry import Answering, Asker, Held, Mode
from ...answering.followup import FollowUps, Turn
from ...answering.service import Done, Failure, Token
from ...metrics import ERRORS
from ...schemas import Citation, QueryResponse
from ..auth import Caller, ReadCaller
from ..deps import AnswererDep
from ..errors import ERROR_STATUS, _headers_for
from ..observability import request_id_var
from ..openai_schemas import (
    AGENT_SUFFIX,
    MODEL_PREFIX,
    AssistantMessage,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    Choice,
    ChunkChoice,
    Delta,
    ModelCard,
    ModelList,
    OpenAIError,
    OpenAIErrorBody,
    RagkbInfo,
    dump,
)

# OpenAI's `type` for each status ragkb answers with on these routes.
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "invalid_request_error",
    409: "invalid_request_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
}


class ModelNotFound(RagkbError):
    """A `model` that names no collection this key may read (OpenAI's `model_not_found`, 404)."""


def openai_error(status: int, message: str, code: str, headers: dict[str, str] | None = None) -> JSONResponse:
    ERRORS.labels(kind=code).inc()
    kind = ERROR_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    body = OpenAIErrorBody(error=OpenAIError(message=message, type=kind, code=code), request_id=request_id_var.get())
    return JSONResponse(body.model_dump(), status_code=status, headers=headers)


def _status_of(exc: RagkbError) -> tuple[int, str]:
    for kind in type(exc).__mro__:
        if kind in ERROR_STATUS:
            return ERROR_STATUS[kind]
    return 400, "bad_request"


class OpenAIRoute(APIRoute):
    """Answers ragkb's errors (from the route and from its dependencies: the key, the rate limit, the body) in
    OpenAI's error shape; unexpected errors still reach the request middleware (500 with the request id)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def guarded(request: Request) -> Response:
            try:
                return await handler(request)
            except ModelNotFound as exc:
                return openai_error(404, str(exc), "model_not_found")
            except RequestValidationError as exc:
                first = exc.errors()[0] if exc.errors() else {"loc": [], "msg": "invalid request"}
                where = ".".join(str(part) for part in first.get("loc", []) if part != "body") or "request"
                return openai_error(400, f"invalid request: {where}: {first.get('msg')}", "validation")
            except RagkbError as exc:
                status, code = _status_of(exc)
                message = "the state database is unavailable" if code == "state_unavailable" else str(exc)
                return openai_error(status, message, code, _headers_for(exc))

        return guarded


router = APIRouter(prefix="/v1", tags=["openai"], route_class=OpenAIRoute)
OPENAI_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": OpenAIErrorBody, "description": f"OpenAI's error shape ({kind})."}
    for status, kind in ERROR_TYPES.items()
    if status in (400, 401, 403, 404, 429)
}


def model_id(collection: str, mode: Mode = Mode.SINGLE) -> str:
    return f"{MODEL_PREFIX}:{collection}" + (f":{AGENT_SUFFIX}" if mode is Mode.AGENT else "")


def parse_model(model: str, caller: Caller) -> tuple[str, Mode]:
    """`ragkb:<collection>[:agent]` (or `ragkb` for the default collection) → the collection, checked against the
    key, and the mode."""
    parts = model.split(":")
    if parts[0] != MODEL_PREFIX or len(parts) > 3 or (len(parts) == 3 and parts[2] != AGENT_SUFFIX):
        raise ModelNotFound(
            f"unknown model {model!r}: use `{MODEL_PREFIX}:<collection>` or `{MODEL_PREFIX}:<collection>:"
            f"{AGENT_SUFFIX}` (GET /v1/models lists them)"
        )
    mode = Mode.AGENT if len(parts) == 3 else Mode.SINGLE
    try:
        return caller.collection(parts[1] if len(parts) > 1 else None), mode
    except CollectionNotFound:
        raise ModelNotFound(
            f"the model {model!r} does not exist or this key may not read it (GET /v1/models)"
        ) from None


@router.get("/models", response_model=ModelList, responses=OPENAI_ERRORS, summary="The collections this key may read.")
async def models(caller: ReadCaller) -> ModelList:
    names = await run_in_threadpool(caller.available)
    cards = [ModelCard(id=model_id(name, mode)) for name in sorted(names) for mode in (Mode.SINGLE, Mode.AGENT)]
    return ModelList(data=cards)


def conversation_of(body: ChatCompletionRequest) -> tuple[list[Turn], str]:
    """The earlier user/assistant turns and the question (the last user message). System, developer and tool
    messages are not read: ragkb's prompt is its own."""
    turns: list[Turn] = []
    for message in body.messages:
        if message.role == "user":
            turns.append(Turn(question=message.text()))
        elif message.role == "assistant" and turns:
            turns[-1] = Turn(question=turns[-1].question, answer=message.text())
    if not turns or body.messages[-1].role != "user":
        raise RequestValidationError([{"loc": ["body", "messages"], "msg": "the last message must be the user's"}])
    return turns[:-1], turns[-1].question


def sources_text(citations: list[Citation]) -> str:
    """The appended sources list: one line per marker."""
    if not citations:
        return ""
    lines = []
    for c in citations:
        where = f", p. {c.page}" if c.page is not None else (f", {c.heading}" if c.heading else "")
        lines.append(f"[{c.n}] {c.title or c.source}{where} ({c.source})")
    return "\n\nSources:\n" + "\n".join(lines)


def held_text(held: Held) -> str:
    return (
        f"This answer is held for review (review id {held.review_id}): a reviewer must approve it first. "
        f"Fetch it at {held.model().answer_url} once it is decided."
    )


@router.post(
    "/chat/completions",
    response_model=ChatCompletion,
    responses={
        **OPENAI_ERRORS,
        200: {"content": {"text/event-stream": {}}, "description": "A completion, or `chat.completion.chunk` events."},
    },
    summary="OpenAI-compatible chat: a cited answer from a collection.",
)
async def chat_completions(body: ChatCompletionRequest, answerer: AnswererDep, caller: ReadCaller) -> Any:
    """The last user message is answered from the collection named by `model`; earlier turns make a follow-up
    standalone (shown as `ragkb.standalone_question`). With `stream: true`, `chat.completion.chunk` events
    end with a chunk carrying `finish_reason`, `ragkb_citations` and `ragkb`, then `data: [DONE]`."""
    collection, mode = parse_model(body.model, caller)
    history, question = conversation_of(body)
    request_id = request_id_var.get()
    asked_question = (await FollowUps.of(answerer.service).standalone(history, question, request_id)).question
    asked = answerer.query(asked_question, collection=collection)
    reply = await answerer.ask(asked, mode=mode, asker=Asker(caller.key_name, request_id))
    in_text = caller.parts.settings.openai_sources_in_text
    shape = _Shape(body.model, request_id, collection, asked.question, in_text)
    if body.stream:
        return StreamingResponse(
            shape.chunks(reply), media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
        )
    if isinstance(reply, Held):
        return dump(shape.held(reply))
    return dump(shape.completion(await reply.response()))


class _Shape:
    """One request's replies in OpenAI's format."""

    def __init__(self, model: str, request_id: str, collection: str, question: str, sources_in_text: bool) -> None:
        self.model, self.collection, self.question = model, collection, question
        self.request_id, self.sources_in_text = request_id, sources_in_text
        self.id = f"chatcmpl-{request_id}"
        self.created = int(time.time())

    def info(self, response: QueryResponse | None = None, held: Held | None = None) -> RagkbInfo:
        return RagkbInfo(
            request_id=self.request_id,
            collection=self.collection,
            standalone_question=self.question,
            grounded=None if response is None else response.grounded,
            abstained=None if response is None else response.abstained,
            origin="held" if held is not None else (None if response is None else response.origin),
            review_id=None if held is None else held.review_id,
        )

    def text(self, response: QueryResponse) -> str:
        return response.answer + (sources_text(response.citations) if self.sources_in_text else "")

    def completion(self, response: QueryResponse) -> ChatCompletion:
        message = AssistantMessage(content=self.text(response), ragkb_citations=response.citations)
        return ChatCompletion(
            id=self.id,
            created=self.created,
            model=self.model,
            choices=[Choice(message=message)],
            ragkb=self.info(response),
        )

    def held(self, held: Held) -> ChatCompletion:
        message = AssistantMessage(content=held_text(held), ragkb_held=held.model())
        return ChatCompletion(
            id=self.id,
            created=self.created,
            model=self.model,
            choices=[Choice(message=message)],
            ragkb=self.info(held=held),
        )

    def chunk(self, delta: Delta, finish: bool = False, info: RagkbInfo | None = None) -> str:
        choice = ChunkChoice(delta=delta, finish_reason="stop" if finish else None)
        chunk = ChatCompletionChunk(id=self.id, created=self.created, model=self.model, choices=[choice], ragkb=info)
        return f"data: {json.dumps(dump(chunk))}\n\n"

    async def chunks(self, reply: Answering | Held) -> AsyncIterator[str]:
        yield self.chunk(Delta(role="assistant", content=""))
        if isinstance(reply, Held):
            yield self.chunk(Delta(content=held_text(reply)))
            yield self.chunk(Delta(ragkb_held=reply.model()), finish=True, info=self.info(held=reply))
        else:
            streamed = False
            async for event in reply.events:
                if isinstance(event, Token) and event.text:
                    streamed = True
                    yield self.chunk(Delta(content=event.text))
                elif isinstance(event, Failure):
                    streamed = True
                    yield self.chunk(
                        Delta(
                            content=f"\n\n(The model failed: {event.error}; the {event.fallback} answer follows.)\n\n"
                        )
                    )
                elif isinstance(event, Done):
                    response = event.response
                    tail = "" if streamed else response.answer
                    if self.sources_in_text:
                        tail += sources_text(response.citations)
                    if tail:
                        yield self.chunk(Delta(content=tail))
                    yield self.chunk(Delta(ragkb_citations=response.citations), finish=True, info=self.info(response))
        yield "data: [DONE]\n\n"
