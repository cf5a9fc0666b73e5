"""The real ExLlamaV2 engine on a GPU: a tiny random-weight Llama built here, served over HTTP,
with a chat template in its tokenizer_config.json, and checked by the conformance kit.

Skipped without CUDA, torch, exllamav2 and flash-attn (paged attention needs it); torch is only
imported when these tests are collected on a machine that has it.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import httpx
import pytest

pytestmark = pytest.mark.gpu

torch = pytest.importorskip("torch")
if not torch.cuda.is_available():  # pragma: no cover - depends on the machine
    pytest.skip("no CUDA GPU", allow_module_level=True)
pytest.importorskip("exllamav2")
pytest.importorskip("flash_attn")

from httpx_sse import connect_sse  # noqa: E402
from langchain_core.messages import HumanMessage, SystemMessage  # noqa: E402
from promptwire import ChatPromptwire, PromptwireLLM  # noqa: E402
from promptwire.protocol import ChatMessage  # noqa: E402
from promptwire.testing import EndpointConformanceTests  # noqa: E402
from promptwire_modal_exllama.batching import (  # noqa: E402
    BatchingEngine,
    DynamicGenerator,
    EncodedPrompt,
)
from promptwire_modal_exllama.engine import ExllamaRuntime, create_engine  # noqa: E402
from promptwire_modal_exllama.settings import ExllamaSettings  # noqa: E402

from tests.exllama.fakes import wait_until  # noqa: E402
from tests.support.network import LOOPBACK_ONLY  # noqa: E402
from tests.support.servers import serve_engine  # noqa: E402

HIDDEN = 256
HEADS = 4
KV_HEADS = 2
HEAD_DIM = HIDDEN // HEADS
INTERMEDIATE = 512
LAYERS = 2
VOCAB = 512  # a multiple of 32; the trained tokenizer uses fewer ids, the rest are masked
MAX_POSITIONS = 2048  # a multiple of the 256-token cache page
SPECIAL_TOKENS = ["<unk>", "<s>", "</s>"]  # ids 0, 1, 2
BOS_ID, EOS_ID = 1, 2
#: Written into tokenizer_config.json: the template writes the BOS itself, as Llama 3's does.
CHAT_TEMPLATE = (
    "{{- bos_token }}"
    "{%- for message in messages %}"
    "{{- '[' + message['role'] + '] ' + message['content'] | trim + eos_token + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '[assistant] ' }}{%- endif %}"
)

TRAINING_TEXT = [
    "The quick brown fox jumps over the lazy dog.",
    "Pack my box with five dozen liquor jugs!",
    "How vexingly quick daft zebras jump; 0123456789.",
    "Sphinx of black quartz, judge my vow? (yes) [no] {maybe}",
    "A prompt endpoint answers with text: streaming, batching & stopping.",
] * 20


def _write_tokenizer(model_dir: Path) -> None:
    """A byte-level BPE tokenizer trained on ASCII text (so every token decodes cleanly)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB - 64, special_tokens=SPECIAL_TOKENS, show_progress=False
    )
    tokenizer.train_from_iterator(TRAINING_TEXT, trainer)
    assert tokenizer.get_vocab_size() <= VOCAB
    tokenizer.save(str(model_dir / "tokenizer.json"))
    (model_dir / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "bos_token": "<s>",
                "eos_token": "</s>",
                "unk_token": "<unk>",
                "chat_template": CHAT_TEMPLATE,
            }
        )
    )


def _write_config(model_dir: Path) -> None:
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": HIDDEN,
        "intermediate_size": INTERMEDIATE,
        "num_hidden_layers": LAYERS,
        "num_attention_heads": HEADS,
        "num_key_value_heads": KV_HEADS,
        "head_dim": HEAD_DIM,
        "vocab_size": VOCAB,
        "max_position_embeddings": MAX_POSITIONS,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "bos_token_id": BOS_ID,
        "eos_token_id": EOS_ID,
        "tie_word_embeddings": False,
        "torch_dtype": "float16",
    }
    (model_dir / "config.json").write_text(json.dumps(config))


