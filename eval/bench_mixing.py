"""What mixing embedding backends would cost: questions embedded with one backend searched against a
collection embedded with another (which ragkb itself always refuses), scored on a BEIR dataset.

    python -m eval.bench_mixing [--dataset DIR] [--documents torch] [--queries onnx-int8]
                                [--retriever hybrid] [--query-ids eval/splits/scifact-train-check.txt]
                                [--out eval/baselines/scifact-train-check-hybrid-onnx-int8-on-torch.json]

It reuses the collection `ragkb eval run` built with the documents' backend under RAGKB_DATA_DIR (run
that first) and never writes to it: a document that would need embedding stops the measurement.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, cast

import numpy as np

from ingest.config import EMBED_BACKENDS, Settings
from ingest.embedder import Embedder, get_embedder
from ingest.errors import RagkbError
from server.answering.reader import Reader

from .bench_ingest import DEFAULT_DATASET
from .harness import EvalOptions, run_eval


class MixedEmbedder:
    """Questions from one embedder under the identity of the documents' one; refuses to embed documents."""

    def __init__(self, queries: Embedder, documents: Embedder) -> None:
        self.queries, self.documents = queries, documents
        self.identity = documents.identity
        self.dimension, self.window = documents.dimension, documents.window
        self.tokenizer = documents.tokenizer

    def embed(self, texts: list[str], *, show_progress: bool = False) -> np.ndarray:
        raise RagkbError(
            f"the mixing measurement found {len(texts)} chunks to embed: run `ragkb eval run` with "
            f"RAGKB_EMBED_BACKEND={self.documents.backend} on the same data dir first"
        )

    def embed_query(self, text: str) -> np.ndarray:
        return self.queries.embed_query(text)


def measure(
    dataset: Path, documents: str, queries: str, retriever: str, query_ids: Path | None, split: str
) -> dict[str, Any]:
    settings = Settings()
    mixed = MixedEmbedder(get_embedder(backend=queries), get_embedder(backend=documents))
    reader = Reader(settings, embedder=cast(Embedder, mixed))
    report = run_eval(reader, dataset, EvalOptions(split, retriever, 100, None, query_ids))
    report["model"] = f"questions {mixed.queries.identity} on documents {mixed.identity}"
    report["settings"]["query_backend"] = queries
    report["settings"]["document_backend"] = documents
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", type=Path, default=DEFAULT_DATASET)
    parser.add_argument("--split", default="train")
    parser.add_argument("--documents", default="torch", choices=EMBED_BACKENDS, help="backend of the collection")
    parser.add_argument("--queries", default="onnx-int8", choices=EMBED_BACKENDS, help="backend of the questions")
    parser.add_argument("--retriever", default="hybrid")
    parser.add_argument("--query-ids", type=Path, default=Path("eval/splits/scifact-train-check.txt"))
    parser.add_argument("--out", type=Path, default=None, help="where to write the JSON report")
    args = parser.parse_args()
    report = measure(args.dataset, args.documents, args.queries, args.retriever, args.query_ids, args.split)
    text = json.dumps(report, indent=2)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n", encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
