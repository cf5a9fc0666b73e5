"""The OpenAI API as promptwire's server speaks it: the requests of ``/v1/completions``,
``/v1/chat/completions`` and ``/v1/responses``, checked with the prompt protocol's own bounds,
and the error body.

OpenAI-compatible servers (vLLM, SGLang, llama.cpp, TabbyAPI, Ollama) accept keys they do not
know and ignore them; so does this one. A key OpenAI defines that the engines cannot honour
(``logprobs``, ``n`` > 1, ...) is refused with a 400 naming it, never ignored: a caller who asked
for log-probabilities must not get a reply silently without them. ``tools``, ``tool_choice`` and
``response_format`` are served where the engine declares them (its ``capabilities``) and refused
the same way where it does not.
The replies are built in ``promptwire.server.openai._reply``; docs/PROTOCOL.md lists the fields.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from promptwire.protocol import (
    MAX_MESSAGES,
    MAX_STOP_LENGTH,
    MAX_STOP_SEQUENCES,
    MAX_TOOLS,
    MaxTokens,
    MessageText,
    Seed,
    Temperature,
    Text,
    TopK,
    TopP,
)
from promptwire.server._refusals import RefusingRequest

#: The most prompts one ``/v1/completions`` request may carry (OpenAI allows a list).
MAX_PROMPTS = 64

Stop = (
    Annotated[str, Field(min_length=1, max_length=MAX_STOP_LENGTH)]
    | Annotated[
        list[Annotated[str, Field(min_length=1, max_length=MAX_STOP_LENGTH)]],
        Field(max_length=MAX_STOP_SEQUENCES),
    ]
)


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)

    include_usage: bool | None = None


class GenerationRequest(RefusingRequest):
    """What both generation routes take. Unknown keys are allowed and ignored."""

    model_config = ConfigDict(extra="allow", strict=True)

    model: str | None = None
    """The served model's id (``GET /v1/models``); omitted means that one."""
    max_tokens: MaxTokens | None = None
    temperature: Temperature | None = None
    top_p: TopP | None = None
    top_k: TopK | None = None
    """Not OpenAI's, but vLLM's, SGLang's and llama.cpp's: honoured as they do."""
    seed: Seed | None = None
    stop: Stop | None = None
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    user: str | None = None
    """Accepted and ignored, as by every OpenAI-compatible server."""

    # Known to OpenAI and refused unless they ask for nothing (see ``refused``).
    n: int | None = None
    logprobs: Any = None
    top_logprobs: Any = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logit_bias: Any = None
    REFUSABLE = frozenset(
        {"n", "logprobs", "top_logprobs", "presence_penalty", "frequency_penalty", "logit_bias"}
    )
    PARAMETERS = frozenset({"max_tokens", "temperature", "top_p", "top_k", "seed"})

    def stops(self) -> list[str] | None:
        if self.stop is None:
            return None
        return [self.stop] if isinstance(self.stop, str) else list(self.stop) or None

    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)

    def generation_params(self) -> dict[str, Any]:
        """The prompt protocol's parameters this request sets (without ``prompt``)."""
        params = self.set_parameters()
        if "stop" in self.model_fields_set and (stops := self.stops()):
            params["stop"] = stops
        return params

    def refused(self) -> tuple[str, str] | None:
        if self.n is not None and self.n != 1:
            return "n", "n must be 1: this server makes one choice per prompt"
        if self.logprobs not in (None, False):
            return "logprobs", "logprobs are not supported by this server"
        if self.top_logprobs is not None:
            return "top_logprobs", "logprobs are not supported by this server"
        for name in ("presence_penalty", "frequency_penalty"):
            if getattr(self, name) not in (None, 0):
                return name, f"{name} is not supported by this server (only 0)"
        if self.logit_bias:
            return "logit_bias", "logit_bias is not supported by this server"
        return None


class CompletionRequest(GenerationRequest):
    """``POST /v1/completions``: a prompt (or a list of prompts) to continue."""

    prompt: Text | Annotated[list[Text], Field(min_length=1, max_length=MAX_PROMPTS)]
    echo: bool | None = None
    """Put the prompt before the completion, as OpenAI does."""
    best_of: int | None = None
    suffix: str | None = None

    def prompts(self) -> list[str]:
        return [self.prompt] if isinstance(self.prompt, str) else list(self.prompt)

    def unsupported(self) -> tuple[str, str] | None:
        """Looked at whole: a stream of several prompts is refused whatever else it sets."""
        if found := super().refused():
            return found
        if self.best_of is not None and self.best_of != 1:
            return "best_of", "best_of must be 1: this server makes one choice per prompt"
        if self.suffix:
            return "suffix", "suffix (insertion) is not supported by this server"
        if self.stream and isinstance(self.prompt, list) and len(self.prompt) > 1:
            return "prompt", "a stream takes one prompt; send a list of prompts without stream"
        return None


