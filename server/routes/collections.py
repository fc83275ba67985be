"""Collections and their documents: list, upload (ingest or queue), delete."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, File, UploadFile
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from ingest.loaders import supported_extensions

from ..components import Components, components
from ..http_errors import error_response
from ..schemas import CollectionInfo, DocumentOut, ErrorResponse, JobsQueued, UploadResult

router = APIRouter(prefix="/v1", tags=["collections"])
Parts = Annotated[Components, Depends(components)]


@router.get("/collections", response_model=list[CollectionInfo])
def collections(parts: Parts) -> list[CollectionInfo]:
    return [
        CollectionInfo(name=c.name, chunks=c.chunks, documents=c.documents, model=c.model)
        for c in parts.service.reader.collections()
    ]


@router.get("/collections/{name}/documents", response_model=list[DocumentOut])
def documents(name: str, parts: Parts) -> list[DocumentOut]:
    return [
        DocumentOut(
            document_id=d.document_id,
            source=d.source,
            title=d.title,
            kind=d.kind,
            chunk_count=d.chunk_count,
            version=d.version,
        )
        for d in parts.service.reader.documents(name)
    ]


@router.delete("/collections/{name}/documents/{document_id}")
def delete_document(name: str, document_id: str, parts: Parts) -> dict[str, Any]:
    info, removed = parts.ingestor.delete(name, document_id)
    return {"document_id": info.document_id, "source": info.source, "chunks_deleted": removed}


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
    name: str, parts: Parts, files: Annotated[list[UploadFile], File(description="Documents to ingest.")]
) -> Any:
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
    contents: list[bytes] = []
    for upload_file, filename in zip(files, names, strict=True):
        data = await upload_file.read(limit + 1)
        if len(data) > limit:
            return error_response(413, f"{filename} is over the {limit:,}-byte upload limit", "too_large")
        contents.append(data)
    await run_in_threadpool(parts.ingestor.open_collection, name)  # validates the name, creates if new
    items = [(filename, f"upload://{filename}", data) for filename, data in zip(names, contents, strict=True)]
    if parts.queue is not None:  # scale-out: a worker process ingests them
        queue = parts.queue
        jobs = []
        for filename, source, data in items:
            job_id = await run_in_threadpool(queue.enqueue, collection=name, name=filename, source=source, data=data)
            jobs.append({"id": job_id, "name": filename, "status": "queued", "status_url": f"/v1/jobs/{job_id}"})
        return JSONResponse(JobsQueued(collection=name, jobs=jobs).model_dump(), status_code=202)
    report = await run_in_threadpool(
        parts.ingestor.ingest_items, items, collection=name, max_chunks=settings.max_chunks_per_request
    )
    result = UploadResult(
        collection=name,
        added=report.added,
        updated=report.updated,
        unchanged=report.unchanged,
        failed=report.failed,
        chunks_added=report.chunks_added,
        documents=report.documents,
        failures=[f.as_dict() for f in report.failures],
    )
    return JSONResponse(result.model_dump(), status_code=422 if report.failed == len(files) else 200)