def _write_weights(model_dir: Path) -> None:
    """Random FP16 weights under the Hugging Face Llama tensor names ExLlamaV2 loads."""
    import numpy as np
    from safetensors.numpy import save_file

    rng = np.random.default_rng(1234)

    def normal(*shape: int, std: float = 0.02) -> Any:
        return (rng.standard_normal(shape) * std).astype(np.float16)

    def ones(size: int) -> Any:
        return np.ones(size, dtype=np.float16)

    tensors: dict[str, Any] = {
        "model.embed_tokens.weight": normal(VOCAB, HIDDEN),
        "model.norm.weight": ones(HIDDEN),
    }
    head = normal(VOCAB, HIDDEN, std=0.5)  # wide logits: special tokens (zero rows) never win
    head[: len(SPECIAL_TOKENS)] = 0
    tensors["lm_head.weight"] = head
    for layer in range(LAYERS):
        prefix = f"model.layers.{layer}."
        tensors |= {
            prefix + "input_layernorm.weight": ones(HIDDEN),
            prefix + "post_attention_layernorm.weight": ones(HIDDEN),
            prefix + "self_attn.q_proj.weight": normal(HEADS * HEAD_DIM, HIDDEN),
            prefix + "self_attn.k_proj.weight": normal(KV_HEADS * HEAD_DIM, HIDDEN),
            prefix + "self_attn.v_proj.weight": normal(KV_HEADS * HEAD_DIM, HIDDEN),
            prefix + "self_attn.o_proj.weight": normal(HIDDEN, HEADS * HEAD_DIM),
            prefix + "mlp.gate_proj.weight": normal(INTERMEDIATE, HIDDEN),
            prefix + "mlp.up_proj.weight": normal(INTERMEDIATE, HIDDEN),
            prefix + "mlp.down_proj.weight": normal(HIDDEN, INTERMEDIATE),
        }
    save_file(tensors, str(model_dir / "model.safetensors"), metadata={"format": "pt"})


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    model_dir = tmp_path_factory.mktemp("tiny-llama")
    _write_tokenizer(model_dir)
    _write_config(model_dir)
    _write_weights(model_dir)
    return model_dir


class RecordingGenerator:
    """The real dynamic generator, with the most jobs it ever ran at once recorded. ``hold``
    keeps new jobs waiting until the test has queued them all."""

    def __init__(self, inner: Any, hold: threading.Event) -> None:
        self.inner = inner
        self.hold = hold
        self.max_active = 0

    def enqueue(self, job: Any) -> Any:
        return self.inner.enqueue(job)

    def cancel(self, job: Any) -> Any:
        return self.inner.cancel(job)

    def num_remaining_jobs(self) -> int:
        return int(self.inner.num_remaining_jobs())

    def iterate(self) -> list[dict[str, Any]]:
        if not self.hold.wait(timeout=0.01):
            return []
        results: list[dict[str, Any]] = self.inner.iterate()
        self.max_active = max(self.max_active, len(self.inner.active_jobs))
        return results


class Served(NamedTuple):
    engine: BatchingEngine
    url: str
    generators: list[RecordingGenerator]
    hold: threading.Event
    encoded: list[tuple[bool, list[int]]]
    """Every prompt the runtime encoded: whether a chat template wrote it, and its token ids."""


