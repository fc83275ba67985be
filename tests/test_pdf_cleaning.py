"""PDF text is cleaned of page furniture at ingestion, on real PDFs, with exact offsets and page numbers."""

from __future__ import annotations

import re
from pathlib import Path
from typing import cast

import pytest
from pypdf import PdfReader
from pypdf.generic import DictionaryObject

from ingest.loaders import ignore_embedded_cff_encodings, load_pdf
from ingest.pdftables import document_tables, rewrite_page
from ingest.pdftext import (
    Vocabulary,
    clean_pages,
    drop_line_number_gutter,
    drop_page_number_lines,
    drop_running_lines,
    drops_hyphen,
    join_hyphenated,
)

# Share of each English docling PDF's ground-truth words found in the extracted text, measured before
# cleaning was added (pypdf 7.1.0) minus 0.01: cleaning may drop furniture, never body text.
GROUND_TRUTH_FLOOR = {
    "2305.03393v1-pg9.pdf": 0.9663 - 0.01,
    "amt_handbook_sample.pdf": 0.9955 - 0.01,
    "code_and_formula.pdf": 0.9802 - 0.01,
    "multi_page.pdf": 0.9967 - 0.01,
    "picture_classification.pdf": 1.0 - 0.01,
    "redp5110_sampled.pdf": 0.9862 - 0.01,
}


def _words(text: str) -> set[str]:
    return set(re.findall(r"\w+", text.lower()))


def _pdf(shared_pdfs: Path, name: str) -> Path:
    return next(shared_pdfs.glob(f"*/{name}"))


@pytest.fixture(scope="module")
def federal_register(shared_pdfs: Path) -> tuple[str, list[str]]:
    """The Federal Register notice's cleaned text and its pages' cleaned texts, by page number - 1."""
    pdf = _pdf(shared_pdfs, "federal-register-2020-17221.pdf")
    doc = load_pdf(pdf.read_bytes(), pdf.name)
    pages = [""] * 15
    for section in doc.sections:
        assert section.page is not None
        pages[section.page - 1] = doc.text[section.start : section.end]
    return doc.text, pages


@pytest.mark.slow
def test_federal_register_running_header_and_footer_are_gone(federal_register: tuple[str, list[str]]) -> None:
    text, pages = federal_register
    assert "VerDate" not in text
    assert "Federal Register / Vol. 85" not in text
    assert "Jkt 250001" not in text and "jbell on DSKJLSW7X2PROD" not in text
    assert [n for n, page in enumerate(pages, start=1) if not page] == [8], "page 8 holds only a figure"


@pytest.mark.slow
def test_federal_register_body_is_intact(federal_register: tuple[str, list[str]]) -> None:
    text, pages = federal_register
    assert "This section of the FEDERAL REGISTER" in pages[0]
    assert "On October 29, 2018, a Boeing Model" in pages[0]
    assert "1 Preliminary KNKT.18.10.35.04 Aircraft" in pages[1]  # a footnote starting with a number stays
    assert "(4) In the Operating Procedures chapter," in pages[8]
    assert "placed in the public docket for this" in pages[14]
    # line-end hyphens: a compound keeps its hyphen, an address is rejoined
    assert "operators with an existing FAA-approved MEL" in text
    assert "9-ANM-Seattle-ACO-AMOC-Requests@faa.gov" in text


def test_transcript_line_number_gutter_is_gone(shared_pdfs: Path) -> None:
    pdf = _pdf(shared_pdfs, "scotus-transcript-p1.pdf")
    text = load_pdf(pdf.read_bytes(), pdf.name).text
    lines = [line.strip() for line in text.splitlines()]
    assert not any(line.isdigit() for line in lines), "no line holds only a number"
    assert "IN THE SUPREME COURT OF THE UNITED STATES" in text
    assert "The above-entitled matter came on for oral" in text
    assert "v. : No. 07-1315" in text and "at 1:01 p.m." in text  # numbers in the body stay
    assert "Tuesday, January 13, 2009" in text


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(GROUND_TRUTH_FLOOR))
def test_docling_ground_truth_is_still_recovered(shared_pdfs: Path, name: str) -> None:
    pdf = _pdf(shared_pdfs, name)
    truth = _words(pdf.with_name(pdf.stem + ".groundtruth.md").read_text())
    doc = load_pdf(pdf.read_bytes(), name)
    coverage = len(truth & _words(doc.text)) / len(truth)
    assert coverage >= GROUND_TRUTH_FLOOR[name], f"{name}: {coverage:.2%} of the ground-truth words"


