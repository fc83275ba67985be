"""What can go wrong in feedback and review; `server/http_errors.py` maps each to its status and code."""

from __future__ import annotations

from ingest.errors import RagkbError


class InvalidReviewPolicy(RagkbError):
    """An unknown review policy name (422)."""


class AnswerNotFound(RagkbError):
    """No recorded answer or held review has this id (404)."""


class InvalidFeedback(RagkbError):
    """Feedback that does not fit the answer it is about (422)."""


class ReviewNotFound(RagkbError):
    """No review with this id in a collection the caller may see (404)."""


class ReviewDecided(RagkbError):
    """The review is no longer pending: someone decided it first (409)."""


class RetryLimitReached(RagkbError):
    """The review already has as many candidates as RAGKB_REVIEW_MAX_ATTEMPTS allows (409)."""


class InvalidEdit(RagkbError):
    """A reviewer's answer that fails validation: empty, or citing a passage it may not cite (422)."""


class StaleChunk(RagkbError):
    """A cited chunk no longer exists or its text changed since the candidate was made (409)."""


class CuratedNotFound(RagkbError):
    """No curated answer with this id in a collection the caller may see (404)."""


class CuratedWithdrawn(RagkbError):
    """The curated answer is already withdrawn (409)."""
