"""Curated answers: a reviewer's approved answer, served again for the same or a closely similar question.

A question matches a curated one of its collection when its normalised form is the same
(`questions.question_key`). Only when `RAGKB_CURATED_MATCH_THRESHOLD` is set does a similar question
match too: cosine at least that, and no distinguishing term (`matching.same_need`: numbers, names,
negations, contrast words, swapped content words). Measured on hand-written paraphrase and near-miss
pairs (eval/curated_match.py, docs/review.md), the cosine alone serves near misses at any threshold.

Before one is served, every chunk it
cites is read back from the store: a chunk that is gone or whose text changed withdraws the curated
answer (it is never served stale) and the caller queues the question for another review.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from ..answering.questions import question_key
from ..answering.reader import Reader
from ..state.models import CuratedAnswer
from ..state.reviews import ReviewStore
from .matching import same_need


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class CuratedMatch:
    curated: CuratedAnswer
    match: Literal["exact", "similar"]
    similarity: float


@dataclass(frozen=True, slots=True)
class Lookup:
    """What a lookup found: a curated answer still valid to serve, and any it withdrew on the way."""

    found: CuratedMatch | None
    withdrawn: list[CuratedAnswer]


NO_LOOKUP = Lookup(None, [])


class CuratedAnswers:
    def __init__(self, store: ReviewStore, reader: Reader, threshold: float | None) -> None:
        self.store = store
        self.reader = reader
        self.threshold = threshold

    def lookup(self, question: str, collection: str) -> Lookup:
        """The best valid curated answer for `question` (blocking: a database read, maybe an embedding)."""
        if not self.store.has_curated(collection):  # the common case costs one indexed read
            return Lookup(None, [])
        withdrawn: list[CuratedAnswer] = []
        for match in self.matches(question, self.store.curated(collection)):
            if self.stale(match.curated, collection):
                if self.store.withdraw(match.curated.id):  # False: another request withdrew it first
                    withdrawn.append(match.curated)
                continue
            return Lookup(match, withdrawn)
        return Lookup(None, withdrawn)

    def matches(self, question: str, candidates: Sequence[CuratedAnswer]) -> list[CuratedMatch]:
        """Candidates that match, best first: exact (newest first), then similar by similarity."""
        key = question_key(question)
        exact = [CuratedMatch(c, "exact", 1.0) for c in reversed(candidates) if c.question_key == key]
        comparable = [c for c in candidates if c.question_key != key and c.model == self.reader.embedder.identity]
        if self.threshold is None or not comparable:
            return exact
        threshold = self.threshold
        asked = self.reader.embedder.embed([question])[0]
        vectors = np.asarray([c.embedding for c in comparable], dtype=np.float32)
        scores = vectors @ np.asarray(asked, dtype=np.float32)
        similar = [
            CuratedMatch(c, "similar", round(float(s), 4))
            for c, s in zip(comparable, scores, strict=True)
            if same_need(question, c.question, float(s), threshold)  # the cosine alone lets near misses in
        ]
        return exact + sorted(similar, key=lambda m: -m.similarity)

    def stale(self, curated: CuratedAnswer, collection: str) -> list[str]:
        """The cited chunk ids that are gone or changed (empty: still valid)."""
        cited = {str(c["chunk_id"]): str(c.get("text_hash", "")) for c in curated.citations}
        if not cited:
            return []
        handle = self.reader.collection(collection)
        now = {chunk.chunk_id: text_hash(chunk.text) for chunk in self.reader.store.chunks(handle, list(cited))}
        return sorted(chunk_id for chunk_id, digest in cited.items() if now.get(chunk_id) != digest)

    def embed(self, question: str) -> list[float]:
        return [float(x) for x in self.reader.embedder.embed([question])[0]]
