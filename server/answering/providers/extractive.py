"""The offline default: an answer assembled from the retrieved chunks' most relevant sentences.

No model generates anything here, and the response says so (`model: "extractive"`). Each sentence is
quoted from a context passage and followed by that passage's `[n]`.

Which sentences: every quotable unit of every context (`server.answering.sentences.quotable`) is a candidate, and
so are two adjacent lines of line-structured text; near-duplicates from overlapping chunks are merged, and
each candidate is scored by

- lexical coverage: the IDF-weighted share of the question's terms it holds (`server.answering.lexical.analyze`,
  the analyser BM25 uses, so both agree on what a term is), IDF counted over the candidates;
- semantic similarity: cosine between the question and the candidate, all embedded in one batched call
  (absent when the provider has no `embed`);
- a fact-type bonus: a "how many" question wants a number, a "when" question a date, a "who" question a
  name, a "which/what X" question a name or a code, and a candidate that carries a new one (not already
  in the question) is more likely the answer;
- a small prior for better-ranked passages.

`select` returns the picks with these parts and a `confidence`, so an answer can be explained and a caller
can decline to answer when the contexts do not seem to hold one; `answer` renders the picks.
"""

from __future__ import annotations

import functools
import itertools
import math
import re
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ingest.embedder import TokenVectors
from ingest.pdftables import CELL_SEPARATOR, LABEL_SEPARATOR, ROW_SEPARATOR, is_table_row
from ingest.vectorstore import StoredChunk

from ..injection import addressed_to_the_model
from ..lexical import analyze
from ..maxsim import QuestionTokens, maxsim, question_tokens, word_support
from ..sentences import Span, collapse, quotable
from .base import Generation, GenerationRequest, Usage

Embed = Callable[[list[str]], np.ndarray]
EmbedQuestion = Callable[[str], np.ndarray]
EmbedTokens = Callable[[list[str]], TokenVectors | None]

NO_ANSWER = "I could not find an answer in the documents."

# Weights of the score parts; set on the tune split of eval/datasets/pdf-qa-dev.jsonl.
LEXICAL_WEIGHT = 0.5
SEMANTIC_WEIGHT = 1.0
FACT_WEIGHT = 0.4
PRIOR_WEIGHT = 0.1
# Late interaction (MaxSim of the question's tokens), when the embedder gives token vectors. Off by default:
# on the people tune half, weights 0.25-1.5 did not raise the share of answers holding the answer (docs/answers.md).
LATE_WEIGHT = 0.0
KEEP_SHARE = 0.6  # a further sentence is quoted only when it scores this share of the best one
DUPLICATE_JACCARD = 0.8
DUPLICATE_CONTAINMENT = 0.9
MIN_CONTAINED_WORDS = 5

_WORD = re.compile(r"\w+")
_REFERENCE = re.compile(r"\s*\[\d{1,3}(?:\s*,\s*\d{1,3})*\]")  # "[9]" in a quote would read as a citation
_WANTS = (
    ("date", re.compile(r"\b(?:when|what (?:date|year|day|month|time)|which (?:date|year|day|month))\b", re.I)),
    ("name", re.compile(r"\b(?:who|whom|whose|name of)\b", re.I)),
    (
        "number",
        re.compile(
            r"\b(?:how (?:many|much|long|big|far|old|large|often)|numbers?|total|percent(?:age)?|costs?|"
            r"prices?|fees?|amount|rate|size|score)\b",
            re.I,
        ),
    ),
    ("entity", re.compile(r"^\s*(?:which|what)\b", re.I)),
)
_NUMBER = re.compile(r"\d")
_NUMBER_WORDS = frozenset(
    {
        "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve",
        "twenty", "hundred", "thousand", "million", "billion", "first", "second", "third", "half", "dozen",
    }
)  # fmt: skip
_DATE = re.compile(
    r"(?:jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)[a-z]{0,6}$|\d{1,2}/\d{1,2}/\d{2,4}$|(?:1[89]|20)\d\d$"
    r"|\d{1,2}:\d\d$",
    re.I,
)
_CODE = re.compile(
    r"\S+@\S+\.\w+$|[A-Z][A-Z0-9_/–-]+(?:\(\d+\))?$|[A-Za-z]+[0-9][A-Za-z0-9]*$"
)  # DSPFCNUSG, VARCHAR(10), A320
# How a question is asked, not what it is about; BM25's stop words keep them ("what", "how", "many").
_ASKING = "what which who whom whose when where why how many much does did do is are was were can could would"
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
    late: float = 0.0  # MaxSim of the question's content tokens against the candidate's (0 without token vectors)


