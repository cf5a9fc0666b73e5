"""The real ExLlamaV2 engine on a GPU: a tiny random-weight Llama built here, served over HTTP,
with a chat template in its tokenizer_config.json, and checked by the conformance kit.

The scenarios (``scenarios``) are the ones the CPU tier runs with a stand-in forward pass; here
they run the real kernels. Skipped without CUDA, torch and exllamav2 (without flash-attn the
engine serves unpaged, and these tests check that mode); torch is only imported when these tests
are collected on a machine that has it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.gpu

torch = pytest.importorskip("torch")
if not torch.cuda.is_available():  # pragma: no cover - depends on the machine
    pytest.skip("no CUDA GPU", allow_module_level=True)
pytest.importorskip("exllamav2")

from promptwire.protocol import PromptRequest  # noqa: E402
from promptwire_modal_exllama.engine import BatchingEngine  # noqa: E402
from promptwire_modal_exllama.runtime import ExllamaRuntime  # noqa: E402
from promptwire_modal_exllama.settings import ExllamaSettings  # noqa: E402

from tests.exllama.scenarios import (  # noqa: E402
    ConformanceScenarios,
    EngineScenarios,
    Served,
    serve_tiny_model,
    tiny_settings,
)
from tests.exllama.tiny_model import build_tiny_model  # noqa: E402


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="module")
def served(tiny_model: Path) -> Iterator[Served]:
    with serve_tiny_model(tiny_settings(tiny_model)) as served:
        yield served


class TestTinyModelOnGpu(EngineScenarios):
    """The shared scenarios, on the GPU."""


class TestTinyModelConformance(ConformanceScenarios):
    """promptwire's conformance kit against the real engine serving the tiny model."""


def test_stop_gives_the_gpu_memory_back(tiny_model: Path) -> None:
    """The cache (and the generator's buffers) are freed by ``stop``, not at the next full
    garbage collection: benchmarks and these tests load several engines in one process."""
    import gc

    cache_bytes: list[int] = []

    def load(settings: ExllamaSettings) -> ExllamaRuntime:
        runtime = ExllamaRuntime(settings)
        cache_bytes.append(sum(t.nbytes for t in runtime.cache.all_tensors()))
        return runtime

    engine = BatchingEngine(ExllamaSettings(model_dir=tiny_model, cache_size=65536), load)

    async def run() -> int:
        await engine.start()
        try:
            await engine.complete(PromptRequest(prompt="Pack my", max_tokens=4))
            return int(torch.cuda.memory_allocated())
        finally:
            await engine.stop()

    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    gc.disable()
    try:
        loaded = asyncio.run(run())
        torch.cuda.synchronize()
        after = torch.cuda.memory_allocated()
    finally:
        gc.enable()
    assert loaded - before >= cache_bytes[0] > 0
    assert after - before < (loaded - before) // 4
