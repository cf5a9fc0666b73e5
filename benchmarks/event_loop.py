"""(9) Event loop: ``promptwire serve``'s requests/s on asyncio's loop and on uvloop.

``uvicorn[standard]`` brings uvloop and httptools; the parser is compared in benchmark 5, so
only the loop is compared here: the same server (its default parser and every connection
guard), dummy engine, limits and load, one process each, runs alternating.
"""

from __future__ import annotations

import time
from contextlib import ExitStack

from benchmarks.common import (
    PYTHON,
    BenchResult,
    Measurement,
    Ratio,
    finish,
    free_port,
    parse_args,
    ratios,
    server_process,
)
from benchmarks.server import BODY, CONNECTIONS, load

LOOPS = ["asyncio", "uvloop"]


def run(quick: bool) -> BenchResult:
    duration = 1.5 if quick else 4.0
    pairs = 2 if quick else 6
    samples: dict[str, dict[str, list[float]]] = {}
    with ExitStack() as stack:
        ports = {}
        for loop in LOOPS:
            port = free_port()
            command = [PYTHON, "-m", "benchmarks.servers", "stack", "--port", str(port)]
            stack.enter_context(
                server_process([*command, "--loop", loop], f"http://127.0.0.1:{port}/health")
            )
            ports[loop] = port
        for port in ports.values():  # warm-up
            load(port, 0.5)
        for pair in range(pairs):
            for loop in LOOPS if pair % 2 == 0 else reversed(LOOPS):
                for key, value in load(ports[loop], duration).items():
                    samples.setdefault(loop, {}).setdefault(key, []).append(value)
    result = BenchResult(
        key="event_loop",
        title="9. promptwire serve on asyncio's loop and on uvloop",
        setup=(
            f"{CONNECTIONS} keep-alive connections, one request at a time each, {duration:g} s "
            f"per run after 0.5 s warm-up, runs alternating ({pairs} each). Request `{BODY}`. "
            "Both: promptwire serve's app and guarded protocol (its default parser) with its "
            "default limits, dummy backend, log level warning. The load generator shares the "
            "cores."
        ),
        quick=quick,
    )
    for loop, metrics in samples.items():
        result.measurements += [
            Measurement(loop, "requests/s", "req/s", metrics["rps"], lower_is_better=False),
            Measurement(loop, "p99 latency", "ms", metrics["p99_ms"]),
        ]
    result.ratios = [
        Ratio(
            "uvloop requests/s / asyncio",
            ratios(samples["uvloop"]["rps"], samples["asyncio"]["rps"]),
            note="adjacent runs paired",
        ),
        Ratio(
            "uvloop p99 / asyncio",
            ratios(samples["uvloop"]["p99_ms"], samples["asyncio"]["p99_ms"]),
        ),
    ]
    return result


def main() -> None:
    args = parse_args(__doc__ or "")
    started = time.perf_counter()
    finish(run(args.quick), started, args.json)


if __name__ == "__main__":
    main()
