"""The offline default: an answer assembled from the retrieved chunks' most relevant sentences.

No model generates anything here, and the response says so (`model: "extractive"`). Each sentence is
quoted from a context passage and followed by that passage's `[n]`.

Which sentences: every quotable unit of every context (`server.sentences.quotable`) is a candidate,
near-duplicates from overlapping chunks are merged, and each candidate is scored by

- lexical coverage: the IDF-weighted share of the question's terms it holds (`server.lexical.analyze`,
  the analyser BM25 uses, so both agree on what a term is), IDF counted over the candidates;
- semantic similarity: cosine between the question and the candidate, all embedded in one batched call
  (absent when the provider has no `embed`);
- a fact-type bonus: a "how many" question wants a number, a "when" question a date, a "who" question a
  name, and a candidate that carries a new one (not already in the question) is more likely the answer;
- a small prior for better-ranked passages.

`select` returns the picks with these parts and a `confidence`, so an answer can be explained and a caller
can decline to answer when the contexts do not seem to hold one; `answer` renders the picks.
"""

from __future__ import annotations

import math
import re
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ingest.vectorstore import StoredChunk

from ..lexical import analyze
from ..sentences import Span, quotable
from .base import Generation, GenerationRequest, Usage

Embed = Callable[[list[str]], np.ndarray]

NO_ANSWER = "I could not find an answer in the documents."

# Weights of the score parts; set on the tune split of eval/datasets/pdf-qa-dev.jsonl.
LEXICAL_WEIGHT = 1.0
SEMANTIC_WEIGHT = 1.0
FACT_WEIGHT = 0.25
PRIOR_WEIGHT = 0.1
KEEP_SHARE = 0.75  # a further sentence is quoted only when it scores this share of the best one
DUPLICATE_JACCARD = 0.8
DUPLICATE_CONTAINMENT = 0.9
MIN_CONTAINED_WORDS = 5

_WORD = re.compile(r"\w+")
_REFERENCE = re.compile(r"\s*\[\d{1,3}(?:\s*,\s*\d{1,3})*\]")  # "[9]" in a quote would read as a citation
_WANTS_DATE = re.compile(r"\b(?:when|what (?:date|year|day|month|time)|which (?:date|year|day|month))\b", re.I)
_WANTS_NAME = re.compile(
    r"\b(?:who|whom|whose|which (?:company|organi[sz]ation|agency|school|university|lawyer|person|firm))\b", re.I
)
_WANTS_NUMBER = re.compile(
    r"\b(?:how (?:many|much|long|big|far|old|large|often)|number of|total|percent(?:age)?|"
    r"what (?:fee|cost|price|amount|share|rate|size|score))\b",
    re.I,
)
_NUMBER = re.compile(r"\d")
_NUMBER_WORDS = frozenset(
    {
        "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve",
        "twenty", "hundred", "thousand", "million", "billion", "first", "second", "third", "half", "dozen",
    }
)  # fmt: skip
_MONTH = re.compile(
    r"^(?:jan|feb|mar|apr|may|jun|jul|aug|sep|sept|oct|nov|dec)(?:[a-z]*)\.?,?$"
    r"|^\d{1,2}/\d{1,2}/\d{2,4}$|^(?:1[89]|20)\d\d[.,;)]?$|^\d{1,2}:\d\d$",
    re.I,
)
_NOT_NAMES = frozenset({"a", "an", "the", "this", "that", "these", "in", "on", "of", "for", "and", "or", "to", "it"})


@dataclass(frozen=True, slots=True)
class Pick:
    """One quoted sentence and why: where it is (context `[n]`, chunk, offsets) and its score parts."""

    context: int
    chunk_id: str
    start: int  # character offsets into the chunk's text
    end: int
    text: str
    score: float
    lexical: float  # IDF-weighted share of the question's terms, 0..1
    semantic: float  # cosine with the question (0 without an embedder)
    fact: float  # 1 when it carries the kind of fact asked for, 0.5 for a weaker sign, else 0
    prior: float  # passage rank prior, 1 for context [1]


