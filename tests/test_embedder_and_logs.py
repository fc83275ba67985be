"""The embedding model's identity and failure modes, and the structured request log."""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from ingest.embedder import Embedder, resolve_model
from ingest.errors import EmbeddingModelError
from server.http.observability import JsonFormatter, StderrHandler


def test_packaged_model_loads_offline_and_embeds_normalized(embedder: Embedder) -> None:
    assert embedder.identity == "sentence-transformers/all-MiniLM-L6-v2"
    assert (embedder.dimension, embedder.window) == (384, 256)
    vectors = embedder.embed(["Backups run nightly.", "The cache keeps answers for a week."])
    assert vectors.shape == (2, 384) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert np.allclose(embedder.embed_query("Backups run nightly."), vectors[0], atol=1e-5)


@pytest.mark.parametrize("alias", ["all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"])
def test_aliases_of_the_packaged_model_resolve_to_its_folder(alias: str) -> None:
    source = resolve_model(alias)
    assert not source.needs_hub and (Path(source.load_from) / "modules.json").exists()


def test_a_local_folder_is_used_as_is(embedder: Embedder, tmp_path: Path) -> None:
    folder = Path(resolve_model("all-MiniLM-L6-v2").load_from)
    source = resolve_model(str(folder))
    assert (source.load_from, source.needs_hub) == (str(folder.resolve()), False)


@pytest.mark.slow
def test_two_models_in_folders_of_the_same_name_have_different_identities(tmp_path: Path) -> None:
    packaged = Path(resolve_model("all-MiniLM-L6-v2").load_from)
    first, second = tmp_path / "a" / "model", tmp_path / "b" / "model"
    shutil.copytree(packaged, first)
    shutil.copytree(packaged, second)
    assert resolve_model(str(first)).identity == resolve_model(str(second)).identity, "same files: same model"
    config = json.loads((second / "config.json").read_text())
    config["hidden_dropout_prob"] = 0.2  # another model, same folder name
    (second / "config.json").write_text(json.dumps(config))
    assert resolve_model(str(first)).identity != resolve_model(str(second)).identity
    assert resolve_model(str(first)).identity.startswith("local:model:")


def test_the_log_handler_writes_to_the_current_stderr(monkeypatch: pytest.MonkeyPatch) -> None:
    """A server thread that outlives a test (or a daemon whose stderr was replaced) must not write to a
    closed stream: the handler looks up sys.stderr at every record."""
    import io
    import sys

    handler = StderrHandler()
    handler.setFormatter(JsonFormatter())
    first, second = io.StringIO(), io.StringIO()
    monkeypatch.setattr(sys, "stderr", first)
    handler.emit(logging.makeLogRecord({"msg": "one", "levelname": "INFO", "name": "ragkb.http"}))
    first.close()
    monkeypatch.setattr(sys, "stderr", second)
    handler.emit(logging.makeLogRecord({"msg": "two", "levelname": "INFO", "name": "ragkb.http"}))
    assert json.loads(second.getvalue())["message"] == "two"


@pytest.mark.slow
def test_loading_the_packaged_model_leaves_the_process_environment_alone() -> None:
    import subprocess
    import sys

    code = (
        "import os; from ingest.embedder import Embedder; Embedder('all-MiniLM-L6-v2'); "
        "print(os.environ.get('HF_HUB_OFFLINE'), os.environ.get('TRANSFORMERS_OFFLINE'))"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["None", "None"]


@pytest.mark.parametrize(
    ("name", "message"),
    [("/nowhere/models/minilm", "no model folder at /nowhere/models/minilm"), ("./missing-model", "no model folder")],
)
def test_missing_model_paths_fail_at_once(name: str, message: str) -> None:
    with pytest.raises(EmbeddingModelError, match=message):
        resolve_model(name)


def test_a_folder_without_a_model_is_refused(tmp_path: Path) -> None:
    with pytest.raises(EmbeddingModelError, match="holds no sentence-transformers model"):
        resolve_model(str(tmp_path))


def test_request_log_is_json_with_the_request_id(
    caplog: pytest.LogCaptureFixture, tmp_path: Path, embedder: Embedder
) -> None:
    from fastapi.testclient import TestClient

    from ingest.config import Settings
    from server.answering.reader import Reader
    from server.answering.service import QueryService
    from server.http.api import create_app

    settings = Settings(data_dir=tmp_path)
    app = create_app(settings, QueryService(settings, reader=Reader(settings, embedder=embedder)))
    with caplog.at_level(logging.INFO, logger="ragkb.http"), TestClient(app) as client:
        response = client.get("/healthz", headers={"X-Request-ID": "req-42"})
    [record] = [r for r in caplog.records if r.name == "ragkb.http"]
    line = json.loads(JsonFormatter().format(record))
    assert line["request_id"] == response.headers["x-request-id"] == "req-42"
    assert (line["route"], line["status"], line["method"]) == ("/healthz", 200, "GET")
    assert line["level"] == "info" and line["ms"] >= 0


@pytest.mark.slow
def test_the_embedder_can_be_shared_by_threads(embedder: Embedder) -> None:
    """The server embeds from a thread pool; a fast tokenizer called from two threads at once fails
    ("Already borrowed", ragged batches), so the embedder serialises its model."""
    from concurrent.futures import ThreadPoolExecutor

    def work(i: int) -> int:
        texts = [f"question {i} " + "word " * (i % 7 * 9), "short", "a somewhat longer sentence " * (i % 3 + 1)]
        vectors = embedder.embed(texts)
        lengths = embedder.tokenizer(texts, add_special_tokens=False)["input_ids"]
        return int(vectors.shape[0]) + len(lengths)

    with ThreadPoolExecutor(max_workers=8) as pool:
        assert list(pool.map(work, range(400))) == [6] * 400


def test_request_ids_are_unique_random_hex_across_threads_and_a_forked_child() -> None:
    from concurrent.futures import ThreadPoolExecutor

    from server.http.observability import new_request_id

    with ThreadPoolExecutor(max_workers=4) as pool:
        ids = [i for batch in pool.map(lambda _: [new_request_id() for _ in range(700)], range(4)) for i in batch]
    assert len(set(ids)) == len(ids) == 2800  # several 4 KB batches, read by four threads at once
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in ids)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next ids come from its own buffer, not a copy of the parent's
        os.write(write, " ".join(new_request_id() for _ in range(4)).encode())
        os._exit(0)
    os.close(write)
    child = os.read(read, 4096).decode().split()
    os.waitpid(pid, 0)
    parent = [new_request_id() for _ in range(4)]
    assert len(child) == 4 and not set(child) & set(parent)


def test_log_lines_carry_their_own_second() -> None:
    formatter = JsonFormatter()
    first = logging.LogRecord("ragkb.http", logging.INFO, __file__, 1, "request", None, None)
    later = logging.LogRecord("ragkb.http", logging.INFO, __file__, 1, "request", None, None)
    later.created = first.created + 1.0
    times = [json.loads(formatter.format(r))["time"] for r in (first, first, later)]
    assert times[0] == times[1] != times[2]
    assert times[2] == formatter.formatTime(later, "%Y-%m-%dT%H:%M:%S")
