"""(5) Server: requests/s and p50/p99 latency of ``promptwire serve`` against bare FastAPI on
each of uvicorn's HTTP parsers (httptools, ``promptwire serve``'s default, and h11), and of
``promptwire serve`` with its metrics off (``PROMPTWIRE_METRICS=false``): what counting every
request for ``/metrics`` costs when nobody scrapes it. Then ``promptwire serve`` and bare FastAPI
(sse-starlette's ``EventSourceResponse``), both on httptools, streaming a 256-token reply as
server-sent events: streamed tokens per second and the server's CPU per streamed token.

All serve the dummy engine (zero delay) under uvicorn with the same options, each in its own
process; ``benchmarks.loadgen`` (raw asyncio sockets, its own process) loads one server at a
time, in turns, the order reversed from one round to the next (the two promptwire servers on
httptools always run one after the other). Besides requests/s, each run measures the server
process's CPU time per request (user + system, from ``/proc``): on a machine shared with other
work, requests/s moves with everyone's load, the CPU a request costs much less.
"""

from __future__ import annotations

import json
import sys
import time
from contextlib import ExitStack

from benchmarks.common import (
    PYTHON,
    BenchResult,
    Measurement,
    Ratio,
    cpu_seconds,
    finish,
    free_port,
    parse_args,
    promptwire_serve,
    ratios,
    run_loadgen,
    server_process,
)

CONNECTIONS = 16
PROMPTWIRE = "promptwire serve (httptools)"
PROMPTWIRE_H11 = "promptwire serve (h11)"
METRICS_OFF = "promptwire serve (httptools), metrics off"
BARE = "bare FastAPI (httptools)"
BARE_H11 = "bare FastAPI (h11)"
BODY = json.dumps({"prompt": "Tell me a story", "max_tokens": 16})
STREAM_TOKENS = 256
STREAM_BODY = json.dumps({"prompt": "Tell me a story", "stream": True})
#: The dummy engine's reply for the streams: one token (word) each, one ``delta`` event each.
STREAM_REPLY = " ".join(f"w{i}" for i in range(STREAM_TOKENS))
STREAM_SETTINGS = {"PROMPTWIRE_MODAL_DUMMY__REPLY": STREAM_REPLY}
PROMPTWIRE_STREAM = "promptwire serve (httptools), 256-token stream"
BARE_STREAM = "bare FastAPI SSE (httptools), 256-token stream"


def load(port: int, duration: float, pid: int | None = None, body: str = BODY) -> dict[str, float]:
    """One run (no warm-up inside it: every request counts, so the server's CPU time over the
    run divides by them all); with ``pid``, also the server's CPU microseconds per request."""
    cpu_before = cpu_seconds(pid) if pid is not None else 0.0
    result = run_loadgen(port, duration, body, connections=CONNECTIONS, warmup=0)
    if pid is not None:
        result["cpu_us"] = (cpu_seconds(pid) - cpu_before) / result["requests"] * 1e6
    return result


def load_stream(port: int, duration: float, pid: int) -> dict[str, float]:
    """One run of 256-token streams: streamed tokens per second and server CPU per token."""
    result = load(port, duration, pid, STREAM_BODY)
    events = STREAM_TOKENS + 1  # a delta per token, and the done event
    if result["events"] != result["requests"] * events:
        raise RuntimeError(f"{result['events']} events for {result['requests']} streams")
    return {
        "tokens_s": result["rps"] * STREAM_TOKENS,
        "cpu_us_token": result["cpu_us"] / STREAM_TOKENS,
        "p50_ms": result["p50_ms"],
    }


def bare_server(stack: ExitStack, http: str, env: dict[str, str] | None = None) -> tuple[int, int]:
    """The bare FastAPI app on uvicorn's parser ``http``: its port and process id."""
    port = free_port()
    command = [PYTHON, "-m", "benchmarks.servers", "bare", "--port", str(port), "--http", http]
    process = stack.enter_context(
        server_process(command, f"http://127.0.0.1:{port}/health", env=env)
    )
    return port, process.pid


