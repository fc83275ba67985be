"""The provider protocol: a prompt and its numbered contexts in, text (whole or streamed) out."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from ingest.errors import RagkbError
from ingest.vectorstore import StoredChunk

from ..prompting import RenderedPrompt


class LLMError(RagkbError):
    """The LLM could not produce an answer (after retries). `str(error)` says why in full, for the log;
    `public` says it without internals (the LLM's address, its response body), for clients."""

    def __init__(self, message: str, *, public: str | None = None) -> None:
        super().__init__(message)
        self.public = public or message


@dataclass(frozen=True, slots=True)
class GenerationRequest:
    question: str
    prompt: RenderedPrompt
    contexts: Sequence[StoredChunk]  # context [n] is contexts[n - 1]
    evidence: object | None = None  # the query service's extractive selection, reused by that provider


@dataclass(frozen=True, slots=True)
class Generation:
    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass(slots=True)
class Usage:
    """Token counts a provider reports while streaming (filled in as they become known)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0


class LLMProvider(Protocol):
    """One way to turn a rendered prompt into text. The query service uses only `stream`; `generate`
    (one non-streamed call) is for callers that want the whole text at once."""

    name: str
    model: str

    def parameters(self) -> dict[str, Any]:
        """Everything besides the prompt that changes the output; part of the cache key."""
        ...

    async def generate(self, request: GenerationRequest) -> Generation: ...

    def stream(self, request: GenerationRequest, usage: Usage | None = None) -> AsyncIterator[str]:
        """Text pieces as they are produced; token counts go into `usage` when given. Any failure,
        before or during the stream, is an `LLMError`."""
        ...

    async def aclose(self) -> None: ...
