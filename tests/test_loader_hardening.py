"""Hostile input never escapes a loader as anything but an `IngestError`, and never costs super-linear time."""

from __future__ import annotations

import random
import re
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from ingest.errors import CorruptDocument, EmptyDocument, IngestError
from ingest.loaders import atx_heading, load_bytes, load_markdown, load_pdf

from .helpers import page_tree_pdf, raw_pdf

SHARED_PDFS = sorted((Path(__file__).resolve().parents[2] / "shared" / "pdfs").glob("*/*.pdf"))


def test_shallow_page_tree_pdf_reads() -> None:
    """The builder makes a valid PDF, so the deep one below fails for its depth alone."""
    doc = load_pdf(page_tree_pdf(depth=5), "shallow.pdf")
    assert doc.text.strip() == "Deep page tree"
    assert [s.page for s in doc.sections] == [1]


def test_page_tree_deeper_than_pypdf_allows_is_a_corrupt_document() -> None:
    with pytest.raises(CorruptDocument, match=r"deep\.pdf: not a readable PDF.*LimitReachedError"):
        load_bytes(page_tree_pdf(depth=150), "deep.pdf")


def test_page_tree_cycle_is_a_corrupt_document() -> None:
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Pages /Kids [2 0 R] /Count 1 /Parent 2 0 R >>",
    ]
    with pytest.raises(IngestError, match=r"^loop\.pdf: "):
        load_bytes(raw_pdf(objects), "loop.pdf")


