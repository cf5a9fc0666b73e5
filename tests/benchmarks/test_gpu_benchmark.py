"""The parts of the GPU benchmark that need no GPU: the model's shape and arithmetic, the
tokenizer and prompts it builds, the report it writes, and its refusal to run without CUDA.

The benchmark itself runs only on a CUDA machine (``uv run python -m benchmarks.gpu``); these
tests keep its CPU-side code honest in the meantime.
"""

from __future__ import annotations

import asyncio
import json
import string
import subprocess
import sys
from pathlib import Path

import pytest
from tokenizers import Tokenizer

from benchmarks import gpu
from benchmarks.common import ROOT, BenchResult, clean_env
from benchmarks.report import render

# TinyLlama-1.1B's published parameter count, the shape the benchmark copies.
TINYLLAMA_PARAMS = 1_100_048_384


def test_the_default_shape_is_tinyllamas() -> None:
    shape = gpu.Shape()
    assert shape.params() == TINYLLAMA_PARAMS
    assert shape.head_dim == 64


def test_bytes_per_decoded_token_are_the_weights_and_the_cache() -> None:
    shape = gpu.Shape()
    empty = shape.decode_bytes(0)
    # every weight but the embedding table, in FP16: about 2.1 GB for 1.1B parameters
    assert empty == 2 * (shape.params() - shape.vocab * shape.hidden)
    per_position = shape.decode_bytes(1) - empty
    assert per_position == 2 * shape.layers * 2 * shape.kv_heads * shape.head_dim


def test_the_tokenizer_has_exactly_the_vocabulary_and_round_trips(tmp_path: Path) -> None:
    shape = gpu.Shape(vocab=2000)
    gpu.write_tokenizer(tmp_path, shape.vocab)
    tokenizer = Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    assert tokenizer.get_vocab_size() == shape.vocab
    assert [tokenizer.token_to_id(t) for t in gpu.SPECIAL_TOKENS] == [0, 1, gpu.EOS_ID]
    text = "Hello, world: 123 (tabs\tand\nnewlines) ~{[<|>]}"
    assert tokenizer.decode(tokenizer.encode(text).ids) == text
    pieces = [tokenizer.decode([i]) for i in range(len(gpu.SPECIAL_TOKENS), shape.vocab)]
    alphabet = len(gpu.text_alphabet())
    assert sorted(pieces[:alphabet]) == sorted(string.printable)
    assert all(len(p) == 2 for p in pieces[alphabet:])  # then pairs
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    assert (config["bos_token"], config["eos_token"]) == ("<s>", "</s>")


def test_every_id_of_the_full_tokenizer_decodes_to_clean_text(tmp_path: Path) -> None:
    """A piece that decodes to U+FFFD (a lone byte of a multi-byte character) makes ExLlamaV2's
    generator hold its text back: the raw generator would then count a first token that the
    engine and HTTP paths, which wait for text, count later, and the time-to-first-token ratios
    would show the library's hold-back as serving overhead. Most ids of the old tokenizer did."""
    shape = gpu.Shape()
    gpu.write_tokenizer(tmp_path, shape.vocab)
    tokenizer = Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    assert tokenizer.get_vocab_size() == shape.vocab
    pieces = tokenizer.decode_batch([[i] for i in range(len(gpu.SPECIAL_TOKENS), shape.vocab)])
    assert all(pieces)
    assert [p for p in pieces if "\ufffd" in p or set(p) - set(string.printable)] == []
    # Text outside the alphabet becomes <unk>, never a piece of a character.
    assert set(tokenizer.encode("é✓").ids) == {0}


def test_prompts_are_about_the_planned_length(tmp_path: Path) -> None:
    gpu.write_tokenizer(tmp_path, gpu.Shape().vocab)
    tokenizer = Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    prompts = gpu.make_prompts(64)
    assert prompts == gpu.make_prompts(64)  # the same prompts on every run
    lengths = [len(tokenizer.encode(p).ids) for p in prompts]
    assert 0.75 * gpu.PROMPT_TOKENS <= min(lengths) <= max(lengths) <= 1.25 * gpu.PROMPT_TOKENS


def test_the_config_names_the_shape(tmp_path: Path) -> None:
    shape = gpu.Shape(layers=2, hidden=256, intermediate=512, heads=4, kv_heads=2, vocab=600)
    gpu.write_config(tmp_path, shape)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["model_type"] == "llama" and config["num_hidden_layers"] == 2
    assert (config["num_key_value_heads"], config["head_dim"]) == (2, 64)
    assert (config["bos_token_id"], config["eos_token_id"]) == (gpu.BOS_ID, gpu.EOS_ID)


def test_run_rates_count_decode_after_the_first_token() -> None:
    run = gpu.Run(streams=2, seconds=2.0)
    run.stream_done(tokens=11, first=0.5, last=1.5)
    run.stream_done(tokens=1, first=0.4, last=0.4)  # one token: no decode rate
    assert run.tokens == 12 and run.tokens_per_second == 6.0
    assert run.first == [0.5, 0.4] and run.decode == [10.0]


def _series(http_rate: float) -> gpu.Series:
    def contender(scale: float) -> dict[str, list[float]]:
        metrics = {
            "decode tokens/s, 1 stream": [100.0 * scale] * 3,
            "time to first token, 1 stream": [20.0 / scale] * 3,
        }
        for n in gpu.CONCURRENCY:
            metrics[gpu._streams(n)] = [100.0 * n**0.5 * scale] * 3
        return metrics

    return {
        "ExLlamaV2 generator, in-process": contender(1.0),
        "promptwire BatchingEngine, in-process": contender(0.98),
        "promptwire serve over HTTP": contender(http_rate),
        "transformers 4.57.1 generate": contender(0.5),
    }


