"""The agent's tools: ragkb's own read functions with typed, validated arguments.

`search(query, retriever?, filters?, top_k?)`, `read(document_id, page | heading | around_chunk)` and
`list_documents(collection?, source_glob?)`. Arguments are pydantic models that forbid unknown fields;
arguments that fail validation raise `ToolArgumentError` (naming what is allowed) and are never executed.
No tool writes anything, and none can leave the request's collection. Results are cached for the life
of one `Toolbox` (one request), so a repeated call costs nothing.
"""

from __future__ import annotations

import fnmatch
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ingest.errors import RagkbError
from ingest.vectorstore import InvalidFilter, StoredChunk

from ..answering.retrieval import retriever_names
from ..metrics import AGENT_TOOL_CALLS
from ..schemas import QueryFilters, filters_of

if TYPE_CHECKING:
    from ..answering.service import Query, QueryService

MAX_READ_CHUNKS = 8
MAX_LISTED = 200


class ToolArgumentError(RagkbError):
    """A tool call named an unknown tool or gave arguments that fail validation (it was not executed)."""


class SearchArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    query: str = Field(min_length=1, max_length=2000, description="What to search for.")
    retriever: str | None = Field(None, description="Retrieval strategy; the request's when omitted.")
    filters: QueryFilters | None = Field(None, description="Metadata filters; the request's when omitted.")
    top_k: int | None = Field(None, ge=1, le=20, description="Chunks to return; the request's when omitted.")

    @field_validator("retriever")
    @classmethod
    def _known_retriever(cls, name: str | None) -> str | None:
        if name is not None and name not in retriever_names():
            raise ValueError(f"unknown retriever {name!r}; choose one of: {', '.join(retriever_names())}")
        return name

    @field_validator("filters")
    @classmethod
    def _valid_filters(cls, filters: QueryFilters | None) -> QueryFilters | None:
        try:
            filters_of(filters)  # the store's own checks: known fields, value types, sizes
        except InvalidFilter as exc:
            raise ValueError(str(exc)) from None
        return filters


class ReadArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    document_id: str = Field(min_length=1, max_length=200, description="The document to read.")
    page: int | None = Field(None, ge=1, description="Its chunks on this 1-based page (PDF).")
    heading: str | None = Field(None, min_length=1, max_length=500, description="Its chunks under this heading.")
    around_chunk: str | None = Field(
        None, min_length=1, max_length=300, description="This chunk of the document and its neighbours."
    )

    @model_validator(mode="after")
    def _one_place(self) -> ReadArgs:
        given = [name for name in ("page", "heading", "around_chunk") if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of page, heading or around_chunk (got {', '.join(given) or 'none'})")
        return self


class ListDocumentsArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    collection: str | None = Field(None, description="The request's collection (the only one a tool may list).")
    source_glob: str | None = Field(None, min_length=1, max_length=1000, description="Only sources matching this.")


TOOL_ARGS: dict[str, type[BaseModel]] = {"search": SearchArgs, "read": ReadArgs, "list_documents": ListDocumentsArgs}


def tool_names() -> list[str]:
    return sorted(TOOL_ARGS)


def validate_call(tool: str, args: dict[str, Any]) -> BaseModel:
    """The validated arguments of a call, or `ToolArgumentError` saying what is wrong and what is allowed."""
    model = TOOL_ARGS.get(tool)
    if model is None:
        raise ToolArgumentError(f"unknown tool {tool!r}; tools: {', '.join(tool_names())}")
    if not isinstance(args, dict):
        raise ToolArgumentError(f"{tool}: arguments must be a JSON object, got {type(args).__name__}")
    try:
        return model.model_validate(args)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'arguments'}: {e['msg'].removeprefix('Value error, ')}"
            for e in exc.errors()
        )
        fields = ", ".join(model.model_fields)
        raise ToolArgumentError(f"{tool}: invalid arguments ({problems}); fields: {fields}") from None


@dataclass(frozen=True, slots=True)
class ToolResult:
    tool: str
    args: dict[str, Any]
    chunks: list[StoredChunk]
    summary: str
    retriever: str = ""
    cached: bool = False
    ms: float = 0.0


