"""(8) OpenAI and Anthropic compatibility: the OpenAI routes (Completions, Chat Completions,
Responses) and Anthropic's Messages route against the prompt route on one server, and the
``openai`` backend adapter against ``langchain-openai``'s ``ChatOpenAI`` on the same server.

Server side: one ``promptwire serve`` (dummy engine, zero delay) loaded by ``benchmarks.loadgen``
(its own process) on ``/``, ``/v1/completions``, ``/v1/chat/completions``, ``/v1/responses`` and
``/v1/messages`` in turn.
Client side: ``ChatPromptwire`` with ``PROMPTWIRE_BACKEND=openai`` and ``ChatOpenAI``, both
pointed at that server's ``/v1``: client CPU per sequential ``invoke`` (this process's CPU time;
the server runs in its own), and the wall time of an ``abatch`` against a server whose engine
takes 100 ms before answering.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Callable
from typing import Any

from benchmarks.common import (
    BenchResult,
    Measurement,
    Ratio,
    cpu_seconds,
    finish,
    parse_args,
    promptwire_serve,
    ratios,
    run_loadgen,
    words,
)

CONNECTIONS = 16
ROUTES = {
    "prompt route /": ("/", {"prompt": "Tell me a story", "max_tokens": 16}),
    "OpenAI /v1/completions": (
        "/v1/completions",
        {"model": "dummy", "prompt": "Tell me a story", "max_tokens": 16},
    ),
    "OpenAI /v1/chat/completions": (
        "/v1/chat/completions",
        {
            "model": "dummy",
            "messages": [{"role": "user", "content": "Tell me a story"}],
            "max_tokens": 16,
        },
    ),
    "OpenAI /v1/responses": (
        "/v1/responses",
        {"model": "dummy", "input": "Tell me a story", "max_output_tokens": 16},
    ),
    "Anthropic /v1/messages": (
        "/v1/messages",
        {
            "model": "dummy",
            "messages": [{"role": "user", "content": "Tell me a story"}],
            "max_tokens": 16,
        },
    ),
}
BATCH = 256
BATCH_CONCURRENCY = 64
BATCH_DELAY = 0.1


def load(port: int, pid: int, path: str, body: dict[str, Any], duration: float) -> dict[str, float]:
    """One run; also the server's CPU microseconds per request (no warm-up inside the run: every
    request counts, so the server's CPU time over the run divides by them all)."""
    before = cpu_seconds(pid)
    result = run_loadgen(
        port, duration, json.dumps(body), path=path, connections=CONNECTIONS, warmup=0
    )
    result["cpu_us"] = (cpu_seconds(pid) - before) / result["requests"] * 1e6
    return result


def server_side(quick: bool) -> dict[str, dict[str, list[float]]]:
    """Each round runs the prompt route between every other route (P A P B P C P D P, the
    others' order rotating by round): a route's ratio is its requests/s over the mean of the
    two prompt-route runs around it, which cancels the drift of a shared machine's speed
    (one run's prompt route moved 2,145-2,980 requests/s in the rounds of 16 s apart this
    replaced)."""
    duration = 1.0 if quick else 1.5
    rounds = 2 if quick else 10
    samples: dict[str, dict[str, list[float]]] = {}

    def measure(name: str) -> dict[str, float]:
        path, body = ROUTES[name]
        result = load(server.port, server.process.pid, path, body, duration)
        for key, value in result.items():
            samples.setdefault(name, {}).setdefault(key, []).append(value)
        return result

    native, *others = ROUTES
    with promptwire_serve() as server:
        for path, body in ROUTES.values():  # warm-up
            load(server.port, server.process.pid, path, body, 0.5)
        for index in range(rounds):
            before = measure(native)
            for name in others[index % len(others) :] + others[: index % len(others)]:
                measure(name)
                after = measure(native)
                for key in ("rps", "cpu_us"):
                    around = (before[key] + after[key]) / 2
                    samples[name].setdefault(f"bracket_{key}", []).append(around)
                before = after
    return samples


# -- client side -------------------------------------------------------------------------------


def _adapter(base: str, **options: Any) -> Any:
    from promptwire import ChatPromptwire

    return ChatPromptwire(backend="openai", endpoint_url=base, model="dummy", **options)


def _chat_openai(base: str, **options: Any) -> Any:
    from langchain_openai import ChatOpenAI

    return ChatOpenAI(model="dummy", base_url=base, api_key="unused", **options)


MAKERS: dict[str, Callable[..., Any]] = {
    "promptwire openai adapter (ChatPromptwire)": _adapter,
    "langchain-openai ChatOpenAI": _chat_openai,
}


def cpu_per_call(make: Callable[..., Any], base: str, prompt: str, calls: int) -> float:
    chat = make(base)
    chat.invoke(prompt)
    started = time.process_time()
    for _ in range(calls):
        chat.invoke(prompt)
    return (time.process_time() - started) / calls * 1e6


async def batch_wall(make: Callable[..., Any], base: str, prompts: list[str]) -> float:
    chat = make(base, max_retries=0)
    started = time.perf_counter()
    replies = await chat.abatch(prompts, config={"max_concurrency": BATCH_CONCURRENCY})
    elapsed = time.perf_counter() - started
    assert len(replies) == len(prompts)
    return elapsed


