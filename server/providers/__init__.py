"""LLM providers behind one small protocol, chosen by `RAGKB_LLM_PROVIDER`."""

from __future__ import annotations

from ingest.config import Settings
from ingest.errors import RagkbError

from .base import Generation, GenerationRequest, LLMError, LLMProvider, Usage
from .extractive import ExtractiveProvider
from .openai import OpenAIProvider

PROVIDERS = ("extractive", "openai")


def make_provider(settings: Settings) -> LLMProvider:
    if settings.llm_provider == "extractive":
        return ExtractiveProvider()
    if settings.llm_provider == "openai":
        return OpenAIProvider.from_settings(settings)
    raise RagkbError(f"unknown LLM provider {settings.llm_provider!r}; choose one of: {', '.join(PROVIDERS)}")


__all__ = [
    "PROVIDERS",
    "ExtractiveProvider",
    "Generation",
    "GenerationRequest",
    "LLMError",
    "LLMProvider",
    "OpenAIProvider",
    "Usage",
    "make_provider",
]
