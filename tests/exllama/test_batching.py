"""The batching engine driven directly: streaming, batching, stops, cancellation, failures.

The real ``BatchingEngine`` and its generator thread, with the fake generator of ``fakes``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from promptwire.engine import EngineError, EngineNotReady, Finish, RequestRejected, TextChunk
from promptwire.engine.worker import FAILED_PASSES_IN_A_ROW
from promptwire.protocol import FinishReason, PromptRequest
from promptwire_modal_exllama.engine import BatchingEngine

from tests.exllama.fakes import DEFAULT_REPLY, FakeRuntime, fake_engine
from tests.support.waiting import wait_until

WHOLE_REPLY = "".join(" " + word for word in DEFAULT_REPLY)


@pytest.fixture()
async def runtime() -> FakeRuntime:
    return FakeRuntime()


@pytest.fixture()
async def engine(runtime: FakeRuntime) -> AsyncIterator[BatchingEngine]:
    engine = fake_engine(runtime)
    await engine.start()
    yield engine
    await engine.stop()


async def test_a_whole_reply_with_usage_and_finish_reason(engine: BatchingEngine) -> None:
    completion = await engine.complete(PromptRequest(prompt="tell a story"))
    assert completion.text == WHOLE_REPLY
    assert completion.finish_reason is FinishReason.STOP
    assert completion.usage.prompt_tokens == 4  # BOS + three words
    assert completion.usage.completion_tokens == len(DEFAULT_REPLY) + 1  # and the EOS token


async def test_streaming_yields_each_token_then_one_finish(engine: BatchingEngine) -> None:
    events = [event async for event in engine.generate(PromptRequest(prompt="hi"))]
    assert [e.text for e in events[:-1] if isinstance(e, TextChunk)] == [
        " " + word for word in DEFAULT_REPLY
    ]
    assert isinstance(events[-1], Finish)
    assert sum(isinstance(e, Finish) for e in events) == 1


async def test_max_tokens_ends_with_length(engine: BatchingEngine) -> None:
    completion = await engine.complete(PromptRequest(prompt="hi", max_tokens=3))
    assert completion.text == " the quick brown"
    assert completion.finish_reason is FinishReason.LENGTH
    assert completion.usage.completion_tokens == 3


async def test_stop_strings_end_the_reply_before_them(engine: BatchingEngine) -> None:
    completion = await engine.complete(PromptRequest(prompt="hi", stop=["fox", "never"]))
    assert completion.text == " the quick brown "
    assert completion.finish_reason is FinishReason.STOP


async def test_sixteen_concurrent_requests_run_as_one_batch(
    engine: BatchingEngine, runtime: FakeRuntime
) -> None:
    runtime.gate.clear()  # hold the "GPU" until all sixteen are queued
    tasks = [
        asyncio.create_task(engine.complete(PromptRequest(prompt=f"prompt {i}", max_tokens=5)))
        for i in range(16)
    ]
    await asyncio.to_thread(wait_until, lambda: len(runtime.generator.enqueued) == 16)
    runtime.gate.set()
    completions = await asyncio.gather(*tasks)
    assert all(c.text == " the quick brown fox jumps" for c in completions)
    assert runtime.generator.max_batch == 16


async def test_the_event_loop_stays_free_while_the_generator_works(
    engine: BatchingEngine, runtime: FakeRuntime
) -> None:
    runtime.gate.clear()
    task = asyncio.create_task(engine.complete(PromptRequest(prompt="hi")))
    await asyncio.to_thread(wait_until, lambda: len(runtime.generator.enqueued) == 1)
    ticks = 0
    for _ in range(20):  # the loop keeps running other work while the job waits
        await asyncio.sleep(0)
        ticks += 1
    assert ticks == 20 and not task.done()
    runtime.gate.set()
    assert (await task).text == WHOLE_REPLY


async def test_closing_a_stream_cancels_its_job_and_frees_it(
    engine: BatchingEngine, runtime: FakeRuntime
) -> None:
    runtime.reply = ["word"] * 1000
    stream = engine.generate(PromptRequest(prompt="hi", max_tokens=40))
    first = await anext(stream)
    assert isinstance(first, TextChunk)
    await stream.aclose()
    loop = engine.loop
    assert loop is not None
    await asyncio.to_thread(wait_until, lambda: runtime.generator.cancelled != [])
    await asyncio.to_thread(wait_until, lambda: loop.generator_jobs == 0 and loop.in_flight == 0)
    # The engine goes on serving.
    runtime.reply = list(DEFAULT_REPLY)
    assert (await engine.complete(PromptRequest(prompt="hi"))).text == WHOLE_REPLY


async def test_cancelling_a_waiting_request_frees_its_job(
    engine: BatchingEngine, runtime: FakeRuntime
) -> None:
    runtime.gate.clear()
    task = asyncio.create_task(engine.complete(PromptRequest(prompt="hi")))
    await asyncio.to_thread(wait_until, lambda: len(runtime.generator.enqueued) == 1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.to_thread(wait_until, lambda: runtime.generator.cancelled != [])
    assert runtime.generator.num_remaining_jobs() == 0
    runtime.gate.set()


async def test_a_generator_failure_fails_the_requests_in_flight_then_recovers(
    engine: BatchingEngine, runtime: FakeRuntime
) -> None:
    runtime.gate.clear()
    tasks = [asyncio.create_task(engine.complete(PromptRequest(prompt=f"p {i}"))) for i in range(3)]
    await asyncio.to_thread(wait_until, lambda: len(runtime.generator.enqueued) == 3)
    runtime.fail_iterations = 1
    runtime.gate.set()
    outcomes = await asyncio.gather(*tasks, return_exceptions=True)
    for outcome in outcomes:
        assert isinstance(outcome, EngineError)
        assert outcome.status_code == 500
        assert "generation failed" in outcome.message
        assert "out of memory" not in outcome.message  # the type, never the details
    assert runtime.generator.num_remaining_jobs() == 0
    assert engine.ready
    assert (await engine.complete(PromptRequest(prompt="again"))).text == WHOLE_REPLY
    assert len(runtime.generators) == 1  # cancelling the failed jobs was enough
    # The loop thread counts jobs after each step, so the last count may lag the last reply.
    await asyncio.to_thread(wait_until, lambda: _metrics(engine)["jobs_active"] == 0)
    counted = _metrics(engine)
    assert counted["generator_failures"] == 1 and counted["generator_restarts"] == 0
    assert counted["jobs_active"] == counted["jobs_pending"] == 0


async def test_a_generator_that_fails_every_iteration_is_out_of_order(
    engine: BatchingEngine, runtime: FakeRuntime
) -> None:
    """A GPU left in a failed state fails every iteration though the failed jobs are freed:
    after a few in a row the loop stops, the engine says it is out of order (the engine process
    restarts it; on Modal the container steps aside) instead of failing every request while
    it says it is ready."""
    runtime.fail_iterations = FAILED_PASSES_IN_A_ROW
    for attempt in range(FAILED_PASSES_IN_A_ROW):
        assert engine.ready
        with pytest.raises(EngineError, match="generation failed"):
            await engine.complete(PromptRequest(prompt=f"attempt {attempt}"))
    await asyncio.to_thread(wait_until, lambda: not engine.ready)
    reason = f"RuntimeError in {FAILED_PASSES_IN_A_ROW} passes in a row"
    assert engine.out_of_order == f"its worker stopped on {reason}"
    with pytest.raises(EngineNotReady):
        await engine.complete(PromptRequest(prompt="after"))


def _metrics(engine: BatchingEngine) -> dict[str, float]:
    return {metric.name: metric.value for metric in engine.metrics()}


async def test_a_generator_that_cannot_free_jobs_is_rebuilt(
    engine: BatchingEngine, runtime: FakeRuntime
) -> None:
    runtime.fail_iterations = 1
    runtime.cancel_raises = True
    with pytest.raises(EngineError):
        await engine.complete(PromptRequest(prompt="hi"))
    runtime.cancel_raises = False
    assert (await engine.complete(PromptRequest(prompt="hi"))).text == WHOLE_REPLY
    assert len(runtime.generators) == 2
    counted = _metrics(engine)
    assert counted["generator_failures"] == 1 and counted["generator_restarts"] == 1


async def test_the_metrics_follow_the_jobs_and_pages(
    engine: BatchingEngine, runtime: FakeRuntime
) -> None:
    """Counted by the generator's thread: jobs waiting while the GPU is busy, then running with
    a cache page each, then none."""
    runtime.gate.clear()
    tasks = [asyncio.create_task(engine.complete(PromptRequest(prompt=f"p {i}"))) for i in range(3)]
    await asyncio.to_thread(wait_until, lambda: _metrics(engine)["jobs_pending"] == 3)
    assert _metrics(engine)["cache_pages_used"] == 0
    runtime.step_delay = 0.05
    runtime.gate.set()
    await asyncio.to_thread(wait_until, lambda: _metrics(engine)["jobs_active"] == 3)
    counted = _metrics(engine)
    assert counted["cache_pages_used"] == 3 and counted["cache_pages_free"] == 13
    await asyncio.gather(*tasks)
    settled = lambda: _metrics(engine)["cache_pages_used"] == 0  # noqa: E731 (counted after a step)
    await asyncio.to_thread(wait_until, settled)
    counted = _metrics(engine)
    assert counted["jobs_active"] == counted["cache_pages_used"] == 0
    assert counted["cache_pages_free"] == 16
    assert "model_weights_bytes" not in counted  # the fake runtime does not say


async def test_the_context_is_checked_before_a_job_is_made(
    engine: BatchingEngine, runtime: FakeRuntime
) -> None:
    too_long = PromptRequest(prompt="word " * 64)
    with pytest.raises(RequestRejected) as rejected:
        engine.prepare(too_long)
    assert rejected.value.status_code == 422
    assert "65 tokens" in rejected.value.message and "64" in rejected.value.message
    with pytest.raises(RequestRejected):
        engine.prepare(PromptRequest(prompt="word " * 50, max_tokens=20))
    assert runtime.generator.enqueued == []


async def test_the_default_max_tokens_shrinks_to_the_room_left(
    engine: BatchingEngine, runtime: FakeRuntime
) -> None:
    runtime.reply = ["w"] * 100
    request = PromptRequest(prompt="word " * 59)  # 60 tokens: room for 4
    prepared = engine.prepare(request)
    assert prepared.params.max_new_tokens == 4
    completion = await engine.complete(request, prepared)
    assert completion.usage.completion_tokens == 4
    assert completion.finish_reason is FinishReason.LENGTH


async def test_sampling_parameters_reach_the_job(
    engine: BatchingEngine, runtime: FakeRuntime
) -> None:
    request = PromptRequest(
        prompt="hi", temperature=0.0, top_p=0.5, top_k=7, seed=42, max_tokens=2, stop=["x"]
    )
    await engine.complete(request)
    params = runtime.generator.enqueued[-1].params
    assert (params.temperature, params.top_p, params.top_k, params.seed) == (0.0, 0.5, 7, 42)
    assert runtime.generator.enqueued[-1].stop_conditions == ["x", 2]


async def test_not_ready_before_start_and_after_stop(runtime: FakeRuntime) -> None:
    engine = fake_engine(runtime)
    assert not engine.ready
    with pytest.raises(EngineNotReady):
        engine.prepare(PromptRequest(prompt="hi"))
    await engine.start()
    await engine.start()  # safe to call twice: loads once
    assert engine.ready and len(runtime.generators) == 1
    assert engine.model_name == "fake-model"
    await engine.stop()
    assert not engine.ready and runtime.closed
    with pytest.raises(EngineNotReady):
        await engine.complete(PromptRequest(prompt="hi"))


async def test_stopping_fails_requests_in_flight_with_503(runtime: FakeRuntime) -> None:
    engine = fake_engine(runtime)
    await engine.start()
    runtime.gate.clear()
    task = asyncio.create_task(engine.complete(PromptRequest(prompt="hi")))
    await asyncio.to_thread(wait_until, lambda: len(runtime.generator.enqueued) == 1)
    await engine.stop()
    with pytest.raises(EngineNotReady) as stopped:
        await task
    assert stopped.value.status_code == 503


class ScriptedGenerator:
    """Answers every job with the same scripted results (ExLlamaV2's result dicts)."""

    def __init__(self, script: list[dict[str, object]]) -> None:
        self.script = script
        self.jobs: list[object] = []

    def enqueue(self, job: object) -> None:
        self.jobs.append(job)

    def cancel(self, job: object) -> None:
        self.jobs.remove(job)

    def num_remaining_jobs(self) -> int:
        return len(self.jobs)

    def iterate(self) -> list[dict[str, object]]:
        results = [{**step, "job": job} for job in self.jobs for step in self.script]
        self.jobs.clear()
        return results


async def test_text_held_for_a_possible_stop_string_is_kept_at_the_eos_token() -> None:
    from promptwire_modal_exllama.generation import GenerationLoop, RequestStream

    script: list[dict[str, object]] = [
        {"stage": "started", "eos": False},
        {"stage": "streaming", "eos": False, "text": "Hello"},
        {
            "stage": "streaming",
            "eos": True,
            "eos_reason": "stop_token",
            "held": {"text": " #"},  # held back: it could have begun the stop string "##"
            "new_tokens": 3,
            "prompt_tokens": 4,
        },
    ]
    loop = GenerationLoop(lambda: ScriptedGenerator(script))
    loop.start()
    try:
        stream = RequestStream(asyncio.get_running_loop(), prompt_tokens=4, job=object())
        loop.submit(stream)
        events = [await stream.queue.get() for _ in range(3)]
    finally:
        loop.stop()
    assert events[:2] == [TextChunk("Hello"), TextChunk(" #")]
    assert isinstance(events[2], Finish) and events[2].finish_reason is FinishReason.STOP
    assert events[2].usage.completion_tokens == 3
