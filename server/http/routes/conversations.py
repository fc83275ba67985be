"""Stored conversations (scope `read`; each belongs to the key that made it): `POST /v1/conversations` starts
one on a collection, `POST /v1/conversations/{id}/messages` asks the next question, made standalone from the
earlier turns (`server/answering/followup.py`) and answered through the one answering entry, `GET` reads it
back, `DELETE` removes it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from ingest.errors import CollectionNotFound

from ...answering.entry import AnswerEvent, Asker, Held, Mode
from ...answering.followup import FollowUps, Turn
from ...answering.service import Done
from ...review.schemas import HeldAnswer
from ...schemas import Citation, QueryResponse
from ...state.conversations import ConversationStore, StoredConversation
from ..auth import ReadCaller
from ..deps import AnswererDep, Parts
from ..observability import request_id_var
from .events import event_stream

router = APIRouter(prefix="/v1", tags=["conversations"])


def _store(parts: Parts) -> ConversationStore:
    return ConversationStore(parts.state)


StoreDep = Annotated[ConversationStore, Depends(_store)]


class ConversationCreate(BaseModel):
    collection: str | None = Field(None, description="The collection every turn asks; the server default if omitted.")
    mode: Literal["single", "agent"] = "single"


class MessageIn(BaseModel):
    question: str = Field(min_length=1, description="The next question; a follow-up may lean on the earlier turns.")
    stream: bool = Field(
        False,
        description="Answer as Server-Sent Events, like `POST /v1/query` with `stream: true` (`token`, `error`, "
        "then `done` with the answer and its `standalone_question`); the turn is stored when `done` is sent.",
    )


class MessageOut(BaseModel):
    n: int
    at: datetime
    question: str
    standalone_question: str
    answer: str = Field(description="Empty while the answer is held for review (see `review_id`).")
    citations: list[Citation]
    request_id: str
    review_id: str | None = None


class ConversationOut(BaseModel):
    id: str
    collection: str
    mode: str
    created_at: datetime
    messages: list[MessageOut] = Field(default_factory=list)


class Answered(BaseModel):
    """A turn answered: the stored message and the full answer (`standalone_question` set)."""

    message: MessageOut
    response: QueryResponse


class HeldTurn(BaseModel):
    message: MessageOut
    held: HeldAnswer


def _out(stored: StoredConversation) -> ConversationOut:
    record = stored.record
    messages = [MessageOut.model_validate(m, from_attributes=True) for m in stored.messages]
    return ConversationOut(
        id=record.id, collection=record.collection, mode=record.mode, created_at=record.created_at, messages=messages
    )


@router.post("/conversations", response_model=ConversationOut, status_code=201, summary="Start a conversation.")
async def create(body: ConversationCreate, caller: ReadCaller, store: StoreDep) -> ConversationOut:
    collection = caller.collection(body.collection)
    if collection not in await run_in_threadpool(caller.parts.service.reader.store.collection_names):
        raise CollectionNotFound(collection, await run_in_threadpool(caller.available))
    record = await run_in_threadpool(store.create, caller.key_name, collection, body.mode)
    return ConversationOut(id=record.id, collection=record.collection, mode=record.mode, created_at=record.created_at)


@router.get("/conversations/{conversation_id}", response_model=ConversationOut, summary="A conversation's turns.")
async def read(conversation_id: str, caller: ReadCaller, store: StoreDep) -> ConversationOut:
    return _out(await run_in_threadpool(store.get, conversation_id, caller.key_name))


@router.delete("/conversations/{conversation_id}", status_code=204, summary="Delete a conversation.")
async def delete(conversation_id: str, caller: ReadCaller, store: StoreDep) -> Response:
    await run_in_threadpool(store.delete, conversation_id, caller.key_name)
    return Response(status_code=204)


@router.post(
    "/conversations/{conversation_id}/messages",
    response_model=Answered,
    responses={
        200: {"content": {"text/event-stream": {}}, "description": "JSON, or SSE when stream=true."},
        202: {"model": HeldTurn, "description": "The collection's review policy is `required`."},
    },
    summary="Ask the next question of a conversation.",
)
async def ask(conversation_id: str, body: MessageIn, answerer: AnswererDep, caller: ReadCaller, store: StoreDep) -> Any:
    """The question is made standalone from the earlier turns (shown as `standalone_question`), then answered
    like `POST /v1/query` (curated answers, review policy, recording); the turn is stored either way. With
    `stream: true` the answer comes as `POST /v1/query`'s events, and a held answer is still a 202 JSON reply."""
    stored = await run_in_threadpool(store.get, conversation_id, caller.key_name)
    collection = caller.collection(stored.record.collection)  # the key may have lost the collection since
    history = [Turn(m.standalone_question, m.answer) for m in stored.messages]
    request_id = request_id_var.get()
    standalone = await FollowUps.of(answerer.service).standalone(history, body.question, request_id)
    asked = answerer.query(standalone.question, collection=collection)
    reply = await answerer.ask(asked, mode=Mode(stored.record.mode), asker=Asker(caller.key_name, request_id))

    async def record_turn(response: QueryResponse | None, review_id: str | None = None) -> MessageOut:
        """The turn stored: the answer and its citations, or (held) none yet and the review id."""
        message = await run_in_threadpool(
            lambda: store.add(
                conversation_id,
                caller.key_name,
                question=body.question,
                standalone_question=asked.question,
                answer=response.answer if response else "",
                citations=[c.model_dump(mode="json") for c in response.citations] if response else [],
                request_id=request_id,
                review_id=review_id,
            )
        )
        return MessageOut.model_validate(message, from_attributes=True)

    if isinstance(reply, Held):
        turn = HeldTurn(message=await record_turn(None, reply.review_id), held=reply.model())
        return JSONResponse(turn.model_dump(mode="json"), status_code=202)

    if body.stream:

        async def events() -> AsyncIterator[AnswerEvent]:
            async for event in reply.events:
                if isinstance(event, Done):
                    event = Done(event.response.model_copy(update={"standalone_question": asked.question}))
                    await record_turn(event.response)
                yield event

        return event_stream(events())
    response = (await reply.response()).model_copy(update={"standalone_question": asked.question})
    return Answered(message=await record_turn(response), response=response)
