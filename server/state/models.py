"""The state database's tables, as typed SQLAlchemy models. Alembic's revisions in `migrations/versions`
create them; a test compares the two, so a model changed without a migration fails.

How the tables to come join these: an `answers` table keyed by `request_id` (the id every response
carries) will hold what was answered, and `feedback` and `reviews` will reference it by that id.
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