@dataclass(frozen=True, slots=True)
class Selection:
    """The picks in reading order (context, then position) and how sure the provider is, 0..1."""

    picks: list[Pick]
    confidence: float
    wants: str | None  # "number", "date", "name" or None
    candidates: int


@dataclass(frozen=True, slots=True)
class _Candidate:
    context: int
    chunk: StoredChunk
    span: Span
    words: frozenset[str]


class ExtractiveProvider:
    name = "extractive"
    model = "extractive"

    def __init__(
        self,
        embed: Embed | None = None,
        max_sentences: int = 3,
        max_sentence_chars: int = 400,
        abstain_below: float | None = None,
    ) -> None:
        """`embed` (an `Embedder.embed`) adds semantic scoring; `abstain_below` makes `answer` decline
        when the selection's confidence is lower (None: always answer)."""
        self.embed = embed
        self.max_sentences = max_sentences
        self.max_sentence_chars = max_sentence_chars
        self.abstain_below = abstain_below

    def parameters(self) -> dict[str, Any]:
        return {
            "algorithm": "hybrid-select-v3",
            "max_sentences": self.max_sentences,
            "max_sentence_chars": self.max_sentence_chars,
            "semantic": self.embed is not None,
            "abstain_below": self.abstain_below,
        }

    def select(self, request: GenerationRequest) -> Selection:
        """Score every candidate sentence of the contexts and pick the best few (see the module doc)."""
        candidates = _deduplicated(self._candidates(request.contexts))
        wants = asks_for(request.question)
        if not candidates:
            return Selection([], 0.0, wants, 0)
        texts = [c.span.text for c in candidates]
        lexical = _coverage(request.question, texts)
        semantic = self._similarity(request.question, texts)
        question_words = frozenset(_WORD.findall(request.question.lower()))
        total = len(request.contexts)
        picks = [
            _pick(c, lexical[i], semantic[i], fact_signal(c.span.text, wants, question_words), 1 - (c.context - 1) / total)
            for i, c in enumerate(candidates)
        ]
        ranked = sorted(picks, key=lambda p: (-p.score, p.context, p.start))
        best = ranked[0]
        chosen = [p for p in ranked[: self.max_sentences] if p.score >= KEEP_SHARE * best.score]
        chosen.sort(key=lambda p: (p.context, p.start))
        return Selection(chosen, confidence(best, self.embed is not None), wants, len(candidates))

    def answer(self, request: GenerationRequest) -> str:
        selection = self.select(request)
        if not selection.picks or (self.abstain_below is not None and selection.confidence < self.abstain_below):
            return NO_ANSWER
        return " ".join(f"{_closed(p.text)} [{p.context}]" for p in selection.picks)

    async def generate(self, request: GenerationRequest) -> Generation:
        return Generation(self.answer(request))

    async def stream(self, request: GenerationRequest, usage: Usage | None = None) -> AsyncIterator[str]:
        text = self.answer(request)
        for piece in re.findall(r"\S+\s*", text):
            yield piece

    async def aclose(self) -> None:
        return None

    def _candidates(self, contexts: Sequence[StoredChunk]) -> list[_Candidate]:
        found: list[_Candidate] = []
        for number, chunk in enumerate(contexts, start=1):
            for span in quotable(chunk.text, self.max_sentence_chars):
                text = _REFERENCE.sub("", span.text).strip()
                if text:
                    clean = Span(span.start, span.end, text, span.kind)
                    found.append(_Candidate(number, chunk, clean, frozenset(_WORD.findall(text.lower()))))
        return found

    def _similarity(self, question: str, texts: list[str]) -> list[float]:
        """Cosine of each text with the question: one batched call, question first (0s without `embed`)."""
        if self.embed is None:
            return [0.0] * len(texts)
        vectors = np.asarray(self.embed([question, *texts]), dtype=np.float32)
        return [float(v) for v in vectors[1:] @ vectors[0]]


def asks_for(question: str) -> str | None:
    """The kind of fact a question asks for: "date", "name", "number", or None when it does not say."""
    if _WANTS_DATE.search(question):
        return "date"
    if _WANTS_NAME.search(question):
        return "name"
    if _WANTS_NUMBER.search(question):
        return "number"
    return None


