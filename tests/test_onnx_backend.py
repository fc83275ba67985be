"""The ONNX Runtime embedding backends: the same vectors as torch (fp32) or close to them (int8), an identity
that keeps collections of different backends apart, and an export that happens once, under a lock."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

import ingest.embedder as embedder_module
import ingest.onnx_backend as onnx_backend
from ingest import backend_choice
from ingest.config import Settings
from ingest.embedder import Embedder, get_embedder
from ingest.errors import EmbeddingModelError
from ingest.pipeline import Ingestor
from server.answering.reader import Reader

from .helpers import reader_for


@pytest.fixture(scope="session")
def onnx_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cache root holding one real export of the packaged MiniLM, made once per test session."""
    root = tmp_path_factory.mktemp("onnx-cache")
    Embedder(backend="onnx", cache_root=root)
    return root


@pytest.fixture(scope="session")
def torch_embedder() -> Embedder:
    return get_embedder(backend="torch")


@pytest.fixture(scope="session")
def sample(scifact_dir: Path) -> list[str]:
    """Short questions, whole abstracts (some longer than the 256-token window) and odd whitespace."""
    lines = (scifact_dir / "corpus.jsonl").read_text(encoding="utf-8").splitlines()
    abstracts = [json.loads(line)["text"] for line in lines[:40:2]]
    return [
        "What lowers hepatic glucose production?",
        "  gate valves  ",
        "x",
        abstracts[0] * 3,  # truncated at the window on both sides
        *abstracts,
    ]


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.asarray((a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)))


@pytest.mark.slow
def test_onnx_fp32_matches_torch(onnx_cache: Path, torch_embedder: Embedder, sample: list[str]) -> None:
    onnx = Embedder(backend="onnx", cache_root=onnx_cache)
    assert (onnx.dimension, onnx.window) == (torch_embedder.dimension, torch_embedder.window)
    vectors = onnx.embed(sample)
    assert vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert _cosines(vectors, torch_embedder.embed(sample)).min() >= 0.9999
    # the tokenizer the chunker counts with is the same one
    assert (
        onnx.tokenizer(sample[:2], add_special_tokens=False)["input_ids"]
        == torch_embedder.tokenizer(sample[:2], add_special_tokens=False)["input_ids"]
    )


@pytest.mark.slow
def test_onnx_int8_is_close_to_torch(onnx_cache: Path, torch_embedder: Embedder, sample: list[str]) -> None:
    int8 = Embedder(backend="onnx-int8", cache_root=onnx_cache)
    cosines = _cosines(int8.embed(sample), torch_embedder.embed(sample))
    real = [i for i, text in enumerate(sample) if len(text.strip()) > 1]  # questions, phrases and abstracts
    assert cosines[real].min() >= 0.98
    assert cosines.mean() >= 0.99
    # a one-character text is the worst case measured (0.978 on this machine): still close, but not as close
    assert cosines[sample.index("x")] >= 0.95
    # dynamic quantisation scales activations per batch, so a text's int8 vector depends a little on the texts
    # batched with it (fp32 does not): a question embedded alone stays as close as the bound above
    one_by_one = np.stack([int8.embed([text])[0] for text in sample[:6]])
    alone_vs_batched = _cosines(one_by_one, int8.embed(sample[:6]))
    assert alone_vs_batched[[i for i in real if i < 6]].min() >= 0.98
    assert alone_vs_batched.min() < 0.9999  # the dependence exists (if this fails, update docs/speed.md)


@pytest.mark.slow
def test_a_collection_is_never_queried_with_another_backend(
    onnx_cache: Path, torch_embedder: Embedder, settings: Settings, tmp_path: Path
) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "pump.md").write_text("# Pump\n\nReplace the impeller seal every 2,000 hours.\n")
    Ingestor(settings, embedder=torch_embedder).ingest_paths([docs], collection="plant")
    int8 = Embedder(backend="onnx-int8", cache_root=onnx_cache)
    assert torch_embedder.identity == "sentence-transformers/all-MiniLM-L6-v2"  # what collections always recorded
    assert int8.identity == "sentence-transformers/all-MiniLM-L6-v2@onnx-int8-v3"  # the label names the recipe
    reader = Reader(settings, embedder=int8)
    with pytest.raises(EmbeddingModelError) as refused:
        reader.collection("plant")
    assert torch_embedder.identity in str(refused.value) and int8.identity in str(refused.value)
    # and the other way round: int8 vectors are not searched with torch questions either
    Ingestor(settings, embedder=int8).ingest_paths([docs], collection="plant-int8")
    with pytest.raises(EmbeddingModelError, match="@onnx-int8"):
        reader_for(Ingestor(settings, embedder=torch_embedder)).collection("plant-int8")
    pages = reader.store.iter_chunks(reader.collection("plant-int8"))
    assert {chunk.metadata["embed_model"] for page in pages for chunk in page} == {int8.identity}


