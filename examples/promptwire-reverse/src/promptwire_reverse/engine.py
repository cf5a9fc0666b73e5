"""The engine: the prompt's words in reverse order, one word per streamed piece."""

from __future__ import annotations

from collections.abc import AsyncGenerator

from promptwire.engine import Engine, EngineEvent, Finish, TextChunk
from promptwire.protocol import FinishReason, PromptRequest, Usage

from promptwire_reverse.settings import ReverseSettings


class ReverseEngine(Engine):
    def __init__(self, settings: ReverseSettings | None = None) -> None:
        self.settings = settings or ReverseSettings()
        self.model_name = self.settings.model_name

    async def stream(self, request: PromptRequest) -> AsyncGenerator[EngineEvent, None]:
        words = request.prompt.split()[::-1] or ["(nothing)"]
        if self.settings.uppercase:
            words = [word.upper() for word in words]
        limit = request.max_tokens or len(words)
        for index, word in enumerate(words[:limit]):
            yield TextChunk(word if index == 0 else f" {word}")
        reason = FinishReason.LENGTH if limit < len(words) else FinishReason.STOP
        yield Finish(
            reason, Usage(prompt_tokens=len(words), completion_tokens=min(limit, len(words)))
        )
