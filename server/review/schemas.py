"""Request and response models of feedback, reviews and held answers (they are also the OpenAPI schema)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from ..schemas import Citation, QueryResponse

MAX_NOTE_CHARS = 2000
MAX_ANSWER_CHARS = 20000


class CitationVerdict(BaseModel):
    model_config = ConfigDict(extra="forbid")

    n: int = Field(ge=1, description="The citation's marker number in the answer.")
    verdict: Literal["helpful", "wrong"]


class FeedbackIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"request_id": "3f2a…", "rating": "down", "comment": "Cites the old policy.", "citations": []}]
        },
    )

    request_id: str = Field(min_length=1, max_length=128, description="The `request_id` of the answer.")
    rating: Literal["up", "down"]
    comment: str | None = Field(None, max_length=4000)
    citations: list[CitationVerdict] = Field(default_factory=list, max_length=100)


class FeedbackOut(BaseModel):
    feedback_id: int
    request_id: str
    review_id: str | None = Field(None, description="Set when the feedback queued the answer for review.")


class HeldAnswer(BaseModel):
    """The answer is held for a person's review (the collection's policy is `required`)."""

    review_id: str
    status: Literal["pending"] = "pending"
    request_id: str
    answer_url: str = Field(description="Poll this for the outcome.")
    events_url: str = Field(description="Or wait here: Server-Sent Events, one `status` event per change.")


class AnswerOutcome(BaseModel):
    review_id: str
    status: Literal["pending", "approved", "rejected"]
    answer: QueryResponse | None = Field(None, description="The approved answer (status `approved`).")
    message: str | None = Field(None, description="What the status means, in words.")


class Passage(BaseModel):
    """A numbered passage of a candidate answer's context, as the reviewer sees it."""

    n: int
    chunk_id: str
    document_id: str
    source: str
    title: str
    page: int | None = None
    heading: str | None = None
    text: str


class CitedPassage(Citation):
    text: str


class Attempt(BaseModel):
    n: int
    at: datetime
    answer: str
    citations: list[Citation]
    confidence: float
    abstained: bool
    provider: str
    prompt: str
    strategy: str = Field(description="How this candidate was made, e.g. `first`, `retry:top_k=10,retriever=dense`.")
    note: str | None = Field(None, description="The reviewer note this attempt was made to answer.")


class ReviewSummary(BaseModel):
    id: str
    status: Literal["pending", "approved", "rejected"]
    question: str
    collection: str
    reasons: list[str] = Field(description="Why it was queued: required, abstained, low_confidence, ...")
    confidence: float
    held: bool = Field(description="True when the asker is waiting for the decision (policy `required`).")
    created_at: datetime
    attempts: int


class ReviewDetail(ReviewSummary):
    request_id: str
    answer: str = Field(description="The newest candidate answer.")
    citations: list[CitedPassage]
    context: list[Passage] = Field(description="Every passage the newest candidate could cite, by number.")
    history: list[Attempt] = Field(description="Every candidate, oldest first.")
    decided_by: str | None = None
    decided_at: datetime | None = None
    note: str | None = None
    final_answer: str | None = Field(None, description="The approved answer (as edited).")


class ReviewList(BaseModel):
    reviews: list[ReviewSummary]


class ApproveIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    answer: str | None = Field(
        None,
        max_length=MAX_ANSWER_CHARS,
        description="An edited answer; [n] markers cite the context by number, then `extra_chunks` as "
        "n = len(context)+1, +2, ... Omitted: the candidate is approved as it is.",
    )
    extra_chunks: list[str] = Field(
        default_factory=list, max_length=20, description="Chunk ids the edited answer may cite beyond the context."
    )
    attempt: int | None = Field(
        None,
        ge=1,
        description="The candidate number the reviewer read (`history[-1].n`); refused with 409 if a retry made a "
        "newer one meanwhile.",
    )


class RejectIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    retry: bool = Field(False, description="Make another candidate (more context, another retriever, the note).")
    note: str | None = Field(None, max_length=MAX_NOTE_CHARS, description="What was wrong; passed to the retry.")


class PolicyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    review: Literal["off", "flagged", "required"]


class PolicyOut(BaseModel):
    collection: str
    review: Literal["off", "flagged", "required"]


class CuratedCitation(Citation):
    text_hash: str | None = Field(None, description="SHA-256 of the cited chunk's text when it was approved.")


class CuratedOut(BaseModel):
    """A curated answer: an approved answer served for the same question in its collection while active."""

    id: int
    collection: str
    question: str
    answer: str
    citations: list[CuratedCitation]
    review_id: str = Field(description="The review whose approval made it.")
    reviewer: str | None = Field(
        None, description="The key that approved it (None: the local operator or a server without keys)."
    )
    approved_at: datetime
    status: Literal["active", "withdrawn"]
    withdrawn_at: datetime | None = None


class CuratedList(BaseModel):
    curated: list[CuratedOut]
