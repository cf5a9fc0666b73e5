"""(6) GPU: the ExLlamaV2 engine served over HTTP vs in-process, batched vs single, and against
Hugging Face transformers ``generate`` on the same random-weight model.

Run on a CUDA machine with the GPU libraries (torch, exllamav2 0.3.2, transformers; flash-attn
for the engine's paged mode, without it the engine runs unpaged and the report says so):

    uv run python -m benchmarks.gpu [--quick] [--json PATH] [--model-dir DIR]

(``benchmarks/gpu_run.sh`` is the whole prepared GPU run: extension build, GPU tests, this.)
It builds a Llama of about 1.1B parameters (TinyLlama's shape: 22 layers, hidden 2048, 32 heads,
4 KV heads, vocabulary 32000), FP16, with random weights and a byte-level BPE tokenizer made here
(no download), then measures, with greedy decoding, prompts of about 128 tokens and 256 new tokens:

- ExLlamaV2's dynamic generator driven in-process (the library alone: the floor);
- promptwire's ``BatchingEngine`` in-process (the engine's thread and queues, no HTTP);
- ``promptwire serve --backend modal_exllama --model-dir`` over HTTP through promptwire's client;
- transformers ``generate`` (sdpa attention, batch of equal-length prompts);

each with 1, 16 and 64 concurrent streams, and the fraction of the GPU's memory-bandwidth
roofline that single-stream decode reaches (every decoded token reads every weight once).
Without CUDA or the libraries it exits with status 2 and says what is missing.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import random
import signal
import string
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.common import (
    PROMPTWIRE_CLI,
    RESULTS_DIR,
    BenchResult,
    Measurement,
    Ratio,
    free_port,
    machine_info,
    server_process,
)

REQUIRED = ("torch", "exllamav2", "transformers", "safetensors", "tokenizers")
SPECIAL_TOKENS = ["<unk>", "<s>", "</s>"]  # ids 0, 1, 2
BOS_ID, EOS_ID = 1, 2
PROMPT_TOKENS = 128
NEW_TOKENS = 256
CONCURRENCY = (1, 16, 64)
LOAD_TIMEOUT = 600.0
RUN_TIMEOUT = 300.0

#: Peak memory bandwidth from the vendors' data sheets, bytes/s, by device-name fragment.
SPEC_BANDWIDTH = {
    "H200": 4.8e12,
    "H100 NVL": 3.9e12,
    "H100 PCIe": 2.0e12,
    "H100": 3.35e12,  # SXM (HBM3)
    "A100-SXM4-80GB": 2.039e12,
    "A100 80GB PCIe": 1.935e12,
    "A100": 1.555e12,  # 40 GB
    "L40S": 0.864e12,
    "A10G": 0.6e12,
    "L4": 0.3e12,
    "RTX 4090": 1.008e12,
}


@dataclass(frozen=True)
class Shape:
    """A Llama; the default is TinyLlama-1.1B's shape."""

    hidden: int = 2048
    intermediate: int = 5632
    layers: int = 22
    heads: int = 32
    kv_heads: int = 4
    vocab: int = 32000
    max_positions: int = 2048

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    def layer_params(self) -> int:
        attention = self.hidden * self.head_dim * (2 * self.heads + 2 * self.kv_heads)
        return attention + 3 * self.hidden * self.intermediate + 2 * self.hidden

    def params(self) -> int:
        return self.layers * self.layer_params() + 2 * self.vocab * self.hidden + self.hidden

    def decode_bytes(self, context: int) -> int:
        """Bytes one decoded token reads: every weight but the embedding table (one row of it is
        read), plus the key/value cache of ``context`` tokens, all FP16."""
        weights = self.layers * self.layer_params() + self.vocab * self.hidden + self.hidden
        kv = self.layers * 2 * self.kv_heads * self.head_dim * context
        return 2 * (weights + kv)


# -- the model, built here ---------------------------------------------------------------------


def text_alphabet() -> list[str]:
    """Printable ASCII, tab and newline as ByteLevel writes them (" " is "Ġ", "\\n" is "Ċ"):
    one byte each, so every token made of them decodes to clean text."""
    from tokenizers import pre_tokenizers

    mapping = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    return [mapping.pre_tokenize_str(char)[0][0] for char in string.printable]


