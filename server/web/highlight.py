"""Which sentences of a cited passage an answer quotes: the spans the web page highlights in a source card.

An answer cites passages with `[n]` markers after the text they support, so the claim of a marker is the
text since the previous marker (or the start). Each sentence of a claim is matched to the passage sentence
that shares the largest share of its words, when that share is at least `MIN_SHARE`; the matched passage
sentences are the highlights, in order, adjacent ones merged.
"""

from __future__ import annotations

import re

from ..answering.markers import MARKER, marker_numbers
from ..answering.sentences import split

MIN_SHARE = 0.5  # at least half of a claim sentence's words must be in a passage sentence to highlight it
_WORD = re.compile(r"[^\W_]{2,}")


def _words(text: str) -> set[str]:
    return {w.lower() for w in _WORD.findall(text)}


def claims_by_citation(answer: str) -> dict[int, list[str]]:
    """Each citation number and the answer text it supports (the text since the previous marker)."""
    found: dict[int, list[str]] = {}
    last = 0
    for match in MARKER.finditer(answer):
        claim = " ".join(answer[last : match.start()].split())
        last = match.end()
        if not claim:  # `[1][2]`: the second marker supports the same text as the first
            claim = next((texts[-1] for texts in reversed(found.values()) if texts), "")
        for n in dict.fromkeys(marker_numbers(match)):
            if claim:
                found.setdefault(n, []).append(claim)
    return found


def highlights(passage: str, claims: list[str]) -> list[tuple[int, int]]:
    """The [start, end) ranges of `passage` that the claims quote or paraphrase (empty when none match)."""
    units = split(passage)
    unit_words = [_words(u.text) for u in units]
    chosen: set[int] = set()
    for claim in claims:
        for sentence in split(claim):
            wanted = _words(sentence.text)
            if not wanted:
                continue
            shares = [len(wanted & words) / len(wanted) for words in unit_words]
            best = max(range(len(units)), key=shares.__getitem__, default=None)
            if best is not None and shares[best] >= MIN_SHARE:
                chosen.add(best)
    ranges: list[tuple[int, int]] = []
    for i in sorted(chosen):
        start, end = _without_heading(passage, units[i].start, units[i].end), units[i].end
        if ranges and (i - 1) in chosen and not passage[ranges[-1][1] : start].strip():
            ranges[-1] = (ranges[-1][0], end)  # adjacent sentences: one highlight
        else:
            ranges.append((start, end))
    return ranges


def _without_heading(passage: str, start: int, end: int) -> int:
    """Where a unit starts once a Markdown heading line joined to its first sentence is left out."""
    while passage.startswith("#", start):
        line_end = passage.find("\n", start, end)
        if line_end < 0 or not passage[line_end:end].strip():
            break  # the unit is the heading itself
        start = line_end
        while start < end and passage[start].isspace():
            start += 1
    return start
