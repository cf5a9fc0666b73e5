"""The protocol's messages as pydantic models, shared by the client and the server: the bounds,
the request, chat messages and tools, the reply, stream events, errors and health."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    model_validator,
)
from pydantic.config import JsonDict

PROTOCOL_VERSION = "1.2"

# Bounds a server enforces; documented in docs/PROTOCOL.md so clients know them up front.
MAX_BODY_BYTES = 1 << 20
MAX_STOP_SEQUENCES = 32
MAX_STOP_LENGTH = 256
MAX_TOKENS_LIMIT = 1 << 20
MAX_TEMPERATURE = 10.0
MAX_MESSAGES = 1024
MAX_MESSAGE_CHARS = 1 << 20
MAX_TOOLS = 128
MAX_TOOL_CALLS = 128
MAX_NAME_LENGTH = 64
MAX_ID_LENGTH = 256

# Server-sent event names used by a streaming reply.
EVENT_DELTA = "delta"
EVENT_DONE = "done"
EVENT_ERROR = "error"
EVENT_TOOL_CALL = "tool_call"

# The keys of a request a server understands besides ``prompt`` and ``stream``.
GENERATION_PARAMS = frozenset({"max_tokens", "temperature", "top_p", "top_k", "stop", "seed"})

StopSequence = Annotated[str, Field(min_length=1, max_length=MAX_STOP_LENGTH)]


#: What a text that is not Unicode is told (pydantic-core says its own words where it finds one
#: first: a text with bounds; the server says these instead).
NOT_UNICODE = "must be valid Unicode text (it holds a lone surrogate)"


def _encodable(text: str) -> str:
    """JSON may escape a lone surrogate (``"\\ud800"``) that no UTF-8 reply can carry back; refuse
    it up front instead of failing while answering."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(NOT_UNICODE) from None
    return text


Unicode = AfterValidator(_encodable)
Text = Annotated[str, Unicode]
# Bounds go before the Unicode check: on ``str`` itself pydantic-core checks them (and refuses a
# lone surrogate on its own); after a validator function pydantic adds a Python function per
# bound (two calls more per field, on every message of every conversation).
MessageText = Annotated[str, Field(max_length=MAX_MESSAGE_CHARS), Unicode]
IdText = Annotated[str, Field(min_length=1, max_length=MAX_ID_LENGTH), Unicode]


def _integral(value: Any) -> Any:
    """JSON has one kind of number: ``5.0`` is the integer 5 (JSON Schema agrees, and so must we,
    since we publish one); ``5.5``, ``"5"`` and ``true`` stay errors."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


Integral = BeforeValidator(_integral)

ChatRole = Literal["system", "user", "assistant", "tool"]

# The generation parameters' types, one source for the server's checks and the LangChain models'.
MaxTokens = Annotated[int, Field(ge=1, le=MAX_TOKENS_LIMIT), Integral]
Temperature = Annotated[float, Field(ge=0.0, le=MAX_TEMPERATURE, allow_inf_nan=False)]
TopP = Annotated[float, Field(gt=0.0, le=1.0, allow_inf_nan=False)]
TopK = Annotated[int, Field(ge=0, le=1_000_000), Integral]
StopSequences = Annotated[list[StopSequence], Field(max_length=MAX_STOP_SEQUENCES)]
# ``lt=2**63``, not ``le=2**63 - 1``: the schema's numbers become floats, and 2**63 - 1 would
# round up to 2**63, which the schema would then allow.
Seed = Annotated[int, Field(ge=0, lt=2**63), Integral]


#: A tool's or a response format's name, as OpenAI allows them (and dots).
Name = Annotated[str, Field(min_length=1, max_length=MAX_NAME_LENGTH, pattern=r"^[A-Za-z0-9_.-]+$")]
JsonSchema = dict[str, Any]


class FunctionCall(BaseModel):
    """The function a tool call calls, and its arguments as the model wrote them: a JSON text
    (it may not parse: a client reports such a call as invalid rather than dropping it)."""

    model_config = ConfigDict(extra="ignore", strict=True, frozen=True)

    name: IdText
    arguments: MessageText = "{}"


class ToolCall(BaseModel):
    """A call of a tool (v1.2): in a reply, and in the assistant messages of a conversation."""

    model_config = ConfigDict(extra="ignore", strict=True, frozen=True)

    id: IdText
    type: Literal["function"] = "function"
    function: FunctionCall


#: The rules between a message's fields, in its published JSON Schema as well.
_MESSAGE_RULES: JsonDict = {
    "allOf": [
        {
            "if": {"properties": {"role": {"const": "tool"}}, "required": ["role"]},
            "then": {
                "properties": {"tool_call_id": {"type": "string"}},
                "required": ["tool_call_id"],
            },
        },
        {
            "if": {"properties": {"tool_calls": {"type": "array"}}, "required": ["tool_calls"]},
            "then": {"properties": {"role": {"const": "assistant"}}},
        },
    ]
}


class ChatMessage(BaseModel):
    """One message of a conversation (protocol v1.1; v1.2 adds tool calls and tool results).
    Unknown keys of a message are ignored."""

    model_config = ConfigDict(
        extra="ignore", strict=True, frozen=True, json_schema_extra=_MESSAGE_RULES
    )

    role: ChatRole
    content: MessageText
    tool_calls: Annotated[list[ToolCall], Field(min_length=1, max_length=MAX_TOOL_CALLS)] | None = (
        None
    )
    """v1.2, assistant messages: the tools the model called in that turn."""
    tool_call_id: IdText | None = None
    """v1.2, tool messages (required there): the call this message is the result of."""

    @model_validator(mode="after")
    def _tool_fields_fit_the_role(self) -> ChatMessage:
        if self.role == "tool" and self.tool_call_id is None:
            raise ValueError("a tool message needs the tool_call_id of the call it answers")
        if self.tool_calls is not None and self.role != "assistant":
            raise ValueError("only assistant messages carry tool_calls")
        return self


class FunctionSpec(BaseModel):
    """A function the model may call: its name, what it does, its parameters' JSON Schema."""

    model_config = ConfigDict(extra="ignore", strict=True, frozen=True)

    name: Name
    description: MessageText | None = None
    parameters: JsonSchema = Field(default_factory=lambda: {"type": "object", "properties": {}})
    strict: bool | None = None


