"""Citation validation keeps markers that point at retrieved chunks, and only those."""

from __future__ import annotations

import pytest

from ingest.vectorstore import StoredChunk
from server.answering.citations import validate


def _chunks(n: int) -> list[StoredChunk]:
    return [
        StoredChunk(
            f"doc{i}:v:0",
            f"Passage number {i} says something useful. " * 10,
            {
                "document_id": f"doc{i}",
                "source": f"/kb/doc{i}.md",
                "title": f"Doc {i}",
                "start": 0,
                "end": 420,
                "heading": "Intro",
                "content_hash": "h",
            },
            score=1 - i / 10,
        )
        for i in range(1, n + 1)
    ]


@pytest.mark.parametrize(
    ("answer", "cited", "invalid", "text"),
    [
        ("Redis holds the cache [1].", [1], [], "Redis holds the cache [1]."),
        ("A [1][2]. B [2].", [1, 2], [], "A [1][2]. B [2]."),
        ("A [1, 3].", [1, 3], [], "A [1][3]."),
        ("Made up [7].", [], [7], "Made up."),
        ("Mixed [2] and bogus [0] and [9].", [2], [0, 9], "Mixed [2] and bogus and."),
        ("No markers at all.", [], [], "No markers at all."),
        ("In [2023] prices rose [3].", [3], [], "In [2023] prices rose [3]."),  # 4 digits: a year, kept
    ],
)
def test_markers_are_validated_against_retrieved_chunks(
    answer: str, cited: list[int], invalid: list[int], text: str
) -> None:
    result = validate(answer, _chunks(3))
    assert [c.n for c in result.citations] == cited
    assert result.invalid_markers == invalid
    assert result.text == text
    assert result.grounded is bool(cited)


def test_citation_carries_provenance_and_a_snippet() -> None:
    chunks = _chunks(2)
    [citation] = validate("See [2].", chunks).citations
    assert citation.chunk_id == "doc2:v:0"
    assert (citation.document_id, citation.source, citation.title, citation.heading) == (
        "doc2",
        "doc2.md",  # what clients see: never the absolute server path
        "Doc 2",
        "Intro",
    )
    assert (citation.start, citation.end, citation.page) == (0, 420, None)
    assert citation.score == pytest.approx(0.8)
    assert citation.snippet.startswith("Passage number 2") and len(citation.snippet) <= 245


def test_no_chunks_means_nothing_is_grounded() -> None:
    result = validate("Confident claim [1].", [])
    assert not result.grounded and result.invalid_markers == [1]


def test_marker_parsing_is_linear_on_long_runs_of_spaces() -> None:
    """A marker pattern that starts with `[ \\t]*` rescans a run of spaces from every position."""
    import time

    def seconds(text: str) -> float:
        started = time.perf_counter()
        validate(text, [])
        return time.perf_counter() - started

    spaces = " " * 60_000 + "x"
    prose = ("The nightly backup copies the data directory [1]. " * 1200)[:60_001]
    assert seconds(spaces) < 5 * max(seconds(prose), 1e-3)
