"""What a backend implements to be served: an engine that turns a request into text.

The server (``promptwire.server``) owns HTTP; an engine owns generation. An engine only has to
implement ``stream`` and may yield nothing but text: the core runs every stream through one loop
(``Engine.generate``) that applies the request's ``stop`` sequences and ``max_tokens``, counts
usage and sets the finish reason, so engines do not each rewrite it. Whole replies are assembled
from the same loop, and conversations (``messages``) reach the engine already rendered into
``prompt`` by ``render_chat``. Engines must not block the event loop.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass, replace
from typing import final

from promptwire.chat_template import render_plain
from promptwire.protocol import ChatMessage, ErrorType, FinishReason, PromptRequest, Usage
from promptwire.stops import StopScanner


@dataclass(frozen=True)
class TextChunk:
    """The next piece of generated text, and how many tokens it is (counted for ``max_tokens``
    and usage when the engine does not report usage itself)."""

    text: str
    tokens: int = 1


@dataclass(frozen=True)
class Finish:
    """The end of a generation, with its usage; optional for an engine.

    An engine that knows better than the core (exact prompt and completion token counts, its own
    reason to stop) yields it last; without it, the core finishes the generation itself.
    """

    finish_reason: FinishReason
    usage: Usage


EngineEvent = TextChunk | Finish


@dataclass(frozen=True)
class Completion:
    """A whole reply, assembled from a generation."""

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

    def count_prompt_tokens(self, request: PromptRequest) -> int:
        """The prompt's size in tokens, for usage when the engine yields no ``Finish``.

        The default counts whitespace-separated words; an engine with a tokenizer overrides it
        or yields a ``Finish`` with exact counts.
        """
        return len(request.prompt.split())

    @abstractmethod
    def stream(self, request: PromptRequest) -> AsyncGenerator[EngineEvent, None]:
        """Yield the generated text as ``TextChunk``s; optionally end with one ``Finish``.

        The engine may ignore ``stop`` and ``max_tokens``: ``generate`` enforces both (and closes
        this generator when it has enough). Honouring them here saves generating text that is
        thrown away. Closing the generator cancels the generation: clean up in ``finally``.
        """

    @final
    async def generate(self, request: PromptRequest) -> AsyncGenerator[EngineEvent, None]:
        """``stream`` under the request's limits: what the server serves. Not for overriding.

        Text is held back while it could be the start of a stop sequence and never includes
        one; at most ``max_tokens`` tokens are emitted; exactly one ``Finish`` comes last, the
        engine's own when it sent one (its usage is exact), with the finish reason ``stop`` when
        a stop sequence ended the text and ``length`` when ``max_tokens`` did.
        """
        scanner = StopScanner(request.stop)
        limit = request.max_tokens
        produced = 0
        events = self.stream(request)
        finish: Finish | None = None
        try:
            async for event in events:
                if isinstance(event, Finish):
                    finish = event
                    break
                if limit is not None and produced + event.tokens > limit:
                    finish = Finish(FinishReason.LENGTH, self._usage(request, produced))
                    break
                produced += event.tokens
                if text := scanner.feed(event.text):
                    yield replace(event, text=text)
                if scanner.stopped:
                    finish = Finish(FinishReason.STOP, self._usage(request, produced))
                    break
        finally:
            await events.aclose()
        if tail := scanner.flush():
            yield TextChunk(tail, tokens=0)
        if finish is None:
            finish = Finish(FinishReason.STOP, self._usage(request, produced))
        elif scanner.stopped and finish.finish_reason is not FinishReason.STOP:
            finish = replace(finish, finish_reason=FinishReason.STOP)
        yield finish

    def _usage(self, request: PromptRequest, completion_tokens: int) -> Usage:
        return Usage(
            prompt_tokens=self.count_prompt_tokens(request), completion_tokens=completion_tokens
        )

    @final
    async def complete(self, request: PromptRequest) -> Completion:
        """The whole reply of ``generate``. Not for overriding."""
        pieces: list[str] = []
        async for event in self.generate(request):
            if isinstance(event, TextChunk):
                pieces.append(event.text)
            else:
                return Completion("".join(pieces), event.finish_reason, event.usage)
        raise EngineError("the engine ended a generation without finishing it")  # pragma: no cover


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
