"""An engine run in-process, with no server and no HTTP: for a backend author's unit tests.

``run_engine`` serves one request the way the server does before any byte is written (the
request checked as the protocol says, refused when it asks for what the engine does not declare,
its ``messages`` rendered by the engine's chat template, ``prepare``d) and collects what
``Engine.generate`` yields: the loop every engine runs under, which applies ``stop`` and
``max_tokens`` and counts usage. What the engine raises (``RequestRejected``, an
``EngineError``) is raised to the caller.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from promptwire.engine import (
    Engine,
    Finish,
    TextChunk,
    ToolCall,
    check_capabilities,
    rendered_request,
)
from promptwire.protocol import PromptRequest


@dataclass(frozen=True)
class EngineRun:
    """What an engine made of one request: the pieces a stream would carry, the tool calls and
    the ``Finish`` (reason and usage) that ends every generation."""

    pieces: list[str]
    finish: Finish
    tool_calls: list[ToolCall]

    @property
    def text(self) -> str:
        """The whole reply's text: the pieces joined."""
        return "".join(self.pieces)


async def arun_engine(
    engine: Engine[Any], request: PromptRequest | Mapping[str, Any] | str
) -> EngineRun:
    """``run_engine`` for async tests (an event loop is running already)."""
    if isinstance(request, str):
        request = PromptRequest(prompt=request)
    elif not isinstance(request, PromptRequest):
        request = PromptRequest.model_validate(request)  # a ValidationError: the server's 422
    check_capabilities(engine, request)
    request = rendered_request(engine, request)
    await engine.start()  # safe to repeat, by Engine's contract; stopping it is the caller's
    pieces: list[str] = []
    tool_calls: list[ToolCall] = []
    finish: Finish | None = None
    async for event in engine.generate(request, engine.prepare(request)):
        if isinstance(event, TextChunk):
            pieces.append(event.text)
        elif isinstance(event, ToolCall):
            tool_calls.append(event)
        else:
            finish = event
    if finish is None:  # Engine.generate always ends with one
        raise AssertionError("the generation ended without a Finish")
    return EngineRun(pieces=pieces, finish=finish, tool_calls=tool_calls)


def run_engine(engine: Engine[Any], request: PromptRequest | Mapping[str, Any] | str) -> EngineRun:
    """Run ``engine`` on one request in-process and collect what it generates.

    ``request``: a prompt, a dict of the protocol's fields (``{"prompt": ..., "max_tokens": 3,
    "stop": ["."]}``, checked as the server checks a request body) or a ``PromptRequest``. It
    awaits ``engine.start()`` first; call it from sync tests (it runs its own event loop), and
    ``await arun_engine(...)`` from async ones.
    """
    return asyncio.run(arun_engine(engine, request))


__all__ = ["EngineRun", "arun_engine", "run_engine"]