async def batches(base: str, prompts: list[str], reps: int) -> dict[str, list[float]]:
    """Every repetition in one event loop: ChatOpenAI shares one async connection pool per base
    URL across the process, and its kept-alive connections fail in a second loop."""
    wall: dict[str, list[float]] = {name: [] for name in MAKERS}
    names = list(MAKERS)
    # Warm-up, an untimed batch each (imports, the pools' first connections).
    for name in reversed(names):
        await batch_wall(MAKERS[name], base, prompts)
    for rep in range(reps):
        for name in names[rep % 2 :] + names[: rep % 2]:
            wall[name].append(await batch_wall(MAKERS[name], base, prompts))
    return wall


def client_side(quick: bool) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    calls = 60 if quick else 200
    reps = 2 if quick else 10
    batch_reps = 2 if quick else 5
    prompt = words(12)
    cpu: dict[str, list[float]] = {name: [] for name in MAKERS}
    with promptwire_serve(echo=True) as server:
        base = server.url + "v1"
        for make in MAKERS.values():
            cpu_per_call(make, base, prompt, 5)  # warm-up: imports, caches
        names = list(MAKERS)
        for rep in range(reps):
            for name in names[rep % 2 :] + names[: rep % 2]:
                cpu[name].append(cpu_per_call(MAKERS[name], base, prompt, calls))
    prompts = [words(12, seed) for seed in range(BATCH)]
    with promptwire_serve(echo=True, first_token_delay=BATCH_DELAY) as server:
        wall = asyncio.run(batches(server.url + "v1", prompts, batch_reps))
    return cpu, wall


def bracketed(route: dict[str, list[float]]) -> list[float]:
    """A route's requests/s over the prompt route's around it, run by run."""
    return ratios(route["rps"], route["bracket_rps"])


def cpu_bracketed(route: dict[str, list[float]]) -> list[float]:
    """The server CPU per request of the prompt route's runs around a route over the route's,
    run by run: unlike requests/s, it does not move with what else the machine runs."""
    return ratios(route["bracket_cpu_us"], route["cpu_us"])


def run(quick: bool) -> BenchResult:
    os.environ.pop("OPENAI_API_KEY", None)
    served = server_side(quick)
    cpu, wall = client_side(quick)
    result = BenchResult(
        key="openai_compat",
        title="8. OpenAI and Anthropic compatibility",
        setup=(
            f"Server: one `promptwire serve` (dummy engine, zero delay), {CONNECTIONS} keep-alive "
            "connections from `benchmarks.loadgen`: in each round the prompt route runs "
            "before, between and after the three OpenAI routes and Anthropic's Messages route "
            "(their order rotating), and a route's ratio is over the mean of the prompt "
            "route's runs around it (same request: 16 tokens of `hello world`). Client: "
            "`ChatPromptwire` with `PROMPTWIRE_BACKEND=openai` and `ChatOpenAI` on the same "
            "server's `/v1` (echo mode): CPU time of this process per sequential `invoke`; and "
            f"`abatch` of {BATCH} conversations, `max_concurrency={BATCH_CONCURRENCY}`, against "
            f"a server whose engine waits {BATCH_DELAY * 1000:g} ms (ideal "
            f"{BATCH / BATCH_CONCURRENCY * BATCH_DELAY:g} s)."
        ),
        quick=quick,
    )
    for name, metrics in served.items():
        result.measurements += [
            Measurement(name, "requests/s", "req/s", metrics["rps"], lower_is_better=False),
            Measurement(name, "p99 latency", "ms", metrics["p99_ms"]),
            Measurement(name, "server CPU per request", "µs", metrics["cpu_us"]),
        ]
    for name in MAKERS:
        result.measurements += [
            Measurement(name, "client CPU per invoke", "µs", cpu[name]),
            Measurement(name, "abatch wall time", "s", wall[name]),
        ]
    adapter, chat_openai = MAKERS
    result.ratios = [
        Ratio(
            "OpenAI /v1/completions requests/s / prompt route",
            bracketed(served["OpenAI /v1/completions"]),
            target=0.9,
            note="over the prompt route's runs before and after it, on one server",
        ),
        Ratio(
            "OpenAI /v1/chat/completions requests/s / prompt route",
            bracketed(served["OpenAI /v1/chat/completions"]),
            target=0.9,
            note="the chat route also renders the chat template",
        ),
        Ratio(
            "OpenAI /v1/responses requests/s / prompt route",
            bracketed(served["OpenAI /v1/responses"]),
            target=0.9,
            note="renders the chat template; a larger reply object",
        ),
        Ratio(
            "Anthropic /v1/messages requests/s / prompt route",
            bracketed(served["Anthropic /v1/messages"]),
            target=0.9,
            note="renders the chat template",
        ),
        *(
            Ratio(
                f"{name}: prompt route's server CPU per request / this route's",
                cpu_bracketed(served[name]),
                note="requests per CPU-second, the rate a core of its own would serve",
            )
            for name in list(ROUTES)[1:]
        ),
        Ratio(
            "openai adapter CPU per invoke / ChatOpenAI",
            ratios(cpu[adapter], cpu[chat_openai]),
            note="below 1: the adapter costs less",
        ),
        Ratio(
            "openai adapter abatch wall time / ChatOpenAI",
            ratios(wall[adapter], wall[chat_openai]),
            note="below 1: the adapter is faster",
        ),
    ]
    return result


def main() -> None:
    args = parse_args(__doc__ or "")
    started = time.perf_counter()
    finish(run(args.quick), started, args.json)


if __name__ == "__main__":
    main()
