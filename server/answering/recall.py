"""A fast-path cache hit's objects, built once per remembered answer instead of once per request.

A repeated question on an unchanged collection is a dictionary lookup (`AnswerCache.peek`), yet every hit
rebuilt the answer's citations as objects from the cached value and validated a new `QueryResponse` around
them: about a tenth of a hit's CPU. `Recall` keeps both per fast-path key, for as long as the answer cache
holds the same value (the same object: `peek` returns what it holds, and a value read again after its time
in memory is a new object, so a changed answer is never served from here). Each request gets a copy of the
kept response with its own request id and timings; nothing in ragkb changes a response after it is made.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..schemas import QueryResponse, Timings
from .citations import ValidatedAnswer


@dataclass(slots=True)
class _Kept:
    hit: dict[str, Any]
    validated: ValidatedAnswer
    response: QueryResponse | None = None


class Recall:
    """Per fast-path key (at most `limit`, all forgotten when full): the cached value's `ValidatedAnswer`
    and the response made from it."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._kept: dict[str, _Kept] = {}

    def validated(
        self, memo: str, hit: dict[str, Any], build: Callable[[dict[str, Any]], ValidatedAnswer]
    ) -> ValidatedAnswer:
        """`build(hit)`, made once while the cache holds this `hit`."""
        kept = self._kept.get(memo)
        if kept is None or kept.hit is not hit:
            if len(self._kept) >= self.limit:
                self._kept.clear()
            kept = self._kept[memo] = _Kept(hit, build(hit))
        return kept.validated

    def response(
        self,
        memo: str,
        validated: ValidatedAnswer,
        build: Callable[[], QueryResponse],
        *,
        request_id: str,
        total_ms: float,
    ) -> QueryResponse:
        """The response to `validated` (kept from `build()` the first time), with this request's id and time;
        `build()` itself when `validated` is not the one kept under `memo`."""
        kept = self._kept.get(memo)
        if kept is None or kept.validated is not validated:
            return build()
        if kept.response is None:
            kept.response = build()
        timings = Timings.model_construct(retrieve_ms=0.0, llm_ms=0.0, total_ms=total_ms)
        return kept.response.model_copy(update={"request_id": request_id, "timings": timings})
