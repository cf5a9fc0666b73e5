"""The core's loop around every engine (``Engine.generate``): an engine that yields only text gets
``stop``, ``max_tokens``, usage and the finish reason from it, and is closed when it has given
enough; an engine that reports its own ``Finish`` keeps its exact usage."""

from __future__ import annotations

import gc
import sys
from collections.abc import AsyncGenerator, Sequence

import pytest
from promptwire import (
    Engine,
    EngineEvent,
    Finish,
    FinishReason,
    PromptRequest,
    TextChunk,
    Usage,
)


class ScriptedEngine(Engine):
    """Yields the given events, recording how far it got and whether it was closed."""

    def __init__(self, events: Sequence[EngineEvent | str]) -> None:
        self.events = events
        self.yielded = 0
        self.closed = False

    async def stream(self, request: PromptRequest) -> AsyncGenerator[EngineEvent, None]:
        try:
            for event in self.events:
                self.yielded += 1
                yield TextChunk(event) if isinstance(event, str) else event
        finally:
            self.closed = True


async def _run(engine: Engine, **fields: object) -> tuple[list[TextChunk], Finish]:
    request = PromptRequest(prompt="one two three", **fields)  # type: ignore[arg-type]
    events = [event async for event in engine.generate(request)]
    *chunks, finish = events
    assert all(isinstance(chunk, TextChunk) for chunk in chunks)
    assert isinstance(finish, Finish)
    return chunks, finish  # type: ignore[return-value]


def _text(chunks: list[TextChunk]) -> str:
    return "".join(chunk.text for chunk in chunks)


async def test_text_only_engine_gets_usage_and_stop_reason() -> None:
    chunks, finish = await _run(ScriptedEngine(["a", " b", " c"]))
    assert _text(chunks) == "a b c"
    assert finish == Finish(FinishReason.STOP, Usage(prompt_tokens=3, completion_tokens=3))


async def test_max_tokens_cuts_and_closes_the_engine() -> None:
    engine = ScriptedEngine(["a", " b", " c", " d", " e"])
    chunks, finish = await _run(engine, max_tokens=2)
    assert _text(chunks) == "a b"
    assert finish.finish_reason is FinishReason.LENGTH
    assert finish.usage.completion_tokens == 2
    assert engine.closed and engine.yielded == 3  # one piece past the limit, then closed


async def test_exactly_max_tokens_then_the_end_is_a_stop() -> None:
    _, finish = await _run(ScriptedEngine(["a", " b"]), max_tokens=2)
    assert finish.finish_reason is FinishReason.STOP


async def test_chunks_count_their_tokens() -> None:
    engine = ScriptedEngine([TextChunk("xxxx", tokens=4)] * 3)
    chunks, finish = await _run(engine, max_tokens=10)
    assert _text(chunks) == "xxxxxxxx"
    assert (finish.finish_reason, finish.usage.completion_tokens) == (FinishReason.LENGTH, 8)


async def test_a_stop_sequence_split_across_chunks_is_never_emitted() -> None:
    engine = ScriptedEngine(["hel", "lo wo", "rld", " more", " text"])
    chunks, finish = await _run(engine, stop=["lo wor"])
    assert _text(chunks) == "hel"
    assert finish.finish_reason is FinishReason.STOP
    assert engine.closed and engine.yielded == 3


async def test_held_back_text_is_flushed_when_no_stop_comes() -> None:
    chunks, finish = await _run(ScriptedEngine(["ab", "c"]), stop=["cd"])
    assert _text(chunks) == "abc"
    assert finish.finish_reason is FinishReason.STOP


async def test_the_engines_own_finish_is_kept() -> None:
    exact = Finish(FinishReason.LENGTH, Usage(prompt_tokens=7, completion_tokens=2))
    engine = ScriptedEngine(["a", " b", exact, " never"])
    chunks, finish = await _run(engine, max_tokens=2)
    assert _text(chunks) == "a b"
    assert finish == exact
    assert engine.yielded == 3  # nothing after its Finish is read


async def test_a_stop_found_by_the_core_overrides_the_engines_reason() -> None:
    engine = ScriptedEngine(
        ["ab", Finish(FinishReason.LENGTH, Usage(prompt_tokens=1, completion_tokens=1))]
    )
    chunks, finish = await _run(engine, stop=["b"])
    assert _text(chunks) == "a"
    assert finish.finish_reason is FinishReason.STOP


async def test_closing_the_generation_closes_the_engine() -> None:
    engine = ScriptedEngine(["a", " b", " c"])
    generation = engine.generate(PromptRequest(prompt="p"))
    assert await anext(generation) == TextChunk("a")
    await generation.aclose()
    assert engine.closed


async def test_complete_assembles_the_governed_text() -> None:
    engine = ScriptedEngine(["a", " b", " c"])
    completion = await engine.complete(PromptRequest(prompt="p q", max_tokens=2))
    assert (completion.text, completion.finish_reason) == ("a b", FinishReason.LENGTH)
    assert completion.usage == Usage(prompt_tokens=2, completion_tokens=2)


async def test_complete_closes_the_generation_before_it_returns() -> None:
    """``complete`` closes the generation it read the ``Finish`` of. Left suspended after its
    last ``yield``, a generator is closed by the event loop's finalizer hook, through a task
    of its own, whenever the garbage collector gets to it (route_cost: about 500 bytecodes
    a request)."""
    finalized: list[str] = []
    firstiter, finalizer = sys.get_asyncgen_hooks()

    def noting(generator: AsyncGenerator[object, None]) -> None:
        finalized.append(generator.ag_code.co_qualname)
        assert finalizer is not None
        finalizer(generator)

    sys.set_asyncgen_hooks(firstiter, noting)  # for the generators made from here on
    try:
        for events in (
            ["a", " b"],
            ["a", Finish(FinishReason.STOP, Usage(prompt_tokens=1, completion_tokens=1)), " never"],
        ):
            engine = ScriptedEngine(events)
            completion = await engine.complete(PromptRequest(prompt="p"))
            assert completion.text == "a" + (" b" if len(events) == 2 else "")
            assert engine.closed
        gc.collect()
    finally:
        sys.set_asyncgen_hooks(firstiter, finalizer)
    assert finalized == []


def test_generate_is_final() -> None:
    assert getattr(Engine.generate, "__final__", False)
    assert getattr(Engine.complete, "__final__", False)


@pytest.mark.parametrize("max_tokens", [1, 3, 5])
async def test_never_more_than_max_tokens(max_tokens: int) -> None:
    chunks, finish = await _run(ScriptedEngine([f" w{i}" for i in range(4)]), max_tokens=max_tokens)
    assert len(chunks) == min(max_tokens, 4) == finish.usage.completion_tokens
