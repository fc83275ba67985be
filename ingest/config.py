"""One typed place for every setting, read from `RAGKB_*` environment variables."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_EMBED_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
DEFAULT_COLLECTION = "default"
# How the embedding model runs (see docs/speed.md): torch fp32, ONNX Runtime fp32, ONNX Runtime int8.
EMBED_BACKENDS = ("torch", "onnx", "onnx-int8")


class Settings(BaseSettings):
    """ragkb settings. Every field can be set as `RAGKB_<FIELD>` in the environment or a `.env` file."""

    model_config = SettingsConfigDict(env_prefix="RAGKB_", env_file=".env", extra="ignore")

    data_dir: Path = Field(Path(".ragkb"), description="Where the embedded Chroma store and caches live.")
    chroma_url: str | None = Field(
        None, description="Chroma server URL (e.g. http://127.0.0.1:8001); unset means embedded Chroma."
    )
    embed_model: str = Field(
        DEFAULT_EMBED_MODEL,
        description="Embedding model: the packaged default, a local folder, or a hub model name.",
    )
    embed_batch_size: int = Field(64, ge=1, le=4096)
    # `torch` until onnx-int8 meets the bar (recipe 3: check-half nDCG@10 +0.0001, met; ingestion ~1.1x torch on
    # this AVX-512 VNNI CPU, bar 1.8x: docs/speed.md); `auto` is the default-to-be: onnx-int8 for a new store,
    # else what the store was built with
    embed_backend: Literal["auto", "torch", "onnx", "onnx-int8"] = Field(
        "torch",
        description="How the embedding model runs: torch (fp32), onnx (ONNX Runtime fp32) or onnx-int8 (ONNX Runtime, "
        "int8 weights); part of the model identity a collection records. auto: onnx-int8 for a new store, else the "
        "backend its collections were built with (see docs/speed.md).",
    )
    embed_threads: int = Field(
        0, ge=0, le=256, description="Intra-op threads of the ONNX backends (0: one per physical core)."
    )
    embed_cache_dir: Path | None = Field(
        None, description="Where ONNX exports of the model are cached; unset means <data_dir>/models."
    )
    ingest_flush_chunks: int = Field(
        1024, ge=1, description="Chunks gathered across files before they are embedded and written together."
    )
    chunk_tokens: int = Field(200, ge=16, description="Target chunk size in embedder tokens.")
    chunk_overlap: int = Field(32, ge=0, description="Tokens shared between neighbouring chunks.")
    max_file_bytes: int = Field(50 * 1024 * 1024, ge=1, description="Files larger than this are refused.")
    max_extracted_chars: int = Field(
        5_000_000, ge=1, description="A file whose extracted text is longer than this is refused (a budget)."
    )
    max_chunks_per_file: int = Field(10_000, ge=1, description="A file that makes more chunks is refused.")
    max_chunks_per_request: int = Field(
        20_000, ge=1, description="Chunks one upload request may add in all; files past it fail with a reason."
    )
    max_tokens_per_request: int = Field(
        100_000,
        ge=1,
        description="Embedder tokens one upload request may cost when the server ingests it itself (no queue): "
        "files past it fail with the reason before anything of them is embedded (docs/limits.md: what it costs).",
    )
    extract_timeout: float = Field(
        120.0, gt=0, description="Seconds the server gives one large file's text extraction (in a worker process)."
    )
    ocr: bool = Field(True, description="OCR scanned PDF pages and images with Tesseract when it is installed.")
    ocr_tesseract: str = Field("tesseract", description="The Tesseract command (a name on PATH or a path).")
    ocr_lang: str = Field("eng", description="Tesseract languages, e.g. eng or eng+deu (their data must be installed).")
    ocr_page_timeout: float = Field(60.0, gt=0, description="Seconds Tesseract may spend on one page.")
    ocr_file_timeout: float = Field(600.0, gt=0, description="Seconds of OCR one file may spend in all.")
    ocr_min_chars: int = Field(
        20, ge=0, description="A PDF page whose text layer has fewer characters than this is OCRed."
    )
    web_allow_private: bool = Field(
        False, description="Let `ingest URL`/`crawl` fetch loopback, private and link-local addresses (off: SSRF)."
    )
    web_max_bytes: int = Field(10 * 1024 * 1024, ge=1, description="A web page larger than this is refused.")
    web_timeout: float = Field(15.0, gt=0, description="Seconds one web page may take, redirects included.")
    web_delay: float = Field(1.0, ge=0, description="Seconds a crawl waits between requests (or robots' Crawl-delay).")
    default_collection: str = DEFAULT_COLLECTION

    # -- query service ---------------------------------------------------------------
    generation_cache_seconds: float = Field(
        1.0,
        ge=0,
        description="How long a collection's generation (and review policies) are kept in memory: this process's "
        "writes are seen at once, another process's within this many seconds; 0 reads them for every question.",
    )
    key_cache_seconds: float = Field(
        5.0,
        ge=0,
        description="How long a server keeps an API key it has checked (and whether any key exists) in memory: "
        "a key revoked through another process stops working within this many seconds.",
    )
    fast_lane: bool = Field(
        True,
        description="Answer a repeated POST /v1/query whose answer is in memory before FastAPI's routing "
        "(server/http/fastlane.py; the same response, without route matching and dependency solving); false "
        "sends every request through the route.",
    )
    retriever: str = Field(
        "hybrid", description="Default retrieval strategy (see `server.answering.retrieval.RETRIEVERS`)."
    )
    hybrid_dense_weight: float = Field(0.5, ge=0, le=1, description="Dense share of the weighted sum.")
    hybrid_doc_weight: float = Field(
        0.7, ge=0, le=1, description="Share of the whole-document score in `hybrid`'s chunk score."
    )
    hybrid_unit: Literal["document", "section"] = Field(
        "section",
        description="Evidence unit of `hybrid`: whole documents, or their pages/sections (see docs/retrieval.md).",
    )
    hybrid_rrf_k: int = Field(60, ge=1, description="k of reciprocal rank fusion: 1 / (k + rank).")
    hybrid_candidates: int = Field(100, ge=1, le=1000, description="Chunks each side contributes to fusion.")
    top_k: int = Field(5, ge=1, le=100, description="Chunks retrieved per question by default.")
    context_tokens: int = Field(
        1500,
        ge=64,
        description="Budget for retrieved context in the prompt, counted in the embedding model's tokens "
        "(MiniLM WordPiece by default), not the LLM's: an estimate of the LLM's count, usually within 10-20%.",
    )
    max_question_chars: int = Field(2000, ge=1)
    abstain_below: float = Field(
        0.40,
        ge=0,
        le=1,
        description="Below this confidence an answer is `low_confidence`: the closest passages, quoted with their "
        "citations as passages that may not answer it (see docs/answers.md).",
    )
    not_found_below: float = Field(
        0.27,
        ge=0,
        le=1,
        description="When the best sentence's similarity to the question is below this and the confidence is below "
        "abstain_below, the answer is `not_found`: 'not in the documents', nothing cited (see docs/answers.md).",
    )
    extractive_embedded: int = Field(
        8,
        ge=0,
        le=64,
        description="Candidate sentences per answer scored by embedding (the rest by their terms alone); each "
        "costs ~5 ms of CPU.",
    )
    support_threshold: float = Field(
        0.4, ge=0, le=1, description="A citation whose passage supports its sentence less than this is removed."
    )
    prompt_template: str = Field("answer", description="Name of the prompt template in server/prompts/.")

    # -- agent mode (server/agent, docs/agent.md) ---------------------------------------
    agent_max_subquestions: int = Field(3, ge=1, le=8, description="Sub-questions the agent's planner may make.")
    agent_max_steps: int = Field(
        10, ge=2, le=50, description="Steps (plan, tool calls, drafts, reviews) one agent request may take."
    )
    agent_seconds: float = Field(60.0, gt=0, description="Wall-clock budget of one agent request, in seconds.")
    agent_llm_tokens: int = Field(
        12_000, ge=0, description="LLM tokens (prompt + completion) one agent request may spend; 0: no LLM calls."
    )
    agent_plan_template: str = Field("plan", description="The planner's prompt template in server/prompts/.")
    web_wait_seconds: float = Field(
        600.0,
        gt=0,
        description="How long the web page waits for a held answer's review or an upload's job before it stops "
        "and says so.",
    )
    keep_alive_seconds: int = Field(
        75,
        ge=1,
        description="How long `ragkb serve` keeps an idle HTTP connection open. Longer than clients' and proxies' "
        "own idle timeouts (httpx 5 s, nginx 60 s), so the client closes first and never sends on a connection "
        "the server is closing.",
    )
    # human review (docs/review.md)
    record_queue: int = Field(
        10_000,
        ge=1,
        description="Answer records waiting to be written behind the response; when full, the newest are dropped "
        "(counted in ragkb_records_dropped_total).",
    )
    review_flag_below: float = Field(
        0.55,
        ge=0,
        le=1,
        description="With review policy `flagged`, answers whose confidence is below this enter the review queue.",
    )
    review_max_attempts: int = Field(
        3, ge=1, le=10, description="Candidate answers per review, the first included (reject-and-retry stops there)."
    )
    curated_match_threshold: float | None = Field(
        None,
        ge=0,
        le=1,
        description="Unset (default): a curated answer serves only the same normalised question. Set (e.g. 0.8): "
        "also questions this similar (cosine) that differ in no number, name, negation or content word "
        "(docs/review.md has the measured hit and false-match rates).",
    )
    answer_wait_seconds: float = Field(
        300.0, gt=0, le=3600, description="How long GET /v1/answers/{id}/events waits for a decision before ending."
    )

    openai_sources_in_text: bool = Field(
        True,
        description="POST /v1/chat/completions appends a 'Sources:' list to the answer text (the citations are "
        "also in the message's ragkb_citations field).",
    )
    llm_provider: str = Field("extractive", description="extractive (offline, default) or openai.")
    llm_base_url: str = Field("http://127.0.0.1:8080/v1", description="OpenAI-compatible API base URL.")
    llm_model: str = Field("local", description="Model name sent to the OpenAI-compatible API.")
    llm_api_key: str | None = Field(None, description="Bearer token for the OpenAI-compatible API.")
    llm_timeout: float = Field(60.0, gt=0, description="Seconds before one LLM request times out.")
    llm_max_tokens: int = Field(512, ge=1)
    llm_temperature: float = Field(0.0, ge=0, le=2)
    llm_retries: int = Field(2, ge=0, le=10, description="Retries on 429, 5xx and connection errors.")
    llm_breaker_failures: int = Field(
        3, ge=0, description="After this many LLM failures in a row, answer extractively at once (0: never)."
    )
    llm_breaker_cooldown: float = Field(30.0, gt=0, description="Seconds the LLM is left alone after that.")

    cache_url: str | None = Field(
        None, description="redis://host:port/db for a shared cache; unset means SQLite under data_dir."
    )
    cache_ttl_seconds: int = Field(7 * 24 * 3600, ge=1)
    cache_max_entries: int = Field(100_000, ge=1)

    # -- access control (server/state, server/auth) ------------------------------------
    database_url: str | None = Field(
        None, description="postgresql://user@host/db for the state database; unset means SQLite under data_dir."
    )
    rate_limit_per_minute: float = Field(120.0, gt=0, description="Requests a key may make per minute, sustained.")
    rate_limit_burst: int = Field(30, ge=1, description="Requests a key may make at once before the rate applies.")
    rate_limit_url: str | None = Field(
        None,
        description="redis:// URL shared by replicas for rate limits; unset means RAGKB_CACHE_URL or RAGKB_QUEUE_URL "
        "when they are Redis, else in-process.",
    )
    cors_origins: list[str] = Field(
        default_factory=list, description="Origins allowed to call the API from a browser (CORS); none by default."
    )
    protect_ops: bool = Field(False, description="Serve /metrics, /docs and /openapi.json to admin keys only.")

    queue_url: str | None = Field(
        None,
        description="Broker of the ingestion task engine (Dramatiq): redis://... or amqp://... (RabbitMQ); set, "
        "uploads are queued for `ragkb worker`; unset, they are ingested in-process (docs/ingestion.md).",
    )
    queue_heartbeat_timeout: float = Field(
        60.0, gt=0, description="Seconds without a sign of life after which a worker is dead and its job redelivered."
    )
    queue_max_retries: int = Field(
        5, ge=0, le=50, description="Retries of a job after a transient error (store or broker unreachable)."
    )
    queue_min_backoff: float = Field(2.0, gt=0, description="Seconds before the first retry; doubled each time.")
    queue_max_backoff: float = Field(300.0, gt=0, description="Longest wait between two retries, in seconds.")
    job_time_limit: float = Field(3600.0, gt=0, description="Seconds one ingestion job may run before it fails.")
    max_upload_bytes: int = Field(
        25 * 1024 * 1024, ge=1, description="Largest accepted upload request (all files together)."
    )
    max_json_bytes: int = Field(
        1024 * 1024, ge=1024, description="Largest accepted JSON request body; larger ones get 413 before parsing."
    )

    @field_validator("chunk_overlap")
    @classmethod
    def _overlap_below_size(cls, overlap: int, info: object) -> int:
        data = getattr(info, "data", {})
        size = data.get("chunk_tokens", 200)
        if overlap >= size:
            raise ValueError(f"chunk_overlap ({overlap}) must be smaller than chunk_tokens ({size})")
        return overlap

    @property
    def chroma_path(self) -> Path:
        return self.data_dir / "chroma"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return Settings()
