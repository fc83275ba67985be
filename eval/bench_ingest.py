"""Ingestion benchmark: the pipeline's throughput next to raw `model.encode` on the same chunks, same run.

    python -m eval.bench_ingest [--dataset DIR] [--docs 1000]

Prints chunks/s and tokens/s for both, their ratio (goal: >= 0.9), and the time
of an immediate re-run with nothing changed (goal: >= 50x faster than the first).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from ingest.config import Settings
from ingest.embedder import get_embedder
from ingest.pipeline import Ingestor

from .beir import read_corpus

DEFAULT_DATASET = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "scifact-train"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", type=Path, default=DEFAULT_DATASET, help="BEIR dataset folder")
    parser.add_argument("--docs", type=int, default=1000, help="how many corpus documents to ingest")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="ragkb-bench-") as tmp:
        root = Path(tmp)
        files = root / "files"
        files.mkdir()
        for doc in read_corpus(args.dataset, limit=args.docs):
            (files / f"{doc.doc_id}.txt").write_text(doc.content, encoding="utf-8")

        settings = Settings(data_dir=root / "kb")
        embedder = get_embedder(settings.embed_model, settings.embed_batch_size)
        ingestor = Ingestor(settings, embedder=embedder)
        embedder.embed(["warm-up so neither side pays for lazy initialisation"] * 8)

        started = time.perf_counter()
        first = ingestor.ingest_paths([files], collection="bench")
        pipeline_seconds = time.perf_counter() - started

        stored = ingestor.open_collection("bench").get(include=["documents"])
        texts = list(stored["documents"])
        started = time.perf_counter()
        embedder.model.encode(texts, batch_size=settings.embed_batch_size, normalize_embeddings=True)
        raw_seconds = time.perf_counter() - started

        started = time.perf_counter()
        rerun = ingestor.ingest_paths([files], collection="bench")
        rerun_seconds = time.perf_counter() - started

    chunks, tokens = first.chunks_added, first.tokens_embedded
    assert rerun.unchanged == first.added and rerun.chunks_added == 0, "re-run should find everything unchanged"
    print(f"documents: {first.added}, chunks: {chunks}, tokens: {tokens}, failed: {first.failed}")
    print(f"{'':24}{'seconds':>10}{'chunks/s':>12}{'tokens/s':>12}")
    print(f"{'raw model.encode':24}{raw_seconds:>10.2f}{chunks / raw_seconds:>12.1f}{tokens / raw_seconds:>12.0f}")
    print(
        f"{'ragkb ingest (full)':24}{pipeline_seconds:>10.2f}"
        f"{chunks / pipeline_seconds:>12.1f}{tokens / pipeline_seconds:>12.0f}"
    )
    print(f"{'ragkb ingest (unchanged)':24}{rerun_seconds:>10.2f}")
    print(f"pipeline / raw throughput: {raw_seconds / pipeline_seconds:.2f}  (goal >= 0.90)")
    print(f"first run / unchanged re-run: {pipeline_seconds / rerun_seconds:.0f}x  (goal >= 50x)")


if __name__ == "__main__":
    main()