@dataclass(frozen=True, slots=True)
class Selection:
    """The picks, best first, and how sure the provider is that they answer the question, 0..1."""

    picks: list[Pick]
    confidence: float
    margin: float  # how far the best pick's score is ahead of the best sentence elsewhere
    wants: str | None  # the kind of fact asked for: "number", "date", "name", "entity" or None
    candidates: int
    coverage: float = 0.0  # share of the question's content terms found anywhere in the contexts
    support: dict[str, float] = field(default_factory=dict)  # each question word's best token match in the best pick

    @property
    def answerability(self) -> float:
        """How likely the contexts answer the question at all, 0..1: the best pick's confidence and the
        question's term coverage, equally weighted (a question naming things the passages never mention,
        "October 2015", "GPU memory", is usually not answered there). The mix and RAGKB_ABSTAIN_BELOW were
        chosen on the tune half of eval/datasets/pdf-qa-dev.jsonl; see docs/answers.md."""
        return 0.5 * self.confidence + 0.5 * self.coverage


@dataclass(frozen=True, slots=True)
class _Unit:
    """A quotable unit of one context, with its word set (to spot near-duplicates)."""

    context: int
    chunk: StoredChunk
    span: Span
    words: frozenset[str]


@dataclass(frozen=True, slots=True)
class _Option:
    """What may be quoted: one unit, or two adjacent lines of line-structured text (a table row whose
    label or amount sits on the next line, a name wrapped onto a second line)."""

    units: tuple[int, ...]
    start: int
    end: int
    text: str


