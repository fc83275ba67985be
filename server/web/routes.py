"""The web page's routes: the HTML pages (Ask, Documents, Review, Sign-in), their static files, and the
small JSON helpers only a page needs (`/v1/whoami`, passages with their highlight, the documents table).

Pages are shells rendered by Jinja2 (autoescaped): the API key lives in the browser's session storage, so
what a key may see is fetched by `static/app.js` with the Bearer header from the same API every client
uses. Every HTML and static response carries the Content-Security-Policy of `security.py`.
"""

from __future__ import annotations

from functools import lru_cache
from importlib.resources import files
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, Response
from jinja2 import Environment, PackageLoader, select_autoescape
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from ingest.vectorstore import chunk_id as make_chunk_id

from ..http.auth import Caller, ReadCaller, authenticate, collection_in_path
from ..http.components import Components
from ..http.deps import ReaderDep
from ..state import Scope
from .highlight import claims_by_citation, highlights
from .security import PAGE_HEADERS, STATIC_TYPES

router = APIRouter()
Readable = Annotated[str, Depends(collection_in_path(Scope.READ))]
Authenticated = Annotated[Caller, Depends(authenticate)]

PAGES = {"/": "ask", "/documents": "documents", "/review": "review", "/signin": "signin"}
MAX_PASSAGES = 50


@lru_cache(maxsize=1)
def _templates() -> Environment:
    return Environment(loader=PackageLoader("server.web", "templates"), autoescape=select_autoescape(default=True))


@lru_cache(maxsize=16)
def _static(name: str) -> bytes:
    return files("server.web").joinpath("static", name).read_bytes()


def _open_mode(request: Request) -> bool:
    parts: Components | None = getattr(request.app.state, "components", None)
    return parts is not None and not parts.keys.any_keys()


def _page(page: str) -> Any:
    async def render(request: Request) -> HTMLResponse:
        open_mode = await run_in_threadpool(_open_mode, request)
        parts: Components | None = getattr(request.app.state, "components", None)
        wait = parts.settings.web_wait_seconds if parts is not None else 600
        html = _templates().get_template(f"{page}.html").render(page=page, open_mode=open_mode, wait_seconds=wait)
        return HTMLResponse(html, headers=PAGE_HEADERS)

    render.__name__ = f"page_{page}"
    return render


for _path, _name in PAGES.items():
    router.add_api_route(_path, _page(_name), methods=["GET"], include_in_schema=False, response_class=HTMLResponse)


@router.get("/static/{name}", include_in_schema=False)
def static(name: str) -> Response:
    """The page's script, style sheet and icon: a fixed list of names, nothing else on disk is reachable."""
    media_type = STATIC_TYPES.get(name)
    if media_type is None:
        return Response("not found", status_code=404, media_type="text/plain", headers=PAGE_HEADERS)
    return Response(_static(name), media_type=media_type, headers={**PAGE_HEADERS, "Cache-Control": "no-cache"})


# -- JSON helpers for the page ----------------------------------------------------------------------------


class Abilities(BaseModel):
    read: bool
    write: bool
    review: bool
    admin: bool


class WhoAmI(BaseModel):
    open: bool = Field(description="True when no API key exists yet: the loopback demo, where anyone may do anything.")
    key: str | None = Field(description="The key's name (None in open mode).")
    scope: str = Field(description="The key's scope: read, write, review or admin.")
    collections: list[str] | None = Field(description="The collections the key is limited to; None for all.")
    can: Abilities
    default_collection: str


@router.get("/v1/whoami", response_model=WhoAmI, tags=["web"], summary="Who this API key is and what it may do.")
def whoami(caller: Authenticated) -> WhoAmI:
    identity = caller.identity
    default = caller.parts.settings.default_collection
    if identity is None:
        return WhoAmI(
            open=True,
            key=None,
            scope=Scope.ADMIN.value,
            collections=None,
            can=Abilities(read=True, write=True, review=True, admin=True),
            default_collection=default,
        )
    return WhoAmI(
        open=False,
        key=identity.name,
        scope=identity.scope.value,
        collections=None if identity.collections is None else sorted(identity.collections),
        can=Abilities(**{s.value: identity.allows(s) for s in Scope}),
        default_collection=default,
    )


class CitedChunk(BaseModel):
    model_config = ConfigDict(extra="forbid")

    n: int = Field(ge=1, le=999)
    chunk_id: str = Field(min_length=1, max_length=300)


class PassagesRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    collection: str | None = Field(None, description="The collection the answer came from; the default when omitted.")
    answer: str = Field("", max_length=50_000, description="The answer text with its [n] markers.")
    citations: list[CitedChunk] = Field(max_length=MAX_PASSAGES)


class Passage(BaseModel):
    n: int
    chunk_id: str
    text: str | None = Field(description="The whole passage; None when its document has been deleted since.")
    highlights: list[tuple[int, int]] = Field(
        description="[start, end) ranges of `text`: the sentences the answer quotes for this citation (may be none)."
    )


class PassagesResponse(BaseModel):
    passages: list[Passage]


@router.post(
    "/v1/passages",
    response_model=PassagesResponse,
    tags=["web"],
    summary="The whole text of cited passages, each with the sentence the answer quotes (for source cards).",
)
def passages(body: PassagesRequest, reader: ReaderDep, caller: ReadCaller) -> PassagesResponse:
    name = caller.collection(body.collection)
    wanted = list(dict.fromkeys(c.chunk_id for c in body.citations))  # the store refuses an id asked twice
    stored = {c.chunk_id: c for c in reader.store.chunks(reader.collection(name), wanted)}
    claims = claims_by_citation(body.answer)
    found: list[Passage] = []
    for cited in body.citations:
        chunk = stored.get(cited.chunk_id)
        found.append(
            Passage(
                n=cited.n,
                chunk_id=cited.chunk_id,
                text=chunk.text if chunk is not None else None,
                highlights=highlights(chunk.text, claims.get(cited.n, [])) if chunk is not None else [],
            )
        )
    return PassagesResponse(passages=found)


class DocumentRow(BaseModel):
    document_id: str
    source: str
    title: str
    kind: str
    chunks: int
    pages: int | None = Field(description="The last page with text (PDF only).")
    ingested_at: str | None


@router.get(
    "/v1/ui/collections/{name}/documents",
    response_model=list[DocumentRow],
    tags=["web"],
    summary="The documents of a collection with their pages and ingestion time (the Documents page's table).",
)
def documents_table(name: Readable, reader: ReaderDep, caller: ReadCaller) -> list[DocumentRow]:
    collection = reader.collection(name)
    docs = reader.store.documents(collection)
    ends: list[str] = []
    for d in docs:
        ends += [make_chunk_id(d.document_id, d.version, 0), make_chunk_id(d.document_id, d.version, d.chunk_count - 1)]
    meta = {c.chunk_id: c.metadata for c in reader.store.chunks(collection, list(dict.fromkeys(ends)))}
    rows: list[DocumentRow] = []
    for d in docs:
        first = meta.get(make_chunk_id(d.document_id, d.version, 0), {})
        last = meta.get(make_chunk_id(d.document_id, d.version, d.chunk_count - 1), {})
        page = last.get("page")
        rows.append(
            DocumentRow(
                document_id=d.document_id,
                source=d.display_source,
                title=d.title,
                kind=d.kind,
                chunks=d.chunk_count,
                pages=int(page) if page is not None else None,
                ingested_at=str(first["ingested_at"]) if first.get("ingested_at") else None,
            )
        )
    return rows