def run(quick: bool) -> BenchResult:
    duration = 1.5 if quick else 4.0
    rounds = 2 if quick else 9
    samples: dict[str, dict[str, list[float]]] = {}
    with ExitStack() as stack:
        ports: dict[str, int] = {}
        pids: dict[str, int] = {}
        for name, settings in [
            (PROMPTWIRE, {"PROMPTWIRE_HTTP": "httptools"}),
            (METRICS_OFF, {"PROMPTWIRE_HTTP": "httptools", "PROMPTWIRE_METRICS": "false"}),
            (PROMPTWIRE_H11, {"PROMPTWIRE_HTTP": "h11"}),
        ]:
            served = stack.enter_context(promptwire_serve(settings=settings))
            ports[name], pids[name] = served.port, served.process.pid
        ports[BARE], pids[BARE] = bare_server(stack, "httptools")
        ports[BARE_H11], pids[BARE_H11] = bare_server(stack, "h11")
        streaming = stack.enter_context(
            promptwire_serve(settings={**STREAM_SETTINGS, "PROMPTWIRE_HTTP": "httptools"})
        )
        stream_ports = {PROMPTWIRE_STREAM: streaming.port}
        stream_pids = {PROMPTWIRE_STREAM: streaming.process.pid}
        stream_ports[BARE_STREAM], stream_pids[BARE_STREAM] = bare_server(
            stack, "httptools", STREAM_SETTINGS
        )
        for port in ports.values():  # warm-up
            load(port, 1.0)
        for port in stream_ports.values():
            load(port, 1.0, body=STREAM_BODY)
        for round_ in range(rounds):
            # Forward, then backward: the two promptwire servers on httptools always run one
            # after the other, and so do the two streaming servers.
            print(f"  round {round_ + 1}/{rounds}", file=sys.stderr, flush=True)
            names = list(ports) if round_ % 2 == 0 else list(reversed(ports))
            for name in names:
                for key, value in load(ports[name], duration, pids[name]).items():
                    samples.setdefault(name, {}).setdefault(key, []).append(value)
            names = list(stream_ports) if round_ % 2 == 0 else list(reversed(stream_ports))
            for name in names:
                for key, value in load_stream(
                    stream_ports[name], duration, stream_pids[name]
                ).items():
                    samples.setdefault(name, {}).setdefault(key, []).append(value)
    result = BenchResult(
        key="server",
        title="5. Server throughput and latency",
        setup=(
            f"{CONNECTIONS} keep-alive connections, one request at a time each, "
            f"{duration:g} s per run after a 1 s warm-up run each, the five servers in turns "
            f"({rounds} runs each, the order reversed each round: the two promptwire servers on "
            f"httptools always adjacent). Request `{BODY}`; reply `hello world`. Streams: the "
            f"two streaming servers in turns after each round of the others, request "
            f"`{STREAM_BODY}`, reply {STREAM_TOKENS} one-word tokens "
            f"(`PROMPTWIRE_MODAL_DUMMY__REPLY`), {STREAM_TOKENS} `delta` events and a `done` "
            "event (the load generator counts them), bare FastAPI through sse-starlette's "
            "`EventSourceResponse` as promptwire does. All servers: uvicorn on the parser named "
            "(httptools: `promptwire serve`'s default where installed, with every connection "
            "guard; h11: its pure-Python fallback), uvicorn's default loop (uvloop, installed "
            "with the server extra), one process, log level warning (promptwire's request log "
            "is built but not written). Metrics off: `PROMPTWIRE_METRICS=false`, nothing else "
            "changed; nobody scrapes `/metrics` during the runs. The load generator shares the "
            "2 cores with the server."
        ),
        quick=quick,
    )
    for name, metrics in samples.items():
        if name in (PROMPTWIRE_STREAM, BARE_STREAM):
            result.measurements += [
                Measurement(
                    name, "streamed tokens/s", "tok/s", metrics["tokens_s"], lower_is_better=False
                ),
                Measurement(name, "p50 stream duration", "ms", metrics["p50_ms"]),
                Measurement(name, "server CPU per token", "us", metrics["cpu_us_token"]),
            ]
            continue
        result.measurements += [
            Measurement(name, "requests/s", "req/s", metrics["rps"], lower_is_better=False),
            Measurement(name, "p50 latency", "ms", metrics["p50_ms"]),
            Measurement(name, "p99 latency", "ms", metrics["p99_ms"]),
            Measurement(name, "server CPU per request", "us", metrics["cpu_us"]),
        ]
    pw, off, bare = samples[PROMPTWIRE], samples[METRICS_OFF], samples[BARE]
    pw_h11, bare_h11 = samples[PROMPTWIRE_H11], samples[BARE_H11]
    result.ratios = [
        Ratio(
            "promptwire serve requests/s / the same with metrics off",
            ratios(pw["rps"], off["rps"]),
            target=0.97,
            op=">=",
            note="adjacent runs paired",
        ),
        Ratio(
            "promptwire serve CPU per request / the same with metrics off",
            ratios(pw["cpu_us"], off["cpu_us"]),
            note="the server process's user + system time",
        ),
        Ratio(
            "promptwire serve requests/s / bare FastAPI, both on httptools",
            ratios(pw["rps"], bare["rps"]),
            target=0.95,
            op=">=",
            note="same round paired",
        ),
        Ratio(
            "promptwire serve CPU per request / bare FastAPI, both on httptools",
            ratios(pw["cpu_us"], bare["cpu_us"]),
            target=1.05,
            op="<=",
            note="the server process's user + system time",
        ),
        Ratio(
            "promptwire serve requests/s / bare FastAPI, both on h11",
            ratios(pw_h11["rps"], bare_h11["rps"]),
            target=0.95,
            op=">=",
            note="same round paired",
        ),
        Ratio(
            "promptwire serve CPU per request / bare FastAPI, both on h11",
            ratios(pw_h11["cpu_us"], bare_h11["cpu_us"]),
            target=1.05,
            op="<=",
            note="the server process's user + system time",
        ),
        Ratio(
            "promptwire serve on httptools, every guard on: requests/s / bare FastAPI on h11",
            ratios(pw["rps"], bare_h11["rps"]),
            target=1.2,
            op=">=",
            note="the stretch goal of issue 22; same round paired",
        ),
        Ratio(
            "promptwire serve requests/s, httptools / h11",
            ratios(pw["rps"], pw_h11["rps"]),
            note="what the parser is worth",
        ),
        Ratio(
            "promptwire serve p99 / bare FastAPI, both on httptools",
            ratios(pw["p99_ms"], bare["p99_ms"]),
        ),
    ]
    pw_stream, bare_stream = samples[PROMPTWIRE_STREAM], samples[BARE_STREAM]
    result.ratios += [
        Ratio(
            "256-token stream: promptwire serve streamed tokens/s / bare FastAPI SSE (httptools)",
            ratios(pw_stream["tokens_s"], bare_stream["tokens_s"]),
            target=0.95,
            op=">=",
            note="adjacent runs paired",
        ),
        Ratio(
            "256-token stream: promptwire serve CPU per token / bare FastAPI SSE (httptools)",
            ratios(pw_stream["cpu_us_token"], bare_stream["cpu_us_token"]),
            target=1.05,
            op="<=",
            note="the server process's user + system time",
        ),
    ]
    result.notes.append(
        "What promptwire does beyond the bare app: strict protocol validation, body size limit, "
        "the in-flight limit, a watcher that cancels the generation when the client disconnects, "
        "and protocol error bodies; and what an operator sees: a request id, the request log "
        "line (built, and written at log level info) and, unless turned off, the metrics."
    )
    return result


def main() -> None:
    args = parse_args(__doc__ or "")
    started = time.perf_counter()
    finish(run(args.quick), started, args.json)


if __name__ == "__main__":
    main()