@dataclass
class Toolbox:
    """The tools of one request, bound to its query (collection, defaults, filters) and caching their results."""

    service: QueryService
    query: Query
    results: dict[str, ToolResult] = field(default_factory=dict)

    def call(self, tool: str, args: dict[str, Any]) -> ToolResult:
        """Validate and run one call (blocking: the store and the embedder). `ToolArgumentError` when the
        arguments are invalid; request errors (an unknown collection) propagate."""
        try:
            valid = validate_call(tool, args)
        except ToolArgumentError:
            AGENT_TOOL_CALLS.labels(tool=tool if tool in TOOL_ARGS else "unknown", outcome="invalid").inc()
            raise
        key = json.dumps([tool, valid.model_dump(mode="json")], sort_keys=True)
        if key in self.results:
            AGENT_TOOL_CALLS.labels(tool=tool, outcome="cached").inc()
            hit = self.results[key]
            return ToolResult(hit.tool, hit.args, hit.chunks, hit.summary, hit.retriever, cached=True, ms=0.0)
        run: Callable[[Any], ToolResult] = getattr(self, f"_{tool}")
        started = time.perf_counter()
        try:
            result = run(valid)
        except ToolArgumentError:  # valid alone, refused in this request (another collection)
            AGENT_TOOL_CALLS.labels(tool=tool, outcome="invalid").inc()
            raise
        result = ToolResult(
            result.tool, result.args, result.chunks, result.summary, result.retriever,
            ms=round((time.perf_counter() - started) * 1000, 3),
        )  # fmt: skip
        AGENT_TOOL_CALLS.labels(tool=tool, outcome="ok").inc()
        self.results[key] = result
        return result

    def _search(self, args: SearchArgs) -> ToolResult:
        query = self.service.query(
            args.query,
            collection=self.query.collection,
            top_k=args.top_k or self.query.top_k,
            filters=args.filters.filters() if args.filters is not None else self.query.filters,
            retriever=args.retriever or self.query.retriever,
        )
        found = self.service.retrieve(query)
        summary = f"{len(found.chunks)} chunks from {len({c.document_id for c in found.chunks})} documents"
        return ToolResult("search", args.model_dump(mode="json"), found.chunks, summary, found.retriever)

    def _read(self, args: ReadArgs) -> ToolResult:
        reader = self.service.reader
        chunks = reader.store.document_chunks(reader.collection(self.query.collection), args.document_id)
        if args.page is not None:
            chosen = [c for c in chunks if c.provenance().page == args.page]
        elif args.heading is not None:
            wanted = args.heading.casefold()
            chosen = [c for c in chunks if wanted in (c.provenance().heading or "").casefold()]
        else:
            at = next((i for i, c in enumerate(chunks) if c.chunk_id == args.around_chunk), None)
            chosen = [] if at is None else chunks[max(0, at - 1) : at + 2]
        chosen = chosen[:MAX_READ_CHUNKS]
        where = f"page {args.page}" if args.page else (f"heading {args.heading!r}" if args.heading else "around chunk")
        summary = f"{len(chosen)} chunks of {args.document_id} ({where})" if chosen else f"nothing at {where}"
        return ToolResult("read", args.model_dump(mode="json"), chosen, summary)

    def _list_documents(self, args: ListDocumentsArgs) -> ToolResult:
        if args.collection is not None and args.collection != self.query.collection:
            raise ToolArgumentError(
                f"list_documents: only the request's collection {self.query.collection!r} may be listed"
            )
        documents = self.service.reader.documents(self.query.collection)
        shown = [d.display_source or d.source for d in documents]
        if args.source_glob:
            shown = [s for s in shown if fnmatch.fnmatch(s, args.source_glob)]
        listed = ", ".join(shown[:MAX_LISTED]) + (" …" if len(shown) > MAX_LISTED else "")
        return ToolResult("list_documents", args.model_dump(mode="json"), [], f"{len(shown)} documents: {listed}")
