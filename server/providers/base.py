"""The provider protocol: a prompt and its numbered contexts in, text (whole or streamed) out."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from ingest.errors import RagkbError
from ingest.store import StoredChunk

from ..prompting import RenderedPrompt


class LLMError(RagkbError):
    """The LLM could not produce an answer (after retries); the message says why."""


@dataclass(frozen=True, slots=True)
class GenerationRequest:
    question: str
    prompt: RenderedPrompt
    contexts: Sequence[StoredChunk]  # context [n] is contexts[n - 1]


@dataclass(frozen=True, slots=True)
class Generation:
    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0


class LLMProvider(Protocol):
    name: str
    model: str

    def parameters(self) -> dict[str, Any]:
        """Everything besides the prompt that changes the output; part of the cache key."""
        ...

    async def generate(self, request: GenerationRequest) -> Generation: ...

    def stream(self, request: GenerationRequest) -> AsyncIterator[str]:
        """Text pieces as they are produced."""
        ...

    async def aclose(self) -> None: ...