def write_tokenizer(model_dir: Path, vocab_size: int) -> None:
    """A byte-level BPE of exactly ``vocab_size`` ids: the special tokens, the characters of
    ``text_alphabet``, every pair of them, then triples of characters other than lowercase
    letters. No token holds part of a multi-byte character, so every id decodes to text (a piece
    that decodes to U+FFFD makes ExLlamaV2's generator hold text back, which would show as
    serving overhead in the time to first token). Lowercase words split into pairs: about two
    characters per token."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    alphabet = text_alphabet()
    vocab = {token: i for i, token in enumerate(SPECIAL_TOKENS)}
    for char in alphabet:
        vocab[char] = len(vocab)
    merges: list[tuple[str, str]] = []

    def add(left: str, right: str) -> bool:
        if len(vocab) >= vocab_size:
            return False
        vocab[left + right] = len(vocab)
        merges.append((left, right))
        return True

    for a in alphabet:
        for b in alphabet:
            add(a, b)
    others = [c for c in alphabet if c not in string.ascii_lowercase]
    for pair in (a + b for a in others for b in others):
        for c in others:
            if not add(pair, c):
                break
    if len(vocab) < vocab_size:
        raise ValueError(f"vocab_size {vocab_size} is more than this tokenizer can fill")
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.add_special_tokens(SPECIAL_TOKENS)
    tokenizer.save(str(model_dir / "tokenizer.json"))
    (model_dir / "tokenizer_config.json").write_text(
        json.dumps({"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"})
    )


def write_config(model_dir: Path, shape: Shape) -> None:
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": shape.hidden,
        "intermediate_size": shape.intermediate,
        "num_hidden_layers": shape.layers,
        "num_attention_heads": shape.heads,
        "num_key_value_heads": shape.kv_heads,
        "head_dim": shape.head_dim,
        "vocab_size": shape.vocab,
        "max_position_embeddings": shape.max_positions,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "hidden_act": "silu",
        "bos_token_id": BOS_ID,
        "eos_token_id": EOS_ID,
        "tie_word_embeddings": False,
        "torch_dtype": "float16",
    }
    (model_dir / "config.json").write_text(json.dumps(config))
    (model_dir / "generation_config.json").write_text(
        json.dumps({"bos_token_id": BOS_ID, "eos_token_id": EOS_ID})
    )


def write_weights(model_dir: Path, shape: Shape, seed: int = 1234, device: str = "cuda") -> None:
    """Random FP16 weights (made on the GPU, fast) under the Hugging Face Llama names. The
    special tokens' output rows are zero, so greedy decoding never picks the end token."""
    import torch
    from safetensors.torch import save_file

    generator = torch.Generator(device=device).manual_seed(seed)

    def normal(*dims: int, std: float = 0.02) -> Any:
        t = torch.randn(*dims, generator=generator, device=device, dtype=torch.float16)
        return (t * std).cpu()

    def ones(size: int) -> Any:
        return torch.ones(size, dtype=torch.float16)

    hidden, inter, hd = shape.hidden, shape.intermediate, shape.head_dim
    head = normal(shape.vocab, hidden)
    head[: len(SPECIAL_TOKENS)] = 0
    tensors: dict[str, Any] = {
        "model.embed_tokens.weight": normal(shape.vocab, hidden),
        "model.norm.weight": ones(hidden),
        "lm_head.weight": head,
    }
    for layer in range(shape.layers):
        p = f"model.layers.{layer}."
        tensors |= {
            p + "input_layernorm.weight": ones(hidden),
            p + "post_attention_layernorm.weight": ones(hidden),
            p + "self_attn.q_proj.weight": normal(shape.heads * hd, hidden),
            p + "self_attn.k_proj.weight": normal(shape.kv_heads * hd, hidden),
            p + "self_attn.v_proj.weight": normal(shape.kv_heads * hd, hidden),
            p + "self_attn.o_proj.weight": normal(hidden, shape.heads * hd),
            p + "mlp.gate_proj.weight": normal(inter, hidden),
            p + "mlp.up_proj.weight": normal(inter, hidden),
            p + "mlp.down_proj.weight": normal(hidden, inter),
        }
    save_file(tensors, str(model_dir / "model.safetensors"), metadata={"format": "pt"})


def build_model(model_dir: Path, shape: Shape) -> None:
    model_dir.mkdir(parents=True, exist_ok=True)
    if (model_dir / "model.safetensors").is_file():
        return  # built by an earlier run (--model-dir)
    write_tokenizer(model_dir, shape.vocab)
    write_config(model_dir, shape)
    write_weights(model_dir, shape)


