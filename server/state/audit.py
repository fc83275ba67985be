"""The audit trail: who (key name) did what (action) to which collection or document, in which request.

One generic table for every action, so new kinds of record (feedback, reviews) need no new schema;
what is particular to an action goes in `detail` (JSON). Records are never updated or deleted here.
"""

from __future__ import annotations

import builtins
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from ingest.errors import RagkbError

from .db import StateDB
from .models import NAME_LENGTH, REF_LENGTH, AuditRecord, utcnow

_ACTION = re.compile(rf"^[a-z][a-z0-9_.:-]{{0,{NAME_LENGTH - 1}}}$")
MAX_LIMIT = 10_000


class InvalidAudit(RagkbError):
    """An audit record or query that cannot be stored or answered; the message says why."""


@dataclass(frozen=True, slots=True)
class AuditEvent:
    id: int
    at: datetime
    action: str
    key_name: str | None
    collection: str | None
    document_id: str | None
    request_id: str | None
    detail: dict[str, Any] | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "at": self.at.isoformat(),
            "action": self.action,
            "key_name": self.key_name,
            "collection": self.collection,
            "document_id": self.document_id,
            "request_id": self.request_id,
            "detail": self.detail,
        }

    @classmethod
    def of(cls, row: AuditRecord) -> AuditEvent:
        return cls(
            row.id, row.at, row.action, row.key_name, row.collection, row.document_id, row.request_id, row.detail
        )


class Audit:
    """Writes and reads audit records. `record` is one INSERT in its own transaction: call it from a
    thread (`run_in_threadpool`) in async routes, like any other blocking I/O."""

    def __init__(self, db: StateDB, *, clock: Callable[[], datetime] = utcnow) -> None:
        self.db = db
        self._clock = clock

    def record(
        self,
        action: str,
        key_name: str | None,
        collection: str | None = None,
        document_id: str | None = None,
        request_id: str | None = None,
        detail: Mapping[str, Any] | None = None,
    ) -> AuditEvent:
        """Store one record. `action` is a short lower-case verb phrase such as `document.delete` or
        `key.create`; `key_name` is None while the server runs without keys."""
        if not _ACTION.match(action):
            raise InvalidAudit(
                f"invalid audit action {action!r}: use up to {NAME_LENGTH} lower-case letters, digits, '_', '.', "
                "':' or '-', starting with a letter"
            )
        for field, value in (("collection", collection), ("document_id", document_id), ("request_id", request_id)):
            if value is not None and len(value) > REF_LENGTH:
                raise InvalidAudit(f"audit {field} is longer than {REF_LENGTH} characters")
        body = _json_object(detail)
        row = AuditRecord(
            at=self._clock(),
            key_name=key_name,
            action=action,
            collection=collection,
            document_id=document_id,
            request_id=request_id,
            detail=body,
        )
        with self.db.session() as session:
            session.add(row)
        return AuditEvent.of(row)

    def list(
        self,
        limit: int = 100,
        action: str | None = None,
        since: datetime | None = None,
        key_name: str | None = None,
    ) -> builtins.list[AuditEvent]:
        """The newest records first, at most `limit`; `since` (inclusive; naive means UTC) and
        `action` and `key_name` (exact) narrow them."""
        if not 1 <= limit <= MAX_LIMIT:
            raise InvalidAudit(f"audit limit must be between 1 and {MAX_LIMIT}, got {limit}")
        query = sa.select(AuditRecord).order_by(AuditRecord.at.desc(), AuditRecord.id.desc()).limit(limit)
        if action is not None:
            query = query.where(AuditRecord.action == action)
        if key_name is not None:
            query = query.where(AuditRecord.key_name == key_name)
        if since is not None:
            query = query.where(AuditRecord.at >= (since if since.tzinfo else since.replace(tzinfo=UTC)))
        with self.db.session() as session:
            return [AuditEvent.of(row) for row in session.scalars(query).all()]


def _json_object(detail: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """A plain, JSON-serialisable copy of `detail`, checked here so a bad value is a clear error
    naming the problem rather than a driver error at commit."""
    if detail is None:
        return None
    try:
        return dict(json.loads(json.dumps(dict(detail))))
    except (TypeError, ValueError) as exc:
        raise InvalidAudit(f"audit detail must be JSON-serialisable: {exc}") from None
