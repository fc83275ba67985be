"""Citation validation: every `[n]` in an answer must point at a chunk that was actually retrieved.

Markers that point nowhere are removed from the text and reported; an answer
left with no valid citation is `grounded: false`. Nothing else in ragkb
decides whether an answer is grounded.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from ingest.vectorstore import StoredChunk

from .schemas import ChunkRef, Citation

# no leading-whitespace group: `[ \t]*\[` would rescan a run of spaces from every position (quadratic)
_MARKER = re.compile(r"\[(\d{1,3}(?:\s*,\s*\d{1,3})*)\]")
SNIPPET_CHARS = 240


@dataclass(frozen=True, slots=True)
class ValidatedAnswer:
    text: str
    citations: list[Citation]
    invalid_markers: list[int]

    @property
    def grounded(self) -> bool:
        return bool(self.citations)


def citation_for(number: int, chunk: StoredChunk) -> Citation:
    text = chunk.text.strip()
    snippet = text if len(text) <= SNIPPET_CHARS else text[:SNIPPET_CHARS].rsplit(" ", 1)[0] + " …"
    return Citation(n=number, snippet=snippet, **ChunkRef.fields_of(chunk))


def validate(answer: str, retrieved: Sequence[StoredChunk]) -> ValidatedAnswer:
    """Keep the markers that name a retrieved chunk (1..len(retrieved)); drop and report the rest."""
    cited: list[int] = []
    invalid: list[int] = []
    pieces: list[str] = []
    position = 0
    for match in _MARKER.finditer(answer):
        numbers = [int(part) for part in match.group(1).split(",")]
        valid = [n for n in numbers if 1 <= n <= len(retrieved)]
        invalid.extend(n for n in numbers if not 1 <= n <= len(retrieved))
        cited.extend(n for n in valid if n not in cited)
        pieces.append(answer[position : match.start()])
        if valid:
            pieces.append("".join(f"[{n}]" for n in valid))
        else:  # a removed marker takes the space before it along, so no gap is left before the punctuation
            pieces[-1] = pieces[-1].rstrip(" \t")
        position = match.end()
    pieces.append(answer[position:])
    cleaned = "".join(pieces).strip()
    citations = [citation_for(n, retrieved[n - 1]) for n in sorted(cited)]
    return ValidatedAnswer(cleaned, citations, sorted(set(invalid)))
