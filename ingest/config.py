"""One typed place for every setting, read from `RAGKB_*` environment variables."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_EMBED_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
DEFAULT_COLLECTION = "default"


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
    chunk_tokens: int = Field(200, ge=16, description="Target chunk size in embedder tokens.")
    chunk_overlap: int = Field(32, ge=0, description="Tokens shared between neighbouring chunks.")
    max_file_bytes: int = Field(50 * 1024 * 1024, ge=1, description="Files larger than this are refused.")
    default_collection: str = DEFAULT_COLLECTION

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
