"""PDF tables come out as rows with their column headers, on their page, with exact offsets; a question that
names a row and a column is answered with that cell and its labels.

Real PDFs from ../shared/pdfs: the NICS statistics (a 25-column table with grouped headers), the Senate
expenditures (rows of one ruled band), the OTSL paper's Table 1 and the Redpaper's tables (docling).
"""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest

from ingest.config import Settings
from ingest.embedder import Embedder
from ingest.loaders import load_pdf
from ingest.models import ExtractedDocument
from ingest.pdftables import MAX_ROW_CHARS, Table, document_tables, is_table_row, rewrite_page, table_row
from ingest.pipeline import Ingestor
from server.answering.lexical import analyze
from server.answering.providers.extractive import table_cells
from server.answering.sentences import quotable
from server.answering.service import QueryService

from .helpers import reader_for

NICS = "pdfplumber/nics-background-checks-2015-11.pdf"
SENATE = "pdfplumber/senate-expenditures.pdf"
OTSL = "docling/2305.03393v1-pg9.pdf"
REDPAPER = "docling/redp5110_sampled.pdf"


def _load(shared_pdfs: Path, name: str) -> ExtractedDocument:
    return load_pdf((shared_pdfs / name).read_bytes(), name)


def _page_text(document: ExtractedDocument, page: int) -> str:
    section = next(s for s in document.sections if s.page == page)
    return document.text[section.start : section.end]


@pytest.mark.slow
def test_nics_rows_name_every_column_and_replace_the_run_together_digits(shared_pdfs: Path) -> None:
    document = _load(shared_pdfs, NICS)
    page = _page_text(document, 1)
    assert "Texas — Permit: 21,550; Handgun: 56,941; Long Gun: 51,670; Other: 2,532" in page
    assert "Redemption Handgun: 5,748; Redemption Long Gun: 5,331" in page, "a grouped header prefixes its title"
    assert "Texas — " in page and "Totals: 146,982" in page
    assert "05,7485,331" not in page, "pypdf's run-together row is gone"
    assert page.startswith("NICS Firearm Background Checks November - 2015"), "the caption stays"
    rows = [line for line in page.splitlines() if line.startswith("Texas — ")]
    assert len(rows) == 2 and all(len(row) <= MAX_ROW_CHARS + 40 for row in rows), "a wide row is cut at cells"
    assert rows[1].endswith("Totals: 146,982")


@pytest.mark.slow
def test_senate_rows_keep_their_document_numbers_dates_and_amounts(shared_pdfs: Path) -> None:
    page = _page_text(_load(shared_pdfs, SENATE), 1)
    assert "DOCUMENT NO.: DHAW20190001; DATE POSTED: 05/03/2019; PAYEE NAME: CITIBANK - TRAVEL CBA CARD" in page
    assert "OBLIGATION/SERVICE DATES START: 03/04/2019; OBLIGATION/SERVICE DATES END: 03/06/2019" in page
    assert "PAYEE NAME: BAIN, J MATTHEW; DESCRIPTION: DISTRICT DIRECTOR; AMOUNT ($): 37,499.96" in page
    assert "37,499.96DISTRICT DIRECTORBAIN" not in page, "pypdf's glued row is gone"


@pytest.mark.slow
def test_docling_table_pages(shared_pdfs: Path) -> None:
    otsl = _page_text(_load(shared_pdfs, OTSL), 1)
    assert "Language: OTSL; TEDs simple: 0.965; TEDs complex: 0.934; TEDs all: 0.955; mAP (0.75): 0.88" in otsl
    assert "Language: HTML; TEDs simple: 0.969; TEDs complex: 0.927" in otsl, "one label beside two lines: two rows"
    assert "5.2 Quantitative Results" in otsl, "the prose around the table is kept"
    # booktabs rules: the finder's cells miss the first and last columns; the horizontal rules give them back
    assert "# enc-layers: 6; # dec-layers: 6; Language: HTML; TEDs simple: 0.969" in otsl
    assert "# enc-layers: 4; # dec-layers: 2; Language: OTSL; TEDs simple: 0.952" in otsl, "keys printed once"
    assert "mAP (0.75): 0.857; Inference time (secs): 5.39" in otsl
    assert "2 4 OTSL 0.923" not in otsl, "pypdf's row is replaced now that every column is read"
    redpaper = _load(shared_pdfs, REDPAPER)
    assert "CLIENT_HOST — Type: VARCHAR(255); Description: Host name of the current client" in _page_text(redpaper, 12)
    assert "USER or SESSION_USER — Corresponding value: The effective user" in _page_text(redpaper, 11)
    for section in redpaper.sections:  # offsets stay exact: every section is its page's text, nothing else
        assert redpaper.text[section.start : section.end].strip()
    assert "Names the row permission for row access control —" not in redpaper.text, "a diagram is not a table"


