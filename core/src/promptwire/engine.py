"""What a backend implements to be served: an engine that turns a request into text.

The server (``promptwire.server``) owns HTTP; an engine owns generation. An engine only has to
implement ``stream``; whole replies are assembled from it, and conversations (``messages``) reach
it already rendered into ``prompt`` by ``render_chat``. Engines must not block the event loop.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass

from promptwire.chat_template import render_plain
from promptwire.protocol import ChatMessage, ErrorType, FinishReason, PromptRequest, Usage


@dataclass(frozen=True)
class TextChunk:
    """The next piece of generated text."""

    text: str


@dataclass(frozen=True)
class Finish:
    """The end of a generation; always the last event an engine yields."""

    finish_reason: FinishReason
    usage: Usage


EngineEvent = TextChunk | Finish


@dataclass(frozen=True)
class Completion:
    text: str
    finish_reason: FinishReason
    usage: Usage


class EngineError(Exception):
    """An error an engine raises on purpose; its message always reaches the client.

    Raised from ``check`` or before a stream's first chunk, it is the reply: its
    ``status_code``, its ``error_type`` and its message (with ``Retry-After`` when
    ``retry_after`` is set). Raised later in a stream, it ends the stream with an ``error`` event
    of the same type and message. Any other exception is logged on the server and reaches the
    client only as ``server_error`` "internal server error", so an engine's internals never leak.
    """

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


class EngineOverloaded(EngineError):
    """Too busy to take the request now: a 503 with ``Retry-After``; clients may retry."""

    status_code = 503
    error_type = ErrorType.OVERLOADED


class EngineNotReady(EngineError):
    """Still loading: a 503 ``not_ready`` with ``Retry-After``; clients may retry."""

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
        """Whether requests can be served now, once ``start`` has returned.

        The server answers 503 ``not_ready`` until its lifespan has awaited ``start`` and while
        this is False, so the default (True) suits an engine that loads everything in ``start``.
        Override it for an engine that goes on loading in the background after ``start``.
        """
        return True

    def render_chat(self, messages: Sequence[ChatMessage]) -> str:
        """The prompt for a conversation (protocol v1.1 ``messages``), by the model's chat template.

        The server calls it once the engine is ready and serves the request with this prompt in
        place of the request's own. The default is the plain template
        (``promptwire.chat_template``); an engine whose model has a template overrides this.
        Raise ``RequestRejected`` for a conversation the template cannot render.
        """
        return render_plain(messages)

    def check(self, request: PromptRequest) -> None:
        """Reject a request that cannot be served, before any generation starts."""

    @abstractmethod
    def stream(self, request: PromptRequest) -> AsyncGenerator[EngineEvent, None]:
        """Yield ``TextChunk``s, then exactly one ``Finish``. Closing the iterator cancels."""

    async def complete(self, request: PromptRequest) -> Completion:
        pieces: list[str] = []
        async for event in self.stream(request):
            if isinstance(event, TextChunk):
                pieces.append(event.text)
            else:
                return Completion("".join(pieces), event.finish_reason, event.usage)
        raise EngineError("the engine ended a generation without finishing it")


__all__ = [
    "Completion",
    "Engine",
    "EngineError",
    "EngineEvent",
    "EngineNotReady",
    "EngineOverloaded",
    "Finish",
    "RequestRejected",
    "TextChunk",
]
