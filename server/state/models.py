"""The state database's tables, as typed SQLAlchemy models. Alembic's revisions in `migrations/versions`
create them; a test compares the two, so a model changed without a migration fails.

Answers are recorded in `answers` keyed by `request_id` (the id every response carries); `feedback`
and `reviews` reference them by that id. A review holds its attempts (each candidate answer with the
passages it was made from, as shown to the reviewer); an approved review becomes a `curated_answers`
row, which cites chunks by id and by the hash of their text, so a changed source withdraws it.
Records name their key by `key_name`, a plain string and not a foreign key, so history outlives a
revoked key (revoking deletes the key's row; its name may then be reused).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar

import sqlalchemy as sa
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAME_LENGTH = 64  # key names, actions
REF_LENGTH = 128  # collection names (63 at most), document ids, request ids


class UTCDateTime(sa.TypeDecorator[datetime]):
    """Timestamps in UTC, always returned timezone-aware. SQLite keeps no zone and would hand back
    naive datetimes that cannot be compared with aware ones; PostgreSQL's timestamptz would return
    the session's zone. Naive values given in are taken to be UTC."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


# 64-bit ids on PostgreSQL; SQLite autoincrements only an INTEGER primary key (its 64-bit rowid).
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


# Named constraints and indexes, so a later migration can drop or alter them by name on both engines.
NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = sa.MetaData(naming_convention=NAMING)
    type_annotation_map: ClassVar[dict[Any, Any]] = {datetime: UTCDateTime(), dict[str, Any]: sa.JSON()}


