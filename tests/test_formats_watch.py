"""`ragkb ingest DIR --watch`: new, changed and deleted files kept in step, bursts debounced into one pass,
SIGTERM a clean stop. The real Ingestor, Chroma and model; the real CLI as a process for the signal."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ingest.pipeline import Ingestor, IngestReport
from ingest.watch import FolderWatcher

SHARED = Path(__file__).resolve().parents[2] / "shared"
REPO = Path(__file__).resolve().parents[1]


def _wait_for(condition: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


@pytest.fixture
def watched(ingestor: Ingestor, tmp_path: Path) -> Iterator[tuple[Path, list[IngestReport]]]:
    folder = tmp_path / "watched"
    folder.mkdir()
    (folder / "notes.md").write_text("# Notes\n\nThe standup moved to 9:30.\n")
    reports: list[IngestReport] = []
    watcher = FolderWatcher(
        ingestor, [folder], collection="watched", interval=0.1, debounce=0.6, on_report=reports.append
    )
    stop = threading.Event()
    thread = threading.Thread(target=watcher.run, args=(stop,))
    thread.start()
    try:
        _wait_for(lambda: len(reports) == 1)
        yield folder, reports
    finally:
        stop.set()
        thread.join(timeout=30)
    assert not thread.is_alive()


def _sources(ingestor: Ingestor) -> set[str]:
    return {Path(d.source).name for d in ingestor.store.documents(ingestor.open_collection("watched"))}


@pytest.mark.slow
def test_watch_keeps_the_collection_in_step(ingestor: Ingestor, watched: tuple[Path, list[IngestReport]]) -> None:
    folder, reports = watched
    assert reports[0].added == 1 and _sources(ingestor) == {"notes.md"}

    shutil.copy(SHARED / "office" / "testPPT.pptx", folder / "deck.pptx")  # a new file
    _wait_for(lambda: len(reports) == 2)
    assert (reports[1].added, reports[1].unchanged) == (1, 1)

    for n in range(6):  # a burst of saves, each inside the quiet period: one pass
        (folder / "notes.md").write_text(f"# Notes\n\nThe standup moved to 9:{30 + n}.\n")
        time.sleep(0.1)
    _wait_for(lambda: len(reports) == 3)
    time.sleep(1.0)
    assert len(reports) == 3, "a burst is one pass"
    assert (reports[2].updated, reports[2].unchanged) == (1, 1)

    (folder / "deck.pptx").unlink()  # a deleted file
    _wait_for(lambda: len(reports) == 4)
    assert reports[3].deleted == 1 and _sources(ingestor) == {"notes.md"}

    (folder / "broken.docx").write_bytes(b"PK\x03\x04 not a document")  # a bad file fails alone
    _wait_for(lambda: len(reports) == 5)
    assert reports[4].failed == 1 and "not a readable DOCX" in reports[4].failures[0].error
    assert _sources(ingestor) == {"notes.md"}


@pytest.mark.slow
def test_sigterm_stops_the_watching_cli_cleanly(tmp_path: Path) -> None:
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "a.md").write_text("# A\n\nFirst file.\n")
    env = {**os.environ, "RAGKB_DATA_DIR": str(tmp_path / "kb"), "HF_HUB_OFFLINE": "1"}
    ragkb = str(Path(sys.executable).with_name("ragkb"))
    command = [ragkb, "ingest", str(folder), "--watch", "--json", "--interval", "0.2", "--debounce", "0.5",
               "--collection", "watched"]  # fmt: skip
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        first = json.loads(process.stdout.readline())
        assert first["added"] == 1
        (folder / "b.md").write_text("# B\n\nSecond file.\n")
        second = json.loads(process.stdout.readline())
        assert (second["added"], second["unchanged"]) == (1, 1)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_watch_takes_directories_only(cli_env: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from ragkb.cli import app

    note = tmp_path / "note.md"
    note.write_text("# Note\n\ntext\n")
    result = CliRunner().invoke(app, ["ingest", str(note), "--watch"])
    assert result.exit_code != 0 and "--watch takes directories" in result.output
