"""Requests that arrive together have their prompts computed in turn on a CPU: each forward
pass finishes one request's prompt, so the first of them gets its first token after one pass,
not after a pass holding every prompt. With ``prompts_in_turn`` off (a GPU), one pass takes them
all. A first token handed off leaves before the next pass, not after it. The scheduler is driven
pass by pass here, on SmolLM2, so which pass finished which prompt is exact."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.optional import LLAMACPP_PLUGIN_MISSING
from tests.support.real_model import REAL_MODEL

pytest.importorskip("promptwire_llamacpp", reason=LLAMACPP_PLUGIN_MISSING)

from promptwire.engine.handoff import Delivery, Handoff
from promptwire_llamacpp.engine import LlamaCppEngine
from promptwire_llamacpp.runtime import LlamaRuntime, SamplerConfig
from promptwire_llamacpp.scheduler import Job, Scheduler
from promptwire_llamacpp.settings import LlamaCppSettings

pytestmark = REAL_MODEL

REQUESTS = 4
SETTINGS = LlamaCppSettings(parallel=REQUESTS, context_size=256, threads=1)


@pytest.fixture(scope="module")
def runtime() -> Iterator[LlamaRuntime]:
    runtime = LlamaRuntime(SETTINGS)
    yield runtime
    runtime.close()


def _first_token_passes(runtime: LlamaRuntime, *, prompts_in_turn: bool) -> list[int]:
    """The forward pass after which each of ``REQUESTS`` requests, queued together, had its
    first token (1: the first pass)."""
    scheduler = Scheduler(runtime, max_waiting=REQUESTS, prompts_in_turn=prompts_in_turn)
    greedy = SamplerConfig(temperature=0.0, top_p=1.0, top_k=0, seed=None)
    firsts: dict[int, int] = {}
    scheduler._open()  # this thread is the scheduler's: no thread of its own is started
    try:
        for index in range(REQUESTS):
            tokens = runtime.tokenize(f"Request {index}: name a colour.", add_special=True)
            job = Job(tokens, greedy, max_new_tokens=2, handed_off=True)
            job.direct = lambda _event, index=index: firsts.setdefault(index, scheduler.steps)
            scheduler._accept(job)
        while len(firsts) < REQUESTS:
            scheduler._step()
            assert scheduler.steps <= 4 * REQUESTS
        scheduler._release_all()  # the sequences given back, their caches emptied
    finally:
        scheduler._close()
    return [firsts[index] for index in range(REQUESTS)]


def test_on_a_cpu_each_pass_finishes_one_prompt(runtime: LlamaRuntime) -> None:
    assert _first_token_passes(runtime, prompts_in_turn=True) == [1, 2, 3, 4]


def test_with_the_batch_filled_one_pass_finishes_every_prompt(runtime: LlamaRuntime) -> None:
    assert _first_token_passes(runtime, prompts_in_turn=False) == [1, 1, 1, 1]


def test_a_handed_off_first_token_leaves_before_the_next_pass(runtime: LlamaRuntime) -> None:
    """Each request's first token reaches the hand-off's consumer once the pass that computed
    it has run and before the next one (which computes the next prompt: 100 ms and more on this
    CPU): when it arrives, the passes run are 1, 2, 3, 4. Sent after the step, as before, it
    waited for that next pass: 2, 3, 4, 5."""
    scheduler = Scheduler(runtime, max_waiting=REQUESTS, prompts_in_turn=True)
    greedy = SamplerConfig(temperature=0.0, top_p=1.0, top_k=0, seed=None)
    arrived: dict[object, int] = {}

    def deliver(batch: Delivery) -> None:
        for key, _event in batch:
            arrived.setdefault(key, scheduler.steps)

    scheduler.handoff = handoff = Handoff(deliver)
    scheduler._open()
    try:
        for index in range(REQUESTS):
            tokens = runtime.tokenize(f"Request {index}: name a colour.", add_special=True)
            job = Job(tokens, greedy, max_new_tokens=3, handed_off=True)
            job.direct = lambda event, index=index: handoff.put(index, event)
            scheduler._accept(job)
        while len(arrived) < REQUESTS:
            scheduler._step()
            scheduler._send_events()  # after the step, as the worker's loop does
            assert scheduler.steps <= 4 * REQUESTS
        scheduler._release_all()
    finally:
        scheduler._close()
    assert [arrived[index] for index in range(REQUESTS)] == [1, 2, 3, 4]


def test_the_engine_takes_prompts_in_turn_on_a_cpu_only() -> None:
    on_cpu = LlamaCppEngine(SETTINGS)
    on_gpu = LlamaCppEngine(SETTINGS.model_copy(update={"gpu_layers": -1}))
    assert on_cpu.prompts_in_turn and not on_gpu.prompts_in_turn