class ApiKey(Base):
    """One API key. Only the token's SHA-256 is stored; `hint` (its first characters) lets a person
    tell keys apart in `ragkb keys list` without the token being recoverable."""

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(NAME_LENGTH), unique=True)
    scope: Mapped[str] = mapped_column(sa.String(16))
    collections: Mapped[list[str] | None] = mapped_column(sa.JSON(), comment="null means every collection")
    token_hash: Mapped[str] = mapped_column(sa.String(64), unique=True)
    hint: Mapped[str] = mapped_column(sa.String(16))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class AuditRecord(Base):
    """Who did what, where: one generic row per action (key created, document deleted, cache cleared,
    answer reviewed...); anything action-specific goes in `detail`."""

    __tablename__ = "audit_records"
    __table_args__ = (sa.Index("ix_audit_records_action_at", "action", "at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    key_name: Mapped[str | None] = mapped_column(sa.String(NAME_LENGTH), index=True)
    action: Mapped[str] = mapped_column(sa.String(NAME_LENGTH))
    collection: Mapped[str | None] = mapped_column(sa.String(REF_LENGTH))
    document_id: Mapped[str | None] = mapped_column(sa.String(REF_LENGTH))
    request_id: Mapped[str | None] = mapped_column(sa.String(REF_LENGTH), index=True)
    detail: Mapped[dict[str, Any] | None] = mapped_column(sa.JSON())


class AnswerRecord(Base):
    """One answer as it was shown (or held for review): what was asked, what was retrieved and cited,
    and what produced it, so feedback and reviews refer to exactly that."""

    __tablename__ = "answers"

    request_id: Mapped[str] = mapped_column(sa.String(REF_LENGTH), primary_key=True)
    at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    key_name: Mapped[str | None] = mapped_column(sa.String(NAME_LENGTH))
    collection: Mapped[str] = mapped_column(sa.String(REF_LENGTH), index=True)
    question: Mapped[str] = mapped_column(sa.Text())
    answer: Mapped[str] = mapped_column(sa.Text())
    citations: Mapped[list[Any]] = mapped_column(sa.JSON())
    chunk_ids: Mapped[list[Any]] = mapped_column(sa.JSON(), comment="the retrieved chunks, in context order")
    prompt: Mapped[str] = mapped_column(sa.String(NAME_LENGTH), comment="template name:version")
    provider: Mapped[str] = mapped_column(sa.String(NAME_LENGTH))
    model: Mapped[str] = mapped_column(sa.String(REF_LENGTH))
    confidence: Mapped[float] = mapped_column(sa.Float())
    origin: Mapped[str] = mapped_column(sa.String(16))
    abstained: Mapped[bool] = mapped_column(sa.Boolean())
    detail: Mapped[dict[str, Any] | None] = mapped_column(sa.JSON())


class FeedbackRecord(Base):
    __tablename__ = "feedback"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    request_id: Mapped[str] = mapped_column(
        sa.String(REF_LENGTH), sa.ForeignKey("answers.request_id", ondelete="CASCADE"), index=True
    )
    at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    key_name: Mapped[str | None] = mapped_column(sa.String(NAME_LENGTH))
    rating: Mapped[str] = mapped_column(sa.String(8))
    comment: Mapped[str | None] = mapped_column(sa.Text())
    citations: Mapped[list[Any] | None] = mapped_column(sa.JSON())


class CollectionSetting(Base):
    """Per-collection settings kept beside the chunks (today: the review policy)."""

    __tablename__ = "collection_settings"

    collection: Mapped[str] = mapped_column(sa.String(REF_LENGTH), primary_key=True)
    review_policy: Mapped[str] = mapped_column(sa.String(16))
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_by: Mapped[str | None] = mapped_column(sa.String(NAME_LENGTH))


class ReviewRecord(Base):
    """A question's answer waiting for (or decided by) a person. `held` means the asker was given no
    answer (policy `required`) and waits on `GET /v1/answers/{id}`."""

    __tablename__ = "reviews"
    __table_args__ = (sa.Index("ix_reviews_status_created_at", "status", "created_at"),)

    id: Mapped[str] = mapped_column(sa.String(36), primary_key=True)
    request_id: Mapped[str] = mapped_column(sa.String(REF_LENGTH), index=True)
    collection: Mapped[str] = mapped_column(sa.String(REF_LENGTH), index=True)
    question: Mapped[str] = mapped_column(sa.Text())
    options: Mapped[dict[str, Any]] = mapped_column(sa.JSON(), comment="confidence, top_k, retriever, filters")
    status: Mapped[str] = mapped_column(sa.String(16))
    held: Mapped[bool] = mapped_column(sa.Boolean())
    reasons: Mapped[list[Any]] = mapped_column(sa.JSON())
    asked_by: Mapped[str | None] = mapped_column(sa.String(NAME_LENGTH))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    decided_by: Mapped[str | None] = mapped_column(sa.String(NAME_LENGTH))
    decided_at: Mapped[datetime | None] = mapped_column()
    note: Mapped[str | None] = mapped_column(sa.Text())
    final: Mapped[dict[str, Any] | None] = mapped_column(sa.JSON(), comment="the approved answer")


class ReviewAttempt(Base):
    """One candidate answer of a review, with the numbered passages it was made from."""

    __tablename__ = "review_attempts"
    __table_args__ = (sa.UniqueConstraint("review_id", "n"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    review_id: Mapped[str] = mapped_column(sa.String(36), sa.ForeignKey("reviews.id", ondelete="CASCADE"))
    n: Mapped[int] = mapped_column(sa.Integer())
    at: Mapped[datetime] = mapped_column(default=utcnow)
    candidate: Mapped[dict[str, Any]] = mapped_column(sa.JSON(), comment="the QueryResponse as produced")
    context: Mapped[list[Any]] = mapped_column(sa.JSON(), comment="numbered passages: id, text hash, text")
    note: Mapped[str | None] = mapped_column(sa.Text(), comment="the reviewer note this attempt answered")
    strategy: Mapped[str] = mapped_column(sa.String(NAME_LENGTH))


class CuratedAnswer(Base):
    """An approved answer, served for the same or a closely similar question in its collection."""

    __tablename__ = "curated_answers"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    collection: Mapped[str] = mapped_column(sa.String(REF_LENGTH), index=True)
    question: Mapped[str] = mapped_column(sa.Text())
    question_key: Mapped[str] = mapped_column(sa.Text())
    embedding: Mapped[list[Any]] = mapped_column(sa.JSON(), comment="the question's unit vector")
    model: Mapped[str] = mapped_column(sa.String(REF_LENGTH), comment="the embedder that made `embedding`")
    answer: Mapped[str] = mapped_column(sa.Text())
    citations: Mapped[list[Any]] = mapped_column(sa.JSON(), comment="Citation fields plus text_hash")
    review_id: Mapped[str] = mapped_column(sa.String(36), index=True)
    reviewer: Mapped[str | None] = mapped_column(sa.String(NAME_LENGTH))
    approved_at: Mapped[datetime] = mapped_column()
    status: Mapped[str] = mapped_column(sa.String(16), comment="active or withdrawn")
    withdrawn_at: Mapped[datetime | None] = mapped_column()


class ConversationRecord(Base):
    """A stored conversation (`POST /v1/conversations`): the key that owns it and the collection it asks."""

    __tablename__ = "conversations"

    id: Mapped[str] = mapped_column(sa.String(36), primary_key=True)
    key_name: Mapped[str | None] = mapped_column(sa.String(NAME_LENGTH), index=True, comment="null: an open server")
    collection: Mapped[str] = mapped_column(sa.String(REF_LENGTH))
    mode: Mapped[str] = mapped_column(sa.String(16))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ConversationMessage(Base):
    """One turn of a stored conversation: the question as asked, as made standalone, and the answer."""

    __tablename__ = "conversation_messages"
    __table_args__ = (sa.UniqueConstraint("conversation_id", "n"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    conversation_id: Mapped[str] = mapped_column(sa.String(36), sa.ForeignKey("conversations.id", ondelete="CASCADE"))
    n: Mapped[int] = mapped_column(sa.Integer())
    at: Mapped[datetime] = mapped_column(default=utcnow)
    question: Mapped[str] = mapped_column(sa.Text())
    standalone_question: Mapped[str] = mapped_column(sa.Text())
    answer: Mapped[str] = mapped_column(sa.Text(), comment="empty while the answer is held for review")
    citations: Mapped[list[Any]] = mapped_column(sa.JSON())
    request_id: Mapped[str] = mapped_column(sa.String(REF_LENGTH))
    review_id: Mapped[str | None] = mapped_column(sa.String(36), comment="set when the answer is held")
