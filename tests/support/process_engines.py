"""Engines for the engine-process tests, built in the child by a module-level factory.

``HazardEngine`` is the dummy engine (echo, tool mode) plus what native code can do to a process,
asked for by the prompt: ``abort`` (``os.abort()`` after the first word, as llama.cpp's
``GGML_ABORT`` does), ``hold <seconds>`` (hold the GIL and the event loop that long, as a slow
grammar step in native code does), ``reject`` and ``overload`` (``prepare``'s typed errors),
``conflict`` (a backend's own error class, with a constructor of its own and a 409), ``teapot``
(one whose status is no error status).
It counts its generations in its metrics, so a test sees a cancellation reach the child.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import AsyncGenerator, Sequence
from pathlib import Path

from promptwire.engine import (
    EngineError,
    EngineEvent,
    EngineMetric,
    EngineOverloaded,
    RequestRejected,
    TextChunk,
)
from promptwire.protocol import PromptRequest
from promptwire_modal_dummy.engine import DummyEngine
from promptwire_modal_dummy.settings import DummySettings
from pydantic import BaseModel


class ConflictError(EngineError):
    """A backend's own error: a status of its own, set by a constructor of its own."""

    error_type = "conflict"

    def __init__(self, what: str, code: int) -> None:
        super().__init__(f"{what} conflicts ({code})")
        self.status_code = 409


class StatusNotAnError(EngineError):
    status_code = 200


class HazardSettings(BaseModel):
    dummy: DummySettings = DummySettings(echo=True)
    abort_at_start_if: Path | None = None
    """``start`` aborts the process while this file exists (a crash-at-start loop)."""
    start_delay: float = 0.0


class HazardEngine(DummyEngine):
    def __init__(self, settings: HazardSettings) -> None:
        super().__init__(settings.dummy)
        self.hazards = settings
        self.active = 0
        self.cancelled = 0
        self.pid = os.getpid()

    async def start(self) -> None:
        marker = self.hazards.abort_at_start_if
        if marker is not None and marker.exists():
            os.abort()
        await asyncio.sleep(self.hazards.start_delay)

    def prepare(self, request: PromptRequest) -> PromptRequest:
        if request.prompt == "reject":
            raise RequestRejected("this prompt is refused by the engine")
        if request.prompt == "overload":
            raise EngineOverloaded("the engine is full", retry_after=7)
        if request.prompt == "conflict":
            raise ConflictError("this prompt", 42)
        if request.prompt == "teapot":
            raise StatusNotAnError("a status that is no error")
        return super().prepare(request)

    def metrics(self) -> Sequence[EngineMetric]:
        return [
            EngineMetric("active", self.active, "Generations running."),
            EngineMetric("cancelled", self.cancelled, "Generations cancelled.", kind="counter"),
            EngineMetric("pid", self.pid, "The engine's process id."),
        ]

    async def stream(self, request: PromptRequest) -> AsyncGenerator[EngineEvent, None]:
        words = request.prompt.split()
        self.active += 1
        finished = False
        try:
            if words[:1] == ["abort"]:
                yield TextChunk("aborting ")
                await asyncio.sleep(0.2)  # the word reaches the client first
                os.abort()
            if words[:1] == ["hold"]:
                _hold_the_gil(float(words[1]))
            async for event in super().stream(request):
                yield event
            finished = True
        finally:
            self.active -= 1
            if not finished:
                self.cancelled += 1


def _hold_the_gil(seconds: float) -> None:
    """Keep this process's GIL for ``seconds``: no other thread of it runs meanwhile."""
    interval = sys.getswitchinterval()
    sys.setswitchinterval(seconds + 5)
    try:
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            pass
    finally:
        sys.setswitchinterval(interval)


def create_hazard_engine(settings: HazardSettings) -> HazardEngine:
    return HazardEngine(settings)