@pytest.fixture(scope="module")
def served(tiny_model: Path) -> Iterator[Served]:
    settings = ExllamaSettings(model_dir=tiny_model, cache_size=16384, model_name="tiny-llama")
    generators: list[RecordingGenerator] = []
    encoded: list[tuple[bool, list[int]]] = []
    hold = threading.Event()
    hold.set()

    def load(settings: ExllamaSettings) -> ExllamaRuntime:
        runtime = ExllamaRuntime(settings)
        new_generator = runtime.new_generator

        def recording() -> DynamicGenerator:
            generators.append(RecordingGenerator(new_generator(), hold))
            return generators[-1]

        encode = runtime.encode

        def recording_encode(prompt: str, *, from_template: bool = False) -> EncodedPrompt:
            result = encode(prompt, from_template=from_template)
            encoded.append((from_template, [int(i) for i in result.tokens[0].tolist()]))
            return result

        runtime.new_generator = recording  # type: ignore[method-assign]
        runtime.encode = recording_encode  # type: ignore[method-assign]
        return runtime

    engine = BatchingEngine(settings, load)
    with serve_engine(engine) as server:
        yield Served(engine, server.url, generators, hold, encoded)


def test_the_engine_factory_loads_the_model(tiny_model: Path) -> None:
    import asyncio

    engine = create_engine(ExllamaSettings(model_dir=tiny_model, cache_size=4096))
    asyncio.run(engine.start())
    try:
        assert engine.ready
        assert engine.model_name == tiny_model.name
        assert engine.max_seq_len == MAX_POSITIONS
    finally:
        asyncio.run(engine.stop())