def test_the_result_holds_side_by_side_ratios_and_the_roofline() -> None:
    shape = gpu.Shape()
    bandwidth = 3.35e12
    result = gpu.result_from(_series(0.95), shape, "NVIDIA H100", bandwidth, 2.9e12, quick=False)
    by_name = {r.name: r.median for r in result.ratios}
    assert by_name["HTTP / in-process generator (decode tokens/s, 1 stream)"] == pytest.approx(0.95)
    assert by_name["HTTP batching gain: 64 streams / 1 stream (tokens/s)"] == pytest.approx(8.0)
    assert by_name[
        "ExLlamaV2 over HTTP / transformers (decode tokens/s, 1 stream)"
    ] == pytest.approx(1.9)
    ceiling = bandwidth / shape.decode_bytes(gpu.PROMPT_TOKENS + gpu.NEW_TOKENS // 2)
    roofline = by_name["roofline fraction, single-stream decode: ExLlamaV2 generator, in-process"]
    assert roofline == pytest.approx(100.0 / ceiling)
    assert "1.10B parameters" in result.setup and "data sheet: 3.35 TB/s" in result.setup
    # it survives the JSON round trip and renders in the report
    again = BenchResult.from_json(result.to_json())
    assert again == result
    report = render({"gpu": again}, ROOT / "benchmarks" / "results", "test")
    assert "6. GPU: ExLlamaV2 served over HTTP" in report and "Not run yet" not in report


def test_the_data_sheet_bandwidth_matches_the_most_specific_name() -> None:
    def spec(device: str) -> float | None:
        return next((bw for name, bw in gpu.SPEC_BANDWIDTH.items() if name in device), None)

    assert spec("NVIDIA H100 80GB HBM3") == 3.35e12
    assert spec("NVIDIA H100 PCIe") == 2.0e12
    assert spec("NVIDIA H200") == 4.8e12
    assert spec("NVIDIA L40S") == 0.864e12
    assert spec("NVIDIA L4") == 0.3e12
    assert spec("Some Future GPU") is None


def test_without_cuda_it_says_what_is_missing_and_exits_2() -> None:
    if not gpu.missing_requirements():
        pytest.skip("this machine can run the GPU benchmark")
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.gpu", "--quick"],
        cwd=ROOT,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert "missing:" in done.stderr and "torch" in done.stderr


def test_transformers_loads_the_built_model_and_generates(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The model files the benchmark writes, read by transformers on the CPU (a small shape).
    Skipped without torch and transformers (not dev dependencies: they come with the GPU stack)."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *args, **kwargs: None)
    shape = gpu.Shape(layers=2, hidden=256, intermediate=688, heads=4, kv_heads=2, vocab=4000)
    gpu.write_tokenizer(tmp_path, shape.vocab)
    gpu.write_config(tmp_path, shape)
    gpu.write_weights(tmp_path, shape, device="cpu")
    model = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path)).float().eval()
    assert sum(p.numel() for p in model.parameters()) == shape.params()
    tokenizer = Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    ids = [[gpu.BOS_ID, *tokenizer.encode(p).ids] for p in gpu.make_prompts(2)]
    length = min(len(i) for i in ids)
    batch = torch.tensor([i[:length] for i in ids])
    run = gpu.run_transformers(model, batch, 8)
    assert (run.streams, run.tokens) == (2, 16) and run.tokens_per_second > 0
    out = model.generate(input_ids=batch, max_new_tokens=8, do_sample=False, pad_token_id=0)
    assert not set(out[:, length:].flatten().tolist()) & {0, 1, gpu.EOS_ID}  # zeroed head rows


def test_the_in_process_contenders_run_through_exllamav2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The raw generator and the engine contenders, through the real exllamav2 API on the CPU
    tier (tests/exllama/cpu_standin.py) with a small model of the benchmark's own making: every
    stream gets its tokens and a first-text time. Skipped where the tier cannot run."""
    from tests.exllama.cpu_standin import cpu_tier

    with cpu_tier(monkeypatch):
        from promptwire_modal_exllama.runtime import ExllamaRuntime, create_engine

        shape = gpu.Shape(layers=2, hidden=256, intermediate=688, heads=4, kv_heads=2, vocab=4000)
        gpu.write_tokenizer(tmp_path, shape.vocab)
        gpu.write_config(tmp_path, shape)
        gpu.write_weights(tmp_path, shape, device="cpu")
        settings = gpu._exllama_settings(tmp_path, 16)
        prompts = gpu.make_prompts(16)

        runtime = ExllamaRuntime(settings)
        try:
            ids = [runtime.encode(p).tokens for p in prompts]
            raw = gpu.run_generator(runtime.new_generator(), ids, 8)
        finally:
            runtime.close()
        engine = create_engine(settings)

        async def served() -> gpu.Run:
            await engine.start()
            try:
                return await gpu.run_engine(engine, prompts, 8)
            finally:
                await engine.stop()

        through_engine = asyncio.run(served())
    for run in (raw, through_engine):
        assert (run.streams, run.tokens) == (16, 16 * 8)
        assert len(run.first) == 16 and len(run.decode) == 16
