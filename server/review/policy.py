"""Review policies (one per collection) and why an answer is queued for a person."""

from __future__ import annotations

from enum import StrEnum

from ..schemas import QueryResponse
from .errors import InvalidReviewPolicy


class ReviewPolicy(StrEnum):
    OFF = "off"  # answers go out as made; nothing is queued
    FLAGGED = "flagged"  # answers go out at once; doubtful ones and thumbs-down are queued afterwards
    REQUIRED = "required"  # every answer not already approved is held until a reviewer decides

    @classmethod
    def parse(cls, value: str) -> ReviewPolicy:
        try:
            return cls(value)
        except ValueError:
            raise InvalidReviewPolicy(
                f"unknown review policy {value!r}: use one of {', '.join(p.value for p in cls)}"
            ) from None


class Reason(StrEnum):
    """Why an answer is in the queue."""

    REQUIRED = "required"
    ABSTAINED = "abstained"
    LOW_CONFIDENCE = "low_confidence"
    UNSUPPORTED_CITATIONS = "unsupported_citations"
    THUMBS_DOWN = "thumbs_down"
    SOURCE_CHANGED = "source_changed"  # a curated answer's cited passage changed or disappeared


def flag_reasons(response: QueryResponse, *, confidence_below: float) -> list[Reason]:
    """Why a `flagged` collection queues this answer (none: it is not queued)."""
    reasons: list[Reason] = []
    if response.abstained:
        reasons.append(Reason.ABSTAINED)
    elif response.confidence < confidence_below:
        reasons.append(Reason.LOW_CONFIDENCE)
    if response.unsupported_citations or response.invalid_citations:
        reasons.append(Reason.UNSUPPORTED_CITATIONS)
    return reasons