class ChatCompletionRequest(GenerationRequest):
    """``POST /v1/chat/completions``: a conversation to answer."""

    messages: Annotated[list[dict[str, Any]], Field(min_length=1, max_length=MAX_MESSAGES)]
    """Converted one by one by ``promptwire.server.openai._translate`` (text content only), then
    checked with the whole request as the prompt protocol's messages."""
    max_completion_tokens: MaxTokens | None = None
    """OpenAI's newer name for ``max_tokens``; it wins when both are given."""
    tools: list[Any] | None = None
    """Checked as the prompt protocol's (v1.2) by ``promptwire.server.openai._translate``."""
    tool_choice: Any = None
    parallel_tool_calls: bool | None = None
    """Accepted and ignored (the engines make the calls their model writes)."""
    functions: list[Any] | None = None
    function_call: Any = None
    response_format: dict[str, Any] | None = None
    continue_final_message: bool = False
    """vLLM's extension: the reply continues the final assistant message (a prefill)."""
    modalities: list[str] | None = None
    audio: Any = None
    REFUSABLE = GenerationRequest.REFUSABLE | {"functions", "function_call", "modalities", "audio"}

    def generation_params(self) -> dict[str, Any]:
        params = super().generation_params()
        if self.max_completion_tokens is not None:
            params["max_tokens"] = self.max_completion_tokens
        return params

    def refused(self) -> tuple[str, str] | None:
        if found := super().refused():
            return found
        if self.functions:
            return "functions", "functions (the legacy form of tools) are not supported: use tools"
        if self.function_call not in (None, "none"):
            return "function_call", "function_call (legacy) is not supported: use tool_choice"
        if self.modalities is not None and self.modalities != ["text"]:
            return "modalities", "only text output is supported by this server"
        if self.audio is not None:
            return "audio", "audio output is not supported by this server"
        return None


class ResponseText(BaseModel):
    """``text``: the output's format (``{"type": "text" | "json_object" | "json_schema", ...}``,
    checked by ``promptwire.server.openai._responses_translate``)."""

    model_config = ConfigDict(extra="allow", strict=True)

    format: dict[str, Any] | None = None
    verbosity: str | None = None
    """Accepted and ignored: the engines have no verbosity setting."""


class ResponsesRequest(RefusingRequest):
    """``POST /v1/responses``: a conversation (``input``, ``instructions``) to answer, stateless.

    Unknown keys, and those that change nothing here (``include``, ``reasoning``, ``truncation``,
    ``user``, ``metadata`` (echoed back), ``parallel_tool_calls``, ``store``: nothing is
    stored whatever it says), are accepted; those asking for state or for what the engines
    cannot do are refused with a 400 naming them (``unsupported``)."""

    model_config = ConfigDict(extra="allow", strict=True)

    model: str | None = None
    input: MessageText | Annotated[list[Any], Field(min_length=1, max_length=MAX_MESSAGES)]
    """A user message's text, or the conversation's items (messages, function calls and their
    outputs), checked one by one by ``promptwire.server.openai._responses_translate``."""
    instructions: MessageText | None = None
    max_output_tokens: MaxTokens | None = None
    temperature: Temperature | None = None
    top_p: TopP | None = None
    top_k: TopK | None = None
    """Not OpenAI's: honoured as on ``/v1/chat/completions``."""
    seed: Seed | None = None
    """Not OpenAI's: honoured as on ``/v1/chat/completions``."""
    tools: Annotated[list[Any], Field(max_length=MAX_TOOLS)] | None = None
    tool_choice: Any = None
    parallel_tool_calls: bool | None = None
    text: ResponseText | None = None
    stream: bool | None = None
    store: bool | None = None
    metadata: dict[str, Any] | None = None

    # Known to OpenAI and refused unless they ask for nothing (see ``refused``).
    previous_response_id: Any = None
    conversation: Any = None
    background: Any = None
    prompt: Any = None
    top_logprobs: Any = None

    REFUSABLE = frozenset(
        {"previous_response_id", "conversation", "background", "prompt", "top_logprobs"}
    )
    # Its length limit is ``max_output_tokens`` (see ``generation_params``).
    PARAMETERS = frozenset({"temperature", "top_p", "top_k", "seed"})

    def generation_params(self) -> dict[str, Any]:
        """The prompt protocol's parameters this request sets."""
        params = self.set_parameters()
        if self.max_output_tokens is not None:
            params["max_tokens"] = self.max_output_tokens
        return params

    def refused(self) -> tuple[str, str] | None:
        """The first parameter asking for state or what the engines cannot do; None if none."""
        stateless = (
            "this server stores no responses and no conversations: send the whole "
            "conversation in input"
        )
        if self.previous_response_id is not None:
            return "previous_response_id", f"previous_response_id is not supported: {stateless}"
        if self.conversation is not None:
            return "conversation", f"conversation is not supported: {stateless}"
        if self.background not in (None, False):
            return "background", "background responses are not supported by this server"
        if self.prompt is not None:
            return "prompt", "prompt templates are not supported by this server"
        if self.top_logprobs not in (None, 0):
            return "top_logprobs", "logprobs are not supported by this server"
        return None


#: OpenAI's error ``type`` for each status a promptwire server answers on the OpenAI routes.
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    408: "invalid_request_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
}


def error_type_for(status_code: int) -> str:
    return ERROR_TYPES.get(status_code, "server_error")


class OpenAIErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None
    request_id: str | None = None
    """promptwire's id of the request (also its ``X-Request-ID`` header), to quote to the
    operator; OpenAI's clients ignore the extra field."""


class OpenAIErrorBody(BaseModel):
    """Every error on the OpenAI routes, as OpenAI's SDK reads it."""

    error: OpenAIErrorDetail


__all__ = [
    "ERROR_TYPES",
    "MAX_PROMPTS",
    "ChatCompletionRequest",
    "CompletionRequest",
    "GenerationRequest",
    "OpenAIErrorBody",
    "OpenAIErrorDetail",
    "ResponseText",
    "ResponsesRequest",
    "StreamOptions",
    "error_type_for",
]