def make_prompts(count: int, seed: int = 7) -> list[str]:
    """Lowercase words; about two characters per token with this tokenizer."""
    rng = random.Random(seed)
    prompts = []
    for _ in range(count):
        text = ""
        while len(text) < 1.7 * PROMPT_TOKENS:
            text += "".join(rng.choices(string.ascii_lowercase, k=rng.randint(2, 9))) + " "
        prompts.append(text.strip())
    return prompts


# -- runs --------------------------------------------------------------------------------------


@dataclass
class Run:
    """One wave of ``streams`` concurrent generations."""

    streams: int
    tokens: int = 0
    seconds: float = 0.0
    first: list[float] = field(default_factory=list)
    """Seconds from the start to each stream's first token."""
    decode: list[float] = field(default_factory=list)
    """Each stream's decode rate: tokens after the first / seconds from the first to the last."""

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds

    def stream_done(self, tokens: int, first: float | None, last: float) -> None:
        self.tokens += tokens
        if first is not None:
            self.first.append(first)
            if tokens > 1 and last > first:
                self.decode.append((tokens - 1) / (last - first))


def run_generator(generator: Any, prompts: Sequence[Any], new_tokens: int) -> Run:
    """ExLlamaV2's dynamic generator, driven here: the library with nothing around it."""
    from exllamav2.generator import ExLlamaV2DynamicJob, ExLlamaV2Sampler

    run = Run(len(prompts))
    greedy = ExLlamaV2Sampler.Settings.greedy()
    jobs = [
        ExLlamaV2DynamicJob(
            input_ids=ids,
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
            gen_settings=greedy,
            stop_conditions=[],
            identifier=index,
        )
        for index, ids in enumerate(prompts)
    ]
    first: dict[int, float] = {}
    started = time.perf_counter()
    for job in jobs:
        generator.enqueue(job)
    while generator.num_remaining_jobs():
        if time.perf_counter() - started > RUN_TIMEOUT:
            raise RuntimeError("the generator did not finish in time")
        for result in generator.iterate():
            if result.get("stage") != "streaming":
                continue
            now = time.perf_counter() - started
            if result.get("text"):  # the first text, as the engine and HTTP paths count it
                first.setdefault(result["identifier"], now)
            if result.get("eos"):
                ident = result["identifier"]
                run.stream_done(int(result["new_tokens"]), first.get(ident), now)
    run.seconds = time.perf_counter() - started
    return run


async def run_engine(engine: Any, prompts: Sequence[str], new_tokens: int) -> Run:
    """promptwire's BatchingEngine in this process: its thread and queues, no HTTP."""
    from promptwire.engine import Finish, TextChunk
    from promptwire.protocol import PromptRequest

    run = Run(len(prompts))
    started = time.perf_counter()

    async def one(prompt: str) -> None:
        request = PromptRequest(prompt=prompt, max_tokens=new_tokens, temperature=0.0)
        first = None
        async for event in engine.generate(request, engine.prepare(request)):
            now = time.perf_counter() - started
            if isinstance(event, TextChunk) and first is None:
                first = now
            elif isinstance(event, Finish):
                run.stream_done(event.usage.completion_tokens, first, now)

    await asyncio.wait_for(asyncio.gather(*(one(p) for p in prompts)), RUN_TIMEOUT)
    run.seconds = time.perf_counter() - started
    return run


async def run_http(client: Any, prompts: Sequence[str], new_tokens: int) -> Run:
    """``promptwire serve`` over HTTP, streamed through promptwire's own client."""
    from promptwire.protocol import StreamDelta, StreamDone

    run = Run(len(prompts))
    started = time.perf_counter()

    async def one(prompt: str) -> None:
        first = None
        payload = {"prompt": prompt, "max_tokens": new_tokens, "temperature": 0.0}
        async for event in client.astream(payload):
            now = time.perf_counter() - started
            if isinstance(event, StreamDelta) and first is None:
                first = now
            elif isinstance(event, StreamDone) and event.usage is not None:
                run.stream_done(event.usage.completion_tokens, first, now)

    await asyncio.wait_for(asyncio.gather(*(one(p) for p in prompts)), RUN_TIMEOUT)
    run.seconds = time.perf_counter() - started
    return run


