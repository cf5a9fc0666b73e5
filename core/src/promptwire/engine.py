"""What a backend implements to be served: an engine that turns a request into text.

The server (``promptwire.server``) owns HTTP; an engine owns generation. An engine only has to
implement ``stream``; whole replies are assembled from it, and conversations (``messages``) reach
it already rendered into ``prompt`` by ``render_chat``. Engines must not block the event loop.

Tool calling and structured output (protocol v1.2) are opt-in: an engine that can honour them
says so in ``capabilities``, and the server refuses them (422, never free text) for one that does
not. Such an engine finds ``tools``, ``tool_choice`` and ``response_format`` on the request,
gets the tools in ``render_chat_with_tools``, and yields ``ToolCall``s beside its text.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass

from promptwire.chat_template import render_plain
from promptwire.protocol import (
    Capabilities,
    ChatMessage,
    ErrorType,
    FinishReason,
    PromptRequest,
    ToolSpec,
    Usage,
)
from promptwire.protocol import ToolCall as ProtocolToolCall


@dataclass(frozen=True)
class TextChunk:
    """The next piece of generated text."""

    text: str


@dataclass(frozen=True)
class Finish:
    """The end of a generation; always the last event an engine yields."""

    finish_reason: FinishReason
    usage: Usage


@dataclass(frozen=True)
class ToolCall:
    """A whole call of one of the request's tools (v1.2). ``arguments`` is the JSON text of
    the arguments as the model wrote them. Engines yield these before ``Finish``, whose reason
    is then ``FinishReason.TOOL_CALLS``."""

    id: str
    name: str
    arguments: str

    def to_protocol(self) -> ProtocolToolCall:
        return ProtocolToolCall.model_validate(
            {"id": self.id, "function": {"name": self.name, "arguments": self.arguments}}
        )


EngineEvent = TextChunk | ToolCall | Finish


@dataclass(frozen=True)
class Completion:
    text: str
    finish_reason: FinishReason
    usage: Usage
    tool_calls: tuple[ToolCall, ...] = ()


class EngineError(Exception):
    """An error an engine raises on purpose; the server turns it into a protocol error reply."""

    status_code = 500
    error_type = ErrorType.SERVER_ERROR

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after


class RequestRejected(EngineError):
    """The request cannot be served as asked (for example, a prompt longer than the context)."""

    status_code = 422
    error_type = ErrorType.INVALID_REQUEST


class RequestUnsupported(RequestRejected):
    """The request asks for what this engine cannot honour (v1.2: tools, a response format)."""

    error_type = ErrorType.UNSUPPORTED


class EngineOverloaded(EngineError):
    status_code = 503
    error_type = ErrorType.OVERLOADED


class EngineNotReady(EngineError):
    status_code = 503
    error_type = ErrorType.NOT_READY


class Engine(ABC):
    """A text generator behind the protocol."""

    #: Reported as ``model`` in replies and on ``/health``.
    model_name: str | None = None

    async def start(self) -> None:
        """Load what generation needs. Called once before serving; must be safe to call twice."""

    async def stop(self) -> None:
        """Release resources. Called once when the server shuts down."""

    @property
    def ready(self) -> bool:
        """True once ``start`` has finished and requests can be served."""
        return True

    @property
    def capabilities(self) -> Capabilities:
        """What this engine honours beyond text (protocol v1.2), advertised on ``/health``.

        The default is nothing: the server then refuses requests with ``tools`` (unless
        ``tool_choice`` is ``none``) or a JSON ``response_format`` with a 422. An engine that
        can honour them returns ``Capabilities(tools=True)`` and/or
        ``Capabilities(structured_output=True)`` (once loaded: it may depend on the model)."""
        return Capabilities()

    def render_chat(self, messages: Sequence[ChatMessage]) -> str:
        """The prompt for a conversation (protocol v1.1 ``messages``), by the model's chat template.

        The server calls it once the engine is ready and serves the request with this prompt in
        place of the request's own. The default is the plain template
        (``promptwire.chat_template``); an engine whose model has a template overrides this.
        Raise ``RequestRejected`` for a conversation the template cannot render.
        """
        return render_plain(messages)

    def render_chat_with_tools(
        self, messages: Sequence[ChatMessage], tools: Sequence[ToolSpec]
    ) -> str:
        """The prompt for a conversation that offers the model ``tools`` (protocol v1.2).

        Called instead of ``render_chat`` only for an engine whose ``capabilities`` say
        ``tools``, when the request offers tools and ``tool_choice`` is not ``none``. An engine
        whose model is prompted with its tools (a Hugging Face chat template's ``tools``)
        renders them here; the default ignores them and calls ``render_chat``.
        """
        return self.render_chat(messages)

    def check(self, request: PromptRequest) -> None:
        """Reject a request that cannot be served, before any generation starts."""

    @abstractmethod
    def stream(self, request: PromptRequest) -> AsyncGenerator[EngineEvent, None]:
        """Yield ``TextChunk``s, then exactly one ``Finish``. Closing the iterator cancels."""

    async def complete(self, request: PromptRequest) -> Completion:
        pieces: list[str] = []
        calls: list[ToolCall] = []
        async for event in self.stream(request):
            if isinstance(event, TextChunk):
                pieces.append(event.text)
            elif isinstance(event, ToolCall):
                calls.append(event)
            else:
                return Completion("".join(pieces), event.finish_reason, event.usage, tuple(calls))
        raise EngineError("the engine ended a generation without finishing it")


def check_capabilities(engine: Engine, request: PromptRequest) -> None:
    """Refuse (``RequestUnsupported``, 422) a request asking for tool calls or structured output
    that ``engine`` does not declare, before anything is rendered or generated: a server never
    answers free text in their place."""
    capabilities = engine.capabilities
    if request.wants_tools() and not capabilities.tools:
        raise RequestUnsupported(
            "this server's engine does not support tool calling: send the request without "
            "tools (or with tool_choice 'none')"
        )
    if request.wants_json() and not capabilities.structured_output:
        raise RequestUnsupported(
            "this server's engine does not support structured output: send the request "
            "without a JSON response_format"
        )


def render_request(engine: Engine, request: PromptRequest) -> str:
    """``request.messages`` rendered by ``engine``, with its tools when it is offered some."""
    assert request.messages is not None
    if request.tools and request.wants_tools() and engine.capabilities.tools:
        return engine.render_chat_with_tools(request.messages, request.tools)
    return engine.render_chat(request.messages)
