"""The engine: the prompt's words in reverse order, one word per streamed piece.

An engine implements ``stream``: it yields ``TextChunk``s, then exactly one ``Finish``. The server
builds whole replies from it, turns ``EngineError``s into protocol errors, and cancels the
generator (closes it) when the client goes away. Everything else here is optional.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence

from promptwire import (
    ChatMessage,
    Engine,
    EngineEvent,
    Finish,
    FinishReason,
    PromptRequest,
    RequestRejected,
    StopScanner,
    TextChunk,
    Usage,
)

from promptwire_reverse.settings import ReverseSettings

MAX_PROMPT_WORDS = 10_000


class ReverseEngine(Engine):
    def __init__(self, settings: ReverseSettings | None = None) -> None:
        self.settings = settings or ReverseSettings()
        self.model_name = self.settings.model_name  # reported as ``model`` in replies

    def render_chat(self, messages: Sequence[ChatMessage]) -> str:
        """This "model"'s chat template: it answers the last thing the user said.

        Without this override the server would render the conversation with promptwire's plain
        template (``System: ...``, ``User: ...``, ``Assistant:``)."""
        said = [message.content for message in messages if message.role == "user"]
        return said[-1] if said else ""

    def check(self, request: PromptRequest) -> None:
        """Refuse what cannot be served before generating (the client gets a 422)."""
        if len(request.prompt.split()) > MAX_PROMPT_WORDS:
            raise RequestRejected(f"the prompt is longer than {MAX_PROMPT_WORDS} words")

    async def stream(self, request: PromptRequest) -> AsyncGenerator[EngineEvent, None]:
        words = request.prompt.split()[::-1]
        if self.settings.uppercase:
            words = [word.upper() for word in words]
        limit = request.max_tokens if request.max_tokens is not None else len(words)
        scanner = StopScanner(request.stop)  # never emits any part of a stop sequence
        emitted = 0
        for index, word in enumerate(words[:limit]):
            emitted += 1
            if text := scanner.feed(word if index == 0 else f" {word}"):
                yield TextChunk(text)
            if scanner.stopped:
                break
        if tail := scanner.flush():
            yield TextChunk(tail)
        cut_short = limit < len(words) and not scanner.stopped
        reason = FinishReason.LENGTH if cut_short else FinishReason.STOP
        yield Finish(reason, Usage(prompt_tokens=len(words), completion_tokens=emitted))
