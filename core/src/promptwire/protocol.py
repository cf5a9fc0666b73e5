"""The prompt endpoint protocol, v1.1, as pydantic models shared by the client and the server.

Compatible both ways with ``langchain_community.llms.Modal``: the request is a JSON object with a
``prompt`` string plus any other keys, and the reply carries the completion under ``prompt``.
v1.1 adds an optional ``messages`` list (a conversation the server renders with its model's chat
template); ``prompt`` stays required, so a v1 server that ignores ``messages`` still answers.
The whole protocol is written out in ``docs/PROTOCOL.md``.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field

PROTOCOL_VERSION = "1.1"

# Bounds a server enforces; documented in the README so clients know them up front.
MAX_BODY_BYTES = 1 << 20
MAX_STOP_SEQUENCES = 32
MAX_STOP_LENGTH = 256
MAX_TOKENS_LIMIT = 1 << 20
MAX_TEMPERATURE = 10.0
MAX_MESSAGES = 1024
MAX_MESSAGE_CHARS = 1 << 20

# Server-sent event names used by a streaming reply.
EVENT_DELTA = "delta"
EVENT_DONE = "done"
EVENT_ERROR = "error"

# The keys of a request a server understands besides ``prompt`` and ``stream``.
GENERATION_PARAMS = frozenset({"max_tokens", "temperature", "top_p", "top_k", "stop", "seed"})

StopSequence = Annotated[str, Field(min_length=1, max_length=MAX_STOP_LENGTH)]


def _encodable(text: str) -> str:
    """JSON may escape a lone surrogate (``"\\ud800"``) that no UTF-8 reply can carry back; refuse
    it up front instead of failing while answering."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode text (it holds a lone surrogate)") from None
    return text


Text = Annotated[str, AfterValidator(_encodable)]


def _integral(value: Any) -> Any:
    """JSON has one kind of number: ``5.0`` is the integer 5 (JSON Schema agrees, and so must we,
    since we publish one); ``5.5``, ``"5"`` and ``true`` stay errors."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


Integral = BeforeValidator(_integral)

ChatRole = Literal["system", "user", "assistant"]

# The generation parameters' types, one source for the server's checks and the LangChain models'.
MaxTokens = Annotated[int, Field(ge=1, le=MAX_TOKENS_LIMIT), Integral]
Temperature = Annotated[float, Field(ge=0.0, le=MAX_TEMPERATURE, allow_inf_nan=False)]
TopP = Annotated[float, Field(gt=0.0, le=1.0, allow_inf_nan=False)]
TopK = Annotated[int, Field(ge=0, le=1_000_000), Integral]
StopSequences = Annotated[list[StopSequence], Field(max_length=MAX_STOP_SEQUENCES)]
# ``lt=2**63``, not ``le=2**63 - 1``: the schema's numbers become floats, and 2**63 - 1 would
# round up to 2**63, which the schema would then allow.
Seed = Annotated[int, Field(ge=0, lt=2**63), Integral]


class ChatMessage(BaseModel):
    """One message of a conversation (protocol v1.1). Unknown keys of a message are ignored."""

    model_config = ConfigDict(extra="ignore", strict=True, frozen=True)

    role: ChatRole
    content: Annotated[Text, Field(max_length=MAX_MESSAGE_CHARS)]


class PromptRequest(BaseModel):
    """A request: ``prompt`` plus the generation parameters a server understands, and (v1.1)
    optionally ``messages``.

    Unknown keys are kept (``extra="allow"``) and ignored; known keys are checked strictly, so
    ``"max_tokens": "5"`` is an error rather than a silent coercion.
    """

    model_config = ConfigDict(extra="allow", strict=True)

    prompt: Text
    max_tokens: MaxTokens | None = None
    temperature: Temperature | None = None
    top_p: TopP | None = None
    top_k: TopK | None = None
    stop: StopSequences | None = None
    seed: Seed | None = None
    stream: bool = False
    messages: Annotated[list[ChatMessage], Field(min_length=1, max_length=MAX_MESSAGES)] | None = (
        None
    )
    """v1.1: the conversation; a server that understands it renders it and ignores ``prompt``."""

    def known_params(self) -> dict[str, Any]:
        """The generation parameters that were set, without the prompt, stream flag or extras."""
        return self.model_dump(
            include=set(GENERATION_PARAMS), exclude_none=True, exclude_unset=True
        )


class FinishReason(StrEnum):
    STOP = "stop"
    LENGTH = "length"


class Usage(BaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


class PromptResponse(BaseModel):
    """A whole reply. ``prompt`` holds the completion text (the key is kept for compatibility)."""

    model_config = ConfigDict(extra="allow")

    prompt: str
    usage: Usage | None = None
    finish_reason: FinishReason | None = None
    model: str | None = None


class StreamDelta(BaseModel):
    """One streamed piece of text (event ``delta``)."""

    text: str


class StreamDone(BaseModel):
    """The last event of a stream (event ``done``)."""

    finish_reason: FinishReason | None = None
    usage: Usage | None = None
    model: str | None = None


class ErrorType(StrEnum):
    BAD_REQUEST = "bad_request"
    INVALID_REQUEST = "invalid_request"
    UNAUTHORIZED = "unauthorized"
    NOT_FOUND = "not_found"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    TOO_LARGE = "request_too_large"
    REQUEST_TIMEOUT = "request_timeout"
    UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"
    OVERLOADED = "overloaded"
    NOT_READY = "not_ready"
    SHUTTING_DOWN = "shutting_down"
    SERVER_ERROR = "server_error"


class ErrorDetail(BaseModel):
    type: str
    message: str


class ErrorBody(BaseModel):
    """Every non-2xx answer, and the ``error`` event of a stream."""

    error: ErrorDetail


class Health(BaseModel):
    status: Literal["ok"] = "ok"
    model: str | None = None
    protocol: str = PROTOCOL_VERSION


__all__ = [
    "EVENT_DELTA",
    "EVENT_DONE",
    "EVENT_ERROR",
    "GENERATION_PARAMS",
    "MAX_BODY_BYTES",
    "MAX_MESSAGES",
    "MAX_MESSAGE_CHARS",
    "MAX_STOP_LENGTH",
    "MAX_STOP_SEQUENCES",
    "MAX_TEMPERATURE",
    "MAX_TOKENS_LIMIT",
    "PROTOCOL_VERSION",
    "ChatMessage",
    "ErrorBody",
    "ErrorDetail",
    "ErrorType",
    "FinishReason",
    "Health",
    "PromptRequest",
    "PromptResponse",
    "StreamDelta",
    "StreamDone",
    "Usage",
]