class ToolSpec(BaseModel):
    """A tool offered to the model (v1.2), in OpenAI's shape."""

    model_config = ConfigDict(extra="ignore", strict=True, frozen=True)

    type: Literal["function"]
    function: FunctionSpec


class NamedFunction(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True, frozen=True)

    name: Name


class NamedToolChoice(BaseModel):
    """``tool_choice`` naming the one tool the model must call."""

    model_config = ConfigDict(extra="ignore", strict=True, frozen=True)

    type: Literal["function"]
    function: NamedFunction


ToolChoice = Literal["none", "auto", "required"] | NamedToolChoice


class TextFormat(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True, frozen=True)

    type: Literal["text"]


class JsonObjectFormat(BaseModel):
    """Any JSON object (OpenAI's "JSON mode")."""

    model_config = ConfigDict(extra="ignore", strict=True, frozen=True)

    type: Literal["json_object"]


class JsonSchemaSpec(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True, frozen=True, populate_by_name=True)

    name: Name
    description: MessageText | None = None
    json_schema: JsonSchema = Field(alias="schema")
    strict: bool | None = None


class JsonSchemaFormat(BaseModel):
    """A JSON value valid against a JSON Schema."""

    model_config = ConfigDict(extra="ignore", strict=True, frozen=True)

    type: Literal["json_schema"]
    json_schema: JsonSchemaSpec


ResponseFormat = Annotated[TextFormat | JsonObjectFormat | JsonSchemaFormat, Discriminator("type")]


