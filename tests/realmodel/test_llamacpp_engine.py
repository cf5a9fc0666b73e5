"""The llama.cpp engine in-process, on SmolLM2: what its scheduler promises beyond the HTTP
layer (sequences decoded together, freed at once when a caller leaves, a full queue refused) and
the 422s that come before any token."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from promptwire.engine import EngineOverloaded, RequestRejected, TextChunk
from promptwire.protocol import ChatMessage, PromptRequest
from promptwire.testing import arun_engine, run_engine

from tests.support.optional import LLAMACPP_PLUGIN_MISSING
from tests.support.real_model import ANSWER, COMPLETION_PROMPT, QUESTION, REAL_MODEL

pytest.importorskip("promptwire_llamacpp", reason=LLAMACPP_PLUGIN_MISSING)

from promptwire_llamacpp.engine import LlamaCppEngine
from promptwire_llamacpp.runtime import ModelLoadError, sampler_seed
from promptwire_llamacpp.settings import LlamaCppSettings

pytestmark = REAL_MODEL

PARALLEL = 4


@pytest.fixture(scope="module")
def engine() -> Iterator[LlamaCppEngine]:
    settings = LlamaCppSettings(parallel=PARALLEL, context_size=512, threads=1, temperature=0.0)
    engine = LlamaCppEngine(settings)
    engine.load()
    yield engine
    engine.unload()


def _scheduler_idle(engine: LlamaCppEngine, timeout: float = 30.0) -> bool:
    scheduler = engine.scheduler
    assert scheduler is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if scheduler.stats.active == 0 and scheduler.stats.waiting == 0:
            return True
        time.sleep(0.02)
    return False


def test_the_chat_template_comes_from_the_gguf(engine: LlamaCppEngine) -> None:
    prompt = engine.render_chat([ChatMessage(role="user", content=QUESTION)])
    assert prompt.startswith("<|im_start|>system\nYou are a helpful AI assistant named SmolLM")
    assert prompt.endswith(f"<|im_start|>user\n{QUESTION}<|im_end|>\n<|im_start|>assistant\n")
    run = run_engine(engine, {"prompt": "", "messages": [{"role": "user", "content": QUESTION}]})
    assert ANSWER in run.text
    assert run.finish.usage.prompt_tokens == engine.count_prompt_tokens(
        PromptRequest(prompt=prompt, messages=[ChatMessage(role="user", content=QUESTION)])
    )


def test_concurrent_requests_decode_in_the_same_forward_passes(engine: LlamaCppEngine) -> None:
    """Four 12-token replies at once take about 12 forward passes, not 48."""
    scheduler = engine.scheduler
    assert scheduler is not None
    request = {"prompt": COMPLETION_PROMPT, "max_tokens": 12, "temperature": 0.7, "seed": 1}

    async def together() -> list[int]:
        runs = await asyncio.gather(
            *(arun_engine(engine, {**request, "seed": seed}) for seed in range(PARALLEL))
        )
        return [run.finish.usage.completion_tokens for run in runs]

    before = scheduler.steps
    tokens = asyncio.run(together())
    steps = scheduler.steps - before
    assert sum(tokens) >= 2 * PARALLEL
    assert steps < sum(tokens), (steps, tokens)
    assert steps <= max(tokens) + PARALLEL  # joined at most a few steps apart


@pytest.mark.parametrize("seed", [2**32 - 1, 2**63 - 1, 2**32 + 42], ids=hex)
def test_every_seed_gives_the_same_reply_every_time(engine: LlamaCppEngine, seed: int) -> None:
    """llama.cpp's sampler takes 32-bit seeds, and 2**32-1 means "random": seeds equal to it
    modulo 2**32 (the protocol's largest, 2**63-1, among them) gave a new reply every time."""
    request = {"prompt": COMPLETION_PROMPT, "max_tokens": 16, "temperature": 1.0, "seed": seed}
    replies = {run_engine(engine, request).text for _ in range(3)}
    assert len(replies) == 1, replies


def test_large_seeds_are_mixed_down_not_cut_to_their_low_bits() -> None:
    assert sampler_seed(42) == 42 and sampler_seed(2**32 - 2) == 2**32 - 2
    large = [2**32 - 1, 2**32, 2**32 + 42, 2**63 - 1, *range(2**40, 2**40 + 1000)]
    mixed = [sampler_seed(seed) for seed in large]
    assert all(0 <= value < 2**32 - 1 for value in mixed)
    assert sampler_seed(2**32 + 42) != 42
    assert len(set(mixed)) == len(large)  # no two of these collide


def test_a_reply_cut_inside_a_character_leaves_it_out(engine: LlamaCppEngine) -> None:
    """An emoji takes SmolLM2 several tokens: a reply that ``max_tokens`` cuts inside one ended
    with U+FFFD; each reply is now the longer one's text up to its last whole character."""
    request = {"prompt": "🙂🙃🙂🙃🙂🙃🙂🙃🙂", "temperature": 0.0}
    texts = [run_engine(engine, {**request, "max_tokens": n}).text for n in range(1, 11)]
    assert not any("\ufffd" in text for text in texts), texts
    assert all(longer.startswith(text) for text, longer in itertools.pairwise(texts)), texts
    assert len(set(texts)) < len(texts)  # some cut inside a character: it was left out


def test_a_caller_that_leaves_frees_its_sequence_at_once(engine: LlamaCppEngine) -> None:
    async def leave_early() -> str:
        request = PromptRequest(prompt=COMPLETION_PROMPT, max_tokens=400, temperature=0.0)
        text = ""
        events = engine.generate(request)
        async for event in events:
            if isinstance(event, TextChunk):
                text += event.text
            if len(text) > 10:
                break
        await events.aclose()
        return text

    assert asyncio.run(leave_early())
    assert _scheduler_idle(engine), "the abandoned request kept its sequence"
    # Every sequence is free again: as many requests as sequences all run at once.
    results = asyncio.run(_many(engine, PARALLEL))
    assert all(run.text for run in results)


async def _many(engine: LlamaCppEngine, count: int) -> list[object]:
    return list(
        await asyncio.gather(
            *(
                arun_engine(engine, {"prompt": COMPLETION_PROMPT, "max_tokens": 4})
                for _ in range(count)
            )
        )
    )


def test_a_prompt_seen_before_is_not_computed_again(engine: LlamaCppEngine) -> None:
    """The second of two requests with the same beginning finds it in the cache (all but the
    last token, whose logits start the reply), and the reply is the same as computed afresh."""
    scheduler = engine.scheduler
    assert scheduler is not None
    assert _scheduler_idle(engine)
    first = run_engine(engine, {"prompt": COMPLETION_PROMPT, "max_tokens": 8, "temperature": 0})
    before = scheduler.reused_tokens
    again = run_engine(engine, {"prompt": COMPLETION_PROMPT, "max_tokens": 8, "temperature": 0})
    assert scheduler.reused_tokens - before == first.finish.usage.prompt_tokens - 1
    assert again.text == first.text
    longer = COMPLETION_PROMPT + " The capital"
    before = scheduler.reused_tokens
    run_engine(engine, {"prompt": longer, "max_tokens": 4, "temperature": 0})
    assert scheduler.reused_tokens - before >= first.finish.usage.prompt_tokens - 2


def test_a_prompt_longer_than_the_context_is_refused_before_generating(
    engine: LlamaCppEngine,
) -> None:
    long = "word " * 600
    with pytest.raises(RequestRejected, match="context holds 512 tokens"):
        engine.prepare(PromptRequest(prompt=long))
    with pytest.raises(RequestRejected, match="ask for at most"):
        engine.prepare(PromptRequest(prompt=COMPLETION_PROMPT, max_tokens=600))


def test_a_schema_the_grammar_cannot_hold_is_a_422(engine: LlamaCppEngine) -> None:
    body = {
        "prompt": "Answer in JSON.",
        "messages": [{"role": "user", "content": "Answer in JSON."}],
        "response_format": {
            "type": "json_schema",
            "json_schema": {
                "name": "broken",
                "schema": {"type": "object", "properties": {"a": {"$ref": "#/$defs/missing"}}},
            },
        },
    }
    with pytest.raises(RequestRejected, match="cannot constrain"):
        engine.prepare(PromptRequest.model_validate(body))


def test_a_full_queue_is_a_503_with_retry_after(tmp_path: Path) -> None:
    settings = LlamaCppSettings(parallel=1, max_waiting=0, context_size=256, threads=1)
    engine = LlamaCppEngine(settings)
    engine.load()
    try:

        async def two_at_once() -> BaseException | None:
            # The first request holds the only sequence for a while whatever the model would
            # say: its grammar wants a 200-character string before the reply may end.
            schema = {
                "type": "object",
                "properties": {"a": {"type": "string", "minLength": 200}},
                "required": ["a"],
            }
            first = PromptRequest(
                prompt=COMPLETION_PROMPT,
                messages=[ChatMessage(role="user", content=COMPLETION_PROMPT)],
                max_tokens=200,
                response_format={
                    "type": "json_schema",
                    "json_schema": {"name": "a", "schema": schema},
                },
            )
            events = engine.generate(first)
            try:
                await anext(events)  # admitted: it holds the sequence now
                try:
                    await arun_engine(engine, {"prompt": COMPLETION_PROMPT, "max_tokens": 4})
                except EngineOverloaded as exc:
                    return exc
                return None
            finally:
                await events.aclose()

        refused = asyncio.run(two_at_once())
        assert isinstance(refused, EngineOverloaded)
        assert refused.retry_after == 1
    finally:
        engine.unload()


def test_a_missing_model_file_is_a_clear_error(tmp_path: Path) -> None:
    settings = LlamaCppSettings(model=tmp_path / "absent.gguf")
    with pytest.raises(ModelLoadError, match="no GGUF model file at"):
        LlamaCppEngine(settings).load()
    not_gguf = tmp_path / "model.gguf"
    not_gguf.write_bytes(b"not a model")
    with pytest.raises(ModelLoadError, match="is not a GGUF model file"):
        LlamaCppEngine(LlamaCppSettings(model=not_gguf)).load()
