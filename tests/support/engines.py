"""Engines for tests: the real dummy engine, observed (requests seen, peak concurrency)."""

from __future__ import annotations

from collections.abc import AsyncGenerator

from promptwire.engine import EngineEvent
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