@pytest.mark.slow
def test_the_export_is_reused_not_repeated(onnx_cache: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folders = list(onnx_cache.glob("all-MiniLM-L6-v2-*/meta.json"))
    assert len(folders) == 1
    before = folders[0].stat().st_mtime_ns
    Embedder(backend="onnx-int8", cache_root=onnx_cache)
    assert "exporting" not in capsys.readouterr().err
    said: list[str] = []
    folder = onnx_backend.ensure_exported(
        load_from="unused: the export exists",
        identity="sentence-transformers/all-MiniLM-L6-v2",
        fingerprint=_fingerprint(),
        needs_hub=False,
        cache_root=onnx_cache,
        progress=said.append,
    )
    assert said == [] and folder == folders[0].parent
    assert folders[0].stat().st_mtime_ns == before
    assert sorted(p.name for p in folder.iterdir()) == ["meta.json", "model-int8.onnx", "model.onnx", "tokenizer"]


def _fingerprint() -> str:
    from ingest.embedder import folder_fingerprint, resolve_model

    return folder_fingerprint(Path(resolve_model("all-MiniLM-L6-v2").load_from))


def _fake_export(calls: list[str], seconds: float = 0.3) -> object:
    def export(load_from: str, needs_hub: bool, identity: str, out: Path) -> None:
        calls.append(identity)
        time.sleep(seconds)  # long enough for the other callers to arrive while it runs
        for name in ("model.onnx", "model-int8.onnx"):
            (out / name).write_bytes(b"onnx")
        (out / "meta.json").write_text("{}")

    return export


def test_concurrent_exports_export_once_and_publish_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    monkeypatch.setattr(onnx_backend, "_export", _fake_export(calls))
    results: list[Path] = []

    def start() -> None:
        results.append(
            onnx_backend.ensure_exported(
                load_from="m",
                identity="org/model",
                fingerprint="f1",
                needs_hub=False,
                cache_root=tmp_path,
                progress=str,
            )
        )

    threads = [threading.Thread(target=start) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert calls == ["org/model"]
    assert len(set(results)) == 1 and (results[0] / "meta.json").is_file()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no staging folder left behind
    # another fingerprint (the model's files changed) is another export
    onnx_backend.ensure_exported(
        load_from="m", identity="org/model", fingerprint="f2", needs_hub=False, cache_root=tmp_path, progress=str
    )
    assert calls == ["org/model", "org/model"]


def test_a_half_written_export_is_replaced_and_a_failed_one_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = onnx_backend.cache_folder(tmp_path, "org/model", "f1")
    folder.mkdir(parents=True)
    (folder / "model.onnx").write_bytes(b"truncated")  # no meta.json: not a finished export
    calls: list[str] = []
    monkeypatch.setattr(onnx_backend, "_export", _fake_export(calls, 0))
    said: list[str] = []
    assert (
        onnx_backend.ensure_exported(
            load_from="m",
            identity="org/model",
            fingerprint="f1",
            needs_hub=False,
            cache_root=tmp_path,
            progress=said.append,
        )
        == folder
    )
    assert calls == ["org/model"] and (folder / "meta.json").is_file()
    assert "once per machine" in said[0] and "done in" in said[1]

    def broken(load_from: str, needs_hub: bool, identity: str, out: Path) -> None:
        (out / "model.onnx").write_bytes(b"half")
        raise EmbeddingModelError("the export failed")

    monkeypatch.setattr(onnx_backend, "_export", broken)
    with pytest.raises(EmbeddingModelError, match="the export failed"):
        onnx_backend.ensure_exported(
            load_from="m", identity="org/other", fingerprint="f1", needs_hub=False, cache_root=tmp_path, progress=str
        )
    assert not onnx_backend.cache_folder(tmp_path, "org/other", "f1").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_unknown_backends_are_refused_naming_the_valid_ones(tmp_path: Path) -> None:
    with pytest.raises(EmbeddingModelError, match="choose one of: torch, onnx, onnx-int8"):
        Embedder(backend="tensorrt", cache_root=tmp_path)
    with pytest.raises(ValidationError, match="'auto', 'torch', 'onnx' or 'onnx-int8'"):
        Settings(embed_backend="onnx-fp16")  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        Settings(embed_threads=-1)


@pytest.mark.slow
def test_question_vectors_are_cached_and_bounded(torch_embedder: Embedder, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch_embedder, "QUERY_CACHE_SIZE", 2)
    monkeypatch.setattr(torch_embedder, "_query_vectors", type(torch_embedder._query_vectors)())
    calls: list[list[str]] = []
    embed = torch_embedder.embed

    def counting(texts: list[str], **kwargs: bool) -> np.ndarray:
        calls.append(texts)
        return embed(texts, **kwargs)

    monkeypatch.setattr(torch_embedder, "embed", counting)
    first = torch_embedder.embed_query("what is a pump")
    assert torch_embedder.embed_query("what is a pump") is first and len(calls) == 1
    torch_embedder.embed_query("what is a valve")
    torch_embedder.embed_query("what is a pump")  # recently used again: the valve is now the oldest
    torch_embedder.embed_query("what is a seal")
    assert list(torch_embedder._query_vectors) == ["what is a pump", "what is a seal"]
    assert len(calls) == 3


MINILM = "sentence-transformers/all-MiniLM-L6-v2"


def test_auto_picks_onnx_int8_for_a_new_store_and_keeps_what_a_store_was_built_with() -> None:
    int8 = f"{MINILM}@onnx-int8-v3"
    assert backend_choice.choose([], MINILM)[0] == "onnx-int8"
    # other models' collections, and collections that recorded no model, say nothing about this one
    assert backend_choice.choose(["org/other-model", "org/other-model@onnx-int8-v3", None], MINILM)[0] == "onnx-int8"
    assert backend_choice.choose([MINILM, MINILM], MINILM)[0] == "torch"
    assert backend_choice.choose([MINILM, int8, int8], MINILM)[0] == "onnx-int8"
    backend, why = backend_choice.choose([MINILM, int8], MINILM)
    assert backend == "torch" and "1 torch, 1 onnx-int8" in why  # a tie keeps torch, the older default
    assert backend_choice.choose([f"{MINILM}@onnx-fp32"], MINILM)[0] == "onnx"
    # earlier int8 recipes' vectors are not this recipe's: such a collection is not counted as onnx-int8
    assert backend_choice.backend_of(f"{MINILM}@onnx-int8", MINILM) is None
    assert backend_choice.backend_of(f"{MINILM}@onnx-int8-v2", MINILM) is None
    # the default stays torch until onnx-int8 meets the quality bar (docs/speed.md, "Decision")
    assert Settings.model_fields["embed_backend"].default == "torch"


@pytest.mark.slow
def test_a_store_built_with_torch_keeps_torch_under_auto(
    onnx_cache: Path, torch_embedder: Embedder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(embedder_module, "_auto", {})  # the choice is made once per process and store
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "pump.md").write_text("# Pump\n\nReplace the impeller seal every 2,000 hours.\n")
    old = Settings(data_dir=tmp_path / "old", embed_backend="torch", embed_cache_dir=onnx_cache)
    Ingestor(old, embedder=torch_embedder).ingest_paths([docs], collection="plant")  # built before the change

    default = old.model_copy(update={"embed_backend": "auto"})
    reader = Reader(default)
    assert reader.embedder.backend == "torch" and reader.embedder is torch_embedder
    hits = reader.store.query(reader.collection("plant"), reader.embedder.embed_query("impeller seal"), k=1)
    assert "impeller seal" in hits[0].text
    # a collection created later in that store is built with torch too (one backend per process and store)
    Ingestor(default).ingest_paths([docs], collection="plant-2")
    assert reader.collection("plant-2").model == MINILM

    fresh = Settings(data_dir=tmp_path / "new", embed_backend="auto", embed_cache_dir=onnx_cache)
    new_reader = Reader(fresh)
    assert new_reader.embedder.backend == "onnx-int8"
    Ingestor(fresh).ingest_paths([docs], collection="plant")
    assert new_reader.collection("plant").model == f"{MINILM}@onnx-int8-v3"
    # the choice is made once: the new store now holding an int8 collection does not flip anything, and an
    # explicit backend still wins over `auto`
    assert get_embedder(settings=old.model_copy(update={"embed_backend": "auto"})) is torch_embedder
    assert get_embedder(settings=fresh.model_copy(update={"embed_backend": "torch"})) is torch_embedder
