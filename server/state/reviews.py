"""Answers, feedback, review policies, reviews and curated answers in the state database.

Plain data access, blocking (call it from a thread in async code). What the rows mean, and the
rules for moving a review from one status to another, live in `server/review/`; the one rule kept
here is that a decision is a conditional UPDATE (`status = 'pending'`), so of two reviewers who
decide at once exactly one wins, on SQLite and on PostgreSQL alike.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from ingest.recent import Epoch, Recent

from .db import StateDB
from .models import (
    AnswerRecord,
    CollectionSetting,
    CuratedAnswer,
    FeedbackRecord,
    ReviewAttempt,
    ReviewRecord,
    utcnow,
)

PENDING, APPROVED, REJECTED = "pending", "approved", "rejected"
STATUSES = (PENDING, APPROVED, REJECTED)
ACTIVE, WITHDRAWN = "active", "withdrawn"
CURATED_STATUSES = (ACTIVE, WITHDRAWN)


CHANGES = Epoch()  # bumped by every change of a review policy or a curated answer made in this process


class ReviewStore:
    def __init__(self, db: StateDB, *, cache_seconds: float = 1.0) -> None:
        """`cache_seconds`: review policies and curated-answer presence are kept in memory this long (this
        process's changes are seen at once; another process's within it)."""
        self.db = db
        self._policies: Recent[str, str | None] = Recent(CHANGES, cache_seconds)
        self._has_curated: Recent[str, bool] = Recent(CHANGES, cache_seconds)

    # -- answers and feedback ---------------------------------------------------------

    def record_answer(self, record: AnswerRecord) -> bool:
        """Store one shown answer; False when its request id is already recorded (request ids may come from
        the client: the first record stands, so no caller can overwrite another's answer)."""
        try:
            with self.db.session() as session:
                if session.get(AnswerRecord, record.request_id) is not None:
                    return False
                session.add(record)
        except sa.exc.IntegrityError:  # recorded by a concurrent request a moment ago
            return False
        return True

    def record_answers(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """Store many shown answers (rows of the `answers` table's columns, `review.intake.answer_row`) in one
        transaction; a request id already recorded keeps its first record."""
        if not rows:
            return
        table = AnswerRecord.__table__
        first: dict[str, Mapping[str, Any]] = {}
        for row in rows:
            first.setdefault(row["request_id"], row)
        dialect = self.db.engine.dialect.name
        insert: Any = sqlite_insert if dialect == "sqlite" else pg_insert
        with self.db.session() as session:
            session.execute(insert(table).on_conflict_do_nothing(index_elements=["request_id"]), list(first.values()))

    def update_answer(self, request_id: str, *, answer: str, citations: list[Any]) -> None:
        """A held answer once approved: what the asker is now shown."""
        with self.db.session() as session:
            session.execute(
                sa.update(AnswerRecord)
                .where(AnswerRecord.request_id == request_id)
                .values(answer=answer, citations=citations, origin="reviewed", provider="review", model="reviewer")
                .execution_options(synchronize_session=False)
            )

    def answer(self, request_id: str) -> AnswerRecord | None:
        with self.db.session() as session:
            return session.get(AnswerRecord, request_id)

    def add_feedback(self, record: FeedbackRecord) -> FeedbackRecord:
        with self.db.session() as session:
            session.add(record)
        return record

    def feedback(
        self,
        *,
        limit: int = 100,
        since: datetime | None = None,
        rating: str | None = None,
        collection: str | None = None,
    ) -> list[tuple[FeedbackRecord, AnswerRecord]]:
        """Feedback with the answer it is about, newest first."""
        query = (
            sa.select(FeedbackRecord, AnswerRecord)
            .join(AnswerRecord, FeedbackRecord.request_id == AnswerRecord.request_id)
            .order_by(FeedbackRecord.at.desc(), FeedbackRecord.id.desc())
            .limit(limit)
        )
        if since is not None:
            query = query.where(FeedbackRecord.at >= since)
        if rating is not None:
            query = query.where(FeedbackRecord.rating == rating)
        if collection is not None:
            query = query.where(AnswerRecord.collection == collection)
        with self.db.session() as session:
            return [(row[0], row[1]) for row in session.execute(query).all()]

    # -- review policy ---------------------------------------------------------------

    def cached_policy(self, collection: str) -> tuple[bool, str | None]:
        """(True, policy) when the policy is kept in memory; (False, None) when it must be read."""
        return self._policies.peek(collection, lambda: self._read_policy(collection))

    def cached_has_curated(self, collection: str) -> bool | None:
        kept, value = self._has_curated.peek(collection, lambda: self._read_has_curated(collection))
        return value if kept else None

    def policy(self, collection: str) -> str | None:
        return self._policies.get(collection, lambda: self._read_policy(collection))

    def _read_policy(self, collection: str) -> str | None:
        with self.db.connect() as conn:
            found = conn.execute(
                sa.select(CollectionSetting.review_policy).where(CollectionSetting.collection == collection)
            ).scalar_one_or_none()
        return None if found is None else str(found)

    def policies(self) -> dict[str, str]:
        with self.db.connect() as conn:
            rows = conn.execute(sa.select(CollectionSetting.collection, CollectionSetting.review_policy)).all()
        return {str(name): str(policy) for name, policy in rows}

    def set_policy(self, collection: str, policy: str, by: str | None) -> None:
        with self.db.session() as session:
            session.merge(
                CollectionSetting(collection=collection, review_policy=policy, updated_at=utcnow(), updated_by=by)
            )
        CHANGES.bump()

    # -- reviews ---------------------------------------------------------------------

    def create_review(
        self,
        *,
        request_id: str,
        collection: str,
        question: str,
        options: dict[str, Any],
        held: bool,
        reasons: list[str],
        asked_by: str | None,
        candidate: dict[str, Any],
        context: list[dict[str, Any]],
        strategy: str,
    ) -> ReviewRecord:
        review = ReviewRecord(
            id=str(uuid.uuid4()),
            request_id=request_id,
            collection=collection,
            question=question,
            options=options,
            status=PENDING,
            held=held,
            reasons=reasons,
            asked_by=asked_by,
            created_at=utcnow(),
        )
        with self.db.session() as session:
            session.add(review)
            session.flush()
            session.add(
                ReviewAttempt(review_id=review.id, n=1, candidate=candidate, context=context, strategy=strategy)
            )
        return review

    def add_attempt(
        self,
        review_id: str,
        *,
        candidate: dict[str, Any],
        context: list[dict[str, Any]],
        note: str | None,
        strategy: str,
        limit: int | None = None,
    ) -> ReviewAttempt | None:
        """Add the next candidate to a pending review; None when the review is no longer pending or already has
        `limit` candidates. The review's row is locked first (a no-op UPDATE), so concurrent retries and a
        concurrent decision are serialised on SQLite and PostgreSQL alike."""
        with self.db.session() as session:
            locked = session.execute(
                sa.update(ReviewRecord)
                .where(ReviewRecord.id == review_id, ReviewRecord.status == PENDING)
                .values(status=PENDING)
                .execution_options(synchronize_session=False)
            )
            if locked.rowcount != 1:  # type: ignore[attr-defined]
                return None
            n = int(
                session.execute(
                    sa.select(sa.func.coalesce(sa.func.max(ReviewAttempt.n), 0)).where(
                        ReviewAttempt.review_id == review_id
                    )
                ).scalar_one()
            )
            if limit is not None and n >= limit:
                return None
            attempt = ReviewAttempt(
                review_id=review_id, n=n + 1, candidate=candidate, context=context, note=note, strategy=strategy
            )
            session.add(attempt)
        return attempt

    def review(self, review_id: str) -> tuple[ReviewRecord, list[ReviewAttempt]] | None:
        with self.db.session() as session:
            review = session.get(ReviewRecord, review_id)
            if review is None:
                return None
            attempts = session.scalars(
                sa.select(ReviewAttempt).where(ReviewAttempt.review_id == review_id).order_by(ReviewAttempt.n)
            ).all()
            return review, list(attempts)

    def reviews(
        self, *, status: str | None, collections: Iterable[str] | None, limit: int = 100
    ) -> list[tuple[ReviewRecord, int]]:
        """Reviews (oldest first: a queue) with their number of attempts."""
        attempts = (
            sa.select(ReviewAttempt.review_id, sa.func.count().label("n")).group_by(ReviewAttempt.review_id).subquery()
        )
        query = (
            sa.select(ReviewRecord, attempts.c.n)
            .join(attempts, attempts.c.review_id == ReviewRecord.id)
            .order_by(ReviewRecord.created_at, ReviewRecord.id)
            .limit(limit)
        )
        if status is not None:
            query = query.where(ReviewRecord.status == status)
        if collections is not None:
            query = query.where(ReviewRecord.collection.in_(list(collections)))
        with self.db.session() as session:
            return [(row[0], int(row[1])) for row in session.execute(query).all()]

    def open_review_for(self, request_id: str) -> ReviewRecord | None:
        with self.db.session() as session:
            return session.scalars(
                sa.select(ReviewRecord).where(ReviewRecord.request_id == request_id, ReviewRecord.status == PENDING)
            ).first()

    def pending_count(self) -> int:
        with self.db.connect() as conn:
            return int(conn.execute(sa.select(sa.func.count()).where(ReviewRecord.status == PENDING)).scalar_one())

    def decide(
        self,
        review_id: str,
        *,
        status: str,
        by: str | None,
        note: str | None = None,
        final: dict[str, Any] | None = None,
    ) -> bool:
        """Move a pending review to `status`; False when it was no longer pending (someone decided first)."""
        with self.db.session() as session:
            result = session.execute(
                sa.update(ReviewRecord)
                .where(ReviewRecord.id == review_id, ReviewRecord.status == PENDING)
                .values(status=status, decided_by=by, decided_at=utcnow(), note=note, final=final)
                .execution_options(synchronize_session=False)
            )
            return bool(result.rowcount == 1)  # type: ignore[attr-defined]

    # -- curated answers -------------------------------------------------------------

    def add_curated(self, curated: CuratedAnswer) -> CuratedAnswer:
        with self.db.session() as session:
            session.add(curated)
        CHANGES.bump()
        return curated

    def curated(self, collection: str) -> Sequence[CuratedAnswer]:
        with self.db.session() as session:
            return session.scalars(
                sa.select(CuratedAnswer)
                .where(CuratedAnswer.collection == collection, CuratedAnswer.status == ACTIVE)
                .order_by(CuratedAnswer.id)
            ).all()

    def has_curated(self, collection: str) -> bool:
        return self._has_curated.get(collection, lambda: self._read_has_curated(collection))

    def _read_has_curated(self, collection: str) -> bool:
        with self.db.connect() as conn:
            found = conn.execute(
                sa.select(CuratedAnswer.id)
                .where(CuratedAnswer.collection == collection, CuratedAnswer.status == ACTIVE)
                .limit(1)
            ).first()
        return found is not None

    def withdraw_question(self, collection: str, key: str) -> int:
        """Withdraw every active curated answer to this normalised question; how many were."""
        with self.db.session() as session:
            result = session.execute(
                sa.update(CuratedAnswer)
                .where(
                    CuratedAnswer.collection == collection,
                    CuratedAnswer.question_key == key,
                    CuratedAnswer.status == ACTIVE,
                )
                .values(status=WITHDRAWN, withdrawn_at=utcnow())
                .execution_options(synchronize_session=False)
            )
            count = int(result.rowcount)  # type: ignore[attr-defined]
        CHANGES.bump()
        return count

    def withdraw(self, curated_id: int) -> bool:
        """Withdraw an active curated answer; False when another process withdrew it first."""
        with self.db.session() as session:
            result = session.execute(
                sa.update(CuratedAnswer)
                .where(CuratedAnswer.id == curated_id, CuratedAnswer.status == ACTIVE)
                .values(status=WITHDRAWN, withdrawn_at=utcnow())
                .execution_options(synchronize_session=False)
            )
            withdrawn = bool(result.rowcount == 1)  # type: ignore[attr-defined]
        CHANGES.bump()
        return withdrawn

    def curated_by_id(self, curated_id: int) -> CuratedAnswer | None:
        with self.db.session() as session:
            return session.get(CuratedAnswer, curated_id)

    def list_curated(
        self, *, status: str | None, collections: Iterable[str] | None, limit: int = 100
    ) -> list[CuratedAnswer]:
        """Curated answers, newest approval first. `status`: active or withdrawn (None: both); `collections`:
        only these (None: every collection)."""
        query = (
            sa.select(CuratedAnswer).order_by(CuratedAnswer.approved_at.desc(), CuratedAnswer.id.desc()).limit(limit)
        )
        if status is not None:
            query = query.where(CuratedAnswer.status == status)
        if collections is not None:
            query = query.where(CuratedAnswer.collection.in_(list(collections)))
        with self.db.session() as session:
            return list(session.scalars(query).all())
