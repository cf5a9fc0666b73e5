"""The CPU tier: the real exllamav2 0.3.2 package on the CPU, only its weight loading and forward
pass replaced by a deterministic stand-in that asserts the CUDA kernels' limits (``cpu_standin``),
its C++ sampler compiled here (``cpu_ext``).

It runs the engine, the batching loop and the GPU tests' scenarios (``scenarios``) through
exllamav2's config, model object, caches, tokenizer, dynamic generator, jobs and sampler, plus what
only this tier can check: every reply against the stand-in model's reference (so any page-table
mistake shows), the kernels' limits on every forward pass, the unpaged fallback, the batch-size
bound and the memory given back by ``stop``.

Skipped, with the reason, where torch, exllamav2 0.3.2 or a C++ compiler is missing (``.ci/run``
installs the first two where the machine offers a CPU build of torch).
"""

from __future__ import annotations

import asyncio
import gc
import threading
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from promptwire.engine import Finish, TextChunk
from promptwire.protocol import FinishReason, PromptRequest
from promptwire_modal_exllama.engine import BatchingEngine
from promptwire_modal_exllama.runtime import ExllamaRuntime, create_engine
from promptwire_modal_exllama.settings import ExllamaSettings

from tests.exllama.cpu_standin import KernelLimitError, Platform, StandIn, cpu_tier
from tests.exllama.scenarios import (
    ConformanceScenarios,
    EngineScenarios,
    Served,
    serve_tiny_model,
    tiny_settings,
)
from tests.exllama.tiny_model import BOS_ID, build_tiny_model
from tests.support.metrics import scrape
from tests.support.waiting import wait_until

#: A Turing GPU (Modal's T4): flash-attn 2 has no kernels for it, installed or not.
T4 = Platform(capabilities=((7, 5),), flash_attn="2.8.3")
#: An Ampere GPU where no flash-attn wheel fits the installed torch.
NO_FLASH_ATTN = Platform(capabilities=((8, 6),), flash_attn=None)


@pytest.fixture(scope="module")
def tier() -> Iterator[StandIn]:
    with pytest.MonkeyPatch.context() as patch, cpu_tier(patch) as stand_in:
        yield stand_in


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="module")
def served(tier: StandIn, tiny_model: Path) -> Iterator[Served]:
    with serve_tiny_model(tiny_settings(tiny_model)) as served:
        yield served


@pytest.fixture(autouse=True)
def _fresh_calls(tier: StandIn) -> None:
    tier.calls.clear()
    tier.eos_when = None
    tier.delay = 0.0


def _encode(runtime: ExllamaRuntime, prompt: str) -> list[int]:
    return [int(i) for i in runtime.encode(prompt).tokens[0].tolist()]


def _decode(runtime: ExllamaRuntime, ids: list[int]) -> str:
    return str(runtime.tokenizer.decode(_tensor(ids), decode_special_tokens=False)[0])


def _tensor(ids: list[int]) -> Any:
    import torch

    return torch.tensor([ids], dtype=torch.long)


class TestTinyModelOnCpuTier(EngineScenarios):
    """The GPU tests' scenarios, through exllamav2 on the CPU (paged, as with flash-attn)."""

    @pytest.fixture(autouse=True)
    def _tier(self, tier: StandIn) -> None:
        """create_engine in the scenarios needs the stand-ins installed."""


class TestTinyModelConformanceOnCpuTier(ConformanceScenarios):
    """promptwire's conformance kit against the engine on the CPU tier."""


# -- exllamav2's own parts, as the engine uses them --------------------------------------------


def test_exllamav2s_tokenizer_loads_the_tiny_model(tier: StandIn, tiny_model: Path) -> None:
    """ExLlamaV2's HF tokenizer deduces the newline character at load; every piece it lists
    decodes cleanly (a U+FFFD piece makes the generator hold text and skip stop checks)."""
    from exllamav2 import ExLlamaV2Config, ExLlamaV2Tokenizer

    tokenizer = ExLlamaV2Tokenizer(ExLlamaV2Config(str(tiny_model)))
    assert tokenizer.newline_token_id is not None
    assert tokenizer.tokenizer_model.newline_char() == "\u010a"  # "Ċ", ByteLevel's newline
    pieces = tokenizer.get_id_to_piece_list()
    assert not [p for p in pieces if "\ufffd" in p]
    ids = tokenizer.encode("Pack my box\nwith five", add_bos=True)
    assert int(ids[0, 0]) == BOS_ID
    assert tokenizer.decode(ids[:, 1:])[0] == "Pack my box\nwith five"


