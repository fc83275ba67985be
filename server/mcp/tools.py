"""ragkb as an MCP server (docs/doors.md): read-only tools over the collections a key may read, answered through
the same parts as the HTTP API (`Answerer.ask` for `ask`, so curated answers, review policies and recording
hold). No tool writes anything.

| tool | what it returns |
| --- | --- |
| `list_collections` | the collections the key may read, with document and chunk counts |
| `search` | passages (source, page, heading, score, text; never whole documents) for a query |
| `ask` | a cited answer with its outcome (grounded, abstained, origin), or that it is held for review |
| `read_passage` | one passage by its `chunk_id` (from `search` or an answer's citations) |
| `get_document_outline` | a document's passages in order: page, heading and the first words of each |

Who calls: over Streamable HTTP, the bearer key of the request (the same keys as the API, scope `read`);
over stdio, the key `ragkb mcp` was started with (or none while the state database holds no key)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Protocol

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import Field
from starlette.concurrency import run_in_threadpool

from ingest.config import Settings
from ingest.errors import RagkbError
from ingest.vectorstore import validate_collection_name

from ..answering.entry import Answerer, Asker, Held, Mode
from ..schemas import ChunkRef
from ..state import Identity, KeyStore, Scope

PASSAGE_CHARS = 2000  # a passage's text is cut here: passages, never whole documents
OUTLINE_WORDS = 12


class Parts(Protocol):
    """What the tools need: the server's `Components` has these, and so does `ragkb mcp`'s `StdioParts`."""

    @property
    def settings(self) -> Settings: ...

    @property
    def answerer(self) -> Answerer: ...

    @property
    def keys(self) -> KeyStore: ...


@dataclass(frozen=True, slots=True)
class StdioParts:
    settings: Settings
    answerer: Answerer
    keys: KeyStore


class NoAccess(ToolError):
    """The key is missing, not valid, or may not read (shown to the model as the tool's error)."""


@dataclass(frozen=True, slots=True)
class Access:
    """The caller of one tool call: the key's identity (None on an open server)."""

    parts: Parts
    identity: Identity | None

    def can_see(self, name: str) -> bool:
        return self.identity is None or self.identity.can_see(name)

    def visible(self) -> list[str]:
        names = self.parts.answerer.service.reader.store.collection_names()
        return sorted(n for n in names if self.can_see(n))

    def collection(self, name: str | None) -> str:
        name = name or self.parts.settings.default_collection
        try:
            validate_collection_name(name)
        except RagkbError as exc:
            raise ToolError(str(exc)) from None
        visible = self.visible()
        if name not in visible:
            raise ToolError(f"unknown collection {name!r}; this key may read: {', '.join(visible) or 'none'}")
        return name


def bearer_token(headers: Any) -> str | None:
    value = headers.get("authorization") if headers is not None else None
    if not value or not value.lower().startswith("bearer "):
        return None
    return str(value[7:].strip()) or None


def identify(keys: KeyStore, token: str | None) -> Identity | None:
    """The identity of `token` with scope `read`; None while no key exists (the open server). Blocking."""
    if not keys.any_keys():
        return None
    if token is None:
        raise NoAccess("an API key is required: `Authorization: Bearer <token>` (HTTP) or `ragkb mcp --api-key`")
    identity = keys.authenticate(token)
    if identity is None:
        raise NoAccess("the API key is not valid (unknown, malformed or revoked)")
    if not identity.allows(Scope.READ):
        raise NoAccess(f"the key {identity.name!r} has scope {identity.scope.value!r}; these tools need 'read'")
    return identity


def _passage(chunk: Any, chars: int = PASSAGE_CHARS) -> dict[str, Any]:
    text = chunk.text if len(chunk.text) <= chars else chunk.text[:chars].rstrip() + " …"
    return {**ChunkRef.fields_of(chunk), "text": text}


CollectionArg = Annotated[
    str | None, Field(description="The collection (see list_collections); the server's default when omitted.")
]


def build_server(resolve: Callable[[Context], Access]) -> MCPServer:
    """The MCP server; `resolve` says, for each call, which parts answer and who the caller is."""
    server = MCPServer(
        name="ragkb",
        instructions="Search and ask a ragkb knowledge base. Answers cite their sources with [n] markers; "
        "`search` returns passages with source, page and score; `read_passage` reads one by its chunk_id.",
    )

    async def access(ctx: Context) -> Access:
        return await run_in_threadpool(resolve, ctx)

    @server.tool()
    async def list_collections(ctx: Context) -> list[dict[str, Any]]:
        """The collections you may read, with how many documents and chunks each holds."""
        caller = await access(ctx)
        summaries = await run_in_threadpool(caller.parts.answerer.service.reader.collections)
        return [
            {"name": c.name, "documents": c.documents, "chunks": c.chunks} for c in summaries if caller.can_see(c.name)
        ]

    @server.tool()
    async def search(
        query: Annotated[str, Field(min_length=1, max_length=2000, description="What to look for.")],
        ctx: Context,
        collection: CollectionArg = None,
        top_k: Annotated[int, Field(ge=1, le=20, description="How many passages.")] = 5,
    ) -> dict[str, Any]:
        """Passages that match `query`, best first, each with its source, page, heading, score and text (cut at
        2,000 characters). No answer is written: use `ask` for that."""
        caller = await access(ctx)
        service = caller.parts.answerer.service
        try:
            asked = service.query(query, collection=caller.collection(collection), top_k=top_k)
            result = await run_in_threadpool(service.retrieve, asked)
        except RagkbError as exc:
            raise ToolError(str(exc)) from None
        return {"collection": result.collection, "passages": [_passage(c) for c in result.chunks]}

    @server.tool()
    async def ask(
        question: Annotated[str, Field(min_length=1, max_length=2000, description="The question.")],
        ctx: Context,
        collection: CollectionArg = None,
        mode: Annotated[
            Literal["single", "agent"], Field(description="single: one retrieval; agent: plan, search, review.")
        ] = "single",
    ) -> dict[str, Any]:
        """A cited answer from the collection: `answer` with [n] markers, `citations` (n, source, page, snippet,
        chunk_id), and its outcome: `grounded`, `abstained` (the documents do not say), `origin` (generated,
        cached, curated, reviewed). When the collection's review policy holds answers, `held` is true and
        `review_id` names the review."""
        caller = await access(ctx)
        answerer = caller.parts.answerer
        key_name = caller.identity.name if caller.identity is not None else None
        try:
            asked = answerer.query(question, collection=caller.collection(collection))
            reply = await answerer.answer(asked, mode=Mode(mode), asker=Asker(key_name, f"mcp-{ctx.request_id}"))
        except RagkbError as exc:
            raise ToolError(str(exc)) from None
        if isinstance(reply, Held):
            return {"held": True, "review_id": reply.review_id, "answer_url": reply.model().answer_url}
        return {
            "held": False,
            "answer": reply.answer,
            "citations": [c.model_dump(mode="json") for c in reply.citations],
            "grounded": reply.grounded,
            "abstained": reply.abstained,
            "origin": reply.origin,
            "confidence": reply.confidence,
            "request_id": reply.request_id,
        }

    @server.tool()
    async def read_passage(
        chunk_id: Annotated[str, Field(min_length=1, max_length=300, description="A passage's chunk_id.")],
        ctx: Context,
        collection: CollectionArg = None,
    ) -> dict[str, Any]:
        """One passage by its chunk_id (from `search` or from an answer's citations), with its source and page."""
        caller = await access(ctx)
        reader = caller.parts.answerer.service.reader
        name = caller.collection(collection)
        found = await run_in_threadpool(lambda: reader.store.chunks(reader.collection(name), [chunk_id]))
        if not found:
            raise ToolError(f"no passage {chunk_id!r} in {name!r}: take chunk ids from `search` or `ask`")
        return _passage(found[0])

    @server.tool()
    async def get_document_outline(
        document: Annotated[str, Field(min_length=1, max_length=1000, description="A document_id or its source.")],
        ctx: Context,
        collection: CollectionArg = None,
    ) -> dict[str, Any]:
        """A document's passages in order (chunk_id, page, heading, first words), to find where to read."""
        caller = await access(ctx)
        reader = caller.parts.answerer.service.reader
        name = caller.collection(collection)

        def outline() -> dict[str, Any]:
            handle = reader.collection(name)
            docs = reader.store.documents(handle)
            shown = [d for d in docs if document in (d.document_id, d.display_source)]
            shown = shown or [d for d in docs if d.display_source.endswith("/" + document)]  # a file's name
            info = shown[0] if shown else reader.store.find_document(handle, document)
            chunks = sorted(reader.store.document_chunks(handle, info.document_id), key=lambda c: c.provenance().start)
            return {
                "document_id": info.document_id,
                "source": info.display_source,
                "title": info.title,
                "passages": [
                    {
                        "chunk_id": c.chunk_id,
                        "page": c.provenance().page,
                        "heading": c.provenance().heading,
                        "starts": " ".join(c.text.split()[:OUTLINE_WORDS]),
                    }
                    for c in chunks
                ],
            }

        try:
            return await run_in_threadpool(outline)
        except RagkbError as exc:
            raise ToolError(str(exc)) from None

    return server
