"""Benchmark 5 against another checkout: ``promptwire serve`` from this checkout and from another
(a commit before a change, in its own virtual environment), side by side in one run, so a
change's cost on the server shows apart from this machine's noise.

    git worktree add ../before <commit> && (cd ../before && uv sync --locked)
    uv run --group bench python -m benchmarks.against ../before [--quick]

Both servers run the dummy engine with the same settings; the load runs alternate between them,
the order reversed each round, and each ratio pairs adjacent runs.
"""

from __future__ import annotations

import argparse
import time
from contextlib import ExitStack
from pathlib import Path

from benchmarks.common import (
    BenchResult,
    Measurement,
    Ratio,
    finish,
    promptwire_serve,
    ratios,
)
from benchmarks.server import load

THIS = "promptwire serve (this checkout)"
OTHER = "promptwire serve (the other checkout)"


def run(other: Path, quick: bool) -> BenchResult:
    duration = 1.5 if quick else 4.0
    rounds = 2 if quick else 9
    samples: dict[str, dict[str, list[float]]] = {}
    with ExitStack() as stack:
        servers = {
            THIS: stack.enter_context(promptwire_serve()),
            OTHER: stack.enter_context(promptwire_serve(cli=str(other / ".venv/bin/promptwire"))),
        }
        for server in servers.values():
            load(server.port, 1.0)  # warm-up
        for index in range(rounds):
            order = list(servers) if index % 2 == 0 else list(reversed(servers))
            for name in order:
                server = servers[name]
                for key, value in load(server.port, duration, server.process.pid).items():
                    samples.setdefault(name, {}).setdefault(key, []).append(value)
    result = BenchResult(
        key="against",
        title=f"5. Server throughput: this checkout against {other}",
        setup=f"{rounds} runs of {duration:g} s each per server, alternating; dummy engine.",
        quick=quick,
    )
    for name, metrics in samples.items():
        result.measurements += [
            Measurement(name, "requests/s", "req/s", metrics["rps"], lower_is_better=False),
            Measurement(name, "server CPU per request", "us", metrics["cpu_us"]),
        ]
    this, that = samples[THIS], samples[OTHER]
    result.ratios = [
        Ratio("requests/s: this checkout / the other", ratios(this["rps"], that["rps"])),
        Ratio("server CPU per request: this / the other", ratios(this["cpu_us"], that["cpu_us"])),
    ]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("other", type=Path, help="the other checkout (with its .venv)")
    parser.add_argument("--quick", action="store_true", help="few repetitions: a smoke run")
    parser.add_argument("--json", type=Path, help="write the result here as JSON")
    args = parser.parse_args()
    started = time.perf_counter()
    finish(run(args.other.resolve(), args.quick), started, args.json)


if __name__ == "__main__":
    main()
