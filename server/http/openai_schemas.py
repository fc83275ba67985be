"""OpenAI's chat-completions wire format, as much of it as ragkb answers (`server/http/routes/openai.py`):
the request (unknown fields ignored, as OpenAI's servers do), the completion, the stream's chunks, the model
list and the error body. ragkb's own additions are fields whose names start with `ragkb_`."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ..review.schemas import HeldAnswer
from ..schemas import Citation

MODEL_PREFIX = "ragkb"
AGENT_SUFFIX = "agent"


class ContentPart(BaseModel):
    """One part of a message's content; only text parts are read (images and audio are ignored)."""

    model_config = ConfigDict(extra="ignore")

    type: str
    text: str | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[ContentPart] | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "\n".join(part.text for part in self.content if part.type == "text" and part.text)


class ChatCompletionRequest(BaseModel):
    """`POST /v1/chat/completions`. `model` names the collection (`ragkb:<collection>`, with `:agent` for agent
    mode, see `GET /v1/models`); the last user message is the question and the earlier user and assistant
    messages its conversation. `temperature`, `max_tokens`, `top_p`, `n`, `stop`, `user`, ... are accepted and
    ignored: the answer is made by the server's provider with its own settings."""

    model_config = ConfigDict(extra="ignore")

    model: str = Field(min_length=1, max_length=200, description="`ragkb:<collection>` or `ragkb:<collection>:agent`.")
    messages: list[ChatMessage] = Field(min_length=1, max_length=200)
    stream: bool = False
    temperature: float | None = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = 0
    owned_by: str = MODEL_PREFIX


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class Usage(BaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str
    ragkb_citations: list[Citation] = Field(
        default_factory=list,
        description="ragkb's extra field: the sources behind the answer's [n] markers (`n` is the marker number).",
    )
    ragkb_held: HeldAnswer | None = Field(
        None, description="ragkb's extra field: set when the answer is held for a reviewer (review policy `required`)."
    )


class Choice(BaseModel):
    index: int = 0
    message: AssistantMessage
    finish_reason: Literal["stop", "length"] = "stop"


class RagkbInfo(BaseModel):
    """What ragkb adds to a completion besides the citations."""

    request_id: str
    collection: str
    standalone_question: str = Field(description="The question retrieval was made for (a follow-up made standalone).")
    grounded: bool | None = None
    abstained: bool | None = None
    origin: str | None = None
    review_id: str | None = None


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: Usage = Field(default_factory=Usage)
    ragkb: RagkbInfo


class Delta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None
    ragkb_citations: list[Citation] | None = Field(None, description="On the final chunk only: the answer's sources.")
    ragkb_held: HeldAnswer | None = None


class ChunkChoice(BaseModel):
    index: int = 0
    delta: Delta
    finish_reason: Literal["stop", "length"] | None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    ragkb: RagkbInfo | None = Field(None, description="On the final chunk only.")


class OpenAIError(BaseModel):
    message: str
    type: str
    code: str
    param: str | None = None


class OpenAIErrorBody(BaseModel):
    error: OpenAIError
    request_id: str | None = Field(None, description="ragkb's addition: the request id the server log has.")


def dump(model: BaseModel) -> dict[str, Any]:
    """A model as JSON-ready data, without ragkb's extra fields where they carry nothing (a client that does
    not know ragkb sees OpenAI's fields, plus the documented `ragkb*` ones where they are set)."""
    pruned: dict[str, Any] = _prune(model.model_dump(mode="json"))
    return pruned


def _prune(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _prune(v) for k, v in value.items() if not (v is None and k.startswith(MODEL_PREFIX))}
    if isinstance(value, list):
        return [_prune(v) for v in value]
    return value
