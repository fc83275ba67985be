"""Bad input gets a clear, per-file error and loses nothing: the good files beside it still land."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from ingest.pipeline import Ingestor

from .helpers import blank_pdf, encrypted_pdf, truncated_pdf

GOOD = "The cache layer keeps answers for a day. Redis shares it between replicas.\n"

BadFile = Callable[[Path, Path], Path]


def _corrupt_pdf(root: Path, pdfs: Path) -> Path:
    path = root / "corrupt.pdf"
    path.write_bytes(truncated_pdf(pdfs / "docling" / "multi_page.pdf"))
    return path


def _garbage_pdf(root: Path, pdfs: Path) -> Path:
    path = root / "garbage.pdf"
    path.write_bytes(b"%PDF-1.7\n" + os.urandom(4000))
    return path


def _encrypted_pdf(root: Path, pdfs: Path) -> Path:
    path = root / "locked.pdf"
    path.write_bytes(encrypted_pdf(pdfs / "docling" / "amt_handbook_sample.pdf"))
    return path


def _image_only_pdf(root: Path, pdfs: Path) -> Path:
    path = root / "scan.pdf"
    path.write_bytes(blank_pdf())
    return path


def _empty_file(root: Path, pdfs: Path) -> Path:
    path = root / "empty.md"
    path.write_bytes(b"")
    return path


def _whitespace_file(root: Path, pdfs: Path) -> Path:
    path = root / "blank.txt"
    path.write_text("   \n\n\t  \n")
    return path


def _unsupported(root: Path, pdfs: Path) -> Path:
    path = root / "sheet.numbers"
    path.write_bytes(b"PK\x03\x04 a format ragkb does not read")
    return path


def _fake_spreadsheet(root: Path, pdfs: Path) -> Path:
    path = root / "sheet.xlsx"
    path.write_bytes(b"PK\x03\x04 not really a spreadsheet")
    return path


def _binary_txt(root: Path, pdfs: Path) -> Path:
    path = root / "junk.txt"
    path.write_bytes(os.urandom(5000))
    return path


def _too_large(root: Path, pdfs: Path) -> Path:
    path = root / "huge.txt"
    path.write_text("big file. " * 250_000)  # 2.5 MB against the 2 MB test limit
    return path


CASES: list[tuple[BadFile, str]] = [
    (_corrupt_pdf, "not a readable pdf"),
    (_garbage_pdf, "not a readable pdf"),
    (_encrypted_pdf, "password-protected"),
    (_image_only_pdf, "no extractable text"),
    (_empty_file, "empty"),
    (_whitespace_file, "empty"),
    (_unsupported, "unsupported file type .numbers"),
    (_fake_spreadsheet, "not a readable xlsx file"),
    (_binary_txt, "binary data"),
    (_too_large, "over the 2,000,000-byte limit"),
]


@pytest.mark.slow
@pytest.mark.parametrize(("make", "message"), CASES, ids=[c[0].__name__.strip("_") for c in CASES])
def test_bad_file_fails_alone_with_a_clear_error(
    ingestor: Ingestor, tmp_path: Path, shared_pdfs: Path, make: BadFile, message: str
) -> None:
    root = tmp_path / "in"
    root.mkdir()
    (root / "good.txt").write_text(GOOD)
    bad = make(root, shared_pdfs)
    report = ingestor.ingest_paths([root / "good.txt", bad], collection="bad")
    assert report.added == 1 and report.failed == 1
    [failure] = report.failures
    assert failure.path == str(bad)
    assert message in failure.error.lower()
    sources = {d.source for d in ingestor.store.documents(ingestor.open_collection("bad"))}
    assert sources == {str((root / "good.txt").resolve())}


def test_missing_path_is_a_failure_not_a_crash(ingestor: Ingestor, tmp_path: Path) -> None:
    (tmp_path / "good.txt").write_text(GOOD)
    report = ingestor.ingest_paths([tmp_path / "nope.pdf", tmp_path / "good.txt"], collection="bad")
    assert report.added == 1
    assert [(f.path, f.error) for f in report.failures] == [(str(tmp_path / "nope.pdf"), "no such file or directory")]


def test_symlink_loop_is_reported_and_walk_finishes(ingestor: Ingestor, tmp_path: Path) -> None:
    root = tmp_path / "tree"
    (root / "a" / "b").mkdir(parents=True)
    (root / "a" / "b" / "doc.txt").write_text(GOOD)
    (root / "a" / "b" / "loop").symlink_to(root / "a", target_is_directory=True)
    (root / "self").symlink_to(root, target_is_directory=True)
    report = ingestor.ingest_paths([root], collection="loops")
    assert (report.added, report.failed) == (1, 0)
    assert any("symlink loop" in w for w in report.warnings)


@pytest.mark.slow
def test_directory_walk_skips_unknown_types_and_honours_globs(ingestor: Ingestor, tmp_path: Path) -> None:
    root = tmp_path / "tree"
    (root / "drafts").mkdir(parents=True)
    (root / ".git").mkdir()
    (root / "keep.md").write_text("# Keep\n\nkept.\n")
    (root / "drafts" / "draft.md").write_text("# Draft\n\nnot yet.\n")
    (root / "photo.heic").write_bytes(b"\x00\x00\x00\x18ftypheic")
    (root / ".git" / "HEAD.txt").write_text("ref: refs/heads/main\n")
    report = ingestor.ingest_paths([root], collection="globs", exclude=["drafts/*"])
    assert (report.added, report.failed, report.skipped) == (1, 0, 1)
    report = ingestor.ingest_paths([root], collection="globs2", include=["*.md"])
    assert report.added == 2