def run_transformers(model: Any, ids: Any, new_tokens: int) -> Run:
    """``generate`` on a batch of equal-length prompts. Its decode rate is measured as the
    difference between generating ``new_tokens`` and generating one (the prefill)."""
    import torch

    def generate(count: int) -> float:
        torch.cuda.synchronize()
        started = time.perf_counter()
        with torch.inference_mode():
            out = model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=count,
                min_new_tokens=count,
                do_sample=False,
                pad_token_id=0,
            )
        torch.cuda.synchronize()
        if out.shape[-1] - ids.shape[-1] != count:
            raise RuntimeError("transformers generated the wrong number of tokens")
        return time.perf_counter() - started

    prefill = generate(1)
    seconds = generate(new_tokens)
    run = Run(int(ids.shape[0]), tokens=int(ids.shape[0]) * new_tokens, seconds=seconds)
    run.first = [prefill] * run.streams
    run.decode = [(new_tokens - 1) / (seconds - prefill)] * run.streams
    return run


def copy_bandwidth() -> float:
    """Device-to-device copy bandwidth (bytes read + written per second) of a 1 GiB buffer."""
    import torch

    source = torch.empty(2**29, dtype=torch.float16, device="cuda")
    target = torch.empty_like(source)
    for _ in range(3):
        target.copy_(source)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(20):
        target.copy_(source)
    end.record()
    torch.cuda.synchronize()
    seconds = start.elapsed_time(end) / 1000
    del source, target
    torch.cuda.empty_cache()
    return float(2 * 2**30 * 20 / seconds)


# -- the benchmark -----------------------------------------------------------------------------


def missing_requirements() -> list[str]:
    missing = [name for name in REQUIRED if importlib.util.find_spec(name) is None]
    if "torch" not in missing:
        import torch

        if not torch.cuda.is_available():
            missing.append("a CUDA GPU (torch.cuda.is_available() is False)")
    return missing


def _exllama_settings(model_dir: Path, streams: int) -> Any:
    from promptwire_modal_exllama.settings import ExllamaSettings

    per_stream = PROMPT_TOKENS + NEW_TOKENS + 256
    return ExllamaSettings(
        model_dir=model_dir,
        model_name="random-llama-1.1b",
        cache_size=max(streams * per_stream, 4096),
        max_seq_len=2048,
    )


Series = dict[str, dict[str, list[float]]]


def _streams(n: int) -> str:
    return f"tokens/s, {n} stream{'s' if n > 1 else ''}"


def _record(series: Series, contender: str, run: Run) -> None:
    metrics = series.setdefault(contender, {})
    if run.streams == 1:
        metrics.setdefault("decode tokens/s, 1 stream", []).append(run.decode[0])
        metrics.setdefault("time to first token, 1 stream", []).append(run.first[0] * 1000)
    metrics.setdefault(_streams(run.streams), []).append(run.tokens_per_second)


def progress(message: str) -> None:
    """One line on stderr per step, so a run stopped by its time limit still shows where its
    time went (the GPU machine is lent for minutes)."""
    print(f"benchmarks.gpu: {message}", file=sys.stderr, flush=True)


def _repeat(reps: int, series: Series, contender: str, call: Callable[[int], Run]) -> None:
    for streams in CONCURRENCY:
        started = time.perf_counter()
        call(streams)  # warm-up (CUDA graphs, kernels, allocator)
        progress(f"{contender}, {streams} streams: warm-up {time.perf_counter() - started:.1f} s")
        for _ in range(reps):
            run = call(streams)
            _record(series, contender, run)
            progress(
                f"{contender}, {streams} streams: {run.seconds:.2f} s, "
                f"{run.tokens_per_second:.0f} tokens/s"
            )


def measure(model_dir: Path, reps: int, new_tokens: int, series: Series) -> str:
    """Every contender in turn, the model loaded by one at a time; returns the engine's
    attention mode (paged with flash-attn, or unpaged without it)."""
    import torch
    from promptwire_modal_exllama.runtime import create_engine

    streams_max = max(CONCURRENCY)
    prompts = make_prompts(streams_max)
    settings = _exllama_settings(model_dir, streams_max)

    ids, mode = measure_generator(settings, prompts, reps, new_tokens, series)
    torch.cuda.empty_cache()

    engine = create_engine(settings)
    loop = asyncio.new_event_loop()
    loop.run_until_complete(engine.start())
    try:
        _repeat(
            reps,
            series,
            "promptwire BatchingEngine, in-process",
            lambda n: loop.run_until_complete(run_engine(engine, prompts[:n], new_tokens)),
        )
    finally:
        loop.run_until_complete(engine.stop())
    torch.cuda.empty_cache()

    measure_http(model_dir, settings, prompts, reps, new_tokens, series)
    measure_transformers(model_dir, ids, reps, new_tokens, series)
    return mode


