"""(10) The httpx-aiohttp transport against promptwire's sharded httpx pools, for async calls.

promptwire spreads concurrent async requests over httpx pools of at most 8 connections, because
httpcore's pool rescans all its connections several times per request (encode/httpcore#1035).
The openai SDK offers another way out for high concurrency: httpx with aiohttp underneath
(``httpx_aiohttp.HttpxAiohttpClient``), which a user can hand to promptwire as
``http_async_client``. Every contender here is the same ``PromptwireLLM``; only the async
transport differs: promptwire's own sharded pools, httpx-aiohttp, and one plain
``httpx.AsyncClient`` with room for every request (what the sharding avoids). Fresh objects every
repetition (connection set-up included); this process runs only the client, so its CPU time is
the client's.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import httpx

from benchmarks.common import (
    BenchResult,
    Measurement,
    Ratio,
    finish,
    parse_args,
    promptwire_serve,
    ratios,
    words,
)

LATENCY = 0.1
PROMPTS = 256
CONCURRENCY = 64
PROMPT_WORDS = 12
SEQUENTIAL_CALLS = 200

SHARDED = "promptwire, sharded httpx pools (default)"
AIOHTTP = "promptwire over httpx-aiohttp"
ONE_POOL = "promptwire over one httpx.AsyncClient"

MakeClient = Callable[[], httpx.AsyncClient | None]


def _limits() -> httpx.Limits:
    return httpx.Limits(max_connections=100, max_keepalive_connections=100)


def _aiohttp() -> httpx.AsyncClient:
    from httpx_aiohttp import HttpxAiohttpClient

    return HttpxAiohttpClient(limits=_limits(), timeout=60.0)


CONTENDERS: dict[str, MakeClient] = {
    SHARDED: lambda: None,
    AIOHTTP: _aiohttp,
    ONE_POOL: lambda: httpx.AsyncClient(limits=_limits(), timeout=60.0),
}


async def _with_llm(make: MakeClient, url: str, work: Callable[[Any], Any]) -> Any:
    from promptwire import PromptwireLLM

    given = make()
    llm = PromptwireLLM(endpoint_url=url, http_async_client=given)
    try:
        return await work(llm)
    finally:
        await llm.aclose()
        if given is not None:
            await given.aclose()


async def batch(make: MakeClient, url: str, prompts: list[str]) -> list[str]:
    async def work(llm: Any) -> list[str]:
        replies: list[str] = await llm.abatch(prompts, config={"max_concurrency": CONCURRENCY})
        return replies

    result: list[str] = await _with_llm(make, url, work)
    return result


async def streams(make: MakeClient, url: str, prompts: list[str]) -> list[str]:
    async def work(llm: Any) -> list[str]:
        gate = asyncio.Semaphore(CONCURRENCY)

        async def one(prompt: str) -> str:
            async with gate:
                return "".join([piece async for piece in llm.astream(prompt)])

        return list(await asyncio.gather(*(one(p) for p in prompts)))

    result: list[str] = await _with_llm(make, url, work)
    return result


async def sequential(make: MakeClient, url: str, prompts: list[str]) -> list[str]:
    async def work(llm: Any) -> list[str]:
        return [await llm.ainvoke(prompt) for prompt in prompts]

    result: list[str] = await _with_llm(make, url, work)
    return result


Workload = Callable[[MakeClient, str, list[str]], Any]


def measure(
    workload: Workload, make: MakeClient, url: str, prompts: list[str]
) -> tuple[float, float]:
    """Wall seconds and client CPU seconds of one run; the replies are checked."""
    wall, cpu = time.perf_counter(), time.process_time()
    replies = asyncio.run(workload(make, url, prompts))
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    if replies != prompts:
        raise RuntimeError(f"{workload.__name__}: wrong replies")
    return wall, cpu


def run(quick: bool) -> BenchResult:
    reps = 2 if quick else 7
    prompts = [words(PROMPT_WORDS, seed=i) for i in range(128 if quick else PROMPTS)]
    calls = prompts[: 50 if quick else SEQUENTIAL_CALLS]
    workloads: dict[str, tuple[Workload, list[str], str]] = {
        "batch": (batch, prompts, f"abatch wall time ({LATENCY * 1000:.0f} ms server)"),
        "streams": (streams, prompts, "concurrent astream wall time"),
    }
    samples: dict[tuple[str, str], list[float]] = {}
    with (
        promptwire_serve(echo=True, first_token_delay=LATENCY) as slow,
        promptwire_serve(echo=True) as fast,
    ):
        for make in CONTENDERS.values():  # warm-up: imports, first connections
            measure(batch, make, slow.url, prompts[: CONCURRENCY * 2])
            measure(sequential, make, fast.url, calls[:20])
        for rep in range(reps):
            names = list(CONTENDERS)
            order = names[rep % len(names) :] + names[: rep % len(names)]
            for name in order:
                make = CONTENDERS[name]
                for key, (workload, items, _) in workloads.items():
                    wall, cpu = measure(workload, make, slow.url, items)
                    samples.setdefault((name, key), []).append(wall)
                    samples.setdefault((name, key + " cpu"), []).append(cpu)
                wall, cpu = measure(sequential, make, fast.url, calls)
                samples.setdefault((name, "sequential cpu"), []).append(cpu / len(calls) * 1e6)
    result = BenchResult(
        key="aiohttp_transport",
        title="10. Async transports: httpx-aiohttp against the sharded httpx pools",
        setup=(
            f"The same `PromptwireLLM`, its async transport swapped through `http_async_client`. "
            f"`abatch` of {len(prompts)} prompts and the same number of `astream` calls, "
            f"{CONCURRENCY} at a time, against `promptwire serve` (dummy engine, echo, "
            f"{LATENCY * 1000:.0f} ms before the reply); then {len(calls)} sequential `ainvoke` "
            "calls against a server without delay (client CPU per call). Fresh objects every "
            "repetition; contenders in rotating order."
        ),
        quick=quick,
    )
    metrics = [
        ("batch", "abatch wall time", "s"),
        ("batch cpu", "abatch client CPU", "s"),
        ("streams", "astream wall time", "s"),
        ("streams cpu", "astream client CPU", "s"),
        ("sequential cpu", "ainvoke client CPU per call", "µs"),
    ]
    for key, metric, unit in metrics:
        for name in CONTENDERS:
            result.measurements.append(Measurement(name, metric, unit, samples[(name, key)]))
    for key, metric, _ in metrics:
        result.ratios.append(
            Ratio(
                f"{metric}: httpx-aiohttp / sharded pools",
                ratios(samples[(AIOHTTP, key)], samples[(SHARDED, key)]),
                note="< 1: httpx-aiohttp is cheaper; same repetition",
            )
        )
    for key in ("batch", "batch cpu"):
        metric = dict((k, m) for k, m, _ in metrics)[key]
        result.ratios.append(
            Ratio(
                f"{metric}: one httpx.AsyncClient / sharded pools",
                ratios(samples[(ONE_POOL, key)], samples[(SHARDED, key)]),
                note="what the sharding saves (encode/httpcore#1035)",
            )
        )
    result.notes += [
        "Every contender runs promptwire's own code above the transport (retries, deadlines, "
        "bounded reading, redirect guard); only the connection handling differs.",
        "httpx-aiohttp is offered, not the default: see *What the benchmarks found* for what it "
        "gets wrong about failed connections and cookies, and what promptwire does about it.",
    ]
    return result


def main() -> None:
    args = parse_args(__doc__ or "")
    started = time.perf_counter()
    finish(run(args.quick), started, args.json)


if __name__ == "__main__":
    main()