def fact_signal(sentence: str, wants: str | None, question_words: frozenset[str]) -> float:
    """1.0 when the sentence carries a fact of the wanted kind that the question does not already hold
    (every sentence of a 737 MAX notice has "737"; the answer has another number)."""
    if wants is None:
        return 0.0
    tokens = [t for t in sentence.split() if t.strip(".,;:()").lower() not in question_words]
    if wants == "number":
        return 1.0 if any(_NUMBER.search(t) for t in tokens) else 0.5 * any(t.lower() in _NUMBER_WORDS for t in tokens)
    if wants == "date":
        return 1.0 if any(_MONTH.match(t) for t in tokens) else 0.0
    return _name_signal(sentence.split()[1:], question_words)


def _name_signal(tokens: list[str], question_words: frozenset[str]) -> float:
    """A run of two or more capitalised words (not all from the question) is a name; one word, half a sign."""
    run, best = 0, 0
    for token in tokens:
        word = token.strip(".,;:()\"'")
        capital = bool(word) and word[0].isupper() and word.lower() not in _NOT_NAMES
        run = run + 1 if capital and word.lower() not in question_words else (run if capital else 0)
        best = max(best, run)
    return 1.0 if best >= 2 else 0.5 * best


def confidence(best: Pick, semantic: bool) -> float:
    """How likely the best pick answers the question, 0..1: a mix of its semantic similarity and its
    coverage of the question's terms, mapped through a logistic set on the tune split."""
    if semantic:
        raw = 6.0 * best.semantic + 3.0 * best.lexical + 0.5 * best.fact - 4.5
    else:
        raw = 6.0 * best.lexical + 0.5 * best.fact - 3.5
    return 1 / (1 + math.exp(-raw))


def _pick(candidate: _Candidate, lexical: float, semantic: float, fact: float, prior: float) -> Pick:
    score = LEXICAL_WEIGHT * lexical + SEMANTIC_WEIGHT * semantic + FACT_WEIGHT * fact + PRIOR_WEIGHT * prior
    span = candidate.span
    return Pick(
        candidate.context, candidate.chunk.chunk_id, span.start, span.end, span.text,
        score, lexical, semantic, fact, prior,
    )  # fmt: skip


def _coverage(question: str, texts: list[str]) -> list[float]:
    """IDF-weighted share of the question's terms in each text; IDF over the texts themselves, so a term
    every candidate has (the document's subject) counts little, and a term none has still counts."""
    analysed = analyze([question, *texts])
    question_terms = set(analysed[0])
    term_sets = [set(terms) for terms in analysed[1:]]
    if not question_terms:
        return [0.0] * len(texts)
    count = len(texts)
    frequency = {t: sum(1 for terms in term_sets if t in terms) for t in question_terms}
    weight = {t: math.log(1 + (count + 1) / (frequency[t] + 0.5)) for t in question_terms}
    whole = sum(weight.values())
    return [sum(weight[t] for t in question_terms & terms) / whole for terms in term_sets]


def _deduplicated(candidates: list[_Candidate]) -> list[_Candidate]:
    """One of each sentence that overlapping chunks repeat: the fuller one, else the better-ranked one."""
    kept: list[_Candidate] = []
    for candidate in candidates:
        twin = next((i for i, other in enumerate(kept) if _same(candidate.words, other.words)), None)
        if twin is None:
            kept.append(candidate)
        elif len(candidate.words) > len(kept[twin].words):
            kept[twin] = candidate
    return kept


def _same(a: frozenset[str], b: frozenset[str]) -> bool:
    if not a or not b:
        return a == b
    shared = len(a & b)
    if shared >= DUPLICATE_JACCARD * len(a | b):
        return True
    smaller = min(len(a), len(b))
    return smaller >= MIN_CONTAINED_WORDS and shared >= DUPLICATE_CONTAINMENT * smaller


def _closed(sentence: str) -> str:
    return sentence if sentence[-1] in ".!?" else sentence + "."
