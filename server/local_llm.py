"""A local OpenAI-compatible server for a GGUF model, via llama.cpp's own HTTP server (PyPI: xllamacpp).

Optional: `pip install .[local-llm]`. With it, a user who has a GGUF file gets real
generation with no network: `ragkb llm serve --gguf model.gguf`, then point
`RAGKB_LLM_PROVIDER=openai RAGKB_LLM_BASE_URL=http://127.0.0.1:8080/v1` at it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ingest.errors import RagkbError


def start_server(
    gguf: Path,
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    alias: str = "local",
    context: int = 4096,
    threads: int = 1,
) -> Any:
    """Start llama.cpp's server in this process; it serves until the returned object is dropped."""
    if not gguf.is_file():
        raise RagkbError(f"no GGUF model file at {gguf}")
    try:
        import xllamacpp
    except ImportError as exc:
        raise RagkbError("the local LLM server needs the optional extra: pip install 'ragkb[local-llm]'") from exc
    params = xllamacpp.CommonParams()
    params.model.path = str(gguf)
    params.hostnames = [host]
    params.port = port
    params.n_ctx = context
    params.cpuparams.n_threads = threads
    params.model_alias = {alias}  # xllamacpp wants a set here
    return xllamacpp.Server(params)
