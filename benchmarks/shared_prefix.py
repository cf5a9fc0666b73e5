"""The llama.cpp backend's shared prefixes: requests with one long system prompt (new to the
engine each round), each arriving while the ones before it generate, on an engine that starts
them from a copy of a generating sequence's cache (``shared_prefix_min``, default 32) against
one that computes every prompt (``shared_prefix_min=0``). Both engines in this process, in
turns, the order reversed each repetition; prints per round the median time to first token of
the requests after the first, the aggregate tokens/s, this process's CPU seconds, and the
ratios copy / compute.

    uv run --group bench python -m benchmarks.shared_prefix [--repetitions 3] [--requests 8]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time

from promptwire.engine import TextChunk, rendered_request
from promptwire.protocol import PromptRequest
from promptwire_llamacpp.engine import LlamaCppEngine
from promptwire_llamacpp.settings import LlamaCppSettings

from benchmarks.real_model import _threads

#: About 400 tokens of SmolLM2's tokenizer: a long system prompt, as agents and RAG apps send.
SYSTEM = " ".join(
    f"Rule {n}: answer in one short sentence, name places and people plainly, never greet, "
    "never ask a question back, and never say that you are a model."
    for n in range(1, 17)
)
QUESTIONS = [
    "Which city is the capital of France?",
    "Who wrote the play Hamlet?",
    "What is the largest ocean on Earth?",
    "Name three colours of the rainbow.",
    "Which planet is closest to the sun?",
    "What is the boiling point of water?",
    "Who painted the Mona Lisa?",
    "What is the capital of Japan?",
]
GAP = 0.25  # seconds between arrivals: each joins while the ones before generate
MAX_TOKENS = 48


async def _round(engine: LlamaCppEngine, count: int, system: str) -> tuple[float, float, float]:
    """Median time to first token of requests 2..count, aggregate tokens/s, CPU seconds."""

    async def ask(index: int) -> tuple[float, int]:
        await asyncio.sleep(GAP * index)
        request = PromptRequest.model_validate(
            {
                "prompt": "",
                "messages": [
                    {"role": "system", "content": system},
                    {"role": "user", "content": QUESTIONS[index % len(QUESTIONS)]},
                ],
                "max_tokens": MAX_TOKENS,
                "temperature": 0,
            }
        )
        started = time.perf_counter()
        request = rendered_request(engine, request)
        first: float | None = None
        tokens = 0
        async for event in engine.generate(request, engine.prepare(request)):
            if isinstance(event, TextChunk):
                if first is None:
                    first = time.perf_counter() - started
                tokens += event.tokens
        return first or 0.0, tokens

    await engine.start()  # safe to repeat
    cpu, wall = time.process_time(), time.perf_counter()
    results = await asyncio.gather(*(ask(index) for index in range(count)))
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    ttft = statistics.median(first for first, _ in results[1:])
    return ttft, sum(tokens for _, tokens in results) / wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repetitions", type=int, default=3)
    parser.add_argument("--requests", type=int, default=8)
    args = parser.parse_args()
    threads = _threads()
    engines = {
        name: LlamaCppEngine(
            LlamaCppSettings(parallel=8, threads=threads, shared_prefix_min=minimum)
        )
        for name, minimum in (("copy", 32), ("compute", 0))
    }
    for engine in engines.values():
        engine.load()
    system = PromptRequest.model_validate(
        {"prompt": "", "messages": [{"role": "system", "content": SYSTEM}]}
    )
    tokens = engines["copy"].count_prompt_tokens(rendered_request(engines["copy"], system))
    print(f"system prompt: {tokens} tokens; {threads} threads; load {os.getloadavg()[0]:.2f}")
    figures: dict[str, list[tuple[float, float, float]]] = {name: [] for name in engines}
    try:
        for engine in engines.values():  # warm-up
            asyncio.run(_round(engine, 2, "Warm up. " + SYSTEM))
        names = list(engines)
        for repetition in range(args.repetitions):
            for name in names if repetition % 2 == 0 else names[::-1]:
                # A system prompt no sequence holds yet (cached prompts stay after a round).
                system = f"Round {repetition}. {SYSTEM}"
                figure = asyncio.run(_round(engines[name], args.requests, system))
                figures[name].append(figure)
                ttft, rate, cpu = figure
                print(
                    f"  {name:8} TTFT after the first {ttft * 1000:7.0f} ms, "
                    f"{rate:6.1f} tokens/s, {cpu:5.2f} CPU-s, load {os.getloadavg()[0]:.2f}"
                )
    finally:
        for engine in engines.values():
            engine.unload()
    for index, label in enumerate(("TTFT", "tokens/s", "CPU-s")):
        ratios = [
            c[index] / p[index] for c, p in zip(figures["copy"], figures["compute"], strict=True)
        ]
        print(
            f"copy / compute, {label}: median {statistics.median(ratios):.3f} "
            f"({min(ratios):.3f}-{max(ratios):.3f})"
        )


if __name__ == "__main__":
    main()