class ExtractiveProvider:
    name = "extractive"
    model = "extractive"

    def __init__(
        self,
        embed: Embed | None = None,
        max_sentences: int = 3,
        max_sentence_chars: int = 400,
        max_embedded: int = 16,
        embed_tokens: EmbedTokens | None = None,
        late_weight: float = LATE_WEIGHT,
        embed_question: EmbedQuestion | None = None,
    ) -> None:
        """`embed` (an `Embedder.embed`) adds semantic scoring, `embed_tokens` (an `Embedder.embed_tokens`) late
        interaction from the same pass (`server.answering.maxsim`; without it, or when it returns None, the
        sentence vectors alone). `embed_question` (an `Embedder.embed_query`) gives the question's vector from the
        embedder's question cache, which retrieval has just filled: the question is not encoded a second time
        beside the candidates (without it, it is embedded in their batch). Whether to answer at all is the query
        service's decision (`abstain_below`, on the selection's answerability), not the provider's."""
        self.embed = embed
        self.embed_question = embed_question if embed is not None else None
        self.late_weight = late_weight
        self.embed_tokens = embed_tokens if embed is not None and late_weight > 0 else None
        self.max_sentences = max_sentences
        self.max_sentence_chars = max_sentence_chars
        self.max_embedded = max_embedded

    def parameters(self) -> dict[str, Any]:
        return {
            "algorithm": "hybrid-select-v4",
            "late_weight": self.late_weight if self.embed_tokens is not None else 0.0,
            "max_sentences": self.max_sentences,
            "max_sentence_chars": self.max_sentence_chars,
            "semantic": self.embed is not None,
            "max_embedded": self.max_embedded,
        }

    def select(self, request: GenerationRequest) -> Selection:
        """Score every candidate of the contexts and pick the best few (see the module doc)."""
        units = _deduplicated(self._units(request.contexts))
        wants = asks_for(request.question)
        if not units:
            return Selection([], 0.0, 0.0, wants, 0)
        texts = [u.span.text for u in units]
        analysed = analyze([request.question, *texts])
        asked = set(analysed[0]) - _asking_terms()
        weights = _idf(asked, [set(t) for t in analysed[1:]])
        present = set().union(*analysed[1:])
        coverage = len(asked & present) / len(asked) if asked else 0.0
        question_words = frozenset(_WORD.findall(request.question.lower()))
        shortlist = self._shortlist(units, analysed[1:], weights, wants, question_words, len(request.contexts))
        vectors, late = self._vectors(request.question, texts, shortlist)
        picks = []
        options = _options(units)
        for option in options:
            terms = set().union(*(analysed[1 + i] for i in option.units))
            unit = units[option.units[0]]
            picks.append(
                _pick(
                    unit, option,
                    lexical=_coverage(weights, terms),
                    semantic=_cosine(vectors, option.units),
                    fact=fact_signal(option.text, wants, question_words),
                    prior=1 - (unit.context - 1) / len(request.contexts),
                    late=late.score(option.units),
                    late_weight=self.late_weight,
                )
            )  # fmt: skip
        ranked = sorted(picks, key=lambda p: (-p.score, p.context, p.start))
        margin = ranked[0].score - next((p.score for p in ranked if not _overlap(p, ranked[0])), 0.0)
        chosen = self._choose(ranked)
        sure = confidence(chosen[0], margin, self.embed is not None)
        best = options[picks.index(chosen[0])].units
        return Selection(chosen, sure, margin, wants, len(units), coverage, late.support(best))

    def _choose(self, ranked: list[Pick]) -> list[Pick]:
        """The best pick, then the next best that score close to it and do not overlap a chosen one;
        returned best first."""
        chosen: list[Pick] = []
        for pick in ranked:
            if len(chosen) == self.max_sentences or pick.score < KEEP_SHARE * ranked[0].score:
                break
            if not any(_overlap(pick, p) for p in chosen):
                chosen.append(pick)
        return chosen

    def answer(self, request: GenerationRequest) -> str:
        evidence = request.evidence
        selection = evidence if isinstance(evidence, Selection) else self.select(request)
        if not selection.picks:
            return NO_ANSWER
        asked = set(analyze([request.question])[0]) - _asking_terms()  # the answering sentence first
        return " ".join(f"{_closed(table_cells(p.text, asked))} [{p.context}]" for p in selection.picks)

    async def generate(self, request: GenerationRequest) -> Generation:
        return Generation(self.answer(request))

    async def stream(self, request: GenerationRequest, usage: Usage | None = None) -> AsyncIterator[str]:
        text = self.answer(request)
        for piece in re.findall(r"\S+\s*", text):
            yield piece

    async def aclose(self) -> None:
        return None

    def _units(self, contexts: Sequence[StoredChunk]) -> list[_Unit]:
        found: list[_Unit] = []
        for number, chunk in enumerate(contexts, start=1):
            for span in quotable(chunk.text, self.max_sentence_chars):
                span = _without_heading(chunk.text, span)
                text = _REFERENCE.sub("", span.text).strip()
                if text and not addressed_to_the_model(text):  # a planted instruction is never quoted
                    clean = Span(span.start, span.end, text, span.kind)
                    found.append(_Unit(number, chunk, clean, frozenset(_WORD.findall(text.lower()))))
        return found

    def _shortlist(
        self,
        units: list[_Unit],
        terms: list[list[str]],
        weights: dict[str, float],
        wants: str | None,
        question_words: frozenset[str],
        contexts: int,
    ) -> list[int]:
        """The units worth a vector: the best `max_embedded` by the cheap parts of the score (terms, kind of
        fact, passage rank). Embedding is most of an answer's cost (~25 tokens a unit on a 2-core CPU), and
        a unit that shares nothing with the question and sits in a low-ranked passage is not picked anyway."""
        cheap = [
            0.5 * _coverage(weights, set(terms[i]))
            + 0.4 * fact_signal(unit.span.text, wants, question_words)
            + 0.1 * (1 - (unit.context - 1) / contexts)
            for i, unit in enumerate(units)
        ]
        return sorted(sorted(range(len(units)), key=lambda i: -cheap[i])[: self.max_embedded])

    def _vectors(self, question: str, texts: list[str], shortlist: list[int]) -> tuple[np.ndarray | None, _Late]:
        """Row 0 the question's vector, row 1 + i unit i's (zeros for units off the shortlist), from one
        batched call (None without `embed`), and the shortlist's token vectors for late interaction (empty
        when the embedder gives none)."""
        if self.embed is None:
            return None, _Late.none()
        if self.embed_tokens is None and self.embed_question is not None:
            cached = np.asarray(self.embed_question(question), dtype=np.float32)
            found = np.asarray(self.embed([texts[i] for i in shortlist]), dtype=np.float32)
            vectors = np.zeros((1 + len(texts), cached.shape[0]), dtype=np.float32)
            vectors[0] = cached
            vectors[[1 + i for i in shortlist]] = found
            return vectors, _Late.none()
        batch = [question, *(texts[i] for i in shortlist)]
        tokens = self.embed_tokens(batch) if self.embed_tokens is not None else None
        embedded = np.asarray(tokens.sentences if tokens is not None else self.embed(batch), dtype=np.float32)
        vectors = np.zeros((1 + len(texts), embedded.shape[1]), dtype=np.float32)
        vectors[0] = embedded[0]
        vectors[[1 + i for i in shortlist]] = embedded[1:]
        if tokens is None:
            return vectors, _Late.none()
        asked = question_tokens(tokens.tokens[0], tokens.pieces[0])
        return vectors, _Late(asked, {unit: tokens.tokens[1 + k] for k, unit in enumerate(shortlist)})


