"""Answers, feedback, review policy per collection, reviews with their attempts, curated answers.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TIMESTAMP = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "answers",
        sa.Column("request_id", sa.String(length=128), nullable=False),
        sa.Column("at", TIMESTAMP, nullable=False),
        sa.Column("key_name", sa.String(length=64), nullable=True),
        sa.Column("collection", sa.String(length=128), nullable=False),
        sa.Column("question", sa.Text(), nullable=False),
        sa.Column("answer", sa.Text(), nullable=False),
        sa.Column("citations", sa.JSON(), nullable=False),
        sa.Column("chunk_ids", sa.JSON(), nullable=False, comment="the retrieved chunks, in context order"),
        sa.Column("prompt", sa.String(length=64), nullable=False, comment="template name:version"),
        sa.Column("provider", sa.String(length=64), nullable=False),
        sa.Column("model", sa.String(length=128), nullable=False),
        sa.Column("confidence", sa.Float(), nullable=False),
        sa.Column("origin", sa.String(length=16), nullable=False),
        sa.Column("abstained", sa.Boolean(), nullable=False),
        sa.Column("detail", sa.JSON(), nullable=True),
        sa.PrimaryKeyConstraint("request_id", name=op.f("pk_answers")),
    )
    with op.batch_alter_table("answers") as batch_op:
        batch_op.create_index(batch_op.f("ix_answers_at"), ["at"], unique=False)
        batch_op.create_index(batch_op.f("ix_answers_collection"), ["collection"], unique=False)
    op.create_table(
        "feedback",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("request_id", sa.String(length=128), nullable=False),
        sa.Column("at", TIMESTAMP, nullable=False),
        sa.Column("key_name", sa.String(length=64), nullable=True),
        sa.Column("rating", sa.String(length=8), nullable=False),
        sa.Column("comment", sa.Text(), nullable=True),
        sa.Column("citations", sa.JSON(), nullable=True),
        sa.ForeignKeyConstraint(
            ["request_id"],
            ["answers.request_id"],
            name=op.f("fk_feedback_request_id_answers"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_feedback")),
    )
    with op.batch_alter_table("feedback") as batch_op:
        batch_op.create_index(batch_op.f("ix_feedback_at"), ["at"], unique=False)
        batch_op.create_index(batch_op.f("ix_feedback_request_id"), ["request_id"], unique=False)
    op.create_table(
        "collection_settings",
        sa.Column("collection", sa.String(length=128), nullable=False),
        sa.Column("review_policy", sa.String(length=16), nullable=False),
        sa.Column("updated_at", TIMESTAMP, nullable=False),
        sa.Column("updated_by", sa.String(length=64), nullable=True),
        sa.PrimaryKeyConstraint("collection", name=op.f("pk_collection_settings")),
    )
    op.create_table(
        "reviews",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("request_id", sa.String(length=128), nullable=False),
        sa.Column("collection", sa.String(length=128), nullable=False),
        sa.Column("question", sa.Text(), nullable=False),
        sa.Column("options", sa.JSON(), nullable=False, comment="confidence, top_k, retriever, filters"),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("held", sa.Boolean(), nullable=False),
        sa.Column("reasons", sa.JSON(), nullable=False),
        sa.Column("asked_by", sa.String(length=64), nullable=True),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("decided_by", sa.String(length=64), nullable=True),
        sa.Column("decided_at", TIMESTAMP, nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("final", sa.JSON(), nullable=True, comment="the approved answer"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reviews")),
    )
    with op.batch_alter_table("reviews") as batch_op:
        batch_op.create_index("ix_reviews_status_created_at", ["status", "created_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_reviews_collection"), ["collection"], unique=False)
        batch_op.create_index(batch_op.f("ix_reviews_request_id"), ["request_id"], unique=False)
    op.create_table(
        "review_attempts",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("review_id", sa.String(length=36), nullable=False),
        sa.Column("n", sa.Integer(), nullable=False),
        sa.Column("at", TIMESTAMP, nullable=False),
        sa.Column("candidate", sa.JSON(), nullable=False, comment="the QueryResponse as produced"),
        sa.Column("context", sa.JSON(), nullable=False, comment="numbered passages: id, text hash, text"),
        sa.Column("note", sa.Text(), nullable=True, comment="the reviewer note this attempt answered"),
        sa.Column("strategy", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(
            ["review_id"], ["reviews.id"], name=op.f("fk_review_attempts_review_id_reviews"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_review_attempts")),
        sa.UniqueConstraint("review_id", "n", name=op.f("uq_review_attempts_review_id_n")),
    )
    op.create_table(
        "curated_answers",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("collection", sa.String(length=128), nullable=False),
        sa.Column("question", sa.Text(), nullable=False),
        sa.Column("question_key", sa.Text(), nullable=False),
        sa.Column("embedding", sa.JSON(), nullable=False, comment="the question's unit vector"),
        sa.Column("model", sa.String(length=128), nullable=False, comment="the embedder that made `embedding`"),
        sa.Column("answer", sa.Text(), nullable=False),
        sa.Column("citations", sa.JSON(), nullable=False, comment="Citation fields plus text_hash"),
        sa.Column("review_id", sa.String(length=36), nullable=False),
        sa.Column("reviewer", sa.String(length=64), nullable=True),
        sa.Column("approved_at", TIMESTAMP, nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False, comment="active or withdrawn"),
        sa.Column("withdrawn_at", TIMESTAMP, nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_curated_answers")),
    )
    with op.batch_alter_table("curated_answers") as batch_op:
        batch_op.create_index(batch_op.f("ix_curated_answers_collection"), ["collection"], unique=False)
        batch_op.create_index(batch_op.f("ix_curated_answers_review_id"), ["review_id"], unique=False)


def downgrade() -> None:
    op.drop_table("curated_answers")
    op.drop_table("review_attempts")
    op.drop_table("reviews")
    op.drop_table("collection_settings")
    op.drop_table("feedback")
    op.drop_table("answers")
