"""Prompt lookup decoding on the llama.cpp backend (``prompt_lookup``), on SmolLM2: a reply that
repeats its input is written in fewer forward passes, and it is the reply the engine writes
without guessing, greedy or seeded; a reply that repeats nothing costs no extra pass."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from promptwire.testing import EngineRun, arun_engine

from tests.support.optional import LLAMACPP_PLUGIN_MISSING
from tests.support.real_model import QUESTION, REAL_MODEL

pytest.importorskip("promptwire_llamacpp", reason=LLAMACPP_PLUGIN_MISSING)

from promptwire_llamacpp.engine import LlamaCppEngine
from promptwire_llamacpp.settings import LlamaCppSettings

pytestmark = REAL_MODEL

TEXT = (
    "The quick brown fox jumps over the lazy dog. A journey of a thousand miles begins with a "
    "single step. All that glitters is not gold, and fortune favours the bold."
)
REPEAT = f"Repeat this text exactly, word for word:\n\n{TEXT}"


def _engine(prompt_lookup: int) -> LlamaCppEngine:
    return LlamaCppEngine(
        LlamaCppSettings(parallel=2, context_size=512, threads=1, prompt_lookup=prompt_lookup)
    )


@pytest.fixture(scope="module")
def engines() -> Iterator[tuple[LlamaCppEngine, LlamaCppEngine]]:
    plain, guessing = _engine(0), _engine(8)
    plain.load()
    guessing.load()
    yield plain, guessing
    plain.unload()
    guessing.unload()


def _ask(engine: LlamaCppEngine, content: str, **params: Any) -> tuple[EngineRun, int]:
    """The run, and the forward passes it took."""
    scheduler = engine.scheduler
    assert scheduler is not None
    before = scheduler.steps
    body = {"prompt": "", "messages": [{"role": "user", "content": content}], **params}
    run = asyncio.run(arun_engine(engine, body))
    return run, scheduler.steps - before


@pytest.mark.parametrize(
    "params",
    [{"temperature": 0, "max_tokens": 64}, {"temperature": 0.8, "seed": 7, "max_tokens": 64}],
    ids=["greedy", "seeded"],
)
def test_a_repeating_reply_takes_fewer_passes_and_is_the_same(
    engines: tuple[LlamaCppEngine, LlamaCppEngine], params: dict[str, Any]
) -> None:
    plain, guessing = engines
    expected, plain_passes = _ask(plain, REPEAT, **params)
    scheduler = guessing.scheduler
    assert scheduler is not None
    accepted = scheduler.accepted_tokens
    run, passes = _ask(guessing, REPEAT, **params)
    assert run.text == expected.text
    assert run.finish.usage.completion_tokens == expected.finish.usage.completion_tokens
    if params["temperature"] == 0:
        assert "quick brown fox" in run.text  # the model does repeat it
        assert scheduler.accepted_tokens - accepted >= 10
        assert passes < plain_passes * 0.75, (passes, plain_passes)


def test_a_reply_that_repeats_nothing_is_the_same(
    engines: tuple[LlamaCppEngine, LlamaCppEngine],
) -> None:
    plain, guessing = engines
    expected, plain_passes = _ask(plain, QUESTION, temperature=0, max_tokens=32)
    run, passes = _ask(guessing, QUESTION, temperature=0, max_tokens=32)
    assert run.text == expected.text
    assert passes <= plain_passes