def test_replies_are_the_models_through_the_cache_pages(served: Served, tier: StandIn) -> None:
    """16 concurrent greedy requests sharing a 600-token prefix (whole pages shared between
    jobs, a partial page copied): each reply is exactly what the stand-in model says for its
    prompt, read back through the generator's page table."""
    runtime = served.runtimes[-1]
    tier.delay = 0.02  # a slow GPU: the requests arrive while the first passes run
    prefix = "Sphinx of black quartz, judge my vow. " * 60
    prompts = [prefix + f"How vexingly {i} quick" for i in range(16)]
    assert len(_encode(runtime, prefix)) > 2 * 256

    async def one(client: httpx.AsyncClient, prompt: str) -> str:
        body = {"prompt": prompt, "max_tokens": 20, "temperature": 0}
        response = await client.post(served.url, json=body)
        assert response.status_code == 200, response.text
        return str(response.json()["prompt"])

    async def run() -> list[str]:
        async with httpx.AsyncClient(timeout=120) as client:
            return await asyncio.gather(*(one(client, p) for p in prompts))

    replies = asyncio.run(run())
    for prompt, reply in zip(prompts, replies, strict=True):
        ids = _encode(runtime, prompt)
        expected = tier.reference_reply(runtime.model_dir, ids, 20)
        assert reply == _decode(runtime, expected)
    decode_passes = [c for c in tier.calls if c.logits]
    assert max(c.batch for c in decode_passes) > 1  # batched, not one after another
    assert all(c.paged for c in tier.calls)


def test_the_metrics_count_the_real_generators_jobs_and_pages(
    served: Served, tier: StandIn
) -> None:
    """/metrics shows the jobs and cache pages as exllamav2's generator holds them: jobs
    pending while the GPU is busy, pages referenced while they run, all free after."""
    tier.delay = 0.05
    total_pages = served.engine.settings.cache_size // 256
    replies: list[int] = []

    def ask() -> None:
        body = {"prompt": "Pack my box with five dozen liquor jugs. " * 20, "max_tokens": 30}
        replies.append(httpx.post(served.url, json=body, timeout=120).status_code)

    served.hold.clear()  # the generator takes no step: the jobs wait in its queue
    threads = [threading.Thread(target=ask) for _ in range(2)]
    for thread in threads:
        thread.start()
    wait_until(lambda: scrape(served.url).value("promptwire_engine_jobs_pending") == 2)
    served.hold.set()
    wait_until(lambda: (scrape(served.url).value("promptwire_engine_cache_pages_used") or 0) >= 2)
    during = scrape(served.url)
    assert during.value("promptwire_engine_jobs_active") == 2
    used = during.value("promptwire_engine_cache_pages_used")
    assert used + during.value("promptwire_engine_cache_pages_free") == total_pages  # type: ignore[operator]
    for thread in threads:
        thread.join(timeout=120)
    assert replies == [200, 200]
    after = scrape(served.url)
    assert after.value("promptwire_engine_jobs_active") == 0
    assert after.value("promptwire_engine_jobs_pending") == 0
    assert after.value("promptwire_engine_cache_pages_used") == 0
    assert after.value("promptwire_engine_cache_pages_free") == total_pages
    assert after.value("promptwire_engine_generator_failures_total") == 0
    weights = sum(p.stat().st_size for p in served.runtimes[-1].model_dir.glob("*.safetensors"))
    assert after.value("promptwire_engine_model_weights_bytes") == weights > 0


