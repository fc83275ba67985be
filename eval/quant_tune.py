"""Choosing the int8 recipe of the `onnx-int8` backend, on the SciFact TUNE half only.

    python -m eval.quant_tune sensitivity [--texts 240]       # per-MatMul loss when only that one is int8
    python -m eval.quant_tune compare [--exclude-top N ...]   # whole recipes: cosine to fp32 and dense nDCG@10

Texts: the tune-half claims (`eval/splits/scifact-train-tune.txt`) and the abstracts they cite, plus other
abstracts as distractors for the dense nDCG@10 (whole abstracts, truncated at the model's window). The check
half is never read here: it is kept for the figures in docs/speed.md.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from ingest.config import Settings
from ingest.embedder import Embedder, folder_fingerprint, resolve_model
from ingest.onnx_backend import MODEL_FILES, OnnxEncoder, QuantRecipe, ensure_exported, matmul_nodes, quantize

from .beir import read_corpus, read_qrels, read_queries
from .harness import read_query_ids
from .metrics import evaluate

ROOT = Path(__file__).resolve().parents[1]
DATASET = ROOT.parent / "shared" / "datasets" / "scifact-train"
TUNE = ROOT / "eval" / "splits" / "scifact-train-tune.txt"


def _export(cache: Path) -> Path:
    source = resolve_model("all-MiniLM-L6-v2")
    return ensure_exported(
        load_from=source.load_from,
        identity=source.identity,
        fingerprint=folder_fingerprint(Path(source.load_from)),
        needs_hub=False,
        cache_root=cache,
    )


def tune_texts(distractors: int, seed: int = 13) -> tuple[dict[str, str], dict[str, str], dict[str, dict[str, int]]]:
    """Tune-half queries, and the corpus subset: every abstract they cite plus `distractors` others."""
    wanted = set(read_query_ids(TUNE))
    queries = {q: t for q, t in read_queries(DATASET).items() if q in wanted}
    qrels = {q: r for q, r in read_qrels(DATASET, "train").items() if q in queries}
    queries = {q: queries[q] for q in qrels}
    corpus = {doc.doc_id: doc.content for doc in read_corpus(DATASET)}
    cited = {doc for rel in qrels.values() for doc in rel}
    others = sorted(set(corpus) - cited)
    random.Random(seed).shuffle(others)
    docs = {d: corpus[d] for d in sorted(cited) + others[:distractors]}
    return queries, docs, qrels


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.asarray((a * b).sum(axis=1))


def _encoder(folder: Path, model: Path) -> OnnxEncoder:
    encoder = OnnxEncoder(folder, "fp32")
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    encoder.session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
    return encoder


def node_groups(model: Path) -> dict[str, list[str]]:
    """The quantisable nodes grouped by kind across layers (all query projections, ...) and by layer: the
    machine is too small to time 39 nodes one by one, and the groups say which kind or depth loses most."""
    groups: dict[str, list[str]] = {"all": matmul_nodes(model)}
    for node in matmul_nodes(model):
        if "/embeddings/" in node:
            groups.setdefault("embeddings", []).append(node)
            continue
        layer = node.split("/layer.", 1)[1].split("/", 1)[0]
        part = node.split("/layer.", 1)[1].split("/")[1:-1]  # attention/self/query, output/dense, ...
        kind = {
            "attention/output/dense": "attention-output",
            "intermediate/dense": "ffn-input",
            "output/dense": "ffn-output",
        }.get("/".join(part), part[-1])
        groups.setdefault(f"kind {kind}", []).append(node)
        groups.setdefault(f"layer {layer}", []).append(node)
    return groups


def sensitivity(args: argparse.Namespace) -> None:
    folder = _export(args.cache)
    queries, docs, _ = tune_texts(0)
    rng = random.Random(7)
    texts = rng.sample(list(queries.values()), args.texts // 2) + rng.sample(list(docs.values()), args.texts // 2)
    fp32 = OnnxEncoder(folder, "fp32").encode(texts, 32)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "one.onnx"
        for group, nodes in node_groups(folder / MODEL_FILES["fp32"]).items():
            quantize(folder / MODEL_FILES["fp32"], out, QuantRecipe(only=tuple(nodes)))
            vectors = _encoder(folder, out).encode(texts, 32)
            c = cosines(vectors, fp32)
            rows.append({"group": group, "nodes": nodes, "loss": float(1 - c.mean()), "worst": float(1 - c.min())})
            print(f"{group:24} ({len(nodes):2}) mean loss {1 - c.mean():.6f}  worst {1 - c.min():.6f}", flush=True)
    rows.sort(key=lambda r: -r["loss"])
    args.out.write_text(json.dumps({"texts": len(texts), "split": "tune", "groups": rows}, indent=2))
    print(f"wrote {args.out}")


VARIANTS: dict[str, QuantRecipe] = {
    "dynamic s8 (the first recipe)": QuantRecipe(),
    "dynamic s8, reduce_range": QuantRecipe(reduce_range=True),
    "dynamic u8 weights": QuantRecipe(unsigned_weights=True),
    "dynamic s8, embeddings fp32": QuantRecipe(ops=("MatMul",)),
}


def recipe_from(spec: str, groups: dict[str, list[str]]) -> QuantRecipe:
    """A recipe from `u8|s8[:GROUP,GROUP...]`: weight type, then what stays fp32: node groups
    (`node_groups`) or `re:PATTERN`, a regular expression searched in the node names."""
    weights, _, kept = spec.partition(":")
    if weights not in ("u8", "s8"):
        raise SystemExit(f"{spec!r}: the weight type is u8 or s8")
    excluded: list[str] = []
    for group in filter(None, kept.split(",")):
        if group.startswith("re:"):
            pattern = re.compile(group[3:])
            excluded += [node for node in groups["all"] if pattern.search(node)]
        elif group in groups:
            excluded += groups[group]
        else:
            raise SystemExit(f"unknown group {group!r}; choose from: {', '.join(groups)} or re:PATTERN")
    return QuantRecipe(exclude=tuple(dict.fromkeys(excluded)), unsigned_weights=weights == "u8")


def variants(args: argparse.Namespace) -> None:
    """Whole-model recipes on the same texts as `sensitivity`: mean and worst cosine loss against fp32."""
    folder = _export(args.cache)
    groups = node_groups(folder / MODEL_FILES["fp32"])
    chosen = {spec: recipe_from(spec, groups) for spec in args.recipes} if args.recipes else VARIANTS
    queries, docs, _ = tune_texts(0)
    rng = random.Random(7)
    texts = rng.sample(list(queries.values()), args.texts // 2) + rng.sample(list(docs.values()), args.texts // 2)
    fp32 = OnnxEncoder(folder, "fp32").encode(texts, 32)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "variant.onnx"
        for label, recipe in chosen.items():
            quantize(folder / MODEL_FILES["fp32"], out, recipe)
            c = cosines(_encoder(folder, out).encode(texts, 32), fp32)
            print(f"{label:40} mean loss {1 - c.mean():.6f}  worst {1 - c.min():.6f}", flush=True)


def marginal(args: argparse.Namespace) -> None:
    """From a base recipe, each of its int8 MatMuls kept fp32 as well, one at a time: which single node buys
    the most (the next step of a greedy search), on the same texts as `sensitivity`."""
    folder = _export(args.cache)
    source = folder / MODEL_FILES["fp32"]
    groups = node_groups(source)
    base = recipe_from(args.base, groups)
    queries, docs, _ = tune_texts(0)
    rng = random.Random(7)
    texts = rng.sample(list(queries.values()), args.texts // 2) + rng.sample(list(docs.values()), args.texts // 2)
    fp32 = OnnxEncoder(folder, "fp32").encode(texts, 32)
    candidates = [n for n in groups["all"] if n not in base.exclude and "/embeddings/" not in n]
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "marginal.onnx"
        for node in [None, *candidates]:
            extra = () if node is None else (node,)
            quantize(source, out, QuantRecipe(exclude=base.exclude + extra, unsigned_weights=base.unsigned_weights))
            c = cosines(_encoder(folder, out).encode(texts, 32), fp32)
            label = "(base)" if node is None else node
            rows.append({"fp32_too": label, "loss": float(1 - c.mean()), "worst": float(1 - c.min())})
            print(f"{label:60} mean loss {1 - c.mean():.6f}  worst {1 - c.min():.6f}", flush=True)
    rows.sort(key=lambda r: r["loss"])
    args.out.write_text(json.dumps({"texts": len(texts), "split": "tune", "base": args.base, "rows": rows}, indent=2))
    print(f"wrote {args.out}")


def dense_ndcg(vectors_q: np.ndarray, vectors_d: np.ndarray, qids: list[str], dids: list[str], qrels: Any) -> float:
    scores = vectors_q @ vectors_d.T
    run: dict[str, dict[str, float]] = {}
    for i, q in enumerate(qids):
        top = np.argsort(-scores[i])[:100]
        run[q] = {dids[j]: float(scores[i, j]) for j in top}
    return float(evaluate(run, {q: qrels[q] for q in qids})["ndcg@10"])


def compare(args: argparse.Namespace) -> None:
    folder = _export(args.cache)
    queries, docs, qrels = tune_texts(args.distractors)
    qids, dids = list(queries), list(docs)
    qtexts, dtexts = [queries[q] for q in qids], [docs[d] for d in dids]
    reference = Embedder(backend="torch")
    started = time.perf_counter()
    ref_q, ref_d = reference.embed(qtexts), reference.embed(dtexts)
    print(
        f"torch: {time.perf_counter() - started:.0f} s; dense nDCG@10 (tune, {len(dids)} abstracts) "
        f"{dense_ndcg(ref_q, ref_d, qids, dids, qrels):.4f}",
        flush=True,
    )
    ranked = json.loads(args.sensitivity.read_text())["nodes"] if args.sensitivity.exists() else []
    recipes: dict[str, QuantRecipe] = {"fp32": QuantRecipe(skip=True)}
    for n in args.exclude_top:
        excluded = tuple(row["node"] for row in ranked[:n])
        recipes[f"dynamic, {n} most sensitive fp32"] = QuantRecipe(exclude=excluded)
    for pattern in args.exclude_pattern:
        excluded = tuple(node for node in matmul_nodes(folder / MODEL_FILES["fp32"]) if pattern in node)
        recipes[f"dynamic, fp32 where {pattern!r} ({len(excluded)})"] = QuantRecipe(exclude=excluded)
    with tempfile.TemporaryDirectory() as tmp:
        for label, recipe in recipes.items():
            out = Path(tmp) / "candidate.onnx"
            quantize(folder / MODEL_FILES["fp32"], out, recipe)
            encoder = _encoder(folder, out)
            started = time.perf_counter()
            vq, vd = encoder.encode(qtexts, 64), encoder.encode(dtexts, 64)
            seconds = time.perf_counter() - started
            cq, cd = cosines(vq, ref_q), cosines(vd, ref_d)
            print(
                f"{label:50} cos q {cq.mean():.5f}/{cq.min():.4f}  d {cd.mean():.5f}/{cd.min():.4f}  "
                f"nDCG@10 {dense_ndcg(vq, vd, qids, dids, qrels):.4f}  {seconds:.0f} s",
                flush=True,
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache", type=Path, default=Settings().data_dir / "models")
    sub = parser.add_subparsers(dest="command", required=True)
    sens = sub.add_parser("sensitivity")
    sens.add_argument("--texts", type=int, default=240)
    sens.add_argument("--out", type=Path, default=Path("reports/quant-sensitivity.json"))
    var = sub.add_parser("variants")
    var.add_argument("--texts", type=int, default=240)
    var.add_argument("--recipes", nargs="*", default=[], help="e.g. u8:embeddings,kind ffn-output")
    marg = sub.add_parser("marginal")
    marg.add_argument("--base", default="u8:embeddings,layer 0,kind ffn-output", help="a recipe spec, as --recipes")
    marg.add_argument("--texts", type=int, default=240)
    marg.add_argument("--out", type=Path, default=Path("reports/quant-marginal.json"))
    comp = sub.add_parser("compare")
    comp.add_argument("--sensitivity", type=Path, default=Path("reports/quant-sensitivity.json"))
    comp.add_argument("--exclude-top", type=int, nargs="*", default=[0, 6, 12])
    comp.add_argument("--exclude-pattern", nargs="*", default=[])
    comp.add_argument("--distractors", type=int, default=1000)
    args = parser.parse_args()
    {"sensitivity": sensitivity, "variants": variants, "marginal": marginal, "compare": compare}[args.command](args)


if __name__ == "__main__":
    main()