def _truncate(data: bytes, rng: random.Random) -> bytes:
    return data[: rng.randrange(len(data) // 10, len(data) - 1)]


def _flip_bytes(data: bytes, rng: random.Random) -> bytes:
    mutated = bytearray(data)
    for _ in range(40):
        mutated[rng.randrange(len(mutated))] ^= rng.randrange(1, 256)
    return bytes(mutated)


def _obj_positions(data: bytes) -> list[re.Match[bytes]]:
    return list(re.finditer(rb"\d+ \d+ obj\b", data))


def _mangle_obj_keyword(data: bytes, rng: random.Random) -> bytes:
    mutated = bytearray(data)
    for match in rng.sample(_obj_positions(data), k=min(5, len(_obj_positions(data)))):
        mutated[match.end() - 3 : match.end()] = b"jbo"
    return bytes(mutated)


def _delete_object(data: bytes, rng: random.Random) -> bytes:
    start = rng.choice(_obj_positions(data)).start()
    end = data.find(b"endobj", start)
    return data[:start] + data[end + len(b"endobj") :] if end != -1 else data[:start]


MUTATIONS: list[Callable[[bytes, random.Random], bytes]] = [
    _truncate,
    _flip_bytes,
    _mangle_obj_keyword,
    _delete_object,
    _flip_bytes,
]


# The quick loop fuzzes the small PDFs; the whole suite also the long ones (a second or two each).
LONG_PDFS = {"redp5110_sampled.pdf", "normal_4pages.pdf", "federal-register-2020-17221.pdf", "amt_handbook_sample.pdf"}


@pytest.mark.parametrize(
    "path",
    [pytest.param(p, id=p.name, marks=pytest.mark.slow if p.name in LONG_PDFS else ()) for p in SHARED_PDFS],
)
@pytest.mark.slow
def test_mutated_pdfs_load_or_fail_with_an_ingest_error(path: Path) -> None:
    """Fuzz: 5 mutations of each of the 12 shared PDFs (60 cases, fixed seeds, about a second in all)."""
    original = path.read_bytes()
    for number, mutate in enumerate(MUTATIONS):
        rng = random.Random(f"{path.name}-{number}")
        data = mutate(original, rng)
        try:
            doc = load_bytes(data, path.name)
        except IngestError as exc:
            assert str(exc).startswith(f"{path.name}: "), "the message names the file"
            continue
        assert doc.text.strip()
        assert all(doc.text[s.start : s.end].strip() for s in doc.sections)


@pytest.mark.parametrize("name", ["empty.pdf", "empty.md", "empty.txt", "empty.html"])
@pytest.mark.parametrize("data", [b"", b" \n\t\r\n  "], ids=["empty", "whitespace"])
def test_empty_input_is_an_empty_document_for_every_type(name: str, data: bytes) -> None:
    with pytest.raises(EmptyDocument, match=rf"^{re.escape(name)}: the file is empty$"):
        load_bytes(data, name)


@pytest.mark.parametrize("name", ["x.md", "x.txt", "x.html"])
def test_nul_bytes_are_binary_for_every_text_type(name: str) -> None:
    with pytest.raises(IngestError, match="binary data"):
        load_bytes(b"hello\x00world", name)


@pytest.mark.parametrize(
    "data",
    [
        b"<div>" * 5000 + b"deep" + b"</div>" * 5000,
        b"<p>" * 3000 + b"nested paragraphs",
        b"<html><body><h1>\xff\xfe broken \xc3</h1><p>text</p></body></html>",
        b"<!DOCTYPE html><html><!-- unclosed comment <p>gone",
        b"<table><tr><td>" * 2000 + b"cell",
    ],
    ids=["deep-divs", "deep-paragraphs", "bad-encoding", "unclosed-comment", "deep-tables"],
)
def test_hostile_html_loads_or_fails_with_an_ingest_error(data: bytes) -> None:
    try:
        doc = load_bytes(data, "hostile.html")
    except IngestError as exc:
        assert str(exc).startswith("hostile.html: ")
    else:
        assert doc.text.strip()


def _seconds_to_load(data: bytes, name: str) -> float:
    best = float("inf")
    for _ in range(5):
        started = time.perf_counter()
        load_bytes(data, name)
        best = min(best, time.perf_counter() - started)
    return best


@pytest.mark.parametrize(
    "heading",
    [
        "# a" + " " * 60_000 + "b",
        "#" + " " * 60_000 + "x",
        "# a" + " #" * 30_000 + "x",
        "# " + "#" * 60_000,
        "#" * 6 + "\t" * 60_000 + "end ###",
    ],
    ids=["spaces-then-text", "spaces", "space-hash-pairs", "hashes", "tabs"],
)
def test_markdown_heading_parsing_is_linear(heading: str) -> None:
    """A 60 KB heading line costs about what a 60 KB paragraph does (it took 25 s with the old regex)."""
    paragraph = ("word " * 12_001)[: len(heading)]
    hostile = f"# Title\n\n{heading}\n\nbody\n".encode()
    normal = f"# Title\n\n{paragraph}\n\nbody\n".encode()
    ratio = _seconds_to_load(hostile, "h.md") / _seconds_to_load(normal, "n.md")
    assert ratio < 5, f"heading line took {ratio:.1f}x the time of a paragraph of the same size"


def test_many_headings_without_body_are_linear() -> None:
    """Headings with no body between them once re-scanned the whole pending block at every heading."""
    bare = "".join(f"## Heading {n}\n" for n in range(6_000))
    with_body = "".join(f"## Heading {n}\nbody {n}\n" for n in range(6_000))
    ratio = _seconds_to_load(bare.encode(), "h.md") / _seconds_to_load(with_body.encode(), "b.md")
    assert ratio < 5


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("# Title", (1, "Title")),
        ("###   Spaced   ", (3, "Spaced")),
        ("## Closed ##", (2, "Closed")),
        ("## Mixed # ## ", (2, "Mixed #")),  # only the last run of # closes (CommonMark)
        ("# C#", (1, "C#")),
        ("#\tTabbed", (1, "Tabbed")),
        ("#NoSpace", None),
        ("####### seven", None),
        ("#", None),
        ("# ", None),
        ("# ###", None),
        ("text # not", None),
        ("# " + "x" * 20_000, None),  # too long to be a heading
    ],
)
def test_atx_heading(line: str, expected: tuple[int, str] | None) -> None:
    assert atx_heading(line) == expected


def test_markdown_fence_hides_headings_and_counts_as_body() -> None:
    doc = load_markdown(b"# A\n```\n# not a heading\n```\n# B\n\nb text\n", "f.md")
    assert [s.heading for s in doc.sections] == ["A", "B"]