@pytest.mark.parametrize(
    "name", ["federal-register-2020-17221.pdf", "redp5110_sampled.pdf", "multi_page.pdf", "scotus-transcript-p1.pdf"]
)
@pytest.mark.slow
def test_sections_index_the_text_and_belong_to_their_page(shared_pdfs: Path, name: str) -> None:
    pdf = _pdf(shared_pdfs, name)
    doc = load_pdf(pdf.read_bytes(), name)
    cleaned = clean_pages([page.extract_text() or "" for page in PdfReader(pdf).pages])
    tables = document_tables(pdf.read_bytes(), cleaned)  # tables as rows with their headers
    cleaned = [rewrite_page(text, found) for text, found in zip(cleaned, tables, strict=True)]
    numbers = [s.page or 0 for s in doc.sections]
    assert numbers == sorted(set(numbers))
    covered = 0
    for section in doc.sections:
        assert section.page is not None
        assert doc.text[section.start : section.end] == cleaned[section.page - 1]
        assert doc.text[section.start : section.end].strip() == doc.text[section.start : section.end]
        covered += section.end - section.start + 2
    assert covered == len(doc.text), "sections and their separators make up the whole text"


def test_hyphenated_line_breaks_are_joined_when_plausible() -> None:
    lines = [
        "The proposed regu-",
        "lation applies to Post-",
        "Closing reviews and to self-",
        "publishing authors; publishing is free. Call 9-",
        "ANM now.",
    ]
    assert join_hyphenated(lines, Vocabulary.of([lines])) == [
        "The proposed regulation applies to Post-Closing reviews and to self-publishing authors; "
        "publishing is free. Call 9-ANM now."
    ]


def test_hyphen_rules_follow_the_document_vocabulary() -> None:
    vocabulary = Vocabulary.of([["a database and a data-base", "data base"]])
    assert drops_hyphen("data", "base", vocabulary)  # "database" is used elsewhere
    assert not drops_hyphen("data", "base", Vocabulary.of([["a data-base"]]))
    assert not drops_hyphen("data", "base", Vocabulary.of([["data and base"]]))  # two words of their own
    assert drops_hyphen("high", "est", Vocabulary.of([["high"]]))  # "est" is no word: hyphenation
    assert not drops_hyphen("Post", "Closing", vocabulary)


def test_running_lines_need_most_pages() -> None:
    words = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa"]
    pages = [
        [f"Annual Report {2000 + n}", *(f"{w} {words[n]}" for w in words[n : n + 5]), f"Page {n} footer"]
        for n in range(4)
    ]
    pages[3][0] = "A heading of its own"
    cleaned = drop_running_lines(pages)
    assert [page[0] for page in cleaned] == ["alpha alpha", "beta beta", "gamma gamma", "A heading of its own"]
    assert [page[-1] for page in cleaned] == ["epsilon alpha", "zeta beta", "eta gamma", "theta delta"]
    assert drop_running_lines(pages[:2]) == pages[:2], "two pages are too few to tell"


def test_gutter_needs_a_long_run_from_one() -> None:
    gutter = [str(n) for n in range(1, 26)]
    assert drop_line_number_gutter(["", *gutter, "Text", "more"]) == ["", "Text", "more"]
    assert drop_line_number_gutter(["Title", " ".join(gutter), "Text"]) == ["Title", "Text"]
    short = ["Totals", "1", "2", "3", "Text"]
    assert drop_line_number_gutter(short) == short


def test_page_number_lines_go_only_at_the_edges() -> None:
    body = ["Body", "7", "more body", "3", "and more", "text", "last words"]
    assert drop_page_number_lines(["- 3 -", *body, "Page 3 of 15"], page=3) == body
    assert drop_page_number_lines(["3", *body, "3 / 15"], page=3) == body
    assert drop_page_number_lines(["Body", "text", "end", "12"], page=3) == ["Body", "text", "end", "12"]


def test_senate_fonts_are_read_by_their_declared_encoding(shared_pdfs: Path) -> None:
    """The fontTools guard works on this reader's objects, whether or not fontTools is installed."""
    import pypdf.generic._font as pypdf_font

    switch = pypdf_font.HAS_FONTTOOLS
    page = PdfReader(_pdf(shared_pdfs, "senate-expenditures.pdf")).pages[0]
    fonts = cast(DictionaryObject, cast(DictionaryObject, page["/Resources"])["/Font"])
    descriptors = [font.get_object()["/FontDescriptor"].get_object() for font in fonts.values()]
    assert sum("/FontFile3" in d for d in descriptors) == 2
    ignore_embedded_cff_encodings(page)
    assert sum("/FontFile3" in d for d in descriptors) == 0
    assert any("/FontFile2" in d for d in descriptors), "TrueType programs are left alone"
    assert pypdf_font.HAS_FONTTOOLS is switch, "pypdf's module state is not touched"


def test_clean_pages_keeps_one_entry_per_page() -> None:
    assert clean_pages(["", "  \n", "text"]) == ["", "", "text"]
