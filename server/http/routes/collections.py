"""Collections and their documents: list, upload (ingest or queue), delete. Reading needs the `read` scope,
uploading and deleting `write`; a key limited to collections sees only those (`server/auth.py`)."""

from __future__ import annotations

import mimetypes
from pathlib import Path, PurePosixPath
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, File, Query, UploadFile
from fastapi.responses import FileResponse, JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from ingest.blobs import BlobNotFound
from ingest.errors import DocumentNotFound
from ingest.loaders import supported_extensions
from ingest.originals import Originals
from ingest.pipeline import IngestReport
from ingest.queue import JobFile, QueueUnavailable
from ingest.vectorstore import document_id_for

from ...schemas import CollectionInfo, DocumentOut, ErrorResponse, JobsQueued, UploadResult
from ...state import Scope
from ..auth import Caller, ReadCaller, WriteCaller, collection_in_path
from ..deps import AuditDep, IngestorDep, ReaderDep
from ..errors import error_response
from ..observability import request_id_var

router = APIRouter(prefix="/v1", tags=["collections"])
Readable = Annotated[str, Depends(collection_in_path(Scope.READ))]
Writable = Annotated[str, Depends(collection_in_path(Scope.WRITE))]


@router.get("/collections", response_model=list[CollectionInfo], summary="The collections this key may see.")
def collections(reader: ReaderDep, caller: ReadCaller) -> list[CollectionInfo]:
    return [
        CollectionInfo(name=c.name, chunks=c.chunks, documents=c.documents, model=c.model)
        for c in reader.collections()
        if caller.can_see(c.name)
    ]


@router.get("/collections/{name}/documents", response_model=list[DocumentOut])
def documents(name: Readable, reader: ReaderDep, caller: ReadCaller) -> list[DocumentOut]:
    docs = reader.documents(name)
    return [
        DocumentOut(
            document_id=d.document_id,
            source=d.display_source,
            title=d.title,
            kind=d.kind,
            chunk_count=d.chunk_count,
            version=d.version,
            parent_id=d.parent_id or None,
            parent=d.parent or None,
        )
        for d in docs
    ]


# What a browser should be told each ingestible type is (mimetypes does not know every one, e.g. .md).
MEDIA_TYPES = {
    ".pdf": "application/pdf",
    ".md": "text/markdown; charset=utf-8",
    ".markdown": "text/markdown; charset=utf-8",
    ".txt": "text/plain; charset=utf-8",
    ".html": "text/html; charset=utf-8",
    ".htm": "text/html; charset=utf-8",
}


def media_type_for(name: str) -> str:
    suffix = PurePosixPath(name).suffix.lower()
    return MEDIA_TYPES.get(suffix) or mimetypes.guess_type(name)[0] or "application/octet-stream"


@router.get(
    "/documents/{document_id}/file",
    summary="The document's original file (e.g. a PDF to open at #page=N).",
    description="Served inline with the original's content type. The collection is the `collection` query "
    "parameter, or the default one; a key that may not see it gets 404, as for the documents list.",
    response_class=Response,
    responses={
        200: {"description": "The original bytes.", "content": {"application/pdf": {}, "text/plain": {}}},
        404: {"model": ErrorResponse, "description": "Unknown collection or document, or no original kept."},
    },
)
def document_file(
    document_id: str,
    reader: ReaderDep,
    ingestor: IngestorDep,
    caller: ReadCaller,
    collection: Annotated[str | None, Query(description="Collection; the default one when omitted.")] = None,
) -> Response:
    name = caller.collection(collection)
    document = next((d for d in reader.documents(name) if d.document_id == document_id), None)
    if document is None:
        raise DocumentNotFound(f"no document with id {document_id!r} in collection {name!r}")
    if not document.blob:
        raise BlobNotFound(
            f"document {document_id!r} was ingested before originals were kept; ingest its file again to keep it"
        )
    filename = PurePosixPath(document.display_source.replace("://", "/")).name or "document"
    media_type = media_type_for(filename)
    blobs = ingestor.blobs
    path = blobs.local_path(document.blob)
    if path is None:
        if not blobs.exists(document.blob):
            raise BlobNotFound(f"the original of document {document_id!r} is no longer stored")
        headers = {"Content-Disposition": f"inline; filename*=utf-8''{quote(filename)}"}
        return Response(blobs.get(document.blob), media_type=media_type, headers=headers)
    return FileResponse(path, media_type=media_type, filename=filename, content_disposition_type="inline")


@router.delete("/collections/{name}/documents/{document_id}", summary="Delete a document (by id or source).")
def delete_document(
    name: Writable, document_id: str, ingestor: IngestorDep, audit: AuditDep, caller: WriteCaller
) -> dict[str, Any]:
    info, removed = ingestor.delete(name, document_id)
    audit.record(
        "document.delete",
        caller.key_name,
        collection=name,
        document_id=info.document_id,
        request_id=request_id_var.get(),
        detail={"chunks": removed},
    )
    return {"document_id": info.document_id, "source": info.display_source, "chunks_deleted": removed}


