"""The llama.cpp backend's KV cache, one per sequence (the default) against one unified cache
(``PROMPTWIRE_LLAMACPP__KV_UNIFIED``), side by side in one run: benchmark 11's streams (SmolLM2,
greedy chat streams on ``/v1/chat/completions``, new prompts every round) at 1 and 8 at once, the
two servers in turns, the order reversed each repetition. Prints each round, the machine's load,
and the ratio per-sequence / unified of the aggregate tokens/s per repetition. Then the same
rounds on the two engines in this process, for the CPU time per token as well: under load a
wall-clock rate moves with the neighbours, this process's CPU time much less.

    uv run --group bench python -m benchmarks.kv_cache [--repetitions 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from typing import Any

from benchmarks.common import PROMPTWIRE_CLI, free_port, server_process
from benchmarks.real_model import CONTEXT, _round, _threads, prompts

CONCURRENCY = (1, 8)


def _load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f}, {five:.2f}, {fifteen:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repetitions", type=int, default=3)
    args = parser.parse_args()
    threads = _threads()
    servers = {"per-sequence": "false", "unified": "true"}
    urls = {name: f"http://127.0.0.1:{free_port()}/" for name in servers}

    def command(name: str) -> list[str]:
        port = urls[name].rsplit(":", 1)[1].strip("/")
        return [PROMPTWIRE_CLI, "serve", "--backend", "llamacpp", "--port", port]

    def env(unified: str) -> dict[str, str]:
        return {
            "PROMPTWIRE_LOAD_PLUGINS": "llamacpp",
            "PROMPTWIRE_LLAMACPP__PARALLEL": "8",
            "PROMPTWIRE_LLAMACPP__CONTEXT_SIZE": str(CONTEXT),
            "PROMPTWIRE_LLAMACPP__THREADS": str(threads),
            "PROMPTWIRE_LLAMACPP__KV_UNIFIED": unified,
            "PROMPTWIRE_METRICS": "false",
        }

    tps: dict[tuple[str, int], list[float]] = {(s, n): [] for s in servers for n in CONCURRENCY}
    print(f"start: {_load()}; {threads} threads", file=sys.stderr)
    first, second = servers.items()
    with (
        server_process(
            [*command(first[0]), "--log-level", "warning"], urls[first[0]] + "health", env(first[1])
        ),
        server_process(
            [*command(second[0]), "--log-level", "warning"],
            urls[second[0]] + "health",
            env(second[1]),
        ),
    ):
        for url in urls.values():  # warm up: first allocations, page cache
            asyncio.run(_round(url, prompts(0, 1)))
        round_number = 0
        for repetition in range(args.repetitions):
            order = list(servers) if repetition % 2 == 0 else list(reversed(servers))
            for streams in CONCURRENCY:
                round_number += 1
                asked = prompts(round_number, streams)
                for name in order:
                    rate, firsts, served = asyncio.run(_round(urls[name], asked))
                    tps[name, streams].append(rate)
                    print(
                        f"  {name:<13} {streams} streams: {rate:6.1f} tokens/s, first token "
                        f"median {statistics.median(firsts):.2f} s, {served}/{streams} served",
                        file=sys.stderr,
                    )
    print(f"end: {_load()}", file=sys.stderr)
    for streams in CONCURRENCY:
        ratios = [
            a / b
            for a, b in zip(tps["per-sequence", streams], tps["unified", streams], strict=True)
        ]
        print(
            f"tokens/s at {streams} stream(s), per-sequence / unified: median "
            f"{statistics.median(ratios):.3f} (runs {', '.join(f'{r:.3f}' for r in ratios)}); "
            f"per-sequence {statistics.median(tps['per-sequence', streams]):.1f}, unified "
            f"{statistics.median(tps['unified', streams]):.1f} tokens/s"
        )
    in_process(args.repetitions, threads)


def in_process(repetitions: int, threads: int) -> None:
    """The two layouts as engines in this process: tokens/s and CPU time per token."""
    from promptwire.testing import arun_engine
    from promptwire_llamacpp.engine import LlamaCppEngine
    from promptwire_llamacpp.settings import LlamaCppSettings

    engines: dict[str, Any] = {}
    for name, unified in (("per-sequence", False), ("unified", True)):
        settings = LlamaCppSettings(
            parallel=8, context_size=CONTEXT, threads=threads, kv_unified=unified
        )
        engines[name] = LlamaCppEngine(settings)
        engines[name].load()

    async def together(engine: Any, asked: list[str]) -> int:
        bodies = [
            {"prompt": "", "messages": [{"role": "user", "content": p}], "max_tokens": 64}
            for p in asked
        ]
        runs = await asyncio.gather(*(arun_engine(engine, {**b, "temperature": 0}) for b in bodies))
        return sum(run.finish.usage.completion_tokens for run in runs)

    rates: dict[tuple[str, int], list[float]] = {(e, n): [] for e in engines for n in CONCURRENCY}
    cpu: dict[tuple[str, int], list[float]] = {(e, n): [] for e in engines for n in CONCURRENCY}
    round_number = 1000
    for repetition in range(repetitions):
        order = list(engines) if repetition % 2 == 0 else list(reversed(engines))
        for streams in CONCURRENCY:
            round_number += 1
            for name in order:
                wall, used = time.perf_counter(), time.process_time()
                tokens = asyncio.run(together(engines[name], prompts(round_number, streams)))
                wall, used = time.perf_counter() - wall, time.process_time() - used
                rates[name, streams].append(tokens / wall)
                cpu[name, streams].append(used / tokens)
    for engine in engines.values():
        engine.unload()
    print(f"in-process, {_load()}")
    for streams in CONCURRENCY:
        pairs = zip(rates["per-sequence", streams], rates["unified", streams], strict=True)
        rate = statistics.median(a / b for a, b in pairs)
        pairs = zip(cpu["per-sequence", streams], cpu["unified", streams], strict=True)
        per_token = statistics.median(a / b for a, b in pairs)
        print(
            f"in-process at {streams} stream(s), per-sequence / unified: tokens/s {rate:.3f}, "
            f"CPU per token {per_token:.3f} (per-sequence "
            f"{statistics.median(cpu['per-sequence', streams]) * 1000:.1f} ms, unified "
            f"{statistics.median(cpu['unified', streams]) * 1000:.1f} ms)"
        )


if __name__ == "__main__":
    main()
