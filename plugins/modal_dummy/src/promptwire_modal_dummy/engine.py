"""The dummy engine: answers ``hello world`` (the LangChain guide's endpoint), or echoes the
prompt, word by word at a settable pace, so chains, streaming and load can be tried with no GPU."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncGenerator

from promptwire.engine import Engine, EngineEvent, TextChunk
from promptwire.protocol import PromptRequest

from promptwire_modal_dummy.settings import DummySettings

_WORDS = re.compile(r"\s*\S+\s*|\s+")
# Without a pace, the words come as fast as the server takes them; every so many the engine
# lets the event loop run, so one long echo cannot keep health checks and other requests
# waiting (a 256 KiB stream used to hold the loop for seconds).
WORDS_PER_TURN = 32


def split_words(text: str) -> list[str]:
    """Pieces of ``text``, one word each with its surrounding spaces; joined they give it back."""
    return _WORDS.findall(text)


class DummyEngine(Engine):
    def __init__(self, settings: DummySettings | None = None) -> None:
        self.settings = settings or DummySettings()
        self.model_name = self.settings.model_name

    async def stream(self, request: PromptRequest) -> AsyncGenerator[EngineEvent, None]:
        # Text only: the core's loop (Engine.generate) applies stop, max_tokens and usage.
        settings = self.settings
        words = split_words(request.prompt if settings.echo else settings.reply)
        interval = 1.0 / settings.tokens_per_second if settings.tokens_per_second else 0.0
        if settings.first_token_delay:
            await asyncio.sleep(settings.first_token_delay)
        for index, word in enumerate(words):
            if index and interval:
                await asyncio.sleep(interval)
            elif index % WORDS_PER_TURN == WORDS_PER_TURN - 1:
                await asyncio.sleep(0)
            yield TextChunk(word)
