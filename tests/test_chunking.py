"""Chunks fit the embedder's window, keep their offsets and break on sentence boundaries."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from ingest.chunking import Chunker, ChunkingConfig
from ingest.embedder import Embedder
from ingest.loaders import load_bytes, load_pdf
from ingest.models import ExtractedDocument, Section


def _chunker(embedder: Embedder, size: int = 200, overlap: int = 32) -> Chunker:
    return Chunker(embedder.tokenizer, ChunkingConfig(size, overlap), window=embedder.window)


def _model_tokens(embedder: Embedder, text: str) -> int:
    return len(embedder.tokenizer(text, add_special_tokens=True)["input_ids"])


@pytest.mark.slow
@pytest.mark.parametrize("name", ["docling/redp5110_sampled.pdf", "pdfplumber/federal-register-2020-17221.pdf"])
@pytest.mark.parametrize(("size", "overlap"), [(200, 32), (64, 0), (1000, 50)])
def test_chunks_fit_the_window_and_point_at_their_text(
    embedder: Embedder, shared_pdfs: Path, name: str, size: int, overlap: int
) -> None:
    doc = load_pdf((shared_pdfs / name).read_bytes(), name)
    chunks = _chunker(embedder, size, overlap).chunk(doc)
    assert chunks
    limit = min(size, embedder.window - 2) + 2
    for i, chunk in enumerate(chunks):
        assert chunk.index == i
        assert doc.text[chunk.start : chunk.end] == chunk.text
        assert _model_tokens(embedder, chunk.text) <= limit
        assert chunk.page is not None
        section = next(s for s in doc.sections if s.page == chunk.page)
        assert section.start <= chunk.start and chunk.end <= section.end


def test_long_sentence_is_split_on_token_boundaries(embedder: Embedder) -> None:
    text = " ".join(f"word{i}" for i in range(2000))
    doc = ExtractedDocument(text=text, title="t", sections=[Section(0, len(text))], kind="text")
    chunks = _chunker(embedder, 100, 0).chunk(doc)
    assert len(chunks) > 5
    assert all(_model_tokens(embedder, c.text) <= 102 for c in chunks)
    covered = "".join(c.text for c in chunks).replace(" ", "")
    assert covered == text.replace(" ", "")


def test_overlap_repeats_the_tail_of_the_previous_chunk(embedder: Embedder) -> None:
    sentences = [f"Sentence number {i} talks about topic {i}." for i in range(60)]
    text = " ".join(sentences)
    doc = ExtractedDocument(text=text, title="t", sections=[Section(0, len(text))], kind="text")
    chunks = _chunker(embedder, 60, 20).chunk(doc)
    assert len(chunks) > 3
    for previous, current in itertools.pairwise(chunks):
        assert current.start < previous.end, "neighbouring chunks should share an overlap"
        assert text[current.start : current.start + 8] == "Sentence"  # starts on a sentence boundary


def test_markdown_chunks_carry_heading(embedder: Embedder) -> None:
    doc = load_bytes(b"# A\n\nalpha text.\n\n## B\n\nbeta text.\n", "x.md")
    chunks = _chunker(embedder).chunk(doc)
    assert [c.heading for c in chunks] == ["A", "A > B"]
