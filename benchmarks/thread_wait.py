"""(14) How llama.cpp's threads wait between operations: the llamacpp backend's ``thread_wait``
settings (``passive``, ``spin``, ``auto``, and any spin counts given with ``--spins``; with
``--one-thread``, the backend on one thread) side by side with llama-server's OpenMP default
(and, with ``--llama-server-passive``, llama-server with
``OMP_WAIT_POLICY=PASSIVE``), on an idle machine and beside one busy-loop process
(``python -c 'while True: pass'``).

Benchmark 11's streams (SmolLM2, 2 threads, 8 sequences of 2,048 tokens, greedy chat streams of
at most 128 tokens on ``/v1/chat/completions``, new prompts every round) at 1 and 8 at once.
Repetitions rotate the servers' order (a Latin square). Measured: aggregate tokens per second
and CPU seconds per 1,000 tokens of each server's process tree, and their ratio to
llama-server's in the same round.

    uv run --group bench python -m benchmarks.thread_wait [--spins 10000 100000] [--quick]
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from pathlib import Path

from benchmarks.common import BenchResult, Measurement, Ratio, finish
from benchmarks.real_model import (
    BUSY_CONCURRENCY,
    CONTEXT,
    MAX_TOKENS,
    PARALLEL,
    RoundResult,
    Server,
    _threads,
    busy_neighbour,
    llama_server,
    llama_server_binary,
    load,
    measured_round,
    prompts,
    promptwire_server,
    rotated,
    started,
)

LLAMA_SERVER = "llama-server (default wait)"
LLAMA_SERVER_PASSIVE = "llama-server (passive)"
CONCURRENCY = BUSY_CONCURRENCY


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="one repetition")
    parser.add_argument("--json", type=Path, help="write the result here as JSON")
    parser.add_argument("--repetitions", type=int, default=3)
    parser.add_argument("--spins", type=int, nargs="*", default=[], help="GOMP_SPINCOUNTs too")
    parser.add_argument("--waits", nargs="*", default=["passive", "spin", "auto"])
    parser.add_argument("--llama-server-passive", action="store_true")
    parser.add_argument(
        "--one-thread", action="store_true", help="promptwire on one thread too (no barrier)"
    )
    args = parser.parse_args()
    began = time.perf_counter()
    repetitions = 1 if args.quick else args.repetitions
    threads = _threads()
    binary, how_built = llama_server_binary()
    if binary is None:
        raise SystemExit(f"llama-server is needed: {how_built}")
    servers: dict[str, Server] = {LLAMA_SERVER: llama_server(binary, threads)}
    if args.llama_server_passive:
        servers[LLAMA_SERVER_PASSIVE] = llama_server(
            binary, threads, {"OMP_WAIT_POLICY": "PASSIVE"}
        )
    for wait in [*args.waits, *map(str, args.spins)]:
        env = {"PROMPTWIRE_LLAMACPP__THREAD_WAIT": wait}
        servers[f"promptwire thread_wait={wait}"] = promptwire_server(threads, env)
    if args.one_thread:
        servers["promptwire on one thread"] = promptwire_server(1)
    conditions = ("idle", "busy")
    rounds: dict[tuple[str, str, int], list[RoundResult]] = {
        (name, condition, n): []
        for name in servers
        for condition in conditions
        for n in CONCURRENCY
    }
    loads = [f"start {load()}"]
    round_number = 5000
    with started(servers) as pids:
        for repetition in range(repetitions):
            for condition in conditions:
                neighbour = busy_neighbour() if condition == "busy" else contextlib.nullcontext()
                with neighbour:
                    loads.append(f"repetition {repetition + 1} {condition} {load()}")
                    for streams in CONCURRENCY:
                        round_number += 1
                        these = prompts(round_number, streams)
                        for name in rotated(list(servers), repetition):
                            result = measured_round(servers[name].url, pids[name], these)
                            rounds[name, condition, streams].append(result)
                            print(
                                f"  {name:<34} {condition} {streams} streams: "
                                f"{result.rate:6.1f} tokens/s, {result.cpu:5.2f} CPU-s/1k, "
                                f"served {result.served}/{streams}",
                                file=sys.stderr,
                            )
    loads.append(f"end {load()}")

    result = BenchResult(
        key="thread_wait",
        title="14. How llama.cpp's threads wait: promptwire's thread_wait against llama-server",
        setup=(
            f"SmolLM2-135M-Instruct Q4_1, {threads} threads, {PARALLEL} sequences of {CONTEXT} "
            f"tokens, greedy chat streams of at most {MAX_TOKENS} tokens on "
            f"/v1/chat/completions, {', '.join(map(str, CONCURRENCY))} at once, on the idle "
            "machine and beside one busy-loop process; "
            f"{repetitions} repetitions rotating the servers' order. promptwire serve "
            "--backend llamacpp with PROMPTWIRE_LLAMACPP__THREAD_WAIT as named; llama-server "
            f"({how_built}) with OpenMP's default wait. Load average (1, 5, 15 min): "
            f"{'; '.join(loads)}."
        ),
    )
    for (name, condition, streams), samples in rounds.items():
        where = "" if condition == "idle" else ", busy"
        result.measurements.append(
            Measurement(
                name, f"tokens/s at {streams}{where}", "tok/s", [s.rate for s in samples], False
            )
        )
    for (name, condition, streams), samples in rounds.items():
        where = "" if condition == "idle" else ", busy"
        result.measurements.append(
            Measurement(
                name, f"CPU per 1k tokens at {streams}{where}", "CPU-s", [s.cpu for s in samples]
            )
        )
    for name in servers:
        if name == LLAMA_SERVER:
            continue
        for condition in conditions:
            for streams in CONCURRENCY:
                ours, theirs = (
                    rounds[name, condition, streams],
                    rounds[LLAMA_SERVER, condition, streams],
                )
                where = "" if condition == "idle" else " beside a busy process"
                result.ratios.append(
                    Ratio(
                        f"tokens/s at {streams}{where}: {name} / llama-server",
                        [a.rate / b.rate for a, b in zip(ours, theirs, strict=True)],
                        target=1.0 if name.endswith("=auto") else None,
                    )
                )
                result.ratios.append(
                    Ratio(
                        f"CPU per token at {streams}{where}: {name} / llama-server",
                        [a.cpu / b.cpu for a, b in zip(ours, theirs, strict=True)],
                    )
                )
    summary = []
    for name in servers:
        rates = []
        for condition in conditions:
            for streams in CONCURRENCY:
                median = statistics.median(s.rate for s in rounds[name, condition, streams])
                rates.append(f"{condition} {streams}: {median:.1f}")
        summary.append(f"{name}: {', '.join(rates)} tokens/s")
    result.notes += summary
    finish(result, began, args.json)


if __name__ == "__main__":
    main()
