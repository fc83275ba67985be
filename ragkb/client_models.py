"""The Python client's typed results (`ragkb/client.py`): plain pydantic models of the API's JSON, kept apart from
`server.schemas` so that a program using the client needs neither torch nor the server. Fields the server adds
later are kept (`extra="allow"`), so an older client still reads a newer server."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Model(BaseModel):
    model_config = ConfigDict(extra="allow")


class ChunkRef(_Model):
    chunk_id: str
    document_id: str
    source: str
    title: str
    page: int | None = None
    heading: str | None = None
    start: int
    end: int
    score: float


class Citation(ChunkRef):
    n: int
    snippet: str


class Chunk(ChunkRef):
    text: str


class AgentStep(_Model):
    """One step of an agent-mode answer."""

    kind: str
    output: str = ""
    ms: float = 0.0
    error: str | None = None


class Answer(_Model):
    """`POST /v1/query`'s answer: `answer` cites `citations` with [n] markers."""

    answer: str
    citations: list[Citation]
    grounded: bool
    abstained: bool = False
    outcome: Literal["answered", "low_confidence", "not_found"] = "answered"
    related: list[Chunk] = Field(default_factory=list, description="When abstaining: the closest passages.")
    confidence: float = 0.0
    cached: bool = False
    origin: str = "generated"
    degraded: bool = False
    error: str | None = Field(None, description="Why the answer is degraded (the LLM failed).")
    truncated: bool = False
    steps: list[AgentStep] = Field(default_factory=list, description="Agent mode: the steps taken.")
    collection: str
    retriever: str
    request_id: str
    provider: str
    model: str
    standalone_question: str | None = None


class HeldAnswer(_Model):
    """The collection's review policy is `required`: the answer waits for a reviewer."""

    review_id: str
    status: Literal["pending"] = "pending"
    request_id: str
    answer_url: str
    events_url: str


class AnswerOutcome(_Model):
    review_id: str
    status: Literal["pending", "approved", "rejected"]
    answer: Answer | None = None
    message: str | None = None


class Retrieval(_Model):
    chunks: list[Chunk]
    retriever: str
    collection: str
    request_id: str


class CollectionInfo(_Model):
    name: str
    chunks: int
    documents: int
    model: str | None = None


class Document(_Model):
    document_id: str
    source: str
    title: str
    kind: str
    chunk_count: int
    version: str


class UploadResult(_Model):
    """Ingested at once (the server has no job queue)."""

    collection: str
    added: int
    updated: int
    unchanged: int
    failed: int
    chunks_added: int
    failures: list[dict[str, str]] = Field(default_factory=list)


class JobsQueued(_Model):
    """Queued for `ragkb worker`: one job per file (`jobs[i]["job_id"]`, `jobs[i]["status_url"]`)."""

    collection: str
    jobs: list[dict[str, str]]


class Job(_Model):
    status: str
    collection: str | None = None


class ReviewSummary(_Model):
    id: str
    status: Literal["pending", "approved", "rejected"]
    question: str
    collection: str
    reasons: list[str]
    confidence: float
    held: bool
    created_at: datetime
    attempts: int


class ReviewDetail(ReviewSummary):
    pass


# -- the events of a streamed answer (`Client.ask_stream`) ------------------------------------------------------


class TokenEvent(_Model):
    kind: Literal["token"] = "token"
    text: str


class StepEvent(_Model):
    """An agent step as it ends (agent mode)."""

    kind: Literal["step"] = "step"
    step: dict[str, Any]


class ErrorEvent(_Model):
    """The LLM failed mid-answer; the fallback's answer follows."""

    kind: Literal["error"] = "error"
    error: str
    fallback: str


class DoneEvent(_Model):
    """The last event: the validated answer (its text may differ from the tokens: checked markers only)."""

    kind: Literal["done"] = "done"
    answer: Answer


class HeldEvent(_Model):
    """The only event when the answer is held for review."""

    kind: Literal["held"] = "held"
    held: HeldAnswer


StreamEvent = TokenEvent | StepEvent | ErrorEvent | DoneEvent | HeldEvent
