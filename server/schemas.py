"""The HTTP API's request and response models (they are also the OpenAPI schema)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ingest.vectorstore import FILTERABLE_FIELDS, MAX_FILTER_IDS, Filters, StoredChunk


class QueryFilters(BaseModel):
    model_config = ConfigDict(extra="forbid")

    document_ids: list[str] = Field(
        default_factory=list, max_length=MAX_FILTER_IDS, description="Only chunks of these documents."
    )
    source_glob: str | None = Field(None, max_length=1000, description="Only documents whose source matches this glob.")
    where: dict[str, str | int | float | bool] = Field(
        default_factory=dict,
        description='Equality on a stored chunk field, e.g. {"kind": "pdf", "page": 3}. Fields: '
        + ", ".join(sorted(FILTERABLE_FIELDS))
        + ".",
    )

    def filters(self) -> Filters:
        """The store's validated `Filters` (`InvalidFilter` names what is allowed)."""
        return Filters.from_dict(self.model_dump())


def filters_of(model: QueryFilters | None) -> Filters | None:
    return None if model is None else model.filters()


class ChunkRef(BaseModel):
    """A stored chunk and where it comes from (shared by citations and retrieval results)."""

    chunk_id: str
    document_id: str
    source: str
    title: str
    page: int | None = Field(None, description="1-based page number (a PDF page, a PowerPoint slide).")
    heading: str | None = Field(
        None,
        description="Heading path such as 'Guide > Install' (Markdown, HTML, Word, ODT, EPUB), a spreadsheet's "
        "sheet name, or 'Message: SUBJECT' for an e-mail.",
    )
    start: int = Field(description="Character offset of the chunk in the document's extracted text.")
    end: int
    ocr_confidence: float | None = Field(
        None, description="Mean Tesseract word confidence (0-100) when the chunk's text was read by OCR; else null."
    )
    parent: str | None = Field(
        None,
        description="For an e-mail attachment (a document of its own, source 'MESSAGE#attachment/NAME'): the "
        "source of the message it came from; else null.",
    )
    score: float = Field(description="Retrieval score of the chunk (higher is more relevant).")

    @staticmethod
    def fields_of(chunk: StoredChunk) -> dict[str, Any]:
        where = chunk.provenance()
        return {
            "chunk_id": chunk.chunk_id,
            "document_id": where.document_id,
            "source": where.display_source,  # never an absolute server path
            "title": where.title,
            "page": where.page,
            "heading": where.heading,
            "start": where.start,
            "end": where.end,
            "ocr_confidence": where.ocr_confidence,
            "parent": where.parent,
            "score": round(float(chunk.score), 6),
        }


class Citation(ChunkRef):
    """A numbered source of an answer, pointing at a retrieved chunk and its place in the document."""

    n: int = Field(description="The marker number used in the answer text, e.g. 1 for [1].")
    snippet: str = Field(description="The start of the cited chunk's text.")


class RetrieveRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"question": "How do I install ragkb?", "collection": "demo", "top_k": 5}]},
    )

    question: str = Field(min_length=1, description="The question (or search text).")
    collection: str | None = Field(None, description="Collection to search; the server default when omitted.")
    top_k: int | None = Field(None, ge=1, le=100, description="How many chunks to return.")
    filters: QueryFilters | None = None
    retriever: str | None = Field(None, description="Retrieval strategy by name (e.g. dense).")


class QueryRequest(RetrieveRequest):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"question": "How do I install ragkb?", "collection": "demo", "top_k": 5, "stream": False}]
        },
    )

    stream: bool = Field(False, description="Stream Server-Sent Events: tokens, then a final event with citations.")
    mode: Literal["single", "agent"] = Field(
        "single",
        description="`single`: one retrieval, one answer. `agent`: plan sub-questions, search for each, review the "
        "draft, answer (bounded; the steps come back in `steps`, or as SSE `step` events when streaming).",
    )


class RetrievedChunk(ChunkRef):
    text: str

    @classmethod
    def of(cls, chunk: StoredChunk) -> RetrievedChunk:
        return cls(text=chunk.text, **ChunkRef.fields_of(chunk))


class RetrieveResponse(BaseModel):
    chunks: list[RetrievedChunk]
    retriever: str
    collection: str
    timings: dict[str, float]
    request_id: str


class PromptInfo(BaseModel):
    name: str
    version: str


