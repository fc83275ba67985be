"""Ingestion benchmark: the pipeline's throughput next to the raw encoder on the same chunks, per backend.

    python -m eval.bench_ingest [--dataset DIR] [--docs 1000] [--backends torch onnx-int8]

For each embedding backend (RAGKB_EMBED_BACKEND; side by side in one run) it prints chunks/s and
tokens/s of the raw encoder and of the pipeline, their ratio (goal: >= 0.9), the time of an immediate
re-run with nothing changed (goal: >= 50x faster than the first), and each backend's pipeline
throughput as a multiple of torch's (goal for onnx-int8: >= 1.8x).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from ingest.config import EMBED_BACKENDS, Settings
from ingest.embedder import get_embedder
from ingest.pipeline import Ingestor

from .beir import read_corpus

DEFAULT_DATASET = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "scifact-train"


def measure(dataset: Path, docs: int, backend: str = "torch") -> dict[str, float]:
    """Ingest `docs` documents into a fresh store with one backend; time the raw encoder on the same chunks and
    an unchanged re-run."""
    with tempfile.TemporaryDirectory(prefix="ragkb-bench-") as tmp:
        root = Path(tmp)
        files = root / "files"
        files.mkdir()
        for doc in read_corpus(dataset, limit=docs):
            (files / f"{doc.doc_id}.txt").write_text(doc.content, encoding="utf-8")

        settings = Settings(data_dir=root / "kb")
        embedder = get_embedder(backend=backend)
        ingestor = Ingestor(settings, embedder=embedder)
        embedder.embed(["warm-up so neither side pays for lazy initialisation"] * 8)

        started = time.perf_counter()
        first = ingestor.ingest_paths([files], collection="bench")
        pipeline_seconds = time.perf_counter() - started

        collection = ingestor.open_collection("bench")
        texts = [chunk.text for page in ingestor.store.iter_chunks(collection) for chunk in page]
        started = time.perf_counter()
        embedder.encoder.encode(texts, embedder.batch_size)
        raw_seconds = time.perf_counter() - started

        started = time.perf_counter()
        rerun = ingestor.ingest_paths([files], collection="bench")
        rerun_seconds = time.perf_counter() - started

    if rerun.unchanged != first.added or rerun.chunks_added:
        raise RuntimeError("the re-run should have found every document unchanged")
    return {
        "documents": first.added,
        "chunks": first.chunks_added,
        "tokens": first.tokens_embedded,
        "failed": first.failed,
        "raw_seconds": raw_seconds,
        "pipeline_seconds": pipeline_seconds,
        "rerun_seconds": rerun_seconds,
        "throughput_ratio": raw_seconds / pipeline_seconds,
        "rerun_speedup": pipeline_seconds / rerun_seconds,
    }


def print_report(r: dict[str, float], backend: str = "torch", torch: dict[str, float] | None = None) -> None:
    chunks, tokens = r["chunks"], r["tokens"]
    raw, pipeline = r["raw_seconds"], r["pipeline_seconds"]
    print(f"== backend {backend} ==")
    print(f"documents: {r['documents']:.0f}, chunks: {chunks:.0f}, tokens: {tokens:.0f}, failed: {r['failed']:.0f}")
    print(f"{'':26}{'seconds':>10}{'chunks/s':>12}{'tokens/s':>12}")
    print(f"{'raw encoder':26}{raw:>10.2f}{chunks / raw:>12.1f}{tokens / raw:>12.0f}")
    print(f"{'ragkb ingest (full)':26}{pipeline:>10.2f}{chunks / pipeline:>12.1f}{tokens / pipeline:>12.0f}")
    print(f"{'ragkb ingest (unchanged)':26}{r['rerun_seconds']:>10.2f}")
    print(f"pipeline / raw throughput: {r['throughput_ratio']:.2f}  (goal >= 0.90)")
    print(f"first run / unchanged re-run: {r['rerun_speedup']:.0f}x  (goal >= 50x)")
    if torch is not None and backend != "torch":
        speedup = (chunks / pipeline) / (torch["chunks"] / torch["pipeline_seconds"])
        raw_speedup = (chunks / raw) / (torch["chunks"] / torch["raw_seconds"])
        print(f"vs torch, same run: pipeline {speedup:.2f}x, raw encoder {raw_speedup:.2f}x  (goal onnx-int8 >= 1.8x)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", type=Path, default=DEFAULT_DATASET, help="BEIR dataset folder")
    parser.add_argument("--docs", type=int, default=1000, help="how many corpus documents to ingest")
    parser.add_argument(
        "--backends", nargs="+", default=["torch", "onnx-int8"], choices=EMBED_BACKENDS, help="embedding backends"
    )
    args = parser.parse_args()
    results = {backend: measure(args.dataset, args.docs, backend) for backend in args.backends}
    for backend, result in results.items():
        print_report(result, backend, results.get("torch"))


if __name__ == "__main__":
    main()
