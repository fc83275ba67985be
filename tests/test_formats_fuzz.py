"""Mutated copies of the shared office files (seeded, a bounded number each): a loader either reads one or
raises its own `IngestError`; nothing else escapes, and no file takes its batch down."""

from __future__ import annotations

import io
import random
import zipfile
from pathlib import Path

import pytest

from ingest.errors import IngestError
from ingest.loaders import load_bytes
from ingest.pipeline import Ingestor

OFFICE = Path(__file__).resolve().parents[2] / "shared" / "office"
# The OCR inputs (testOCR.*) are left out: each mutant would cost a Tesseract run (tests/test_ocr.py covers them).
FILES = sorted(
    p
    for p in OFFICE.iterdir()
    if p.suffix in {".docx", ".pptx", ".xlsx", ".csv", ".odt", ".rtf", ".epub", ".eml", ".msg"}
)
MUTANTS_PER_FILE = 24
SEED = 20261203


def _flip(data: bytes, rng: random.Random) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randint(1, 20)):
        out[rng.randrange(len(out))] = rng.randrange(256)
    return bytes(out)


def _truncate(data: bytes, rng: random.Random) -> bytes:
    return data[: rng.randrange(1, len(data))]


def _splice(data: bytes, rng: random.Random) -> bytes:
    start = rng.randrange(len(data))
    return data[:start] + rng.randbytes(rng.randint(1, 64)) + data[start + rng.randint(0, 64) :]


def _mutate_member(data: bytes, rng: random.Random) -> bytes:
    """Rebuild the ZIP with one XML part damaged (valid container, broken content): what reaches the parsers."""
    try:
        source = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile:
        return _flip(data, rng)
    members = source.infolist()
    xml = [m for m in members if m.filename.endswith((".xml", ".rels", ".opf", ".html", ".xhtml"))] or members
    target = rng.choice(xml).filename
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as out:
        for member in members:
            content = source.read(member.filename)
            if member.filename == target and content:
                content = rng.choice([_flip, _truncate, _splice])(content, rng)
                if rng.random() < 0.3:  # nest deeply, or declare an entity
                    content = rng.choice([b"<a>" * 5000 + content, b'<!DOCTYPE x [<!ENTITY e "e">]>' + content])
            out.writestr(member.filename, content)
    return buffer.getvalue()


def mutants(path: Path) -> list[bytes]:
    rng = random.Random(f"{SEED}:{path.name}")
    data = path.read_bytes()
    strategies = [_flip, _truncate, _splice, _mutate_member]
    return [strategies[i % len(strategies)](data, rng) for i in range(MUTANTS_PER_FILE)]


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_no_exception_but_ingest_errors_escapes(path: Path) -> None:
    outcomes: dict[str, int] = {}
    for number, data in enumerate(mutants(path)):
        name = f"mutant{number}{path.suffix}"
        try:
            document = load_bytes(data, name)
        except IngestError as exc:
            assert name in str(exc), f"{type(exc).__name__} does not name the file: {exc}"
            outcomes[type(exc).__name__] = outcomes.get(type(exc).__name__, 0) + 1
            continue
        assert document.text.strip()
        for section in document.sections:
            assert 0 <= section.start < section.end <= len(document.text)
        outcomes["read"] = outcomes.get("read", 0) + 1
    assert sum(outcomes.values()) == MUTANTS_PER_FILE


@pytest.mark.slow
def test_a_batch_of_mutants_keeps_its_good_files(ingestor: Ingestor, tmp_path: Path) -> None:
    root = tmp_path / "mixed"
    root.mkdir()
    for path in FILES:
        (root / f"good-{path.name}").write_bytes(path.read_bytes())
        for number, data in enumerate(mutants(path)[:3]):
            (root / f"bad{number}-{path.name}").write_bytes(data)
    report = ingestor.ingest_paths([root], collection="fuzz")
    good = {f"good-{p.name}" for p in FILES if p.name != "testWORD_truncated.docx"}
    stored = {Path(d.source).name for d in ingestor.store.documents(ingestor.open_collection("fuzz"))}
    assert good <= stored
    assert report.added + report.failed == len(FILES) * 4
    assert all(failure.error for failure in report.failures)