def test_every_forward_pass_kept_within_the_kernels_limits(served: Served, tier: StandIn) -> None:
    """A long prompt is prefilled in chunks no longer than max_input_len, at positions below
    max_seq_len, and decoding never passes more rows than the scratch buffers hold."""
    runtime = served.runtimes[-1]
    cfg = runtime.model.config
    prompt = "The quick brown fox jumps over the lazy dog. " * 40
    length = len(_encode(runtime, prompt))
    response = httpx.post(
        served.url, json={"prompt": prompt, "max_tokens": 8, "temperature": 0}, timeout=120
    )
    assert response.status_code == 200, response.text
    prefill = [c for c in tier.calls if not c.logits]
    assert prefill and prefill[-1].positions[0][1] == length - 2  # the last token decodes
    for call in tier.calls:
        assert call.batch * call.q_len <= cfg.max_input_len * cfg.max_batch_size
        assert all(last < cfg.max_seq_len for _, last in call.positions)


def test_the_stand_in_refuses_what_the_kernels_cannot_do(served: Served, tier: StandIn) -> None:
    """The stand-in is not lenient: a pass over the scratch buffers' rows, or past max_seq_len,
    or into a page outside the cache, raises."""
    import torch
    from exllamav2.attn import ExLlamaV2Attention

    runtime = served.runtimes[-1]
    model, cache, cfg = runtime.model, runtime.cache, runtime.model.config
    rows = cfg.max_input_len * cfg.max_batch_size

    def paged(batch: int, q_len: int, start: int, pages: list[int]) -> Any:
        return ExLlamaV2Attention.PagedParams(
            batch_size=batch,
            block_index=torch.tensor([pages] * batch, dtype=torch.int32),
            cache_seqlens=torch.tensor([start] * batch, dtype=torch.int32),
            max_cache_seqlen=start,
            page_size=256,
            q_len=q_len,
        )

    too_many = torch.zeros((rows // 8 + 1, 8), dtype=torch.long)
    with pytest.raises(KernelLimitError, match="scratch buffers"):
        model.forward_chunk(
            input_ids=too_many, cache=cache, attn_params=paged(rows // 8 + 1, 8, 0, [0])
        )
    with pytest.raises(KernelLimitError, match="max_seq_len"):
        model.forward_chunk(
            input_ids=torch.zeros((1, 1), dtype=torch.long),
            cache=cache,
            attn_params=paged(1, 1, cfg.max_seq_len, list(range(9))),
        )
    pages_in_cache = cache.max_seq_len // 256
    with pytest.raises(KernelLimitError, match="page index out of range"):
        model.forward_chunk(
            input_ids=torch.zeros((1, 1), dtype=torch.long),
            cache=cache,
            attn_params=paged(1, 1, 0, [pages_in_cache]),
        )


def test_a_stop_token_after_held_text_keeps_that_text(served: Served, tier: StandIn) -> None:
    """Text held back because it could begin a stop string is part of the reply when the
    model ends with its EOS token right after it (exllamav2 reports it under "held")."""
    runtime = served.runtimes[-1]
    request = {"prompt": "Pack my box", "max_tokens": 12, "temperature": 0}
    ids = _encode(runtime, request["prompt"])
    reply = tier.reference_reply(runtime.model_dir, ids, 6)
    # EOS right after the sixth token; a stop string that begins with that token's text.
    tier.eos_when = lambda context: len(context) == len(ids) + 6
    last_piece = _decode(runtime, reply[-1:])
    body = httpx.post(
        served.url, json={**request, "stop": [last_piece + "\u00a7never"]}, timeout=120
    ).json()
    assert body["prompt"] == _decode(runtime, reply)
    assert body["finish_reason"] == "stop"
    assert body["usage"]["completion_tokens"] == 7  # six tokens and the EOS


# -- the engine's load: limits, attention mode and memory -------------------------------------


def _load(settings: ExllamaSettings, runtimes: list[ExllamaRuntime]) -> BatchingEngine:
    def load(settings: ExllamaSettings) -> ExllamaRuntime:
        runtimes.append(ExllamaRuntime(settings))
        return runtimes[-1]

    return BatchingEngine(settings, load)


async def _generate(engine: BatchingEngine, prompts: list[str], max_tokens: int) -> list[str]:
    async def one(prompt: str) -> str:
        request = PromptRequest(prompt=prompt, max_tokens=max_tokens, temperature=0)
        return (await engine.complete(request, engine.prepare(request))).text

    return list(await asyncio.gather(*(one(p) for p in prompts)))


def test_a_large_batch_size_is_served_when_the_context_is_short(
    tier: StandIn, tiny_model: Path
) -> None:
    """max_batch_size 200 with max_seq_len 512: the generator needs 200 x 8 tokens per forward
    pass, more than max_input_len (512 here) x 1. The engine raises the model's batch rows before
    loading, so the generator is built instead of asserting after the load."""
    runtimes: list[ExllamaRuntime] = []
    tier.delay = 0.02  # a slow GPU: the requests arrive while the first passes run
    settings = tiny_settings(tiny_model, max_batch_size=200, max_seq_len=512, cache_size=65536)
    engine = _load(settings, runtimes)

    async def run() -> list[str]:
        await engine.start()
        try:
            return await _generate(engine, [f"How vexingly {i}" for i in range(100)], 4)
        finally:
            await engine.stop()

    replies = asyncio.run(run())
    assert len(replies) == 100 and all(replies)
    cfg = runtimes[0].config
    assert cfg.max_input_len == 512
    assert cfg.max_batch_size * cfg.max_input_len >= 200 * 8
    # More sequences in one pass than max_input_len / 8 = 64 would have allowed.
    assert max(c.batch for c in tier.calls) > 64


def test_an_impossible_batch_size_is_refused_before_loading(
    tier: StandIn, tiny_model: Path
) -> None:
    from pydantic import ValidationError

    loads = tier.loads
    with pytest.raises(ValidationError, match="runs at most 256 sequences at once"):
        create_engine(tiny_settings(tiny_model, max_batch_size=300))
    assert tier.loads == loads


@pytest.mark.parametrize(
    ("platform", "why"),
    [(NO_FLASH_ATTN, "flash-attn is not installed"), (T4, "compute capability 7.5")],
    ids=["no-flash-attn", "turing-gpu"],
)
def test_without_usable_flash_attn_the_engine_serves_unpaged(
    tier: StandIn,
    tiny_model: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    platform: Platform,
    why: str,
) -> None:
    """Paged attention needs flash-attn >= 2.5.7 on an Ampere-or-newer GPU. Without it, the
    engine loads exllamav2's unpaged mode (one sequence at a time) instead of failing after
    the model is loaded, and says so."""
    with cpu_tier(monkeypatch, platform) as stand_in:
        runtimes: list[ExllamaRuntime] = []
        engine = _load(tiny_settings(tiny_model, max_batch_size=16), runtimes)
        prompts = [f"How vexingly {i}" for i in range(4)]
        with caplog.at_level("INFO", logger="promptwire_modal_exllama.runtime"):

            async def run() -> list[str]:
                await engine.start()
                try:
                    return await _generate(engine, prompts, 6)
                finally:
                    await engine.stop()

            replies = asyncio.run(run())
    runtime = runtimes[0]
    assert not runtime.paged
    assert runtime.config.no_flash_attn  # the unpaged attention must not call flash-attn either
    assert runtime.cache_tokens == 2048  # one sequence: max_seq_len, not CACHE_SIZE
    assert all(not c.paged and c.batch == 1 for c in stand_in.calls)
    for prompt, reply in zip(prompts, replies, strict=True):
        expected = stand_in.reference_reply(runtime.model_dir, _encode(runtime, prompt), 6)
        assert reply == _decode(runtime, expected)
    assert any("unpaged" in r.getMessage() and why in r.getMessage() for r in caplog.records)


def test_unpaged_streaming_and_cancellation(
    tier: StandIn, tiny_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Unpaged, a request waits for the one before it; closing its stream cancels it and the
    next one runs."""
    with cpu_tier(monkeypatch, NO_FLASH_ATTN) as stand_in:
        stand_in.delay = 0.002
        engine = create_engine(tiny_settings(tiny_model))

        async def run() -> tuple[list[str], str]:
            await engine.start()
            try:
                long = engine.generate(PromptRequest(prompt="The lazy dog", max_tokens=1500))
                pieces = []
                async for event in long:
                    if isinstance(event, TextChunk):
                        pieces.append(event.text)
                    if len(pieces) == 3:
                        break
                await long.aclose()
                loop = engine.loop
                assert loop is not None
                await asyncio.to_thread(wait_until, lambda: loop.generator_jobs == 0)
                after = await engine.complete(PromptRequest(prompt="again", max_tokens=4))
                assert after.finish_reason is FinishReason.LENGTH
                return pieces, after.text
            finally:
                await engine.stop()

        pieces, after = asyncio.run(run())
    assert len(pieces) == 3 and after


def test_stop_frees_the_cache_and_the_generator_at_once(tier: StandIn, tiny_model: Path) -> None:
    """The generator and its pages refer to each other; unless ``close`` takes them apart, the
    cache (gigabytes on a GPU) stays allocated until a full garbage collection."""
    refs: dict[str, weakref.ref[Any]] = {}

    def load(settings: ExllamaSettings) -> ExllamaRuntime:
        runtime = ExllamaRuntime(settings)
        refs["cache"] = weakref.ref(runtime.cache)
        refs["keys"] = weakref.ref(runtime.cache.key_states[0])
        refs["model"] = weakref.ref(runtime.model)
        return runtime

    engine = BatchingEngine(tiny_settings(tiny_model), load)

    async def run() -> None:
        await engine.start()
        loop = engine.loop
        assert loop is not None
        refs["generator"] = weakref.ref(loop._generator)
        try:
            done = [e async for e in engine.generate(PromptRequest(prompt="Pack my", max_tokens=4))]
            assert isinstance(done[-1], Finish)
        finally:
            await engine.stop()

    gc.collect()
    gc.disable()
    try:
        asyncio.run(run())
        alive = sorted(name for name, ref in refs.items() if ref() is not None)
    finally:
        gc.enable()
    assert alive == []


def test_defragmenting_the_cache_keeps_every_reply_right(tier: StandIn, tiny_model: Path) -> None:
    """A small cache (16 pages) through many requests of different lengths: pages are reused,
    the generator defragments them (exllamav2's cache_rotate, stood in for on the CPU) when it
    goes idle, and later requests, sharing prefixes with earlier ones, still get the model's
    replies."""
    import exllamav2_ext

    rotations: list[int] = []
    rotate = exllamav2_ext.cache_rotate

    def counting(cache: Any, order: Any, temp: Any) -> None:
        rotations.append(len(order))
        rotate(cache, order, temp)

    runtimes: list[ExllamaRuntime] = []
    engine = _load(tiny_settings(tiny_model, cache_size=4096, max_seq_len=2048), runtimes)
    prefix = "A prompt endpoint answers with text. " * 30
    waves = [
        [prefix + "one", "Pack my box " * 50, "short"],
        ["The lazy dog " * 90, prefix + "two"],
        [prefix + "three", "Sphinx " * 120, "jump"],
        [prefix + "one", "Pack my box " * 50],
    ]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(exllamav2_ext, "cache_rotate", counting)

        async def run() -> list[list[str]]:
            await engine.start()
            try:
                return [await _generate(engine, wave, 30) for wave in waves]
            finally:
                await engine.stop()

        replies = asyncio.run(run())
    runtime = runtimes[0]
    for wave, answers in zip(waves, replies, strict=True):
        for prompt, reply in zip(wave, answers, strict=True):
            expected = tier.reference_reply(runtime.model_dir, _encode(runtime, prompt), 30)
            assert reply == _decode(runtime, expected)
    assert rotations, "the cache was never defragmented"


def test_the_engine_thread_never_blocks_the_event_loop(served: Served, tier: StandIn) -> None:
    """While the generator works (slowly here), /health answers at once."""
    tier.delay = 0.05
    try:
        worker = threading.Thread(
            target=lambda: httpx.post(
                served.url, json={"prompt": "The lazy dog", "max_tokens": 20}, timeout=120
            )
        )
        worker.start()
        wait_until(lambda: bool(tier.calls))
        response = httpx.get(served.url + "health", timeout=2)
        assert response.status_code == 200
        worker.join(timeout=60)
    finally:
        tier.delay = 0.0
