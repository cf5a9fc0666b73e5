"""Engines for tests: the real dummy engine, observed (requests seen, peak concurrency), and
refusing what real engines refuse."""

from __future__ import annotations

from collections.abc import AsyncGenerator

from promptwire.engine import (
    Engine,
    EngineError,
    EngineEvent,
    EngineOverloaded,
    RequestRejected,
    TextChunk,
)
from promptwire.protocol import PromptRequest
from promptwire_modal_dummy.engine import DummyEngine
from promptwire_modal_dummy.settings import DummySettings


class ObservedEngine(DummyEngine):
    """A ``DummyEngine`` that records every request and the most it served at once."""

    def __init__(self, settings: DummySettings | None = None) -> None:
        super().__init__(settings)
        self.requests: list[PromptRequest] = []
        self.active = 0
        self.peak = 0

    async def stream(self, request: PromptRequest) -> AsyncGenerator[EngineEvent, None]:
        self.requests.append(request)
        self.active += 1
        self.peak = max(self.peak, self.active)
        try:
            async for event in super().stream(request):
                yield event
        finally:
            self.active -= 1


#: A prompt holding this is refused by ``RefusingEngine``.
REFUSE = "[refuse]"


class RefusingEngine(ObservedEngine):
    """An ``ObservedEngine`` that refuses as real engines do, before any token: a prompt holding
    ``REFUSE`` with a 422 (as llama.cpp refuses one longer than its context) and, with
    ``capacity``, a request that finds that many generating with a 503 (as a full queue)."""

    def __init__(self, settings: DummySettings | None = None, *, capacity: int | None = None):
        super().__init__(settings)
        self.capacity = capacity
        self.refused = 0

    async def stream(self, request: PromptRequest) -> AsyncGenerator[EngineEvent, None]:
        if REFUSE in request.prompt:
            self.refused += 1
            raise RequestRejected("the prompt is longer than the context")
        if self.capacity is not None and self.active >= self.capacity:
            self.refused += 1
            raise EngineOverloaded("every sequence is busy and the queue is full", retry_after=1)
        async for event in super().stream(request):
            yield event


class FailingMidStream(Engine):
    """Fails after its first piece, with an engine error ("the GPU fell over")."""

    model_name = "failing"

    async def stream(self, request: PromptRequest) -> AsyncGenerator[EngineEvent, None]:
        yield TextChunk("first ")
        raise EngineError("the GPU fell over")
