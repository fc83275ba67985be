"""Late interaction: how well a candidate sentence covers a question, token by token, by meaning.

A sentence vector averages everything a sentence says, so "How many lives were lost when the Indonesian
737-8 went down?" sits as close to the Ethiopian crash's sentence as to the Lion Air one. MaxSim (ColBERT's
late interaction) keeps the tokens apart: each content token of the question takes its best cosine against
the candidate's tokens, and the score is their mean. "lives lost" finds "fatalities", "Indonesian" finds
"Lion Air" and "Jakarta" better than "Ethiopian", without sharing a word.

The token vectors are MiniLM's contextual outputs before pooling, from the same forward pass that gives the
sentence vectors (`ingest.embedder.Embedder.embed_tokens`), so this adds no model call. Only the question's
content words count: not its stop words, punctuation or the words that say how it is asked ("how many").
`word_support` gives each content word's best match alone, so a caller can see which of the question's words
a passage does not speak to at all (a near miss: "sold" over a table of background checks).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .lexical import analyze

# How a question is asked, not what it is about (BM25's analyser keeps most of these).
_ASKING = (
    "what which who whom whose when where why how many much does did do is are was were can could would "
    "should will has have had get got give gives kind type name number"
)


@dataclass(frozen=True, slots=True)
class QuestionTokens:
    """A question's content tokens: one L2-normalised row per word piece, and the word each row belongs to."""

    vectors: np.ndarray  # (pieces, dimension)
    words: tuple[str, ...]

    @property
    def empty(self) -> bool:
        return not self.words


def question_tokens(vectors: np.ndarray, pieces: Sequence[str]) -> QuestionTokens:
    """The rows of a question's token vectors that belong to content words (pieces joined back into words:
    "##s" continues the word before it)."""
    words: list[str] = []
    for piece in pieces:
        if piece.startswith("##") and words:
            words.append(words[-1] + piece[2:])
        else:
            words.append(piece)
    # every piece of a word carries the whole word (the last piece's spelling is the full one)
    whole = list(words)
    for i in range(len(whole) - 2, -1, -1):
        if pieces[i + 1].startswith("##"):
            whole[i] = whole[i + 1]
    rows = [i for i, word in enumerate(whole) if is_content(word)]
    dimension = vectors.shape[1] if vectors.ndim == 2 else 0
    kept = vectors[rows] if rows else np.zeros((0, dimension), dtype=np.float32)
    return QuestionTokens(np.asarray(kept, dtype=np.float32), tuple(whole[i] for i in rows))


def maxsim(question: QuestionTokens, candidate: np.ndarray) -> float:
    """Mean over the question's content tokens of the best cosine with any token of the candidate, 0..1
    (0 when either side has no tokens)."""
    if question.empty or candidate.size == 0:
        return 0.0
    best = (question.vectors @ candidate.T).max(axis=1)
    return float(np.clip(best, 0.0, 1.0).mean())


def word_support(question: QuestionTokens, candidate: np.ndarray) -> dict[str, float]:
    """Each content word of the question with its best cosine against the candidate's tokens (a word of
    several pieces: the mean of its pieces' best)."""
    if question.empty or candidate.size == 0:
        return dict.fromkeys(question.words, 0.0)
    best = (question.vectors @ candidate.T).max(axis=1)
    grouped: dict[str, list[float]] = {}
    for word, value in zip(question.words, best.tolist(), strict=True):
        grouped.setdefault(word, []).append(float(value))
    return {word: sum(values) / len(values) for word, values in grouped.items()}


def is_content(word: str) -> bool:
    """A word that names what the question is about: has a letter or digit, survives the BM25 analyser's
    stop list, and is not one of the words that say how a question is asked."""
    if not any(c.isalnum() for c in word):
        return False
    terms = analyze([word])[0]
    return bool(terms) and not set(terms) <= _asking_terms()


@functools.cache
def _asking_terms() -> frozenset[str]:
    return frozenset(analyze([_ASKING])[0])