@dataclass(frozen=True, slots=True)
class _Late:
    """The question's content tokens and the token vectors of the shortlisted units (by unit index)."""

    question: QuestionTokens | None
    units: dict[int, np.ndarray]

    @staticmethod
    def none() -> _Late:
        return _Late(None, {})

    def _tokens(self, units: tuple[int, ...]) -> np.ndarray | None:
        found = [self.units[i] for i in units if i in self.units]
        return np.vstack(found) if found else None

    def score(self, units: tuple[int, ...]) -> float:
        """MaxSim of the question against an option's units (0 off the shortlist or without token vectors)."""
        tokens = self._tokens(units)
        return 0.0 if self.question is None or tokens is None else maxsim(self.question, tokens)

    def support(self, units: tuple[int, ...]) -> dict[str, float]:
        tokens = self._tokens(units)
        return {} if self.question is None or tokens is None else word_support(self.question, tokens)


def table_cells(text: str, asked: set[str]) -> str:
    """A table row (`ingest.pdftables` writes "Texas — Permit: 21,550; Handgun: 56,941; ...") cut to what the
    question asks for: the row's label with the cells whose column label best matches the question's terms
    (and cells whose value the question names, "OTSL"); the whole row when the question names no column.
    The quote keeps each cell's column label, so "56,941" never stands alone."""
    if not asked or not is_table_row(text):
        return text
    if asked & _WHOLE:  # "overall", "altogether", "in total": the row's total
        asked = asked | _TOTAL
    label, separator, rest = text.partition(ROW_SEPARATOR)
    if not separator:  # a row without a name (OTSL's, the Senate's) is named by its cells: keep them all
        return text
    cells = rest.split(CELL_SEPARATOR)
    shares: list[float] = []
    named: list[bool] = []
    for cell in cells:
        column, _, value = cell.rpartition(LABEL_SEPARATOR)
        terms = set(analyze([column])[0]) if column else set()
        shares.append(len(terms & asked) / len(terms) if terms else 0.0)
        named.append(bool(set(analyze([value])[0]) & asked))
    best = max(shares)
    if best == 0:
        return text
    kept = [cell for cell, share, name in zip(cells, shares, named, strict=True) if share == best or name]
    return f"{label}{ROW_SEPARATOR}{CELL_SEPARATOR.join(kept)}" if label else CELL_SEPARATOR.join(kept)


def _without_heading(source: str, span: Span) -> Span:
    """A unit that begins with a Markdown heading line ("# Installing ragkb" joined to the sentence below it)
    without that line: a heading names the section, it does not answer anything."""
    if not source.startswith("#", span.start):
        return span
    newline = source.find("\n", span.start, span.end)
    if newline < 0:
        return span
    start = newline + 1
    while start < span.end and source[start].isspace():
        start += 1
    return Span(start, span.end, collapse(source[start : span.end]), span.kind) if start < span.end else span


def _options(units: list[_Unit]) -> list[_Option]:
    """Every unit, plus each pair of adjacent units in one chunk when one of them is a line or a row."""
    options = [_Option((i,), u.span.start, u.span.end, u.span.text) for i, u in enumerate(units)]
    for i, (first, second) in enumerate(itertools.pairwise(units)):
        if first.chunk is not second.chunk or "sentence" == first.span.kind == second.span.kind:
            continue
        if is_table_row(first.span.text) or is_table_row(second.span.text):
            continue  # a row written with its labels is whole; its neighbour is another row
        if first.span.end <= second.span.start and not first.chunk.text[first.span.end : second.span.start].strip():
            text = f"{first.span.text} {second.span.text}"
            options.append(_Option((i, i + 1), first.span.start, second.span.end, text))
    return options


def asks_for(question: str) -> str | None:
    """The kind of fact a question asks for: "date", "name", "number", "entity" (which/what X: a
    capitalised name or a code) or None when it does not say."""
    for kind, pattern in _WANTS:
        if pattern.search(question):
            return kind
    return None


