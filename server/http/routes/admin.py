"""Administration (scope `admin`): API keys, the answer cache, the audit trail. Every change is audited."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from ...answering.cache import CacheUnavailable
from ...state import Audit, Scope
from ...state.audit import MAX_LIMIT, AuditEvent
from ..auth import AdminCaller, Caller
from ..deps import AuditDep, CacheDep, KeysDep
from ..observability import request_id_var

router = APIRouter(prefix="/v1", tags=["admin"])


class KeyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=64, description="Unique name, shown in the audit trail.")
    scope: Scope = Field(description="What the key may do: read, write, review or admin.")
    collections: list[str] | None = Field(
        None, min_length=1, max_length=1000, description="Collections the key is limited to; null for every one."
    )


class KeyOut(BaseModel):
    name: str
    scope: Scope
    collections: list[str] | None
    hint: str = Field(description="The token's first characters, to tell keys apart.")
    created_at: datetime


class KeyCreated(KeyOut):
    token: str = Field(description="The bearer token: shown only in this response, keep it secret.")


class CacheCleared(BaseModel):
    removed: int


def _audit(audit: Audit, caller: Caller, action: str, detail: dict[str, Any]) -> None:
    audit.record(action, caller.key_name, request_id=request_id_var.get(), detail=detail)


@router.get("/keys", response_model=list[KeyOut], summary="List API keys (never their tokens).")
def list_keys(keys: KeysDep, caller: AdminCaller) -> list[KeyOut]:
    return [KeyOut(**record.as_dict()) for record in keys.list()]


@router.post("/keys", response_model=KeyCreated, status_code=201, summary="Create an API key; its token is shown once.")
def create_key(body: KeyIn, keys: KeysDep, audit: AuditDep, caller: AdminCaller) -> JSONResponse:
    record, token = keys.create(body.name, body.scope, body.collections)
    data = record.as_dict()
    _audit(
        audit,
        caller,
        "key.create",
        {"key": record.name, "scope": record.scope.value, "collections": data["collections"]},
    )
    created = KeyCreated(**data, token=token)
    return JSONResponse(created.model_dump(mode="json"), status_code=201, headers={"Cache-Control": "no-store"})


@router.delete("/keys/{name}", response_model=KeyOut, summary="Revoke an API key (its token stops working).")
def revoke_key(name: str, keys: KeysDep, audit: AuditDep, caller: AdminCaller) -> KeyOut:
    record = keys.revoke(name)
    _audit(audit, caller, "key.revoke", {"key": record.name, "scope": record.scope.value})
    return KeyOut(**record.as_dict())


@router.delete("/cache", response_model=CacheCleared, summary="Remove every cached answer.")
async def clear_cache(cache: CacheDep, audit: AuditDep, caller: AdminCaller) -> CacheCleared:
    try:
        removed = await run_in_threadpool(cache.clear)
    except Exception as exc:  # Redis down: say so (the cache is bypassed meanwhile), not a 500
        raise CacheUnavailable(f"cannot clear the answer cache: {type(exc).__name__}") from exc
    await run_in_threadpool(_audit, audit, caller, "cache.clear", {"removed": removed})
    return CacheCleared(removed=removed)


@router.get("/audit", response_model=list[AuditEvent], summary="The audit trail, newest first.")
def audit(
    trail: AuditDep,
    caller: AdminCaller,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Most records to return.")] = 100,
    action: Annotated[str | None, Query(max_length=64, description="Only this action, e.g. key.create.")] = None,
    since: Annotated[datetime | None, Query(description="Only records at or after this time (ISO 8601).")] = None,
) -> list[AuditEvent]:
    return trail.list(limit, action=action, since=since)
