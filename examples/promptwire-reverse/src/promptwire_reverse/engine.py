"""The engine: the prompt's words in reverse order, one word per streamed piece.

An engine implements ``stream``: it yields ``TextChunk``s. promptwire applies the request's stop
sequences and ``max_tokens`` around it, builds whole replies from it, turns ``EngineError``s into
protocol errors, and cancels the generator (closes it) when the client goes away or the text is
long enough. Everything else here is optional.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence

from promptwire import ChatMessage, Engine, EngineEvent, PromptRequest, RequestRejected, TextChunk

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

    def prepare(self, request: PromptRequest) -> PromptRequest:
        """Refuse what cannot be served before generating (the client gets a 422)."""
        if len(request.prompt.split()) > MAX_PROMPT_WORDS:
            raise RequestRejected(f"the prompt is longer than {MAX_PROMPT_WORDS} words")
        return request

    async def stream(self, request: PromptRequest) -> AsyncGenerator[EngineEvent, None]:
        """Only the text: promptwire's loop around every engine cuts it at ``max_tokens`` and
        at ``stop`` sequences, counts usage (one token per chunk) and sets the finish reason."""
        words = request.prompt.split()[::-1]
        if self.settings.uppercase:
            words = [word.upper() for word in words]
        for index, word in enumerate(words):
            yield TextChunk(word if index == 0 else f" {word}")