def measure_generator(
    settings: Any, prompts: list[str], reps: int, new_tokens: int, series: Series
) -> tuple[list[Any], str]:
    """The dynamic generator over the plugin's loaded runtime; returns the prompts' token ids
    and the runtime's attention mode."""
    from promptwire_modal_exllama.runtime import ExllamaRuntime

    runtime = ExllamaRuntime(settings)
    mode = str(runtime.mode)
    try:
        ids = [runtime.encode(p).tokens for p in prompts]
        generator = runtime.new_generator()
        _repeat(
            reps,
            series,
            "ExLlamaV2 generator, in-process",
            lambda n: run_generator(generator, ids[:n], new_tokens),
        )
    finally:
        runtime.close()
    return ids, mode


def measure_http(
    model_dir: Path, settings: Any, prompts: list[str], reps: int, new_tokens: int, series: Series
) -> None:
    from promptwire.client import ClientConfig, EndpointClient

    port = free_port()
    env = {
        "PROMPTWIRE_LOAD_PLUGINS": "modal_exllama",
        "PROMPTWIRE_MODAL_EXLLAMA__CACHE_SIZE": str(settings.cache_size),
        "PROMPTWIRE_MODAL_EXLLAMA__MAX_SEQ_LEN": str(settings.max_seq_len),
        "PROMPTWIRE_MODAL_EXLLAMA__MODEL_NAME": settings.model_name,
    }
    command = [
        PROMPTWIRE_CLI,
        "serve",
        "--backend",
        "modal_exllama",
        "--model-dir",
        str(model_dir),
        "--port",
        str(port),
        "--log-level",
        "warning",
    ]
    url = f"http://127.0.0.1:{port}/"
    with server_process(command, url + "health", env, timeout=LOAD_TIMEOUT):
        loop = asyncio.new_event_loop()
        client = EndpointClient(ClientConfig(endpoint_url=url, timeout=RUN_TIMEOUT, max_retries=0))
        try:
            _repeat(
                reps,
                series,
                "promptwire serve over HTTP",
                lambda n: loop.run_until_complete(run_http(client, prompts[:n], new_tokens)),
            )
        finally:
            loop.run_until_complete(client.aclose())
            loop.close()


def measure_transformers(
    model_dir: Path, ids: list[Any], reps: int, new_tokens: int, series: Series
) -> None:
    import torch

    transformers: Any = importlib.import_module("transformers")
    length = min(int(t.shape[-1]) for t in ids)
    batch = torch.cat([t[:, :length] for t in ids]).cuda()
    major, minor = (int(x) for x in transformers.__version__.split(".")[:2])
    dtype_arg = "dtype" if (major, minor) >= (4, 56) else "torch_dtype"
    model = transformers.AutoModelForCausalLM.from_pretrained(
        str(model_dir), attn_implementation="sdpa", **{dtype_arg: torch.float16}
    )
    model = model.cuda().eval()
    _repeat(
        reps,
        series,
        f"transformers {transformers.__version__} generate",
        lambda n: run_transformers(model, batch[:n], new_tokens),
    )