@router.post(
    "/collections/{name}/documents",
    response_model=UploadResult,
    summary="Upload and ingest documents (multipart, field name `files`).",
    description="Ingested at once (200), or queued for `ragkb worker` when RAGKB_QUEUE_URL is set (202).",
    responses={
        202: {"model": JobsQueued, "description": "Queued: one job per file, with its status URL."},
        413: {"model": ErrorResponse, "description": "A file is over the upload limit."},
        415: {"model": ErrorResponse, "description": "A file type is not supported."},
    },
)
async def upload(
    name: Writable, caller: WriteCaller, files: Annotated[list[UploadFile], File(description="Documents to ingest.")]
) -> Any:
    parts = caller.parts
    settings = parts.settings
    limit = min(settings.max_upload_bytes, settings.max_file_bytes)
    names = [Path(f.filename or "upload").name for f in files]
    unsupported = [n for n in names if Path(n).suffix.lower() not in supported_extensions()]
    if unsupported:
        return error_response(
            415,
            f"unsupported file type: {', '.join(unsupported)}; supported: {', '.join(supported_extensions())}",
            "unsupported_type",
        )
    # One file in memory at a time: each is stored in the blob store as it is read (batch uploads of many
    # files never hold them all), and the job or the ingestion reads them back one by one.
    # Each original is pinned for this request from before it is stored until its job holds it or its
    # ingestion is over, so no other request's release (of a replaced version) can delete it in between.
    originals = Originals(parts.ingestor.blobs, parts.ingestor.release_quietly, holder="upload")
    try:
        return await _store_and_ingest(caller, name, files, names, limit, originals)
    finally:
        await run_in_threadpool(originals.close)


async def _store_and_ingest(
    caller: Caller, name: str, files: list[UploadFile], names: list[str], limit: int, originals: Originals
) -> Any:
    parts = caller.parts
    settings = parts.settings
    blobs = parts.ingestor.blobs
    stored: list[JobFile] = []
    for upload_file, filename in zip(files, names, strict=True):
        data = await upload_file.read(limit + 1)
        if len(data) > limit:
            await run_in_threadpool(_forget, originals, stored)
            return error_response(413, f"{filename} is over the {limit:,}-byte upload limit", "too_large")
        digest = await run_in_threadpool(originals.put, data)
        stored.append(JobFile(filename, f"upload://{filename}", digest))
        del data
    await run_in_threadpool(parts.ingestor.open_collection, name)  # validates the name, creates if new
    if parts.queue is not None:  # scale-out: a worker process ingests them, one job per file
        queue = parts.queue
        jobs: list[dict[str, str]] = []
        for file in stored:
            try:
                job_id = await run_in_threadpool(queue.enqueue, collection=name, files=[file])
            except QueueUnavailable:
                # not queued: keep nothing
                await run_in_threadpool(_forget, originals, stored[len(jobs) :])
                raise
            jobs.append({"id": job_id, "name": file.name, "status": "queued", "status_url": f"/v1/jobs/{job_id}"})
            await run_in_threadpool(
                _record,
                caller,
                "document.queue",
                name,
                document_id_for(file.source),
                {"name": file.name, "job": job_id},
            )
        return JSONResponse(JobsQueued(collection=name, jobs=jobs).model_dump(), status_code=202)
    items = ((f.name, f.source, blobs.get(f.blob)) for f in stored)
    report = await run_in_threadpool(
        parts.ingestor.ingest_items,
        items,
        collection=name,
        max_chunks=settings.max_chunks_per_request,
        max_tokens=settings.max_tokens_per_request,
    )
    failed = {f.path for f in report.failures}
    await run_in_threadpool(_forget, originals, [f for f in stored if f.name in failed])
    await run_in_threadpool(_audit_upload, caller, name, report)
    result = UploadResult(
        collection=name,
        added=report.added,
        updated=report.updated,
        unchanged=report.unchanged,
        failed=report.failed,
        chunks_added=report.chunks_added,
        attachments=report.attachments,
        documents=report.documents,
        failures=[f.as_dict() for f in report.failures],
    )
    if report.failed < len(files) or not report.failures:
        return JSONResponse(result.model_dump(exclude={"error", "code", "request_id"}))
    first = report.failures[0]
    more = f" (and {report.failed - 1} more: see failures)" if report.failed > 1 else ""
    result.error = f"no file was stored: {first.path}: {first.error}{more}"
    result.code = "no_file_stored"
    result.request_id = request_id_var.get()
    return JSONResponse(result.model_dump(), status_code=422)


def _forget(originals: Originals, stored: list[JobFile]) -> None:
    """A refused upload keeps nothing: originals already stored for it go unless something else uses them."""
    for file in stored:
        originals.release(file.blob)


def _record(caller: Caller, action: str, collection: str, document_id: str, detail: dict[str, Any]) -> None:
    caller.parts.audit.record(
        action, caller.key_name, collection=collection, document_id=document_id,
        request_id=request_id_var.get(), detail=detail,
    )  # fmt: skip


def _audit_upload(caller: Caller, collection: str, report: IngestReport) -> None:
    """One record per document that changed or failed (`document.add`, `document.update`, `document.fail`)."""
    for doc in report.documents:
        action = {"added": "document.add", "updated": "document.update"}.get(str(doc["status"]))
        if action:
            _record(caller, action, collection, str(doc["document_id"]), {"name": doc["path"], "chunks": doc["chunks"]})
    for failure in report.failures:
        document_id = document_id_for(f"upload://{failure.path}")
        _record(caller, "document.fail", collection, document_id, {"name": failure.path, "error": failure.error})
