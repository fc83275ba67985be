"""Any OpenAI-compatible chat-completions endpoint (OpenAI, vLLM, llama.cpp server, Ollama /v1, LM Studio).

Async over httpx; retries with exponential backoff on 429, 5xx and connection
errors (honouring Retry-After); a timeout or a malformed response is an
`LLMError` that names what happened.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx

from ingest.config import Settings

from .base import Generation, GenerationRequest, LLMError, Usage

RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504})


class OpenAIProvider:
    name = "openai"

    def __init__(
        self,
        *,
        base_url: str,
        model: str,
        api_key: str | None = None,
        timeout: float = 60.0,
        max_tokens: int = 512,
        temperature: float = 0.0,
        retries: int = 2,
        backoff: float = 0.5,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.model = model
        self.base_url = base_url.rstrip("/")
        self.max_tokens = max_tokens
        self.temperature = temperature
        self.retries = retries
        self.backoff = backoff
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.AsyncClient(
            base_url=self.base_url, headers=headers, timeout=httpx.Timeout(timeout), transport=transport
        )

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> OpenAIProvider:
        options: dict[str, Any] = {
            "base_url": settings.llm_base_url,
            "model": settings.llm_model,
            "api_key": settings.llm_api_key,
            "timeout": settings.llm_timeout,
            "max_tokens": settings.llm_max_tokens,
            "temperature": settings.llm_temperature,
            "retries": settings.llm_retries,
        }
        return cls(**{**options, **overrides})

    def parameters(self) -> dict[str, Any]:
        return {"base_url": self.base_url, "max_tokens": self.max_tokens, "temperature": self.temperature}

    def _body(self, request: GenerationRequest, *, stream: bool) -> dict[str, Any]:
        messages = []
        if request.prompt.system:
            messages.append({"role": "system", "content": request.prompt.system})
        messages.append({"role": "user", "content": request.prompt.user})
        return {
            "model": self.model,
            "messages": messages,
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
            "stream": stream,
        }

    async def _send(self, body: dict[str, Any], *, stream: bool) -> httpx.Response:
        """POST with retries; returns an open response with a 2xx status."""
        last_error = public = "no attempt made"
        for attempt in range(self.retries + 1):
            try:
                request = self._client.build_request("POST", "/chat/completions", json=body)
                response = await self._client.send(request, stream=stream)
            except httpx.TimeoutException as exc:
                raise LLMError(
                    f"the LLM at {self.base_url} timed out ({type(exc).__name__})", public="the LLM timed out"
                ) from exc
            except httpx.TransportError as exc:
                last_error = f"cannot connect to the LLM at {self.base_url}: {exc}"
                public = "cannot connect to the LLM"
                retry_after = None
            else:
                if response.is_success:
                    return response
                try:
                    await response.aread()
                except httpx.HTTPError as exc:  # the error body itself broke off
                    await response.aclose()
                    raise LLMError(
                        f"the LLM at {self.base_url} answered HTTP {response.status_code} and then broke off ({exc})",
                        public=f"the LLM answered HTTP {response.status_code}",
                    ) from exc
                last_error = f"the LLM at {self.base_url} answered HTTP {response.status_code}: {response.text[:200]}"
                public = f"the LLM answered HTTP {response.status_code}"
                await response.aclose()
                if response.status_code not in RETRYABLE_STATUS:
                    raise LLMError(last_error, public=public)
                retry_after = _retry_after(response)
            if attempt < self.retries:
                await asyncio.sleep(retry_after if retry_after is not None else self.backoff * 2**attempt)
        attempts = f" (after {self.retries + 1} attempts)"
        raise LLMError(last_error + attempts, public=public + attempts)

    async def generate(self, request: GenerationRequest) -> Generation:
        response = await self._send(self._body(request, stream=False), stream=False)
        try:
            payload = response.json()
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise LLMError(
                f"the LLM returned malformed JSON: {response.text[:120]!r}", public="the LLM returned malformed JSON"
            ) from exc
        try:
            choices = payload["choices"]
            if not choices:
                raise LLMError("the LLM returned no choices")
            text = choices[0]["message"]["content"]
        except (KeyError, IndexError, TypeError) as exc:
            raise LLMError(
                f"the LLM response has no choices[0].message.content: {str(payload)[:160]}",
                public="the LLM response has no choices[0].message.content",
            ) from exc
        if not isinstance(text, str) or not text.strip():
            raise LLMError("the LLM returned an empty answer")
        usage = payload.get("usage") or {}
        return Generation(text, int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0))

    async def stream(self, request: GenerationRequest, usage: Usage | None = None) -> AsyncIterator[str]:
        body = self._body(request, stream=True)
        body["stream_options"] = {"include_usage": True}
        response = await self._send(body, stream=True)
        pieces = events = 0
        reported = ended = False
        try:
            async for line in response.aiter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    ended = True
                    break
                events += 1
                try:
                    event = json.loads(data)
                    choices = event.get("choices") or []
                    delta = choices[0].get("delta", {}).get("content") if choices else None
                    ended = ended or bool(choices and choices[0].get("finish_reason"))
                    counts = event.get("usage")
                    if isinstance(counts, dict) and usage is not None:
                        usage.prompt_tokens = int(counts.get("prompt_tokens") or 0)
                        usage.completion_tokens = int(counts.get("completion_tokens") or 0)
                        reported = True
                except (json.JSONDecodeError, KeyError, IndexError, TypeError, AttributeError, ValueError) as exc:
                    raise LLMError(
                        f"the LLM stream has a malformed event: {data[:120]!r}",
                        public="the LLM stream has a malformed event",
                    ) from exc
                if delta:
                    pieces += 1
                    yield delta
        except httpx.TimeoutException as exc:
            raise LLMError("the LLM timed out while streaming") from exc
        except httpx.HTTPError as exc:  # the connection broke mid-stream (ReadError, protocol errors)
            raise LLMError(f"the LLM stream broke off after {pieces} pieces ({type(exc).__name__})") from exc
        finally:
            await response.aclose()
        if not ended:  # cut off: what came is not the whole answer (and must not be validated and cached as one)
            kind = response.headers.get("content-type", "no content type")
            raise LLMError(
                f"the LLM stream ended after {events} events ({pieces} pieces, {kind}) without [DONE] or a "
                "finish_reason",
                public="the LLM stream ended before the answer did" if events else "the LLM sent no stream events",
            )
        if usage is not None and not reported:  # servers that do not report usage: one delta is one token
            usage.completion_tokens = pieces

    async def aclose(self) -> None:
        await self._client.aclose()


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    try:
        return min(float(value), 10.0) if value else None
    except ValueError:
        return None