def test_a_whole_reply_over_http(served: Served) -> None:
    response = httpx.post(
        served.url,
        json={"prompt": "The quick brown fox", "max_tokens": 12, "temperature": 0},
        timeout=120,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["prompt"]
    assert body["model"] == "tiny-llama"
    assert body["finish_reason"] == "length"
    assert body["usage"]["completion_tokens"] == 12
    assert body["usage"]["prompt_tokens"] >= 2  # BOS plus the prompt


def test_streaming_gives_the_same_greedy_text(served: Served) -> None:
    request = {"prompt": "Pack my box", "max_tokens": 16, "temperature": 0}
    whole = httpx.post(served.url, json=request, timeout=120).json()["prompt"]
    with (
        httpx.Client(timeout=120) as client,
        connect_sse(client, "POST", served.url, json={**request, "stream": True}) as source,
    ):
        events = [(e.event, json.loads(e.data)) for e in source.iter_sse()]
    assert "".join(data["text"] for event, data in events if event == "delta") == whole
    assert events[-1][0] == "done" and events[-1][1]["usage"]["completion_tokens"] == 16


def test_the_langchain_llm_with_three_settings(
    served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PROMPTWIRE_BACKEND", "modal_exllama")
    monkeypatch.setenv("PROMPTWIRE_ENDPOINT_URL", served.url)
    llm = PromptwireLLM(model_kwargs={"max_tokens": 10, "temperature": 0}, timeout=120)
    whole = llm.invoke("Sphinx of black quartz")
    assert whole and "".join(llm.stream("Sphinx of black quartz")) == whole
    llm.close()


def test_sixteen_concurrent_requests_are_batched(
    served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PROMPTWIRE_ENDPOINT_URL", served.url)
    llm = PromptwireLLM(
        model_kwargs={"max_tokens": 24, "temperature": 0}, max_concurrency=16, timeout=120
    )
    generator = served.generators[-1]
    generator.max_active = 0
    served.hold.clear()
    answers: list[str] = []
    worker = threading.Thread(
        target=lambda: answers.extend(llm.batch([f"How vexingly {i}" for i in range(16)]))
    )
    worker.start()
    try:
        wait_until(lambda: generator.num_remaining_jobs() == 16, timeout=60)
    finally:
        served.hold.set()
    worker.join(timeout=120)
    assert len(answers) == 16 and all(answers)
    assert generator.max_active == 16
    llm.close()


def test_stop_strings_end_the_reply_before_them(served: Served) -> None:
    request = {"prompt": "A prompt endpoint", "max_tokens": 40, "temperature": 0}
    whole = httpx.post(served.url, json=request, timeout=120).json()["prompt"]
    middle = len(whole) // 2
    stop = whole[middle : middle + 3]
    assert stop.strip(), whole
    cut = httpx.post(served.url, json={**request, "stop": [stop]}, timeout=120).json()
    assert cut["prompt"] == whole[: whole.index(stop)]
    assert cut["finish_reason"] == "stop"


def test_a_prompt_longer_than_the_context_is_refused_before_the_gpu(served: Served) -> None:
    generator = served.generators[-1]
    response = httpx.post(served.url, json={"prompt": "jump " * 3000}, timeout=120)
    assert response.status_code == 422
    assert "2048" in response.json()["error"]["message"]
    assert generator.num_remaining_jobs() == 0


def test_a_client_that_leaves_frees_its_job(served: Served) -> None:
    loop = served.engine.loop
    assert loop is not None
    with (
        httpx.Client(timeout=120) as client,
        connect_sse(
            client,
            "POST",
            served.url,
            json={"prompt": "The lazy dog", "max_tokens": 1500, "stream": True},
        ) as source,
    ):
        events = source.iter_sse()
        assert next(events).event == "delta"
        assert next(events).event == "delta"
    wait_until(lambda: loop.in_flight == 0 and served.generators[-1].num_remaining_jobs() == 0)
    # Its cache pages are free again: a request that needs them runs.
    after = httpx.post(served.url, json={"prompt": "again", "max_tokens": 4}, timeout=120)
    assert after.status_code == 200


@pytest.mark.parametrize("cache_mode", ["Q4", "Q6", "Q8"])
def test_quantized_caches_generate(tiny_model: Path, cache_mode: str) -> None:
    import asyncio

    from promptwire.protocol import PromptRequest

    engine = create_engine(
        ExllamaSettings(model_dir=tiny_model, cache_size=4096, cache_mode=cache_mode)
    )

    async def run() -> str:
        await engine.start()
        try:
            completion = await engine.complete(PromptRequest(prompt="Pack my", max_tokens=6))
            return completion.text
        finally:
            await engine.stop()

    assert asyncio.run(run())


def test_chat_promptwire_gets_the_models_chat_template(served: Served) -> None:
    template = served.engine.chat_template
    assert template is not None and template.source == "tokenizer_config.json"
    rendered = served.engine.render_chat(
        [
            ChatMessage(role="system", content="Be brief."),
            ChatMessage(role="user", content="The quick brown fox"),
        ]
    )
    assert rendered == "<s>[system] Be brief.</s>\n[user] The quick brown fox</s>\n[assistant] "

    chat = ChatPromptwire(endpoint_url=served.url, max_tokens=10, temperature=0, timeout=120)
    conversation = [SystemMessage("Be brief."), HumanMessage("The quick brown fox")]
    reply = chat.invoke(conversation)
    assert isinstance(reply.content, str) and reply.content
    from_template, ids = served.encoded[-1]
    assert from_template
    assert ids[0] == BOS_ID and ids.count(BOS_ID) == 1  # the template's BOS, and no other
    assert reply.usage_metadata is not None
    assert reply.usage_metadata["input_tokens"] == len(ids)
    assert "".join(str(chunk.content) for chunk in chat.stream(conversation)) == reply.content
    chat.close()

    # The rendering sent as a raw prompt (it starts with BOS, so none is added): the same
    # tokens, so the same greedy reply.
    raw = httpx.post(
        served.url, json={"prompt": rendered, "max_tokens": 10, "temperature": 0}, timeout=120
    )
    assert served.encoded[-1] == (False, ids)
    assert raw.json()["prompt"] == reply.content


class TestTinyModelConformance(EndpointConformanceTests):
    """promptwire's conformance kit against the real engine serving the tiny model."""

    pytestmark = LOOPBACK_ONLY
    prompt = "The quick brown fox"
    max_tokens = 8

    @pytest.fixture(scope="class")
    @classmethod
    def endpoint_url(cls, served: Served) -> str:
        return served.url
