"""The dummy engine: answers ``hello world`` (the LangChain guide's endpoint), or echoes the
prompt, word by word at a settable pace, so chains, streaming and load can be tried with no GPU."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncGenerator

from promptwire.engine import Engine, EngineEvent, Finish, TextChunk
from promptwire.protocol import FinishReason, PromptRequest, Usage
from promptwire.stops import StopScanner

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
        settings = self.settings
        words = split_words(request.prompt if settings.echo else settings.reply)
        limit = request.max_tokens if request.max_tokens is not None else len(words)
        scanner = StopScanner(request.stop)
        interval = 1.0 / settings.tokens_per_second if settings.tokens_per_second else 0.0
        if settings.first_token_delay:
            await asyncio.sleep(settings.first_token_delay)
        emitted = 0
        for index, word in enumerate(words[:limit]):
            if index and interval:
                await asyncio.sleep(interval)
            elif index % WORDS_PER_TURN == WORDS_PER_TURN - 1:
                await asyncio.sleep(0)
            emitted += 1
            if text := scanner.feed(word):
                yield TextChunk(text)
            if scanner.stopped:
                break
        if tail := scanner.flush():
            yield TextChunk(tail)
        reason = FinishReason.LENGTH if limit < len(words) and not scanner.stopped else None
        usage = Usage(prompt_tokens=len(request.prompt.split()), completion_tokens=emitted)
        yield Finish(reason or FinishReason.STOP, usage)
