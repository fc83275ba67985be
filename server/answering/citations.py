"""Citation validation: every `[n]` must point at a retrieved chunk that supports the sentence it ends.

Two checks, in order. A marker that points nowhere (outside 1..len(retrieved)) is
removed and listed in `invalid_markers`. A marker whose passage does not support its
sentence (`server.answering.support`, below `threshold`) is removed and listed in
`unsupported_markers`. An answer is `grounded` when every sentence that makes a claim
keeps at least one supported citation. Nothing else in ragkb decides groundedness.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from ingest.vectorstore import StoredChunk

from ..schemas import ChunkRef, Citation
from .markers import MARKER, marker_numbers
from .sentences import split
from .support import Embed, has_claim, support_many, without_markers

SNIPPET_CHARS = 240


@dataclass(frozen=True, slots=True)
class ValidatedAnswer:
    text: str
    citations: list[Citation]
    invalid_markers: list[int]
    unsupported_markers: list[int] = field(default_factory=list)
    grounded: bool = False


@dataclass(frozen=True, slots=True)
class SupportCheck:
    """How markers are checked against their sentences: the embedder (None: lexical only) and the score
    below which a citation does not count (`RAGKB_SUPPORT_THRESHOLD`)."""

    threshold: float
    embed: Embed | None = None


def citation_for(number: int, chunk: StoredChunk) -> Citation:
    text = chunk.text.strip()
    snippet = text if len(text) <= SNIPPET_CHARS else text[:SNIPPET_CHARS].rsplit(" ", 1)[0] + " …"
    return Citation(n=number, snippet=snippet, **ChunkRef.fields_of(chunk))


def validate(answer: str, retrieved: Sequence[StoredChunk], support: SupportCheck | None = None) -> ValidatedAnswer:
    """Keep the markers that name a retrieved chunk and (with `support`) back the claim they end; drop and
    report the rest; then say whether every claim is backed.

    A marker backs the text since the previous marker (its *group*): "A. B. [1]" cites [1] for both
    sentences, which is how an extractive quote spanning two sentences, or a model citing once for a
    short run of claims, reads. Text after the last marker is uncited.
    """
    text, invalid = _keep(answer, lambda _, n: 1 <= n <= len(retrieved))
    groups, trailing = _groups(text)
    weak: set[tuple[int, int]] = set()
    if support is not None:
        pairs = [(occurrence, n) for occurrence, (_, numbers) in enumerate(groups) for n in numbers]
        texts = [(groups[occurrence][0], retrieved[n - 1].text) for occurrence, n in pairs]
        scores = support_many(texts, support.embed) if pairs else []
        weak = {pair for pair, score in zip(pairs, scores, strict=True) if score < support.threshold}
    text, unsupported = _keep(text, lambda occurrence, n: (occurrence, n) not in weak)
    backed = [any((i, n) not in weak for n in numbers) for i, (_, numbers) in enumerate(groups)]
    claims_backed = all(ok or not _claims(group) for ok, (group, _) in zip(backed, groups, strict=True))
    cited = sorted({n for match in MARKER.finditer(text) for n in marker_numbers(match)})
    grounded = bool(cited) and claims_backed and not _claims(trailing)
    citations = [citation_for(n, retrieved[n - 1]) for n in cited]
    return ValidatedAnswer(text, citations, sorted(set(invalid)), sorted(set(unsupported)), grounded)


def _groups(text: str) -> tuple[list[tuple[str, list[int]]], str]:
    """Each marker occurrence with the text it backs, and the text no marker backs.

    A marker backs the text since the previous marker ("A. B. [1]" gives [1] both sentences; markers side by
    side, "[2][3]", back the same text). Text after the last marker is unbacked only from the first
    sentence that starts after it: "Mixed [2] and more." is one sentence, backed by [2]."""
    plain, markers = without_markers(text)
    groups: list[tuple[str, list[int]]] = []
    previous = 0
    for position, numbers in markers:
        backed = plain[previous:position].strip()
        if not backed and groups:
            backed = groups[-1][0]
        groups.append((backed, numbers))
        previous = position
    if not markers:
        return groups, plain
    return groups, " ".join(span.text for span in split(plain) if span.start >= previous)


def _claims(text: str) -> bool:
    return any(has_claim(span.text) for span in split(text))


def _keep(text: str, keep: Callable[[int, int], bool]) -> tuple[str, list[int]]:
    """The text with each marker occurrence reduced to the numbers `keep(occurrence, n)` accepts (a marker
    left empty is removed with the space before it), and the numbers dropped."""
    pieces: list[str] = []
    dropped: list[int] = []
    position = 0
    for occurrence, match in enumerate(MARKER.finditer(text)):
        numbers = marker_numbers(match)
        kept = [n for n in numbers if keep(occurrence, n)]
        dropped.extend(n for n in numbers if n not in kept)
        pieces.append(text[position : match.start()])
        if kept:
            pieces.append("".join(f"[{n}]" for n in dict.fromkeys(kept)))
        else:  # no gap is left before the punctuation
            pieces[-1] = pieces[-1].rstrip(" \t")
        position = match.end()
    pieces.append(text[position:])
    return "".join(pieces).strip(), dropped
