"""The ONNX Runtime encoder: a sentence-transformers model's transformer exported once per machine.

`ensure_exported` turns the model's transformer into ONNX with `torch.onnx.export` (the TorchScript
exporter), quantises a copy to int8 with `onnxruntime.quantization.quantize_dynamic`, saves the
tokenizer beside them and publishes the folder under the cache root by one atomic rename, under a
file lock: several processes starting at once export once and never see half a folder. The folder's
name is keyed by the model's identity, its files' fingerprint and this module's recipe version, so a
changed model or recipe is exported again and an unchanged one never is.

`OnnxEncoder` then needs neither torch nor sentence-transformers at run time: the fast tokenizer, one
`InferenceSession`, and mean pooling plus L2 normalisation in NumPy, exactly as sentence-transformers
does them for MiniLM (its Pooling is `mean`, then `Normalize`); a model with another pooling is refused.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from filelock import FileLock, Timeout

from .errors import EmbeddingModelError

log = logging.getLogger("ragkb.embedder")

Precision = Literal["fp32", "int8"]
# Bump when the export or the quantisation recipe changes: folders of an older recipe are then ignored.
RECIPE = 3
OPSET = 17
MODEL_FILES: dict[Precision, str] = {"fp32": "model.onnx", "int8": "model-int8.onnx"}
EXPORT_LOCK_TIMEOUT = 900.0  # seconds a process waits for another one's export
_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
_OUTPUT = "token_embeddings"


def cache_folder(cache_root: Path, identity: str, fingerprint: str) -> Path:
    """Where one model's export lives: a readable slug of its identity and a digest of what defines it."""
    digest = hashlib.sha256(f"{identity}|{fingerprint}|recipe={RECIPE}|opset={OPSET}".encode()).hexdigest()[:16]
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", identity.rsplit("/", 1)[-1]).strip("-.")[:48] or "model"
    return cache_root / f"{slug}-{digest}"


def _complete(folder: Path) -> bool:
    """A published folder always holds `meta.json` (written last, before the rename)."""
    return (folder / "meta.json").is_file()


def _say(message: str) -> None:
    print(f"ragkb: {message}", file=sys.stderr, flush=True)
    log.info(message)


def ensure_exported(
    *,
    load_from: str,
    identity: str,
    fingerprint: str,
    needs_hub: bool,
    cache_root: Path,
    progress: Callable[[str], None] = _say,
) -> Path:
    """The folder with this model's ONNX files (fp32 and int8), exporting them first if no process has."""
    folder = cache_folder(cache_root, identity, fingerprint)
    if _complete(folder):
        return folder
    try:
        cache_root.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(cache_root / f"{folder.name}.lock"), timeout=EXPORT_LOCK_TIMEOUT)
        with lock:
            if _complete(folder):  # another process published it while this one waited
                return folder
            progress(
                f"exporting the embedding model {identity} to ONNX (fp32 and int8) under {folder}; "
                "this happens once per machine and takes a minute or less"
            )
            started = time.perf_counter()
            staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=cache_root))
            try:
                _export(load_from, needs_hub, identity, staging)
                staging.chmod(0o755)  # mkdtemp's folder is private; the export is for every user of the data dir
                if folder.exists():  # a folder without meta.json: left by a recipe that failed halfway
                    shutil.rmtree(folder)
                os.replace(staging, folder)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
            progress(f"ONNX export of {identity} done in {time.perf_counter() - started:.0f} s")
    except Timeout as exc:
        raise EmbeddingModelError(
            f"another process has been exporting {identity} to ONNX under {cache_root} for over "
            f"{EXPORT_LOCK_TIMEOUT:.0f} s; if none is running, delete {folder.name}.lock there"
        ) from exc
    except OSError as exc:
        raise EmbeddingModelError(f"cannot write the ONNX export of {identity} under {cache_root}: {exc}") from exc
    return folder


