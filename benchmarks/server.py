"""(5) Server: requests/s and p50/p99 latency of ``promptwire serve`` against bare FastAPI.

Both serve the dummy engine (zero delay) under uvicorn with the same options, each in its own
process; ``benchmarks.loadgen`` (raw asyncio sockets, its own process) loads one server at a
time, alternating between them.
"""

from __future__ import annotations

import json
import subprocess
import time
from contextlib import ExitStack

from benchmarks.common import (
    PYTHON,
    ROOT,
    BenchResult,
    Measurement,
    Ratio,
    clean_env,
    finish,
    free_port,
    parse_args,
    promptwire_serve,
    ratios,
    server_process,
)

CONNECTIONS = 16
BODY = json.dumps({"prompt": "Tell me a story", "max_tokens": 16})


def load(port: int, duration: float) -> dict[str, float]:
    completed = subprocess.run(
        [
            PYTHON,
            "-m",
            "benchmarks.loadgen",
            "--port",
            str(port),
            "--connections",
            str(CONNECTIONS),
            "--duration",
            str(duration),
            "--body",
            BODY,
        ],
        capture_output=True,
        check=True,
        text=True,
        timeout=duration + 60,
        cwd=ROOT,
        env=clean_env(),
    )
    result: dict[str, float] = json.loads(completed.stdout.strip().splitlines()[-1])
    if result["errors"]:
        raise RuntimeError(f"the server answered {result['errors']} requests with errors")
    return result


def run(quick: bool) -> BenchResult:
    duration = 1.5 if quick else 4.0
    pairs = 2 if quick else 6
    samples: dict[str, dict[str, list[float]]] = {}
    with ExitStack() as stack:
        promptwire = stack.enter_context(promptwire_serve())
        bare_port = free_port()
        stack.enter_context(
            server_process(
                [PYTHON, "-m", "benchmarks.servers", "bare", "--port", str(bare_port)],
                f"http://127.0.0.1:{bare_port}/health",
            )
        )
        ports = {"promptwire serve": promptwire.port, "bare FastAPI": bare_port}
        for port in ports.values():  # warm-up
            load(port, 0.5)
        for pair in range(pairs):
            names = list(ports) if pair % 2 == 0 else list(reversed(ports))
            for name in names:
                for key, value in load(ports[name], duration).items():
                    samples.setdefault(name, {}).setdefault(key, []).append(value)
    result = BenchResult(
        key="server",
        title="5. Server throughput and latency",
        setup=(
            f"{CONNECTIONS} keep-alive connections, one request at a time each, "
            f"{duration:g} s per run after 0.5 s warm-up, runs alternating between the two "
            f"servers ({pairs} each). Request `{BODY}`; reply `hello world`. Both servers: "
            "uvicorn (h11, asyncio loop), one process, log level warning. The load generator "
            "shares the 2 cores with the server."
        ),
        quick=quick,
    )
    for name, metrics in samples.items():
        result.measurements += [
            Measurement(name, "requests/s", "req/s", metrics["rps"], lower_is_better=False),
            Measurement(name, "p50 latency", "ms", metrics["p50_ms"]),
            Measurement(name, "p99 latency", "ms", metrics["p99_ms"]),
        ]
    pw, bare = samples["promptwire serve"], samples["bare FastAPI"]
    result.ratios = [
        Ratio(
            "promptwire serve requests/s / bare FastAPI",
            ratios(pw["rps"], bare["rps"]),
            target=0.8,
            op=">=",
            note="adjacent runs paired",
        ),
        Ratio(
            "promptwire serve p99 / bare FastAPI",
            ratios(pw["p99_ms"], bare["p99_ms"]),
        ),
    ]
    result.notes.append(
        "What promptwire does beyond the bare app: strict protocol validation, body size limit, "
        "the in-flight limit, a watcher that cancels the generation when the client disconnects, "
        "and protocol error bodies."
    )
    return result


def main() -> None:
    args = parse_args(__doc__ or "")
    started = time.perf_counter()
    finish(run(args.quick), started, args.json)


if __name__ == "__main__":
    main()
