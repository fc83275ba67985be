"""The BM25 index on disk is shared by every process of a data dir: two real processes rebuilding it at
the same moment (as `ragkb serve --workers 2` does after an ingest) both succeed and leave one valid build."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from ingest.config import Settings
from ingest.embedder import Embedder
from ingest.pipeline import Ingestor
from server.answering.lexical import LexicalIndexes

from .servers import ChromaServer

CHILD = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from ingest.config import Settings
    from ingest.store import open_store
    from server.answering.lexical import LexicalIndexes

    url, data_dir, go = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    store = open_store(Settings(chroma_url=url, data_dir=data_dir))
    collection = store.get("shared")
    while not go.exists():
        time.sleep(0.01)
    for _ in range(8):
        # a write that changes nothing but the generation, so every round is a rebuild race
        store.delete_stale_versions(collection, "no-such-document", keep="v")
        index = LexicalIndexes(store, data_dir / "lexical").get(collection)  # no in-memory copy: disk only
        assert index.search("impeller seal", 3), "the rebuilt index finds the pump document"
    print("ok")
    """
)


@pytest.mark.slow
def test_two_processes_rebuilding_at_once_both_succeed(tmp_path: Path, embedder: Embedder) -> None:
    with ChromaServer(tmp_path / "chroma") as url:
        settings = Settings(chroma_url=url, data_dir=tmp_path / "kb")
        docs = tmp_path / "docs"
        docs.mkdir()
        (docs / "pump.md").write_text("# Pump\n\nReplace the impeller seal every 2,000 hours.\n")
        (docs / "valves.md").write_text("# Valves\n\nExercise gate valves quarterly.\n")
        ingestor = Ingestor(settings, embedder=embedder)
        ingestor.ingest_paths([docs], collection="shared")
        go = tmp_path / "go"
        children = [
            subprocess.Popen(
                [sys.executable, "-c", CHILD, url, str(settings.data_dir), str(go)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(2)
        ]
        time.sleep(1.0)  # both import and connect, then start together
        go.touch()
        outcomes = [child.communicate(timeout=120) for child in children]
        for child, (out, errors) in zip(children, outcomes, strict=True):
            assert child.returncode == 0 and out.strip() == "ok", errors[-2000:]
        folder = settings.data_dir / "lexical" / "shared"
        leftovers = [p.name for p in folder.iterdir() if p.name.startswith(".")]
        assert leftovers == [], f"no staging folders or pointer files are left behind: {leftovers}"
        builds = [p for p in folder.iterdir() if p.is_dir()]
        assert 1 <= len(builds) <= 2, "the current build and at most the one before it"
        index = LexicalIndexes(ingestor.store, settings.data_dir / "lexical").get(ingestor.open_collection("shared"))
        assert [hit for hit, _ in index.search("impeller", 1)]
