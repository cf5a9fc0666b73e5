"""(13) The cost of running the engine in a process of its own: ``promptwire serve --backend
llamacpp`` on SmolLM2 with ``PROMPTWIRE_ENGINE_PROCESS=true`` (the default: the engine in a
supervised child process) and ``=false`` (the engine in the server's process), side by side.

Both servers get the same greedy chat streams as benchmark 11 (at most 128 tokens, new prompts
every round) at 1 and 8 streams at once, repetitions alternating which goes first. Measured:
aggregate tokens per second, the median time to the first token, and CPU seconds per 1,000
tokens of the server's whole process tree (with the engine process where there is one).

    uv run --group bench python -m benchmarks --only engine_process
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import time

from benchmarks.common import (
    PROMPTWIRE_CLI,
    BenchResult,
    Measurement,
    Ratio,
    finish,
    free_port,
    parse_args,
    server_process,
)
from benchmarks.real_model import CONTEXT, MAX_TOKENS, _round, _threads, cpu_seconds, prompts

CONCURRENCY = (1, 8)
SEPARATE, IN_PROCESS = "engine process", "engine in-process"


def main() -> None:
    args = parse_args(__doc__ or "")
    started = time.perf_counter()
    repetitions = 1 if args.quick else 5  # the machine is shared: more, for the noise
    threads = _threads()
    urls = {name: f"http://127.0.0.1:{free_port()}/" for name in (SEPARATE, IN_PROCESS)}
    base_env = {
        "PROMPTWIRE_LOAD_PLUGINS": "llamacpp",
        "PROMPTWIRE_LLAMACPP__PARALLEL": "8",
        "PROMPTWIRE_LLAMACPP__CONTEXT_SIZE": str(CONTEXT),
        "PROMPTWIRE_LLAMACPP__THREADS": str(threads),
        "PROMPTWIRE_METRICS": "false",
    }

    def command(url: str) -> list[str]:
        port = url.rsplit(":", 1)[1].strip("/")
        return [PROMPTWIRE_CLI, "serve", "--backend", "llamacpp", "--port", port]

    keys = [(name, n) for name in urls for n in CONCURRENCY]
    tps: dict[tuple[str, int], list[float]] = {key: [] for key in keys}
    ttft: dict[tuple[str, int], list[float]] = {key: [] for key in keys}
    cpu: dict[tuple[str, int], list[float]] = {key: [] for key in keys}
    served = dict.fromkeys(urls, 0)
    asked = 0
    load_before = os.getloadavg()[0]
    round_number = 0
    with (
        server_process(
            [*command(urls[SEPARATE]), "--log-level", "warning"],
            urls[SEPARATE] + "health",
            {**base_env, "PROMPTWIRE_ENGINE_PROCESS": "true"},
        ) as separate,
        server_process(
            [*command(urls[IN_PROCESS]), "--log-level", "warning"],
            urls[IN_PROCESS] + "health",
            {**base_env, "PROMPTWIRE_ENGINE_PROCESS": "false"},
        ) as in_process,
    ):
        pids = {SEPARATE: separate.pid, IN_PROCESS: in_process.pid}
        for url in urls.values():  # warm both up
            asyncio.run(_round(url, prompts(0, 1)))
        for repetition in range(repetitions):
            order = list(urls.items())
            if repetition % 2:
                order.reverse()
            for streams in CONCURRENCY:
                asked += streams
                round_number += 1
                these = prompts(round_number, streams)
                for name, url in order:
                    before = cpu_seconds(pids[name])
                    wall = time.perf_counter()
                    rate, firsts, count = asyncio.run(_round(url, these))
                    tokens = rate * (time.perf_counter() - wall)
                    used = cpu_seconds(pids[name]) - before
                    tps[name, streams].append(rate)
                    ttft[name, streams].append(statistics.median(firsts))
                    cpu[name, streams].append(1000 * used / max(tokens, 1))
                    served[name] += count
                    print(
                        f"  {name:<18} {streams} streams: {rate:6.1f} tokens/s, first token "
                        f"median {statistics.median(firsts):.3f} s, "
                        f"{cpu[name, streams][-1]:.2f} CPU-s per 1k tokens",
                        file=sys.stderr,
                    )
    load_after = os.getloadavg()[0]

    result = BenchResult(
        key="engine_process",
        title="13. The llama.cpp engine in a process of its own: what it costs",
        setup=(
            f"promptwire serve --backend llamacpp, SmolLM2-135M-Instruct Q4_1, {threads} "
            f"threads, 8 sequences, greedy chat streams of at most {MAX_TOKENS} tokens on "
            f"/v1/chat/completions, {repetitions} repetitions alternating the order, new "
            "prompts every round. PROMPTWIRE_ENGINE_PROCESS=true (the engine in a supervised "
            "child process, the default) against =false (in the server's process). Load "
            f"average {load_before:.1f} before, {load_after:.1f} after."
        ),
    )
    for (name, streams), samples in tps.items():
        result.measurements.append(
            Measurement(name, f"tokens/s at {streams}", "tok/s", samples, lower_is_better=False)
        )
    for (name, streams), samples in ttft.items():
        result.measurements.append(Measurement(name, f"TTFT at {streams}", "s", samples))
    for (name, streams), samples in cpu.items():
        result.measurements.append(
            Measurement(name, f"CPU per 1k tokens at {streams}", "CPU-s", samples)
        )
    for streams in CONCURRENCY:
        result.ratios.append(
            Ratio(
                f"tokens/s at {streams} stream(s): engine process / in-process",
                [
                    a / b
                    for a, b in zip(tps[SEPARATE, streams], tps[IN_PROCESS, streams], strict=True)
                ],
                target=0.95,
                op=">=",
            )
        )
        result.ratios.append(
            Ratio(
                f"median time to first token at {streams}: engine process / in-process",
                [
                    a / b
                    for a, b in zip(ttft[SEPARATE, streams], ttft[IN_PROCESS, streams], strict=True)
                ],
            )
        )
        result.ratios.append(
            Ratio(
                f"CPU per token at {streams}: engine process / in-process",
                [
                    a / b
                    for a, b in zip(cpu[SEPARATE, streams], cpu[IN_PROCESS, streams], strict=True)
                ],
                target=1.05,
                op="<=",
            )
        )
    result.notes.append(
        f"streams served with text: engine process {served[SEPARATE]}/{asked}, "
        f"in-process {served[IN_PROCESS]}/{asked}"
    )
    finish(result, started, args.json)


if __name__ == "__main__":
    main()
