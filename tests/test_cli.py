"""The `ragkb` CLI contract that scripts and later checks rely on."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ragkb.cli import LAZY_GROUPS, app, load_group

from .processes import clean_env
from .servers import free_port

runner = CliRunner()

CONTRACT_KEYS = {"added", "updated", "unchanged", "failed", "chunks_added"}


def _ingest(*args: str) -> tuple[int, dict[str, object]]:
    result = runner.invoke(app, ["ingest", *args, "--json"])
    return result.exit_code, json.loads(result.stdout)


@pytest.mark.slow
def test_ingest_json_contract_and_exit_codes(cli_env: Path, tmp_path: Path, shared_pdfs: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    shutil.copy(shared_pdfs / "docling" / "amt_handbook_sample.pdf", docs)
    (docs / "faq.md").write_text("# FAQ\n\nAsk anything.\n")

    code, report = _ingest(str(docs), "--collection", "handbook")
    assert code == 0
    assert report.keys() >= CONTRACT_KEYS
    assert all(isinstance(report[k], int) for k in CONTRACT_KEYS)
    assert (report["added"], report["failed"], report["failures"]) == (2, 0, [])
    assert isinstance(report["chunks_added"], int) and report["chunks_added"] > 0

    code, again = _ingest(str(docs), "--collection", "handbook")
    assert (code, again["unchanged"], again["chunks_added"]) == (0, 2, 0)

    (docs / "broken.pdf").write_bytes(b"%PDF-1.4 nothing else")
    code, partial = _ingest(str(docs), str(tmp_path / "missing"), "--collection", "handbook")
    assert code == 1
    assert partial["failed"] == 2 and partial["unchanged"] == 2
    assert {f["path"] for f in partial["failures"]} == {str(docs / "broken.pdf"), str(tmp_path / "missing")}  # type: ignore[union-attr]
    assert all(f["error"] for f in partial["failures"])  # type: ignore[union-attr]


@pytest.mark.slow
def test_documents_collections_and_delete(cli_env: Path, tmp_path: Path) -> None:
    note = tmp_path / "note.txt"
    note.write_text("Chroma keeps the vectors. Redis keeps the cache.\n")
    assert _ingest(str(note), "-c", "notes")[0] == 0

    listed = json.loads(runner.invoke(app, ["collections", "--json"]).stdout)
    assert listed == [{"name": "notes", "chunks": 1, "model": "sentence-transformers/all-MiniLM-L6-v2"}]
    docs = json.loads(runner.invoke(app, ["documents", "-c", "notes", "--json"]).stdout)
    assert [(d["source"], d["chunk_count"]) for d in docs] == [(str(note.resolve()), 1)]

    deleted = runner.invoke(app, ["delete", docs[0]["document_id"], "-c", "notes", "--json"])
    assert deleted.exit_code == 0 and json.loads(deleted.stdout)["chunks_deleted"] == 1
    assert json.loads(runner.invoke(app, ["documents", "-c", "notes", "--json"]).stdout) == []

    again = runner.invoke(app, ["delete", docs[0]["document_id"], "-c", "notes"])
    assert again.exit_code == 1 and "no document" in again.stderr


@pytest.mark.slow
def test_unknown_collection_names_the_options(cli_env: Path, tmp_path: Path) -> None:
    note = tmp_path / "n.txt"
    note.write_text("text.\n")
    _ingest(str(note), "-c", "alpha")
    result = runner.invoke(app, ["documents", "-c", "beta"])
    assert result.exit_code == 1
    assert "'beta' does not exist" in result.stderr and "alpha" in result.stderr


def test_invalid_collection_name_is_explained(cli_env: Path, tmp_path: Path) -> None:
    note = tmp_path / "n.txt"
    note.write_text("text.\n")
    result = runner.invoke(app, ["ingest", str(note), "-c", "no spaces!"])
    assert result.exit_code == 2
    assert "invalid collection name" in result.stderr


def test_help_lists_the_commands() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("ingest", "delete", "collections", "documents"):
        assert command in result.stdout


def test_the_help_of_each_lazily_imported_group_is_its_own() -> None:
    """`ragkb --help` lists the named groups without importing them: what it says is what each group says."""
    for name, (_, _, listed) in LAZY_GROUPS.items():
        group = load_group(name)
        assert group.name == name and group.help == listed, name
        assert runner.invoke(app, [name, "--help"]).exit_code == 0, name


HEAVY = ("torch", "sentence_transformers", "chromadb", "sqlalchemy", "alembic", "server.state", "server.answering")


@pytest.mark.slow
def test_help_and_keys_import_only_what_they_use(tmp_path: Path) -> None:
    """`ragkb --help` imports neither the state database nor the answering stack; `ragkb keys list` imports the
    state database (SQLAlchemy, Alembic) and still no model, vector store or answering stack."""
    code = (
        "import sys\nfrom ragkb.cli import app\ntry:\n    app(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))"
    )
    env = clean_env(RAGKB_DATA_DIR=str(tmp_path / "kb"))
    helped = subprocess.run([sys.executable, "-c", code, "--help"], capture_output=True, text=True, env=env)
    assert "keys" in helped.stdout and helped.stdout.strip().splitlines()[-1] == "[]", helped.stdout[-500:]
    listed = subprocess.run([sys.executable, "-c", code, "keys", "list"], capture_output=True, text=True, env=env)
    assert listed.stdout.strip().splitlines()[-1] == "['alembic', 'server.state', 'sqlalchemy']", listed.stdout


@pytest.mark.slow
def test_ask_in_process_prints_answer_and_numbered_sources(cli_env: Path, tmp_path: Path) -> None:
    note = tmp_path / "backups.md"
    note.write_text("# Backups\n\nThe nightly backup copies the data directory to the archive server.\n")
    assert _ingest(str(note), "-c", "ops")[0] == 0
    result = runner.invoke(app, ["ask", "Where does the nightly backup go?", "-c", "ops"])
    assert result.exit_code == 0, result.output
    assert "archive server" in result.stdout and "[1]" in result.stdout
    assert "[1] Backups (backups.md" in result.stdout  # the display source: never the absolute path
    assert str(note.resolve()) not in result.stdout

    data = json.loads(runner.invoke(app, ["ask", "Where does the nightly backup go?", "-c", "ops", "--json"]).stdout)
    assert data["grounded"] and data["cached"] and data["citations"][0]["title"] == "Backups"

    stats = json.loads(runner.invoke(app, ["cache", "stats", "--json"]).stdout)
    # one answer, stored under its exact key and its fast-path key
    assert (stats["backend"], stats["entries"], stats["hits"], stats["misses"]) == ("sqlite", 2, 1, 1)
    cleared = runner.invoke(app, ["cache", "clear"])
    assert "removed 2 cache entries" in cleared.stdout


def test_ask_unknown_collection_fails_clearly(cli_env: Path) -> None:
    result = runner.invoke(app, ["ask", "anything", "-c", "ghost"])
    assert result.exit_code == 1 and "'ghost' does not exist" in result.stderr


def test_ask_through_a_server_that_is_not_there(cli_env: Path) -> None:
    result = runner.invoke(app, ["ask", "anything", "--server", f"http://127.0.0.1:{free_port()}"])
    assert result.exit_code == 2 and "cannot reach" in result.stderr