def fact_signal(sentence: str, wants: str | None, question_words: frozenset[str]) -> float:
    """1.0 when the sentence carries a fact of the wanted kind that the question does not already hold
    (every sentence of a 737 MAX notice has "737"; the answer has another number); 0.5 for a weak sign."""
    if wants is None:
        return 0.0
    tokens = [t.strip(".,;:()\"'") for t in sentence.split()]
    new = [t for t in tokens if t and t.lower() not in question_words]
    if wants == "number":
        return 1.0 if any(_NUMBER.search(t) for t in new) else 0.5 * any(t.lower() in _NUMBER_WORDS for t in new)
    if wants == "date":
        return 1.0 if any(_DATE.match(t) for t in new) else 0.0
    if wants == "entity":
        return 1.0 if any(_CODE.match(t) for t in new) else 0.5 * any(t[0].isupper() for t in new[1:])
    return _name_signal(tokens[1:], question_words)


def _name_signal(tokens: list[str], question_words: frozenset[str]) -> float:
    """A run of two or more capitalised words (not all from the question) is a name; one word, half a sign."""
    run, best = 0, 0
    for word in tokens:
        capital = bool(word) and word[0].isupper() and word.lower() not in _NOT_NAMES
        if not capital:
            run = 0
        elif word.lower() not in question_words:
            run += 1
        best = max(best, run)
    return 1.0 if best >= 2 else 0.5 * best


def confidence(best: Pick, margin: float, semantic: bool) -> float:
    """How likely the picks hold the answer, 0..1: the best pick's similarity to the question, its coverage
    of the question's terms and how far it stands out from the rest, through a logistic fitted on the tune
    split (a weak signal: on-topic questions the documents do not answer look much like answered ones)."""
    raw = best.semantic + 0.5 * best.lexical + 2.0 * margin
    slope, middle = (1.5, 1.0) if semantic else (2.5, 0.36)
    return 1 / (1 + math.exp(-slope * (raw - middle)))


def _overlap(a: Pick, b: Pick) -> bool:
    return a.chunk_id == b.chunk_id and a.start < b.end and b.start < a.end


def _pick(
    unit: _Unit,
    option: _Option,
    *,
    lexical: float,
    semantic: float,
    fact: float,
    prior: float,
    late: float = 0.0,
    late_weight: float = 0.0,
) -> Pick:
    score = (
        LEXICAL_WEIGHT * lexical + SEMANTIC_WEIGHT * semantic + FACT_WEIGHT * fact + PRIOR_WEIGHT * prior
        + late_weight * late
    )  # fmt: skip
    return Pick(
        unit.context, unit.chunk.chunk_id, option.start, option.end, option.text,
        score, lexical, semantic, fact, prior, late,
    )  # fmt: skip


_WHOLE = frozenset(analyze(["overall altogether total totals combined grand sum"])[0])
_TOTAL = frozenset(analyze(["total"])[0])


@functools.cache
def _asking_terms() -> frozenset[str]:
    return frozenset(analyze([_ASKING])[0])


def _idf(question_terms: set[str], term_sets: list[set[str]]) -> dict[str, float]:
    """Each question term's weight, IDF over the candidates: a term every candidate has (the document's
    subject) counts little, and a term none has still counts, so coverage stays low when it is missing."""
    count = len(term_sets)
    frequency = {t: sum(1 for terms in term_sets if t in terms) for t in question_terms}
    return {t: math.log(1 + (count + 1) / (frequency[t] + 0.5)) for t in question_terms}


def _coverage(weights: dict[str, float], terms: set[str]) -> float:
    whole = sum(weights.values())
    return sum(w for t, w in weights.items() if t in terms) / whole if whole else 0.0


def _cosine(vectors: np.ndarray | None, units: tuple[int, ...]) -> float:
    """Cosine of the question with a unit, or with the normalised sum of a pair's unit vectors (no second
    embedding call: the sum of two unit vectors points between them)."""
    if vectors is None:
        return 0.0
    combined = vectors[[1 + i for i in units]].sum(axis=0)
    norm = float(np.linalg.norm(combined))
    return float(combined @ vectors[0]) / norm if norm else 0.0


def _deduplicated(units: list[_Unit]) -> list[_Unit]:
    """One of each sentence that overlapping chunks repeat: the fuller one, else the better-ranked one.
    Only units of different contexts are compared; within one chunk a repeat is the text's own."""
    kept: list[_Unit] = []
    for unit in units:
        twin = next(
            (i for i, other in enumerate(kept) if other.context != unit.context and _same(unit.words, other.words)),
            None,
        )
        if twin is None:
            kept.append(unit)
        elif len(unit.words) > len(kept[twin].words):
            kept[twin] = unit
    return sorted(kept, key=lambda u: (u.context, u.span.start))


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
