"""Whether a cited passage supports the sentence that cites it.

A marker `[n]` that points at a retrieved chunk is valid, but not necessarily true: a model can cite a
passage that says something else. `support` measures how much of a sentence the passage backs, so a
caller can drop markers that back nothing and call an answer grounded only when its claims are backed.
`claim_sentences` cuts an answer into sentences with the markers each one carries, and `has_claim` tells
a sentence that states something apart from filler ("In summary:") or a refusal, which need no citation.

The score is lexical (the share of the sentence's terms found in the passage, with the analyser BM25
uses) and, given an embedder, semantic too (the sentence against the passage's closest sentence), so a
faithful paraphrase is not mistaken for an unsupported claim. Quoted text is supported outright.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence

import numpy as np

from .lexical import analyze
from .markers import MARKER, marker_numbers
from .sentences import collapse, quotable, split

Embed = Callable[[list[str]], np.ndarray]

# Cosines of MiniLM sentence vectors: unrelated sentences sit near 0.1-0.3, paraphrases above 0.7.
UNRELATED_COSINE = 0.3
PARAPHRASE_COSINE = 0.8
LEXICAL_SHARE = 0.5  # weight of the lexical part when both parts are measured

_REFUSAL = re.compile(
    r"^(?:i|we)\s+(?:could\s*not|couldn't|cannot|can't|can\s+not|did\s+not|didn't|do\s+not|don't|am\s+unable|"
    r"was\s+unable|were\s+unable)\b|^(?:the\s+)?(?:provided\s+)?(?:documents?|contexts?|sources?|passages?|"
    r"knowledge\s+base)\s+(?:does|do|did)\s*(?:not|n't)\b|^(?:there\s+is\s+)?no\s+(?:information|answer|mention)\b"
    r"|^(?:not\s+enough\s+information|unknown|i\s+don't\s+know)\b",
    re.I,
)
_FILLER = frozenset(
    {
        "in summary", "to summarize", "in short", "overall", "in conclusion", "sources", "references", "answer",
        "here is what i found", "here's what i found", "according to the documents", "based on the context",
        "based on the documents", "based on the provided context",
    }
)  # fmt: skip
_LEAD_IN_WORDS = 12  # a sentence ending in ":" this short introduces what follows and claims nothing


def support(sentence: str, passage: str, *, embed: Embed | None = None) -> float:
    """How well `passage` backs `sentence`, 0..1 (1 for a quote); see `support_many`."""
    return support_many([(sentence, passage)], embed)[0]


def support_many(pairs: Sequence[tuple[str, str]], embed: Embed | None = None) -> list[float]:
    """`support` of each (sentence, passage) pair, with all the text that needs a vector embedded in one
    call. Without `embed` the score is the lexical share alone; with it, an even mix of that share and the
    best cosine of the sentence with the passage or one of its sentences, scaled from "unrelated" (0) to
    "paraphrase" (1). A sentence found verbatim in its passage (markers and whitespace aside) scores 1."""
    cleaned = [(_plain(sentence), _plain(passage)) for sentence, passage in pairs]
    scores: list[float | None] = [1.0 if _quoted(s, p) else None for s, p in cleaned]
    open_pairs = [i for i, score in enumerate(scores) if score is None]
    analysed = analyze([text for i in open_pairs for text in cleaned[i]]) if open_pairs else []
    lexical = {i: _share(analysed[2 * k], analysed[2 * k + 1]) for k, i in enumerate(open_pairs)}
    semantic = _semantic({i: cleaned[i] for i in open_pairs}, embed) if embed is not None else {}
    for i in open_pairs:
        scores[i] = lexical[i] if i not in semantic else LEXICAL_SHARE * lexical[i] + (1 - LEXICAL_SHARE) * semantic[i]
    return [float(score or 0.0) for score in scores]


def claim_sentences(answer_text: str) -> list[tuple[str, list[int]]]:
    """The sentences of an answer, markers removed, each with the marker numbers it carries, in order.

    A marker belongs to the sentence it follows: "A. [1] B. [2]", "A [1]. B [2]." and "A.[1] B.[2]" all
    give [("A.", [1]), ("B.", [2])]; a marker before any sentence goes to the first one. Every marker lands
    in exactly one entry; an answer of markers alone gives one entry with empty text.
    """
    text, markers = without_markers(answer_text)
    spans = split(text)
    if not spans:
        found = _unique(n for _, numbers in markers for n in numbers)
        return [("", found)] if found else []
    carried: list[list[int]] = [[] for _ in spans]
    for position, numbers in markers:
        owner = max((i for i, span in enumerate(spans) if span.start < position), default=0)
        carried[owner].extend(numbers)
    return [(span.text, _unique(numbers)) for span, numbers in zip(spans, carried, strict=True)]


def has_claim(sentence: str) -> bool:
    """Whether a sentence states something a citation could back: not connective filler ("In summary:",
    "Here is what I found:"), not a bare refusal ("I could not find an answer in the documents."), and
    holding at least one content term."""
    text = collapse(MARKER.sub("", sentence))
    bare = text.strip(" .:;,!?-–—").lower()
    if not bare or bare in _FILLER or _REFUSAL.match(bare):
        return False
    if text.endswith(":") and len(text.split()) <= _LEAD_IN_WORDS:
        return False
    return bool(analyze([text])[0])


def _plain(text: str) -> str:
    return collapse(MARKER.sub("", text))


def _quoted(sentence: str, passage: str) -> bool:
    """The sentence, bar its closing punctuation, occurs in the passage (case and whitespace aside)."""
    core = sentence.strip(" .!?;:\"'“”‘’").lower()
    return len(core.split()) >= 2 and core in passage.lower()


def _share(sentence_terms: list[str], passage_terms: list[str]) -> float:
    terms = set(sentence_terms)
    return len(terms & set(passage_terms)) / len(terms) if terms else 0.0


def _semantic(pairs: dict[int, tuple[str, str]], embed: Embed) -> dict[int, float]:
    """Per pair, the best cosine of the sentence with the whole passage or one of its sentences, scaled to
    0..1; every distinct text is embedded once, in a single call."""
    texts: dict[str, int] = {}
    groups: dict[int, tuple[int, list[int]]] = {}
    for i, (sentence, passage) in pairs.items():
        parts = [passage, *(span.text for span in quotable(passage))]
        groups[i] = (texts.setdefault(sentence, len(texts)), [texts.setdefault(t, len(texts)) for t in parts])
    if not texts:
        return {}
    vectors = np.asarray(embed(list(texts)), dtype=np.float32)
    scaled: dict[int, float] = {}
    for i, (sentence_row, passage_rows) in groups.items():
        cosine = float(np.max(vectors[passage_rows] @ vectors[sentence_row]))
        scaled[i] = min(1.0, max(0.0, (cosine - UNRELATED_COSINE) / (PARAPHRASE_COSINE - UNRELATED_COSINE)))
    return scaled


def without_markers(text: str) -> tuple[str, list[tuple[int, list[int]]]]:
    """The text with its markers cut out, and each marker's numbers with where it stood in the cut text."""
    pieces: list[str] = []
    markers: list[tuple[int, list[int]]] = []
    length = 0
    previous = 0
    for match in MARKER.finditer(text):
        piece = text[previous : match.start()].rstrip(" \t")  # the space before a marker goes with it
        pieces.append(piece)
        length += len(piece)
        markers.append((length, marker_numbers(match)))
        previous = match.end()
    pieces.append(text[previous:])
    return "".join(pieces), markers


def _unique(numbers: Iterable[int]) -> list[int]:
    seen: list[int] = []
    for n in numbers:
        if n not in seen:
            seen.append(n)
    return seen
