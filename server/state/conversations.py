"""Stored conversations (`/v1/conversations`): each belongs to the key that made it (None on an open server)
and holds its turns in order. Another key's conversation is as missing as one that does not exist."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from ingest.errors import RagkbError

from .db import StateDB
from .models import ConversationMessage, ConversationRecord, utcnow

MAX_TURNS = 200


class ConversationNotFound(RagkbError):
    """No conversation with this id for this key (404)."""

    def __init__(self, conversation_id: str) -> None:
        super().__init__(f"conversation {conversation_id!r} not found (create one with POST /v1/conversations)")


class ConversationFull(RagkbError):
    """A conversation with `MAX_TURNS` turns takes no more (409)."""


@dataclass(frozen=True, slots=True)
class StoredConversation:
    record: ConversationRecord
    messages: Sequence[ConversationMessage]


class ConversationStore:
    def __init__(self, db: StateDB) -> None:
        self.db = db

    def create(self, key_name: str | None, collection: str, mode: str) -> ConversationRecord:
        record = ConversationRecord(id=uuid.uuid4().hex, key_name=key_name, collection=collection, mode=mode)
        with self.db.session() as session:
            session.add(record)
            session.flush()
            session.expunge(record)
        return record

    def _owned(self, session: Any, conversation_id: str, key_name: str | None) -> ConversationRecord:
        record = session.get(ConversationRecord, conversation_id)
        if record is None or record.key_name != key_name:
            raise ConversationNotFound(conversation_id)
        assert isinstance(record, ConversationRecord)
        return record

    def get(self, conversation_id: str, key_name: str | None) -> StoredConversation:
        with self.db.session() as session:
            record = self._owned(session, conversation_id, key_name)
            messages = session.scalars(
                sa.select(ConversationMessage)
                .where(ConversationMessage.conversation_id == conversation_id)
                .order_by(ConversationMessage.n)
            ).all()
            session.expunge_all()
        return StoredConversation(record, messages)

    def add(
        self,
        conversation_id: str,
        key_name: str | None,
        *,
        question: str,
        standalone_question: str,
        answer: str,
        citations: list[Any],
        request_id: str,
        review_id: str | None = None,
    ) -> ConversationMessage:
        """The next turn. The check reads in its own transaction and the write is one INSERT ... SELECT (its
        number computed in the statement): a SQLite transaction that read before writing could not take the
        write lock once another writer (the answer records) had committed."""
        with self.db.session() as session:
            self._owned(session, conversation_id, key_name)
            count = session.scalar(
                sa.select(sa.func.count())
                .select_from(ConversationMessage)
                .where(ConversationMessage.conversation_id == conversation_id)
            )
        if (count or 0) >= MAX_TURNS:
            raise ConversationFull(f"conversation {conversation_id!r} has {MAX_TURNS} turns; start a new one")
        table = ConversationMessage.__table__
        following = (
            sa.select(sa.func.coalesce(sa.func.max(table.c.n), 0) + 1)
            .where(table.c.conversation_id == conversation_id)
            .scalar_subquery()
        )
        values = {
            "conversation_id": conversation_id,
            "at": utcnow(),
            "question": question,
            "standalone_question": standalone_question,
            "answer": answer,
            "citations": citations,
            "request_id": request_id,
            "review_id": review_id,
        }
        with self.db.session() as session:
            session.execute(sa.insert(ConversationMessage).values(**values, n=following))
        with self.db.session() as session:
            message = session.scalars(
                sa.select(ConversationMessage)
                .where(ConversationMessage.conversation_id == conversation_id)
                .order_by(ConversationMessage.n.desc())
                .limit(1)
            ).one()
            session.expunge(message)
        return message

    def delete(self, conversation_id: str, key_name: str | None) -> None:
        with self.db.session() as session:
            self._owned(session, conversation_id, key_name)
        with self.db.session() as session:
            session.execute(
                sa.delete(ConversationMessage).where(ConversationMessage.conversation_id == conversation_id)
            )
            session.execute(sa.delete(ConversationRecord).where(ConversationRecord.id == conversation_id))
