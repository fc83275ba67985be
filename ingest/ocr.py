"""OCR with Tesseract, run as its own process (the `tesseract` CLI, TSV output) so a page that runs away is
killed at its time limit and never holds this process's GIL.

Used for PDF pages without a text layer (or with only a few characters of one) and for image files (PNG,
JPEG, TIFF). Each recognised page carries the mean word confidence (0-100) Tesseract reports, which is
stored with its chunks and shown in citations. Without Tesseract on the machine nothing fails: callers say
which pages were not read and why (`tesseract_status`).
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import subprocess
import time
from dataclasses import dataclass

from .config import get_settings
from .metrics import OCR_PAGES, OCR_SECONDS

log = logging.getLogger("ragkb.ocr")

# An image larger than this many pixels is not OCRed (a decompression bomb, or a poster no page needs).
MAX_IMAGE_PIXELS = 80_000_000
INSTALL_HINT = "install Tesseract (Debian: apt-get install tesseract-ocr tesseract-ocr-eng; `make ocr` does it)"


class OcrUnavailable(Exception):
    """Tesseract (or its language data) is not installed, or OCR is turned off."""


class OcrFailed(Exception):
    """Tesseract ran but could not read the image (a damaged image, a time limit)."""


@dataclass(frozen=True, slots=True)
class OcrPage:
    """The text Tesseract read on one page, in reading order, and its mean word confidence (0-100)."""

    text: str
    confidence: float
    words: int


@functools.lru_cache(maxsize=4)
def _languages(binary: str) -> frozenset[str]:
    try:
        listed = subprocess.run(
            [binary, "--list-langs"], capture_output=True, text=True, timeout=30, check=False
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return frozenset()
    return frozenset(line.strip() for line in listed.splitlines()[1:] if line.strip())


def tesseract_status() -> str | None:
    """None when OCR can run; else why not, in words a user can act on."""
    settings = get_settings()
    if not settings.ocr:
        return "OCR is turned off (RAGKB_OCR=false)"
    binary = shutil.which(settings.ocr_tesseract)
    if binary is None:
        return f"Tesseract is not installed; {INSTALL_HINT}"
    missing = [lang for lang in settings.ocr_lang.split("+") if lang not in _languages(binary)]
    if missing:
        return f"Tesseract has no language data for {'+'.join(missing)} (Debian: tesseract-ocr-{missing[0]})"
    return None


def recognize(image: bytes, *, timeout: float, dpi: int | None = None) -> list[OcrPage]:
    """The pages of an image file (one, or several for a multi-page TIFF), each within `timeout` seconds.

    Raises `OcrUnavailable` without Tesseract, `OcrFailed` when it cannot read the image or runs out of time.
    """
    reason = tesseract_status()
    if reason:
        raise OcrUnavailable(reason)
    settings = get_settings()
    command = [str(shutil.which(settings.ocr_tesseract)), "stdin", "stdout", "-l", settings.ocr_lang, "--psm", "3"]
    if dpi:
        command += ["--dpi", str(dpi)]
    command.append("tsv")
    # One thread per Tesseract: ingestion already runs in parallel, and OpenMP threads on a busy machine
    # only add contention (Tesseract's own advice for batch work).
    env = {**os.environ, "OMP_THREAD_LIMIT": "1"}
    started = time.monotonic()
    try:
        done = subprocess.run(command, input=image, capture_output=True, timeout=timeout, env=env, check=False)
    except subprocess.TimeoutExpired:
        OCR_PAGES.labels(outcome="timeout").inc()
        raise OcrFailed(f"OCR took longer than {timeout:g} s (RAGKB_OCR_PAGE_TIMEOUT)") from None
    except OSError as exc:
        raise OcrUnavailable(f"Tesseract could not be started ({exc})") from exc
    finally:
        OCR_SECONDS.observe(time.monotonic() - started)
    if done.returncode != 0:
        OCR_PAGES.labels(outcome="failed").inc()
        message = done.stderr.decode("utf-8", "replace").strip().splitlines()
        raise OcrFailed(f"Tesseract could not read the image ({message[-1] if message else done.returncode})")
    log.debug("ocr", extra={"seconds": round(time.monotonic() - started, 2), "bytes": len(image)})
    pages = parse_tsv(done.stdout.decode("utf-8", "replace"))
    OCR_PAGES.labels(outcome="read" if any(page.words for page in pages) else "empty").inc()
    return pages


def parse_tsv(tsv: str) -> list[OcrPage]:
    """Tesseract's TSV as pages of text: words joined into lines, lines into paragraphs ("\\n\\n" between
    paragraphs), with the mean confidence of the words that have one."""
    pages: dict[int, dict[tuple[int, int], dict[int, list[str]]]] = {}
    confidences: dict[int, list[float]] = {}
    for row in tsv.splitlines()[1:]:
        fields = row.split("\t")
        if len(fields) < 12 or fields[0] != "5":
            continue
        word = fields[11].strip()
        if not word:
            continue
        page, block, paragraph, line = (int(value) for value in fields[1:5])
        pages.setdefault(page, {}).setdefault((block, paragraph), {}).setdefault(line, []).append(word)
        confidence = float(fields[10])
        if confidence >= 0:
            confidences.setdefault(page, []).append(confidence)
    result: list[OcrPage] = []
    for page in sorted(pages):
        paragraphs = [
            "\n".join(" ".join(words) for _, words in sorted(lines.items())) for _, lines in sorted(pages[page].items())
        ]
        scores = confidences.get(page, [])
        result.append(
            OcrPage(
                text="\n\n".join(paragraphs),
                confidence=sum(scores) / len(scores) if scores else 0.0,
                words=len(scores),
            )
        )
    return result


class Budget:
    """The OCR time one file may spend in all (RAGKB_OCR_FILE_TIMEOUT), and each page (RAGKB_OCR_PAGE_TIMEOUT)."""

    def __init__(self) -> None:
        settings = get_settings()
        self.page, self.file = settings.ocr_page_timeout, settings.ocr_file_timeout
        self.deadline = time.monotonic() + self.file

    def next_page(self) -> float | None:
        """Seconds the next page may take, or None when the file's budget is spent."""
        left = self.deadline - time.monotonic()
        return min(self.page, left) if left > 1 else None


def image_size(data: bytes) -> tuple[int, int] | None:
    """An image's width and height from its header (Pillow reads no pixels for this), or None if unreadable."""
    import io

    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.size
    except Exception:
        return None
