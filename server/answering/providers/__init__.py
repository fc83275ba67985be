"""LLM providers behind one small protocol, chosen by `RAGKB_LLM_PROVIDER`."""

from __future__ import annotations

from ingest.config import Settings
from ingest.errors import RagkbError

from .base import Generation, GenerationRequest, LLMError, LLMProvider, Usage
from .extractive import Embed, EmbedQuestion, EmbedTokens, ExtractiveProvider, Selection
from .openai import OpenAIProvider

PROVIDERS = ("extractive", "openai")


def make_provider(
    settings: Settings,
    embed: Embed | None = None,
    embed_tokens: EmbedTokens | None = None,
    embed_question: EmbedQuestion | None = None,
) -> LLMProvider:
    """The configured provider; `embed` (the reader's embedder) gives the extractive one semantic scoring,
    `embed_tokens` late interaction and `embed_question` the question's cached vector."""
    if settings.llm_provider == "extractive":
        return ExtractiveProvider(
            embed=embed,
            max_embedded=settings.extractive_embedded,
            embed_tokens=embed_tokens,
            embed_question=embed_question,
        )
    if settings.llm_provider == "openai":
        return OpenAIProvider.from_settings(settings)
    raise RagkbError(f"unknown LLM provider {settings.llm_provider!r}; choose one of: {', '.join(PROVIDERS)}")


__all__ = [
    "PROVIDERS",
    "Embed",
    "EmbedQuestion",
    "EmbedTokens",
    "ExtractiveProvider",
    "Generation",
    "GenerationRequest",
    "LLMError",
    "LLMProvider",
    "OpenAIProvider",
    "Selection",
    "Usage",
    "make_provider",
]
