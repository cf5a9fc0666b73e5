"""The llama.cpp backend's KV cache, one per sequence (the default) against one unified cache
(``PROMPTWIRE_LLAMACPP__KV_UNIFIED``), side by side in one run: benchmark 11's streams (SmolLM2,
greedy chat streams on ``/v1/chat/completions``, new prompts every round) at 1 and 8 at once, the
two servers in turns, the order reversed each repetition. Prints each round, the machine's load,
and the ratio per-sequence / unified of the aggregate tokens/s per repetition.

    uv run --group bench python -m benchmarks.kv_cache [--repetitions 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys

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


if __name__ == "__main__":
    main()
