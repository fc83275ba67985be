"""Format benchmark: what the loaders recover and how fast, on the shared test files.

    python -m eval.bench_formats [--shared DIR] [--min-seconds 1.0] [--no-ocr]

Per format (../shared/office/, Apache Tika's test documents): the share of the expected words (the
words of the phrases in `eval/format_expectations.py`, taken from Tika's own assertions) found in the
loaded text, and files/s of loading (parsing only, no embedding; each file loaded repeatedly for at least
`--min-seconds`). Then OCR: word recovery of each ../shared/scans/*.scanned.pdf against its ground truth,
beside pypdf's recovery on the same document's text original in ../shared/pdfs/docling/, their ratio
(target >= 0.95), and seconds per scanned page.
"""

from __future__ import annotations

import argparse
import re
import time
from collections import defaultdict
from pathlib import Path

from pypdf import PdfReader

from ingest.errors import IngestError
from ingest.linked import with_attachments_text
from ingest.loaders import load_bytes, load_pdf
from ingest.ocr import tesseract_status

from .format_expectations import EXPECTED

DEFAULT_SHARED = Path(__file__).resolve().parents[2] / "shared"


def words(text: str) -> set[str]:
    return set(re.findall(r"\w+", text.lower()))


def _timed_loads(data: bytes, name: str, min_seconds: float) -> tuple[str, float]:
    """The loaded text and files/s over repeated loads lasting at least `min_seconds`."""
    count, started, text = 0, time.perf_counter(), ""
    while True:
        text = with_attachments_text(load_bytes(data, name))  # an e-mail's attachments are stored beside it
        count += 1
        elapsed = time.perf_counter() - started
        if elapsed >= min_seconds:
            return text, count / elapsed


def bench_office(shared: Path, min_seconds: float) -> None:
    by_format: dict[str, list[tuple[int, int, float]]] = defaultdict(list)
    for name, phrases in sorted(EXPECTED.items()):
        path = shared / "office" / name
        expected = words(" ".join(phrases))
        try:
            text, rate = _timed_loads(path.read_bytes(), name, min_seconds)
        except IngestError as exc:
            print(f"  {name}: FAILED {exc}")
            by_format[path.suffix.lower()].append((0, len(expected), 0.0))
            continue
        by_format[path.suffix.lower()].append((len(expected & words(text)), len(expected), rate))
    print(f"{'format':8} {'files':>5} {'expected words':>15} {'share found':>12} {'files/s':>9}")
    for suffix, rows in sorted(by_format.items()):
        found, total = sum(r[0] for r in rows), sum(r[1] for r in rows)
        # files/s over the format's files: the harmonic mean, i.e. files divided by the time they take
        seconds = sum(1 / r[2] for r in rows if r[2])
        rate = len(rows) / seconds if seconds else 0.0
        print(f"{suffix:8} {len(rows):5d} {total:15d} {found / total:12.3f} {rate:9.1f}")


def bench_ocr(shared: Path) -> None:
    status = tesseract_status()
    if status:
        print(f"OCR: skipped ({status})")
        return
    print(f"\n{'scan':34} {'pages':>5} {'OCR words':>9} {'pypdf words':>11} {'ratio':>6} {'s/page':>7} {'conf':>5}")
    total_pages, total_seconds, ocr_found, pypdf_found, truth_total = 0, 0.0, 0, 0, 0
    for scan in sorted((shared / "scans").glob("*.scanned.pdf")):
        stem = scan.name.removesuffix(".scanned.pdf")
        truth = words((scan.parent / f"{stem}.groundtruth.md").read_text())
        started = time.perf_counter()
        doc = load_pdf(scan.read_bytes(), scan.name)
        seconds = time.perf_counter() - started
        original = shared / "pdfs" / "docling" / f"{stem}.pdf"
        text_layer = load_pdf(original.read_bytes(), original.name)
        pages = len(PdfReader(scan).pages)
        ocr_share = len(truth & words(doc.text)) / len(truth)
        pypdf_share = len(truth & words(text_layer.text)) / len(truth)
        confidences = [s.ocr_confidence for s in doc.sections if s.ocr_confidence is not None]
        mean_conf = sum(confidences) / len(confidences) if confidences else 0.0
        print(
            f"{scan.name:34} {pages:5d} {ocr_share:9.3f} {pypdf_share:11.3f} {ocr_share / pypdf_share:6.3f} "
            f"{seconds / pages:7.2f} {mean_conf:5.1f}"
        )
        total_pages += pages
        total_seconds += seconds
        ocr_found += len(truth & words(doc.text))
        pypdf_found += len(truth & words(text_layer.text))
        truth_total += len(truth)
    print(
        f"{'all scans':34} {total_pages:5d} {ocr_found / truth_total:9.3f} {pypdf_found / truth_total:11.3f} "
        f"{ocr_found / pypdf_found:6.3f} {total_seconds / total_pages:7.2f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shared", type=Path, default=DEFAULT_SHARED)
    parser.add_argument("--min-seconds", type=float, default=1.0, help="how long each file is loaded over and over")
    parser.add_argument("--no-ocr", action="store_true", help="skip the OCR part (it takes a minute or two)")
    args = parser.parse_args()
    bench_office(args.shared, args.min_seconds)
    if not args.no_ocr:
        bench_ocr(args.shared)


if __name__ == "__main__":
    main()
