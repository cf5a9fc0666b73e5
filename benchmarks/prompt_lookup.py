"""The llama.cpp backend's prompt lookup decoding (``prompt_lookup``): a greedy request whose
reply repeats its input (a paragraph to copy out) and one whose reply repeats nothing (a
question), on an engine that guesses up to 8 tokens a step against one that guesses none. Both
engines in this process, in turns, the order reversed each repetition; prints per round the
reply's tokens/s (wall clock), the forward passes, this process's CPU seconds, and the ratios
guessing / plain.

    uv run --group bench python -m benchmarks.prompt_lookup [--repetitions 9]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time

from promptwire.testing import arun_engine
from promptwire_llamacpp.engine import LlamaCppEngine
from promptwire_llamacpp.settings import LlamaCppSettings

from benchmarks.real_model import _threads

PARAGRAPH = (
    "The committee met on Tuesday to review the budget for the coming year. After a long "
    "discussion, the members agreed to increase the funding for the public library, to repair "
    "the roads in the northern district, and to hire two more teachers for the primary school. "
    "The mayor thanked everyone for their work and closed the meeting at nine in the evening."
)
REQUESTS = {
    "copy a paragraph": f"Repeat this text exactly, word for word:\n\n{PARAGRAPH}",
    "answer a question": "Write a short story about a lighthouse keeper and a storm.",
}
GUESSES = 8
MAX_TOKENS = 192


def _round(engine: LlamaCppEngine, content: str) -> tuple[float, int, float]:
    """Tokens/s of the reply, forward passes, CPU seconds (and the guesses, printed)."""
    scheduler = engine.scheduler
    assert scheduler is not None
    body = {
        "prompt": "",
        "messages": [{"role": "user", "content": content}],
        "max_tokens": MAX_TOKENS,
        "temperature": 0,
    }
    guessed, accepted = scheduler.guessed_tokens, scheduler.accepted_tokens
    steps, cpu, wall = scheduler.steps, time.process_time(), time.perf_counter()
    run = asyncio.run(arun_engine(engine, body))
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    guessed, accepted = scheduler.guessed_tokens - guessed, scheduler.accepted_tokens - accepted
    if guessed:
        print(f"    {guessed} tokens guessed, {accepted} right")
    return run.finish.usage.completion_tokens / wall, scheduler.steps - steps, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repetitions", type=int, default=9)
    args = parser.parse_args()
    threads = _threads()
    engines = {
        name: LlamaCppEngine(
            LlamaCppSettings(parallel=2, context_size=1024, threads=threads, prompt_lookup=count)
        )
        for name, count in (("guessing", GUESSES), ("plain", 0))
    }
    for engine in engines.values():
        engine.load()
    print(f"{threads} threads; load {os.getloadavg()[0]:.2f}")
    try:
        for label, content in REQUESTS.items():
            figures: dict[str, list[tuple[float, int, float]]] = {name: [] for name in engines}
            for engine in engines.values():  # warm-up
                _round(engine, content)
            names = list(engines)
            for repetition in range(args.repetitions):
                for name in names if repetition % 2 == 0 else names[::-1]:
                    figure = _round(engines[name], content)
                    figures[name].append(figure)
                    rate, passes, cpu = figure
                    print(
                        f"  {label}, {name:8}: {rate:6.1f} tokens/s, {passes:3d} passes, "
                        f"{cpu:5.2f} CPU-s, load {os.getloadavg()[0]:.2f}"
                    )
            for index, figure_name in enumerate(("tokens/s", "passes", "CPU-s")):
                ratios = [
                    g[index] / p[index]
                    for g, p in zip(figures["guessing"], figures["plain"], strict=True)
                ]
                print(
                    f"{label}, guessing / plain, {figure_name}: median "
                    f"{statistics.median(ratios):.3f} ({min(ratios):.3f}-{max(ratios):.3f})"
                )
    finally:
        for engine in engines.values():
            engine.unload()


if __name__ == "__main__":
    main()
