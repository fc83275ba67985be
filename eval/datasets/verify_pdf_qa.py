"""Re-check the PDF question-answering development set against pypdf's text of the shared PDFs.

Run from the repository root: `python -m eval.datasets.verify_pdf_qa [path/to/set.jsonl]`.
Exits 1 if any record is malformed or an answer is not on the page it cites.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from collections import Counter
from functools import cache
from pathlib import Path

from pypdf import PdfReader

REPO_ROOT = Path(__file__).resolve().parents[2]
PDF_DIRS = (REPO_ROOT.parent / "shared" / "pdfs" / "docling", REPO_ROOT.parent / "shared" / "pdfs" / "pdfplumber")
DEFAULT_SET = Path(__file__).resolve().parent / "pdf-qa-dev.jsonl"
FIELDS = {"id", "question", "answer", "source", "page", "kind", "split"}
ANSWERABLE = {"factoid", "paraphrase", "table"}
SPLITS = {"tune", "check"}

logging.getLogger("pypdf").setLevel(logging.ERROR)
try:  # extract text the way the product does: no fontTools CFF decoding (see ingest/loaders.py)
    from pypdf.generic import _font

    _font.HAS_FONTTOOLS = False
except (ImportError, AttributeError):
    pass


def normalise(text: str) -> str:
    """Collapse runs of whitespace to one space and fold case."""
    return re.sub(r"\s+", " ", text).strip().casefold()


@cache
def page_texts(source: str) -> tuple[str, ...]:
    """The normalised pypdf text of every page of a shared PDF, or () if no such file exists."""
    for folder in PDF_DIRS:
        path = folder / source
        if path.is_file():
            return tuple(normalise(page.extract_text() or "") for page in PdfReader(path).pages)
    return ()


def check_record(record: dict[str, object]) -> list[str]:
    """Every problem with one record, as messages; empty if it is sound."""
    problems: list[str] = []
    if set(record) != FIELDS:
        problems.append(f"fields {sorted(record)} != {sorted(FIELDS)}")
    question, answer, source, page = (record.get(k) for k in ("question", "answer", "source", "page"))
    kind, split = record.get("kind"), record.get("split")
    if not isinstance(question, str) or not question.strip():
        problems.append("empty question")
    if split not in SPLITS:
        problems.append(f"split {split!r} not in {sorted(SPLITS)}")
    if kind == "unanswerable":
        if answer is not None or source is not None or page is not None:
            problems.append("unanswerable record must have answer, source and page null")
    elif kind not in ANSWERABLE:
        problems.append(f"unknown kind {kind!r}")
    elif not isinstance(answer, str) or not answer.strip():
        problems.append("answerable record without an answer")
    elif not isinstance(source, str) or not page_texts(source):
        problems.append(f"source PDF {source!r} not found under {[str(d) for d in PDF_DIRS]}")
    elif not isinstance(page, int) or isinstance(page, bool) or not 1 <= page <= len(page_texts(source)):
        problems.append(f"page {page!r} out of range for {source}")
    elif normalise(answer) not in page_texts(source)[page - 1]:
        problems.append(f"answer {answer!r} not found on page {page} of {source}")
    return problems


def main(argv: list[str]) -> int:
    path = Path(argv[0]) if argv else DEFAULT_SET
    records: list[dict[str, object]] = []
    failures = 0
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            print(f"line {number}: invalid JSON: {exc}")
            failures += 1
            continue
        if not isinstance(value, dict):
            print(f"line {number}: not a JSON object")
            failures += 1
            continue
        records.append(value)
        for problem in check_record(value):
            print(f"line {number} ({value.get('id')}): {problem}")
            failures += 1
    for record_id, count in Counter(str(r.get("id")) for r in records).items():
        if count > 1:
            print(f"id {record_id} used {count} times")
            failures += 1

    kinds = Counter(str(r.get("kind")) for r in records)
    splits = Counter((str(r.get("kind")), str(r.get("split"))) for r in records)
    print(f"{path.name}: {len(records)} records")
    for kind in sorted(kinds):
        print(f"  {kind:<13} {kinds[kind]:>3}  tune {splits[kind, 'tune']:>3}  check {splits[kind, 'check']:>3}")
    tune = sum(n for (_, split), n in splits.items() if split == "tune")
    print(f"  {'total':<13} {len(records):>3}  tune {tune:>3}  check {len(records) - tune:>3}")
    print("OK" if failures == 0 else f"FAILED: {failures} problem(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