class AgentStep(BaseModel):
    """One step of an agent-mode answer (`mode: "agent"`), in the order taken."""

    kind: Literal["cache", "plan", "search", "read", "list_documents", "draft", "review"]
    input: dict[str, Any] = Field(default_factory=dict, description="What the step was given (a tool's arguments).")
    output: str = Field("", description="A one-line summary of what the step found or decided.")
    chunk_ids: list[str] = Field(default_factory=list, description="The chunks the step found or used.")
    ms: float = Field(0.0, description="How long the step took, in milliseconds.")
    error: str | None = Field(None, description="Why the step failed or was refused (invalid tool arguments, ...).")


class Timings(BaseModel):
    retrieve_ms: float
    llm_ms: float
    total_ms: float


class CuratedInfo(BaseModel):
    review_id: str
    reviewer: str | None = Field(description="The reviewer's key name (None on a server without keys).")
    approved_at: datetime
    match: Literal["exact", "similar", "review"] = Field(
        description="`exact`: the same normalised question; `similar`: a close paraphrase; `review`: this request's "
        "own review."
    )
    similarity: float | None = None


class QueryResponse(BaseModel):
    answer: str = Field(description="The answer, citing sources with [n] markers that match `citations`.")
    citations: list[Citation]
    grounded: bool = Field(
        description="True when every sentence of the answer that makes a claim cites a passage that supports it."
    )
    cached: bool
    model: str
    provider: str
    prompt: PromptInfo
    timings: Timings
    request_id: str
    collection: str
    retriever: str
    degraded: bool = Field(False, description="True when the LLM failed and the extractive answer was returned.")
    error: str | None = Field(None, description="Why the response is degraded.")
    invalid_citations: list[int] = Field(
        default_factory=list, description="Markers the model produced that point at no retrieved chunk (removed)."
    )
    unsupported_citations: list[int] = Field(
        default_factory=list,
        description="Markers that point at a retrieved chunk that does not support their sentence (removed).",
    )
    confidence: float = Field(
        0.0, ge=0, le=1, description="How well the retrieved passages support an answer, from 0 to 1."
    )
    abstained: bool = Field(
        False,
        description="True when the documents do not contain the answer: the answer says so, `citations` is "
        "empty and the closest passages are in `related`.",
    )
    outcome: Literal["answered", "low_confidence", "not_found"] = Field(
        "answered",
        description="answered: a confident answer; low_confidence: the closest passages, cited, which may not "
        "answer the question (the answer starts 'These passages may not answer the question:'); not_found: "
        "nothing relevant, the answer says so and `abstained` is true.",
    )
    related: list[RetrievedChunk] = Field(
        default_factory=list, description="When abstaining: the closest passages, for the user to look at."
    )
    steps: list[AgentStep] = Field(
        default_factory=list, description="Agent mode: the plan, tool calls, drafts and reviews, in order."
    )
    truncated: bool = Field(
        False, description="Agent mode: a budget (steps, seconds, LLM tokens) ran out; the best answer so far."
    )
    origin: Literal["generated", "cached", "curated", "reviewed"] = Field(
        "generated",
        description="Where the answer comes from: made now, from the answer cache, a curated (reviewer-approved) "
        "answer to the same or a similar question, or this question's own approved review.",
    )
    curated: CuratedInfo | None = Field(None, description="Who approved the answer and when (curated/reviewed).")
    standalone_question: str | None = Field(
        None,
        description="In a conversation: the follow-up made standalone from the earlier turns, as retrieval saw it.",
    )


class JobsQueued(BaseModel):
    collection: str
    jobs: list[dict[str, str]]


class CollectionInfo(BaseModel):
    name: str
    chunks: int
    documents: int
    model: str | None


class DocumentOut(BaseModel):
    document_id: str
    source: str
    title: str
    kind: str
    chunk_count: int
    version: str
    parent_id: str | None = Field(
        None, description="For an e-mail attachment: the document id of the message it came from; else null."
    )
    parent: str | None = Field(None, description="For an e-mail attachment: the source of that message; else null.")


class UploadResult(BaseModel):
    collection: str
    added: int
    updated: int
    unchanged: int
    failed: int
    chunks_added: int
    attachments: int = Field(
        0, description="E-mail attachments stored as documents of their own (added or updated), beside `added`."
    )
    documents: list[dict[str, Any]]
    failures: list[dict[str, str]]
    error: str | None = Field(
        None, description="Set (with `code` and `request_id`) when no file was stored: the answer is then a 422."
    )
    code: str | None = Field(None, description="`no_file_stored` when every file failed; otherwise unset.")
    request_id: str | None = None


class ErrorResponse(BaseModel):
    error: str = Field(description="What went wrong, in words a user can act on.")
    code: str = Field("error", description="A stable machine-readable kind, e.g. collection_not_found.")
    detail: Any = None
    request_id: str | None = None