def roofline(series: Series, shape: Shape, bandwidth: float) -> dict[str, list[float]]:
    """Each contender's single-stream decode rate as a fraction of bandwidth / bytes per token."""
    per_token = shape.decode_bytes(PROMPT_TOKENS + NEW_TOKENS // 2)
    ceiling = bandwidth / per_token
    return {
        name: [rate / ceiling for rate in metrics["decode tokens/s, 1 stream"]]
        for name, metrics in series.items()
    }


def result_from(
    series: Series,
    shape: Shape,
    device: str,
    spec: float | None,
    copy: float,
    quick: bool,
    attention: str | None = None,
) -> BenchResult:
    bandwidth = spec or copy
    result = BenchResult(
        key="gpu",
        title="6. GPU: ExLlamaV2 served over HTTP",
        setup=(
            f"{device}. Random-weight Llama, {shape.params() / 1e9:.2f}B parameters, FP16 "
            f"({shape.layers} layers, hidden {shape.hidden}, {shape.heads} heads, "
            f"{shape.kv_heads} KV heads, vocabulary {shape.vocab}), built at run time. Prompts of "
            f"about {PROMPT_TOKENS} tokens, {NEW_TOKENS if not quick else 'few'} new tokens each, "
            "greedy. Roofline: memory bandwidth "
            f"({'data sheet' if spec else 'measured copy'}: {bandwidth / 1e12:.2f} TB/s; "
            f"measured device copy: {copy / 1e12:.2f} TB/s) / bytes read per decoded token "
            f"({shape.decode_bytes(PROMPT_TOKENS + NEW_TOKENS // 2) / 1e9:.2f} GB)."
            + (f" Engine: {attention}." if attention else "")
        ),
        quick=quick,
    )
    for contender, metrics in series.items():
        for metric, samples in metrics.items():
            unit = "ms" if metric.startswith("time") else "tok/s"
            result.measurements.append(
                Measurement(contender, metric, unit, samples, lower_is_better=unit == "ms")
            )
    gen, engine, http = (
        series["ExLlamaV2 generator, in-process"],
        series["promptwire BatchingEngine, in-process"],
        series["promptwire serve over HTTP"],
    )
    hf = next(m for name, m in series.items() if name.startswith("transformers"))

    def pair(a: dict[str, list[float]], b: dict[str, list[float]], metric: str) -> list[float]:
        return [x / y for x, y in zip(a[metric], b[metric], strict=False) if y]

    single = "decode tokens/s, 1 stream"
    for metric in [single] + [_streams(n) for n in CONCURRENCY]:
        result.ratios.append(
            Ratio(f"HTTP / in-process generator ({metric})", pair(http, gen, metric))
        )
    widest = _streams(max(CONCURRENCY))
    result.ratios.append(Ratio(f"HTTP / in-process engine ({widest})", pair(http, engine, widest)))
    for n in CONCURRENCY[1:]:
        gain = [x / y for x, y in zip(http[_streams(n)], http[_streams(1)], strict=False) if y]
        result.ratios.append(Ratio(f"HTTP batching gain: {n} streams / 1 stream (tokens/s)", gain))
    for metric in [single] + [_streams(n) for n in CONCURRENCY[1:]]:
        result.ratios.append(
            Ratio(f"ExLlamaV2 over HTTP / transformers ({metric})", pair(http, hf, metric))
        )
    for name, fractions in roofline(series, shape, bandwidth).items():
        result.ratios.append(Ratio(f"roofline fraction, single-stream decode: {name}", fractions))
    return result


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="one repetition, 32 new tokens")
    parser.add_argument("--json", type=Path, default=RESULTS_DIR / "gpu.json")
    parser.add_argument("--model-dir", type=Path, help="build (or reuse) the model here")
    args = parser.parse_args()
    missing = missing_requirements()
    if missing:
        print(
            "benchmarks.gpu needs a CUDA GPU and the GPU libraries; missing: "
            + ", ".join(missing)
            + ". Install the modal_exllama GPU stack (plugins/modal_exllama/README.md) and "
            "transformers, then run it on the GPU machine.",
            file=sys.stderr,
        )
        raise SystemExit(2)
    import torch

    started = time.perf_counter()
    shape = Shape()
    device = torch.cuda.get_device_name()
    spec = next((bw for name, bw in SPEC_BANDWIDTH.items() if name in device), None)
    reps, new_tokens = (1, 32) if args.quick else (3, NEW_TOKENS)
    series: Series = {}
    partial = args.json.with_suffix(".partial.json")
    signal.signal(signal.SIGTERM, _exit_on_sigterm)  # `timeout` stops the run: keep its figures
    try:
        with tempfile.TemporaryDirectory() as tmp:
            model_dir = args.model_dir or Path(tmp) / "random-llama-1.1b"
            progress("building the model")
            build_model(model_dir, shape)
            copy = copy_bandwidth()
            progress(f"model built, device copy {copy / 1e12:.2f} TB/s")
            attention = measure(model_dir, reps, new_tokens, series)
    except BaseException:
        partial.parent.mkdir(parents=True, exist_ok=True)
        partial.write_text(json.dumps(series, indent=1) + "\n", encoding="utf-8")
        progress(f"stopped before the end; what was measured is in {partial}")
        raise
    result = result_from(series, shape, device, spec, copy, args.quick, attention)
    result.seconds = round(time.perf_counter() - started, 1)
    result.machine = machine_info() | {"gpu": device}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(result.to_json() + "\n", encoding="utf-8")
    print(result.to_json())


if __name__ == "__main__":
    main()
