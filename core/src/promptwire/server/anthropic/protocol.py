"""Anthropic's Messages API as promptwire's server speaks it: the request of ``/v1/messages``,
checked with the prompt protocol's own bounds, and the error body.

As Anthropic's API, ``max_tokens`` is required; ``model`` may name any model (the coding
agents and SDKs that speak this API send their own names): the reply names the one served.
Unknown keys are accepted and ignored, as are those that change nothing here (``metadata``,
``service_tier``, ``cache_control`` on blocks, ``output_config.effort``); those asking for what
the engines cannot do (extended ``thinking``, MCP servers, containers) are refused with a 400
naming them.
"""

from __future__ import annotations

from typing import Annotated, Any, Self

from pydantic import BaseModel, ConfigDict, Field

from promptwire.protocol import (
    MAX_MESSAGES,
    MAX_TOOLS,
    MaxTokens,
    MessageText,
    StopSequences,
    Temperature,
    TopK,
    TopP,
)
from promptwire.server._refusals import RefusingRequest


class MessagesRequest(RefusingRequest):
    """``POST /v1/messages``: a conversation to answer."""

    model_config = ConfigDict(extra="allow", strict=True)

    model: Annotated[str, Field(max_length=256)] | None = None
    max_tokens: MaxTokens
    messages: Annotated[list[Any], Field(min_length=1, max_length=MAX_MESSAGES)]
    """Converted one by one by ``promptwire.server.anthropic._translate`` (text, ``tool_use`` and
    ``tool_result`` blocks), then checked with the whole request."""
    system: MessageText | list[Any] | None = None
    stream: bool | None = None
    stop_sequences: StopSequences | None = None
    tools: Annotated[list[Any], Field(max_length=MAX_TOOLS)] | None = None
    tool_choice: dict[str, Any] | None = None
    temperature: Temperature | None = None
    top_k: TopK | None = None
    top_p: TopP | None = None
    metadata: dict[str, Any] | None = None
    output_config: dict[str, Any] | None = None
    """Its ``format`` (``{"type": "json_schema", "schema": ...}``): structured output, where the
    engine has it; its ``effort`` is ignored."""

    # Known to Anthropic and refused unless they ask for nothing (see ``refused``).
    thinking: Any = None
    mcp_servers: Any = None
    container: Any = None

    REFUSABLE = frozenset({"thinking", "mcp_servers", "container"})
    PARAMETERS = frozenset({"temperature", "top_p", "top_k"})

    def generation_params(self) -> dict[str, Any]:
        """The prompt protocol's parameters this request sets (without ``prompt``)."""
        params = self.set_parameters()
        if self.max_tokens is not None:
            params["max_tokens"] = self.max_tokens
        if self.stop_sequences:
            params["stop"] = self.stop_sequences
        return params

    def refused(self) -> tuple[str, str] | None:
        """The first parameter asking for what the engines cannot do, and why; None if none."""
        if isinstance(self.thinking, dict) and self.thinking.get("type") != "disabled":
            return "thinking", "extended thinking is not supported by this server"
        if self.mcp_servers:
            return "mcp_servers", "MCP servers are not supported by this server"
        if self.container is not None:
            return "container", "containers are not supported by this server"
        return None


class CountTokensRequest(MessagesRequest):
    """``POST /v1/messages/count_tokens``: a Messages request to count, not to answer, so
    without ``max_tokens`` (its other generation parameters, if sent, change nothing)."""

    max_tokens: MaxTokens | None = None  # type: ignore[assignment]


class AnthropicErrorDetail(BaseModel):
    type: str
    message: str


class AnthropicErrorBody(BaseModel):
    """Every error on ``/v1/messages``, as Anthropic's SDK reads it."""

    type: str = "error"
    error: AnthropicErrorDetail
    request_id: str | None = None
    """promptwire's id of the request (also its ``X-Request-ID`` header)."""

    @classmethod
    def of(cls, status_code: int, message: str, request_id: str | None = None) -> Self:
        """The body of an answer with ``status_code``: its type is ``ERROR_TYPES``'."""
        kind = ERROR_TYPES.get(status_code, "api_error")
        return cls(error=AnthropicErrorDetail(type=kind, message=message), request_id=request_id)


#: Anthropic's error ``type`` for each status a promptwire server answers on ``/v1/messages``
#: (the others: ``api_error``).
ERROR_TYPES = {
    **dict.fromkeys((400, 405, 415, 422), "invalid_request_error"),
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    408: "timeout_error",
    413: "request_too_large",
    429: "rate_limit_error",
    **dict.fromkeys((503, 529), "overloaded_error"),
}


__all__ = [
    "ERROR_TYPES",
    "AnthropicErrorBody",
    "AnthropicErrorDetail",
    "CountTokensRequest",
    "MessagesRequest",
]