class Capabilities(BaseModel):
    """What an engine can honour beyond text (v1.2), as ``/health`` advertises it."""

    model_config = ConfigDict(frozen=True)

    tools: bool = False
    """``tools`` and every ``tool_choice``: the reply may call them."""
    structured_output: bool = False
    """``response_format`` ``json_object`` and ``json_schema``: the reply is such JSON."""


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
    tools: Annotated[list[ToolSpec], Field(max_length=MAX_TOOLS)] | None = None
    """v1.2, with ``messages``: the tools the model may call."""
    tool_choice: ToolChoice | None = None
    """v1.2: ``auto`` (the default with tools), ``none``, ``required`` or one named tool."""
    response_format: ResponseFormat | None = None
    """v1.2, with ``messages``: ``text``, ``json_object`` or ``json_schema``."""
    continue_final_message: bool = False
    """v1.2, with ``messages`` ending with an assistant's text: the reply goes on from that text
    (a prefill, as Anthropic's Messages API and vLLM's parameter of this name do) instead of
    starting a new turn."""

    @model_validator(mode="after")
    def _v12_fields_fit_together(self) -> PromptRequest:
        if self.messages is None:
            for name in ("tools", "tool_choice", "response_format"):
                if getattr(self, name) is not None:
                    raise ValueError(f"{name} needs messages (protocol v1.2)")
        if self.continue_final_message:
            self._check_continuation()
        if self.tools is None and self.tool_choice is None:
            return self  # most requests: no tools to check
        names = [tool.function.name for tool in self.tools or ()]
        if len(set(names)) != len(names):
            raise ValueError("tools: two tools have the same name")
        choice = self.tool_choice
        if choice == "required" and not names:
            raise ValueError("a tool_choice that requires a call needs tools")
        if isinstance(choice, NamedToolChoice) and choice.function.name not in names:
            raise ValueError(f"tool_choice names {choice.function.name!r}, which is not in tools")
        return self

    def _check_continuation(self) -> None:
        final = self.messages[-1] if self.messages else None
        if final is None or final.role != "assistant" or final.tool_calls or not final.content:
            raise ValueError(
                "continue_final_message needs messages ending with an assistant's text"
            )
        choice = self.tool_choice
        if self.wants_json() or (
            self.tools and (choice == "required" or isinstance(choice, NamedToolChoice))
        ):
            raise ValueError(
                "continue_final_message cannot go with a reply that must be JSON or a tool call "
                "(the constraint holds from the reply's start, which the final message has "
                "already written)"
            )

    def with_prompt(self, prompt: str) -> PromptRequest:
        """This request with ``prompt`` in place of its own, not checked again (a rendering of
        its messages is): ``model_copy(update=...)``'s result without its generic path (59
        bytecodes where it takes 174, on every conversation request). Shallow, as
        ``model_copy``'s copy is."""
        copied = type(self).__new__(type(self))
        object.__setattr__(copied, "__dict__", {**self.__dict__, "prompt": prompt})
        object.__setattr__(copied, "__pydantic_fields_set__", self.model_fields_set | {"prompt"})
        object.__setattr__(copied, "__pydantic_extra__", self.__pydantic_extra__)
        object.__setattr__(copied, "__pydantic_private__", self.__pydantic_private__)
        return copied

    def wants_tools(self) -> bool:
        """Whether the model is offered tools it may call (tools given, choice not ``none``)."""
        return bool(self.tools) and self.tool_choice != "none"

    def wants_json(self) -> bool:
        """Whether the reply must be JSON (``json_object`` or ``json_schema``)."""
        return self.response_format is not None and self.response_format.type != "text"

    def known_params(self) -> dict[str, Any]:
        """The generation parameters that were set, without the prompt, stream flag or extras."""
        return self.model_dump(
            include=set(GENERATION_PARAMS), exclude_none=True, exclude_unset=True
        )


class FinishReason(StrEnum):
    STOP = "stop"
    LENGTH = "length"
    TOOL_CALLS = "tool_calls"


class Usage(BaseModel):
    """Token counts, non-negative (§ 1.2): an engine's negative count is an error, not a
    Prometheus counter that goes down."""

    prompt_tokens: int = Field(default=0, ge=0)
    completion_tokens: int = Field(default=0, ge=0)

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
    tool_calls: list[ToolCall] | None = None
    """v1.2: the tools the model called (``prompt`` then holds any text beside them)."""


class StreamDelta(BaseModel):
    """One streamed piece of text (event ``delta``)."""

    text: str


class StreamToolCall(BaseModel):
    """A piece of a tool call (event ``tool_call``, v1.2). The first piece of a call (by
    ``index``) carries its ``id`` and ``name``; ``arguments`` pieces are appended in order."""

    index: int = Field(ge=0)
    id: str | None = None
    name: str | None = None
    arguments: str = ""


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
    UNSUPPORTED = "unsupported"
    """v1.2: a request asking for what the engine cannot honour (tools, a response format)."""


class ErrorDetail(BaseModel):
    type: str
    message: str
    request_id: str | None = None
    """The server's id for the request (its ``X-Request-ID``), when it gives one."""


class ErrorBody(BaseModel):
    """Every non-2xx answer, and the ``error`` event of a stream."""

    error: ErrorDetail


class Health(BaseModel):
    status: Literal["ok"] = "ok"
    model: str | None = None
    protocol: str = PROTOCOL_VERSION
    capabilities: Capabilities = Field(default_factory=Capabilities)
    """v1.2: what the engine honours beyond text."""
