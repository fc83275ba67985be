"""The offline default: an answer assembled from the retrieved chunks' most relevant sentences.

No model generates anything here, and the response says so (`model: "extractive"`).
Each sentence is quoted from a context passage and followed by that passage's `[n]`.
"""

from __future__ import annotations

import math
import re
from collections.abc import AsyncIterator
from typing import Any

import Stemmer

from .base import Generation, GenerationRequest, Usage

_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(\[])|\n{2,}")
_WORD = re.compile(r"[a-z0-9]+")
_STOP = frozenset(
    {
        "a", "an", "and", "are", "as", "at", "be", "by", "can", "do", "does", "for", "from", "how", "i", "in",
        "is", "it", "its", "of", "on", "or", "that", "the", "this", "to", "was", "what", "when", "where",
        "which", "who", "why", "will", "with", "you", "your",
    }
)  # fmt: skip


_STEMMER = Stemmer.Stemmer("english")


def _terms(text: str) -> list[str]:
    """Stemmed content words, so "installs" meets "install" (the same stemmer as the BM25 index)."""
    return list(_STEMMER.stemWords([w for w in _WORD.findall(text.lower()) if w not in _STOP and len(w) > 1]))


class ExtractiveProvider:
    name = "extractive"
    model = "extractive"

    def __init__(self, max_sentences: int = 3, max_sentence_chars: int = 400) -> None:
        self.max_sentences = max_sentences
        self.max_sentence_chars = max_sentence_chars

    def parameters(self) -> dict[str, Any]:
        return {"max_sentences": self.max_sentences, "algorithm": "term-overlap-v2"}

    def answer(self, request: GenerationRequest) -> str:
        candidates: list[tuple[int, int, str]] = []  # (context number, position, sentence)
        for number, chunk in enumerate(request.contexts, start=1):
            for position, sentence in enumerate(_SENTENCE.split(chunk.text)):
                sentence = " ".join(sentence.split())
                if 20 <= len(sentence) <= self.max_sentence_chars:
                    candidates.append((number, position, sentence))
        if not candidates:
            return "I could not find an answer in the documents."
        question = set(_terms(request.question))
        document_frequency: dict[str, int] = {}
        sentence_terms = [set(_terms(s)) for _, _, s in candidates]
        for terms in sentence_terms:
            for term in terms:
                document_frequency[term] = document_frequency.get(term, 0) + 1
        total = len(candidates)

        def score(index: int) -> float:
            overlap = question & sentence_terms[index]
            idf = sum(math.log(1 + total / document_frequency[t]) for t in overlap)
            number = candidates[index][0]
            return idf / (1 + 0.15 * (number - 1))  # prefer better-ranked passages

        scored = sorted(range(total), key=lambda i: (-score(i), candidates[i][0], candidates[i][1]))
        chosen = [i for i in scored[: self.max_sentences] if score(i) > 0] or [0]
        chosen.sort(key=lambda i: (candidates[i][0], candidates[i][1]))
        return " ".join(f"{_closed(candidates[i][2])} [{candidates[i][0]}]" for i in chosen)

    async def generate(self, request: GenerationRequest) -> Generation:
        return Generation(self.answer(request))

    async def stream(self, request: GenerationRequest, usage: Usage | None = None) -> AsyncIterator[str]:
        text = self.answer(request)
        for piece in re.findall(r"\S+\s*", text):
            yield piece

    async def aclose(self) -> None:
        return None


def _closed(sentence: str) -> str:
    return sentence if sentence[-1] in ".!?" else sentence + "."
