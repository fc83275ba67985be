"""Citation validation: every `[n]` in an answer must point at a chunk that was actually retrieved.

Markers that point nowhere are removed from the text and reported; an answer
left with no valid citation is `grounded: false`. Nothing else in ragkb
decides whether an answer is grounded.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from pydantic import BaseModel, Field

from ingest.store import StoredChunk

_MARKER = re.compile(r"([ \t]*)\[(\d{1,3}(?:\s*,\s*\d{1,3})*)\]")
SNIPPET_CHARS = 240


class Citation(BaseModel):
    """A numbered source of an answer, pointing at a retrieved chunk and its place in the document."""

    n: int = Field(description="The marker number used in the answer text, e.g. 1 for [1].")
    chunk_id: str
    document_id: str
    source: str
    title: str
    page: int | None = Field(None, description="1-based page number (PDF only).")
    heading: str | None = Field(None, description="Heading path such as 'Guide > Install' (Markdown/HTML).")
    start: int = Field(description="Character offset of the chunk in the document's extracted text.")
    end: int
    score: float = Field(description="Retrieval score of the chunk (higher is more relevant).")
    snippet: str = Field(description="The start of the cited chunk's text.")


@dataclass(frozen=True, slots=True)
class ValidatedAnswer:
    text: str
    citations: list[Citation]
    invalid_markers: list[int]

    @property
    def grounded(self) -> bool:
        return bool(self.citations)


def citation_for(number: int, chunk: StoredChunk) -> Citation:
    meta = chunk.metadata
    text = chunk.text.strip()
    snippet = text if len(text) <= SNIPPET_CHARS else text[:SNIPPET_CHARS].rsplit(" ", 1)[0] + " …"
    page = meta.get("page")
    heading = meta.get("heading")
    return Citation(
        n=number,
        chunk_id=chunk.chunk_id,
        document_id=str(meta.get("document_id", "")),
        source=str(meta.get("source", "")),
        title=str(meta.get("title", "")),
        page=int(page) if page is not None else None,
        heading=str(heading) if heading else None,
        start=int(meta.get("start", 0)),
        end=int(meta.get("end", 0)),
        score=round(float(chunk.score), 6),
        snippet=snippet,
    )


def validate(answer: str, retrieved: Sequence[StoredChunk]) -> ValidatedAnswer:
    """Keep the markers that name a retrieved chunk (1..len(retrieved)); drop and report the rest."""
    cited: list[int] = []
    invalid: list[int] = []

    def keep_valid(match: re.Match[str]) -> str:
        numbers = [int(part) for part in match.group(2).split(",")]
        valid = [n for n in numbers if 1 <= n <= len(retrieved)]
        invalid.extend(n for n in numbers if not 1 <= n <= len(retrieved))
        for n in valid:
            if n not in cited:
                cited.append(n)
        # a removed marker takes the space before it along, so no gap is left before the punctuation
        return match.group(1) + "".join(f"[{n}]" for n in valid) if valid else ""

    cleaned = _MARKER.sub(keep_valid, answer).strip()
    citations = [citation_for(n, retrieved[n - 1]) for n in sorted(cited)]
    return ValidatedAnswer(cleaned, citations, sorted(set(invalid)))