def test_a_pdf_pdfplumber_cannot_read_keeps_pypdf_text() -> None:
    assert document_tables(b"%PDF-1.4 not really", ["Texas 1 2 3", "x"]) == [[], []]
    text = "Line one\nLine two"
    assert rewrite_page(text, []) == text


def test_a_table_row_is_one_quotable_unit() -> None:
    headers = ["State", "Permit", "Handgun", "Totals"]
    (row,) = table_row(headers, ["Texas", "21,550", "56,941", "146,982"])
    assert row == "Texas — Permit: 21,550; Handgun: 56,941; Totals: 146,982" and is_table_row(row)
    assert not is_table_row("The FAA estimates that this proposed AD affects 73 airplanes: all of them.")
    table = Table(
        [], headers, [["Texas", "21,550", "56,941", "146,982"], ["Utah", "10,429", "", "20,000"]], frozenset()
    )
    text = "Prose above the table.\n" + "\n".join(table.lines()) + "\nProse below it."
    units = quotable(text)
    assert [u.kind for u in units if u.text.startswith(("Texas", "Utah"))] == ["row", "row"]
    assert "Utah — Permit: 10,429; Totals: 20,000" in [u.text for u in units], "an empty cell is left out"


@pytest.mark.parametrize(
    ("question", "quote"),
    [
        ("How many handgun checks were run in Texas?", "Texas — Handgun: 56,941"),
        ("What was the number of long gun background checks in Texas?", "Texas — Long Gun: 51,670"),
        ("How many checks were run in Texas?", "Texas — Permit: 21,550; Handgun: 56,941; Long Gun: 51,670"),
    ],
)
def test_a_question_naming_a_column_gets_that_cell_with_its_labels(question: str, quote: str) -> None:
    row = "Texas — Permit: 21,550; Handgun: 56,941; Long Gun: 51,670; Pre-Pawn Handgun: 29"
    assert table_cells(row, set(analyze([question])[0])).startswith(quote)


def test_a_row_without_a_name_keeps_the_cells_that_name_it() -> None:
    row = "# enc-layers: 6; # dec-layers: 6; Language: HTML; TEDs simple: 0.969; Inference time (secs): 5.39"
    asked = set(analyze(["How long did HTML with six encoder and six decoder layers take?"])[0])
    assert table_cells(row, asked) == row, "cut to the layer columns, it would lose the time asked for"


@pytest.mark.slow
def test_a_table_question_is_answered_with_the_cell_and_its_labels(
    tmp_path: Path, embedder: Embedder, shared_pdfs: Path
) -> None:
    root = tmp_path / "pdfs"
    root.mkdir()
    shutil.copy(shared_pdfs / NICS, root)
    settings = Settings(data_dir=tmp_path / "kb", default_collection="tables")
    ingestor = Ingestor(settings, embedder=embedder)
    assert ingestor.ingest_paths([root], collection="tables").added == 1
    service = QueryService(settings, reader=reader_for(ingestor))

    async def ask() -> str:
        try:
            response = await service.answer("How many handgun checks did NICS run in Texas?", collection="tables")
            assert response.citations and response.citations[0].page == 1
            return response.answer
        finally:
            await service.aclose()

    answer = asyncio.run(ask())
    assert "Texas — Handgun: 56,941" in answer