def _export(load_from: str, needs_hub: bool, identity: str, out: Path) -> None:
    """Export, quantise and describe one model into `out` (meta.json last: it marks the folder complete)."""
    import onnxruntime
    import torch
    from sentence_transformers import SentenceTransformer
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()

    try:
        model = SentenceTransformer(load_from, device="cpu", local_files_only=not needs_hub)
    except Exception as exc:
        raise EmbeddingModelError(f"cannot load {identity} to export it to ONNX: {exc}") from exc
    transformer, lower_case = _check_architecture(model, identity)
    tokenizer = model.tokenizer
    sample = tokenizer(["an example sentence", "a second, longer example sentence"], padding=True, return_tensors="pt")
    names = [name for name in _INPUTS if name in sample]

    class _TokenEmbeddings(torch.nn.Module):
        """The transformer called with named inputs, returning only the token embeddings."""

        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, *tensors: Any) -> Any:
            return self.inner(**dict(zip(names, tensors, strict=True))).last_hidden_state

    axes = {name: {0: "batch", 1: "tokens"} for name in [*names, _OUTPUT]}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's notes on Python control flow it folds into constants
        torch.onnx.export(
            _TokenEmbeddings(transformer).eval(),
            tuple(sample[name] for name in names),
            str(out / MODEL_FILES["fp32"]),
            input_names=names,
            output_names=[_OUTPUT],
            dynamic_axes=axes,
            opset_version=OPSET,
            dynamo=False,  # the TorchScript exporter: dynamic batch and length without onnxscript
        )
    quantize(out / MODEL_FILES["fp32"], out / MODEL_FILES["int8"], INT8_RECIPE)
    tokenizer.save_pretrained(str(out / "tokenizer"))
    meta = {
        "identity": identity,
        "inputs": names,
        "max_seq_length": int(model.max_seq_length or 512),
        "dimension": int(model.get_embedding_dimension() or 0),
        "lower_case": lower_case,
        "recipe": RECIPE,
        "opset": OPSET,
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
        "exported_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    (out / "meta.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")


@dataclass(frozen=True, slots=True)
class QuantRecipe:
    """How the int8 copy is made from the fp32 export (`quantize_dynamic`, per-channel int8 weights).

    `exclude` names nodes that stay fp32 and `exclude_matching` regular expressions over node names;
    `only`, when given, quantises just those nodes (per-group sensitivity, eval/quant_tune.py); `skip` copies
    the fp32 model unchanged (the reference)."""

    exclude: tuple[str, ...] = ()
    exclude_matching: tuple[str, ...] = ()
    only: tuple[str, ...] | None = None
    skip: bool = False
    ops: tuple[str, ...] = ("MatMul", "Gather")
    reduce_range: bool = False  # 7-bit weights: no int16 saturation in AVX2's u8*s8 kernels (no VNNI)
    unsigned_weights: bool = False  # u8 weights (MLAS's u8u8 kernels widen to 16 bits before multiplying)


# Recipe 3, chosen on the SciFact tune half (eval/quant_tune.py, figures in docs/speed.md): u8 weights, and fp32
# where int8 loses most: the embedding tables, the first layer, every layer's FFN output projection (its input
# is GELU's output, whose outliers set the per-tensor activation scale) and every layer's value projection
# (the cheapest further gain: 384x384 each, tune-half loss 0.0026 -> 0.0015).
INT8_RECIPE = QuantRecipe(
    ops=("MatMul",),
    exclude_matching=(
        r"/layer\.0/",
        r"/layer\.\d+/output/dense/MatMul$",
        r"/layer\.\d+/attention/self/value/MatMul$",
    ),
    unsigned_weights=True,
)


def matmul_nodes(model: Path) -> list[str]:
    """The nodes int8 can apply to: MatMuls by a constant weight and Gathers from a constant table, in
    graph order."""
    import onnx

    graph = onnx.load(str(model), load_external_data=False).graph
    constants = {init.name for init in graph.initializer}
    constants |= {node.output[0] for node in graph.node if node.op_type == "Constant"}

    def weighted(node: Any) -> bool:
        if node.op_type == "MatMul":
            return len(node.input) > 1 and node.input[1] in constants
        return bool(node.op_type == "Gather" and node.input[0] in constants)

    return [node.name for node in graph.node if weighted(node)]


def quantize(source: Path, target: Path, recipe: QuantRecipe) -> None:
    """Write the int8 copy of `source` to `target` by `recipe`."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    if recipe.skip:
        shutil.copyfile(source, target)
        return
    excluded = list(recipe.exclude)
    if recipe.exclude_matching:
        patterns = [re.compile(pattern) for pattern in recipe.exclude_matching]
        excluded += [node for node in matmul_nodes(source) if any(p.search(node) for p in patterns)]
    # Per-channel int8 weights, activations quantised per batch; attention's activation-by-activation MatMuls
    # stay fp32 (MatMulConstBOnly): per-tensor weights or quantised attention cost ~0.06 cosine on MiniLM.
    quantize_dynamic(
        source,
        target,
        op_types_to_quantize=list(recipe.ops),
        weight_type=QuantType.QUInt8 if recipe.unsigned_weights else QuantType.QInt8,
        per_channel=True,
        reduce_range=recipe.reduce_range,
        nodes_to_quantize=list(recipe.only) if recipe.only is not None else None,
        nodes_to_exclude=excluded,
        extra_options={"MatMulConstBOnly": True},
    )


def _check_architecture(model: Any, identity: str) -> tuple[Any, bool]:
    """The transformer of a Transformer -> mean Pooling -> Normalize model, and whether it lower-cases;
    anything else would need pooling this module does not reproduce."""
    modules = list(model)
    kinds = [type(module).__name__ for module in modules]
    pooling = modules[1].get_config_dict() if len(modules) > 1 and kinds[1] == "Pooling" else {}
    if kinds[:1] != ["Transformer"] or pooling.get("pooling_mode") != "mean" or "Normalize" not in kinds[2:]:
        raise EmbeddingModelError(
            f"the ONNX backends support Transformer -> mean Pooling -> Normalize models; {identity} is "
            f"{' -> '.join(kinds)} (pooling {pooling.get('pooling_mode')!r}): use RAGKB_EMBED_BACKEND=torch"
        )
    return modules[0].auto_model, bool(getattr(modules[0], "do_lower_case", False))


class OnnxEncoder:
    """Sentence embeddings from an exported model: tokenizer, one ONNX Runtime session, NumPy pooling."""

    def __init__(self, folder: Path, precision: Precision, threads: int = 0) -> None:
        import onnxruntime as ort
        from transformers import AutoTokenizer

        meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
        self.inputs: list[str] = list(meta["inputs"])
        self.window: int = int(meta["max_seq_length"])
        self.dimension: int = int(meta["dimension"])
        self.lower_case = bool(meta.get("lower_case", False))
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads  # 0: ONNX Runtime's default, one per physical core
        options.inter_op_num_threads = 1  # the graph is a chain: parallelism is inside each operator
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3  # no per-session warnings about unused initialisers
        self.path = folder / MODEL_FILES[precision]
        self.session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        self.tokenizer: Any = AutoTokenizer.from_pretrained(str(folder / "tokenizer"), local_files_only=True)

    def encode(self, texts: list[str], batch_size: int) -> np.ndarray:
        """Normalised vectors in the order of `texts`; batched longest first, as sentence-transformers does,
        so each batch pads to similar lengths."""
        vectors = np.empty((len(texts), self.dimension), dtype=np.float32)
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        for start in range(0, len(order), batch_size):
            batch = order[start : start + batch_size]
            vectors[batch] = self._encode_batch([texts[i] for i in batch])
        return vectors

    def _encode_batch(self, texts: list[str]) -> np.ndarray:
        cleaned = [text.strip().lower() if self.lower_case else text.strip() for text in texts]
        encoded = self.tokenizer(
            cleaned, padding=True, truncation="longest_first", max_length=self.window, return_tensors="np"
        )
        feeds = {name: np.asarray(encoded[name], dtype=np.int64) for name in self.inputs}
        hidden = self.session.run([_OUTPUT], feeds)[0]
        mask = np.asarray(encoded["attention_mask"], dtype=np.float32)[..., None]
        pooled = (hidden * mask).sum(axis=1) / np.clip(mask.sum(axis=1), 1e-9, None)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        return np.asarray(pooled / np.clip(norms, 1e-12, None), dtype=np.float32)
