"""Scans: image files (PNG, JPEG, TIFF) and the image-only pages of PDFs, read by OCR (`ingest.ocr`).

A PDF page is OCRed when its text layer has fewer than `RAGKB_OCR_MIN_CHARS` characters and it holds an
image: its images (the scan) are handed to Tesseract as they are stored (JPEG stays JPEG), at the
resolution they have on the page. Each page has its own time limit and the file a budget; a page past
either, or one Tesseract cannot read, is a warning naming the page, never the file's failure.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import ocr
from ..errors import CorruptDocument, EmptyDocument, FileTooLarge
from ..metrics import OCR_SKIPPED
from ..models import ExtractedDocument
from .base import TextBuilder, check_bytes, reason

# At most this many images of one page are OCRed (the largest first); smaller ones are logos and rules.
MAX_IMAGES_PER_PAGE = 4
MIN_IMAGE_SIDE = 64

_MAGIC = {
    b"\x89PNG\r\n\x1a\n": "PNG",
    b"\xff\xd8\xff": "JPEG",
    b"II*\x00": "TIFF",
    b"MM\x00*": "TIFF",
}


def load_image(data: bytes, name: str) -> ExtractedDocument:
    """An image of text: one section per image page (a TIFF may hold several), with its OCR confidence."""
    check_bytes(data, name, kind="an image", binary_ok=True)
    kind = next((label for magic, label in _MAGIC.items() if data.startswith(magic)), None)
    if kind is None:
        raise CorruptDocument(f"{name}: not a PNG, JPEG or TIFF image (unknown signature)")
    size = ocr.image_size(data)
    if size is None:
        raise CorruptDocument(f"{name}: the {kind} image is damaged and cannot be decoded")
    if size[0] * size[1] > ocr.MAX_IMAGE_PIXELS:
        raise FileTooLarge(f"{name}: the image is {size[0]}x{size[1]} pixels (limit {ocr.MAX_IMAGE_PIXELS:,})")
    status = ocr.tesseract_status()
    if status:
        raise EmptyDocument(f"{name}: an image's text can only be read by OCR, and {status}")
    budget = ocr.Budget()
    try:
        pages = ocr.recognize(data, timeout=budget.file)
    except ocr.OcrFailed as exc:
        raise CorruptDocument(f"{name}: {exc}") from exc
    except ocr.OcrUnavailable as exc:
        raise EmptyDocument(f"{name}: an image's text can only be read by OCR, and {exc}") from exc
    out = TextBuilder()
    for number, page in enumerate(pages, start=1):
        out.section(page=number if len(pages) > 1 else None, confidence=page.confidence)
        for paragraph in page.text.split("\n\n"):
            out.add(paragraph)
    if not out.parts:
        raise EmptyDocument(f"{name}: OCR found no text in the image")
    return out.build(name, title=Path(name).stem, kind="image")


@dataclass
class PageOcr:
    """What OCR made of a PDF's scanned pages: text and confidence by page index, and warnings."""

    texts: dict[int, str] = field(default_factory=dict)
    confidences: dict[int, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    unavailable: str | None = None


def ocr_pdf_pages(reader: Any, indices: list[int]) -> PageOcr:
    """OCR the given pages (0-based) of an open pypdf reader, page by page within the time budget."""
    result = PageOcr()
    result.unavailable = ocr.tesseract_status()
    if result.unavailable and indices:
        OCR_SKIPPED.labels(reason="unavailable").inc(len(indices))
    if result.unavailable or not indices:
        return result
    budget = ocr.Budget()
    for index in indices:
        timeout = budget.next_page()
        if timeout is None:
            OCR_SKIPPED.labels(reason="budget").inc()
            result.warnings.append(
                f"page {index + 1}: not OCRed; the file's OCR budget ({budget.file:g} s, "
                "RAGKB_OCR_FILE_TIMEOUT) is spent"
            )
            continue
        try:
            images = _page_images(reader.pages[index])
        except MemoryError:
            raise
        except Exception as exc:
            result.warnings.append(f"page {index + 1}: its images could not be read for OCR ({reason(exc)})")
            continue
        texts: list[str] = []
        scores: list[tuple[float, int]] = []
        for data, dpi in images:
            try:
                for page in ocr.recognize(data, timeout=timeout, dpi=dpi):
                    if page.text.strip():
                        texts.append(page.text)
                        scores.append((page.confidence, page.words))
            except (ocr.OcrFailed, ocr.OcrUnavailable) as exc:
                result.warnings.append(f"page {index + 1}: {exc}")
                break
        if texts:
            words = sum(count for _, count in scores)
            result.texts[index] = "\n\n".join(texts)
            result.confidences[index] = sum(conf * count for conf, count in scores) / max(words, 1)
    return result


def _page_images(page: Any) -> list[tuple[bytes, int | None]]:
    """The page's largest images as (encoded bytes, resolution in dpi on the page)."""
    width_points = float(page.mediabox.width) or 612.0
    found: list[tuple[int, bytes, int | None]] = []
    for image in page.images:
        picture = image.image
        if picture is None:
            continue
        width, height = picture.size
        if min(width, height) < MIN_IMAGE_SIDE or width * height > ocr.MAX_IMAGE_PIXELS:
            continue
        dpi = round(width / (width_points / 72))
        found.append((width * height, image.data, dpi if 50 <= dpi <= 1200 else None))
    found.sort(key=lambda item: -item[0])
    return [(data, dpi) for _, data, dpi in found[:MAX_IMAGES_PER_PAGE]]
