"""One typed dependency per part of the server, for the routes (the way FastAPI's full-stack template's
`api/deps.py` does it): a route names what it uses, `answerer: AnswererDep`, never a chain of attributes.
Each is `async def`: FastAPI runs a plain `def` dependency in a worker thread, a hop a cache hit cannot afford."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from ingest.pipeline import Ingestor
from ingest.vectorstore import StoreUnavailable

from ..answering.cache import AnswerCache
from ..answering.entry import Answerer
from ..answering.reader import Reader
from ..answering.service import QueryService
from ..review.desk import ReviewDesk
from ..state import Audit, KeyStore
from .components import Components


def components(request: Request) -> Components:
    """The process's components (503 while the model is still loading)."""
    found: Components | None = getattr(request.app.state, "components", None)
    if found is None:
        raise StoreUnavailable("the server is still starting; try again in a moment")
    return found


async def _parts(request: Request) -> Components:  # async: FastAPI runs it on the loop, not in a thread
    return components(request)


Parts = Annotated[Components, Depends(_parts)]


async def _answerer(parts: Parts) -> Answerer:
    return parts.answerer


async def _service(parts: Parts) -> QueryService:
    return parts.service


async def _reader(parts: Parts) -> Reader:
    return parts.service.reader


async def _cache(parts: Parts) -> AnswerCache:
    return parts.service.cache


async def _desk(parts: Parts) -> ReviewDesk:
    return parts.answerer.desk


async def _ingestor(parts: Parts) -> Ingestor:
    return parts.ingestor


async def _audit(parts: Parts) -> Audit:
    return parts.audit


async def _keys(parts: Parts) -> KeyStore:
    return parts.keys


AnswererDep = Annotated[Answerer, Depends(_answerer)]
ServiceDep = Annotated[QueryService, Depends(_service)]
ReaderDep = Annotated[Reader, Depends(_reader)]
CacheDep = Annotated[AnswerCache, Depends(_cache)]
DeskDep = Annotated[ReviewDesk, Depends(_desk)]
IngestorDep = Annotated[Ingestor, Depends(_ingestor)]
AuditDep = Annotated[Audit, Depends(_audit)]
KeysDep = Annotated[KeyStore, Depends(_keys)]
