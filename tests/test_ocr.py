"""OCR with the real Tesseract (installed by `make ocr`) on the shared scans and Tika's OCR images: words
recovered against the ground truth, the page and confidence kept, time limits, and a clear report on a
machine without Tesseract."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from ingest.config import get_settings
from ingest.errors import EmptyDocument
from ingest.loaders import load_bytes, load_pdf
from ingest.ocr import parse_tsv, tesseract_status

SHARED = Path(__file__).resolve().parents[2] / "shared"
SCANS = SHARED / "scans"


def _words(text: str) -> set[str]:
    return set(re.findall(r"\w+", text.lower()))


def _truth(scan: Path) -> set[str]:
    return _words(scan.with_name(scan.name.replace(".scanned.pdf", ".groundtruth.md")).read_text())


@pytest.fixture
def ocr_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """RAGKB_OCR_* settings for one test (settings are read once per process, so the cache is reset)."""
    get_settings.cache_clear()
    yield monkeypatch
    monkeypatch.undo()
    get_settings.cache_clear()


def test_tesseract_is_installed_by_the_repository() -> None:
    assert shutil.which("tesseract"), "`make ocr` (a dependency of `make test`) installs Tesseract"
    assert tesseract_status() is None


@pytest.mark.slow
def test_scanned_page_is_read_with_its_page_and_confidence() -> None:
    scan = SCANS / "2305.03393v1-pg9.scanned.pdf"
    doc = load_pdf(scan.read_bytes(), scan.name)
    truth = _truth(scan)
    assert len(truth & _words(doc.text)) / len(truth) >= 0.95
    [section] = doc.sections
    assert section.page == 1
    assert section.ocr_confidence is not None and 80 <= section.ocr_confidence <= 100


@pytest.mark.slow
def test_multi_page_scan_keeps_every_page() -> None:
    scan = SCANS / "multi_page.scanned.pdf"
    doc = load_pdf(scan.read_bytes(), scan.name)
    assert [s.page for s in doc.sections] == [1, 2, 3, 4, 5]
    truth = _truth(scan)
    assert len(truth & _words(doc.text)) / len(truth) >= 0.95
    assert all(s.ocr_confidence and s.ocr_confidence > 80 for s in doc.sections)


@pytest.mark.slow
def test_pdf_with_a_text_layer_is_not_ocred() -> None:
    pdf = SHARED / "pdfs" / "docling" / "multi_page.pdf"
    doc = load_pdf(pdf.read_bytes(), pdf.name)
    assert doc.sections and all(s.ocr_confidence is None for s in doc.sections)


def _count(name: str, **labels: str) -> float:
    from prometheus_client import REGISTRY

    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.mark.slow
def test_tika_ocr_files() -> None:
    read_before = _count("ragkb_ocr_pages_total", outcome="read")
    office = SHARED / "office"
    pdf = load_bytes((office / "testOCR.pdf").read_bytes(), "testOCR.pdf")
    assert "Happy New Year 2003!" in pdf.text  # Tika's TesseractOCRParserTest
    image = load_bytes((office / "testOCR_spacing.png").read_bytes(), "testOCR_spacing.png")
    assert "The quick brown fox" in image.text and image.kind == "image"
    assert image.sections[0].ocr_confidence and image.sections[0].ocr_confidence > 80
    assert _count("ragkb_ocr_pages_total", outcome="read") == read_before + 2  # the PDF's page and the image


def test_without_tesseract_scans_are_reported_not_crashed(ocr_env: pytest.MonkeyPatch) -> None:
    ocr_env.setenv("RAGKB_OCR_TESSERACT", "no-such-tesseract")
    get_settings.cache_clear()
    scan = SCANS / "2305.03393v1-pg9.scanned.pdf"
    with pytest.raises(EmptyDocument, match=r"scanned or image-only PDF \(run OCR first: Tesseract is not installed"):
        load_bytes(scan.read_bytes(), scan.name)
    with pytest.raises(EmptyDocument, match="only be read by OCR, and Tesseract is not installed"):
        load_bytes((SHARED / "office" / "testOCR_spacing.png").read_bytes(), "spacing.png")
    ocr_env.setenv("RAGKB_OCR", "false")
    get_settings.cache_clear()
    with pytest.raises(EmptyDocument, match="RAGKB_OCR=false"):
        load_bytes(scan.read_bytes(), scan.name)


def test_page_time_limit_is_a_warning_naming_the_page(ocr_env: pytest.MonkeyPatch) -> None:
    ocr_env.setenv("RAGKB_OCR_PAGE_TIMEOUT", "0.05")
    get_settings.cache_clear()
    scan = SCANS / "2305.03393v1-pg9.scanned.pdf"
    timeouts = _count("ragkb_ocr_pages_total", outcome="timeout")
    with pytest.raises(EmptyDocument, match=r"page 1: OCR took longer than 0.05 s"):
        load_bytes(scan.read_bytes(), scan.name)
    assert _count("ragkb_ocr_pages_total", outcome="timeout") == timeouts + 1


def test_file_budget_stops_ocr_between_pages(ocr_env: pytest.MonkeyPatch) -> None:
    ocr_env.setenv("RAGKB_OCR_FILE_TIMEOUT", "0.5")
    get_settings.cache_clear()
    scan = SCANS / "multi_page.scanned.pdf"
    with pytest.raises(EmptyDocument, match=r"page 1: not OCRed; the file's OCR budget \(0.5 s"):
        load_bytes(scan.read_bytes(), scan.name)


def test_damaged_and_wrong_images_are_clear_errors() -> None:
    png = (SHARED / "office" / "testOCR_spacing.png").read_bytes()
    with pytest.raises(Exception, match="damaged") as caught:
        load_bytes(png[:40], "cut.png")
    assert type(caught.value).__name__ == "CorruptDocument"
    with pytest.raises(Exception, match="not a PNG, JPEG or TIFF") as wrong:
        load_bytes(b"GIF89a" + b"\x00" * 50, "image.png")
    assert type(wrong.value).__name__ == "CorruptDocument"


def test_tsv_lines_and_paragraphs() -> None:
    header = "level\tpage_num\tblock_num\tpar_num\tline_num\tword_num\tleft\ttop\twidth\theight\tconf\ttext"
    rows = [
        "5\t1\t1\t1\t1\t1\t0\t0\t1\t1\t90\tHello",
        "5\t1\t1\t1\t1\t2\t0\t0\t1\t1\t80\tworld",
        "5\t1\t1\t1\t2\t1\t0\t0\t1\t1\t70\tagain",
        "4\t1\t1\t2\t1\t0\t0\t0\t1\t1\t-1\t",
        "5\t1\t1\t2\t1\t1\t0\t0\t1\t1\t60\tNext",
        "5\t2\t1\t1\t1\t1\t0\t0\t1\t1\t50\tPage2",
    ]
    first, second = parse_tsv("\n".join([header, *rows]))
    assert first.text == "Hello world\nagain\n\nNext"
    assert first.confidence == pytest.approx(75.0) and first.words == 4
    assert second.text == "Page2"


def _mixed_pdf() -> bytes:
    """Page 1 with a text layer (docling's handbook page), page 2 a scan (its image-only copy)."""
    import io

    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter()
    writer.add_page(PdfReader(SHARED / "pdfs" / "docling" / "amt_handbook_sample.pdf").pages[0])
    writer.add_page(PdfReader(SCANS / "2305.03393v1-pg9.scanned.pdf").pages[0])
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


@pytest.mark.slow
def test_only_the_scanned_page_of_a_mixed_pdf_is_ocred(ocr_env: pytest.MonkeyPatch) -> None:
    doc = load_pdf(_mixed_pdf(), "mixed.pdf")
    text_page, scanned = doc.sections
    assert (text_page.page, text_page.ocr_confidence) == (1, None)
    assert scanned.page == 2 and scanned.ocr_confidence and scanned.ocr_confidence > 80
    truth = _truth(SCANS / "2305.03393v1-pg9.scanned.pdf")
    assert len(truth & _words(doc.text[scanned.start : scanned.end])) / len(truth) >= 0.95
    ocr_env.setenv("RAGKB_OCR_TESSERACT", "no-such-tesseract")
    get_settings.cache_clear()
    without = load_pdf(_mixed_pdf(), "mixed.pdf")  # the text page is kept, the scan is a warning
    assert [s.page for s in without.sections] == [1]
    assert any(
        w.startswith("page 2: no text layer, and not OCRed: Tesseract is not installed") for w in without.warnings
    )


@pytest.mark.slow
def test_jpeg_and_multi_page_tiff_images() -> None:
    import io

    from PIL import Image
    from pypdf import PdfReader

    scan = PdfReader(SCANS / "multi_page.scanned.pdf")
    jpegs = [scan.pages[i].images[0].data for i in (0, 1)]  # the scans as stored: JPEG
    assert all(data.startswith(b"\xff\xd8\xff") for data in jpegs)
    first = load_bytes(jpegs[0], "page1.jpg")
    assert first.kind == "image" and "Christopher Latham Sholes" in " ".join(first.text.split())
    frames = [Image.open(io.BytesIO(data)) for data in jpegs]
    tiff = io.BytesIO()
    frames[0].save(tiff, format="TIFF", save_all=True, append_images=frames[1:], compression="tiff_deflate")
    doc = load_bytes(tiff.getvalue(), "two-pages.tiff")
    assert [s.page for s in doc.sections] == [1, 2]
    assert "WordPerfect" in doc.text[doc.sections[1].start : doc.sections[1].end]
    assert all(s.ocr_confidence and s.ocr_confidence > 80 for s in doc.sections)
