"""(1) Batch concurrency: ``abatch`` of many prompts against an endpoint with 100 ms latency.

promptwire's ``PromptwireLLM.abatch`` vs ``langchain_community.llms.Modal.abatch`` vs raw
``httpx.AsyncClient`` with a semaphore of the same size. The endpoint is ``promptwire serve`` with
the dummy engine in echo mode (the community class needs its prompt in the reply) and a 100 ms
first-token delay. Each repetition uses fresh client objects, so connection set-up is included.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
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
POOL_SIZE = 8

Runner = Callable[[str, list[str], int], Coroutine[Any, Any, list[str]]]


async def run_promptwire(url: str, prompts: list[str], concurrency: int) -> list[str]:
    from promptwire import PromptwireLLM

    llm = PromptwireLLM(endpoint_url=url)
    try:
        return await llm.abatch(list(prompts), config={"max_concurrency": concurrency})
    finally:
        await llm.aclose()


async def run_promptwire_sync(url: str, prompts: list[str], concurrency: int) -> list[str]:
    """The sync ``batch`` (threads), for comparison; it blocks this event loop, which is idle."""
    from promptwire import PromptwireLLM

    llm = PromptwireLLM(endpoint_url=url)
    try:
        replies: list[str] = llm.batch(list(prompts), config={"max_concurrency": concurrency})
        return replies
    finally:
        llm.close()


async def run_community(url: str, prompts: list[str], concurrency: int) -> list[str]:
    from langchain_community.llms import Modal

    llm = Modal()
    llm.endpoint_url = url  # its constructor would move the URL into model_kwargs
    replies: list[str] = await llm.abatch(list(prompts), config={"max_concurrency": concurrency})
    return replies


async def run_httpx(url: str, prompts: list[str], concurrency: int) -> list[str]:
    gate = asyncio.Semaphore(concurrency)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=60.0) as client:

        async def one(prompt: str) -> str:
            async with gate:
                response = await client.post(url, json={"prompt": prompt})
                response.raise_for_status()
                text: str = response.json()["prompt"]
                return text

        return list(await asyncio.gather(*(one(p) for p in prompts)))


async def run_httpx_pools(url: str, prompts: list[str], concurrency: int) -> list[str]:
    """Raw httpx with promptwire's workaround done by hand: the requests spread over several
    AsyncClients of at most 8 connections, so httpcore's pool never scans many."""
    gate = asyncio.Semaphore(concurrency)
    count = max(1, concurrency // POOL_SIZE)
    limits = httpx.Limits(max_connections=POOL_SIZE, max_keepalive_connections=POOL_SIZE)
    clients = [httpx.AsyncClient(limits=limits, timeout=60.0) for _ in range(count)]
    busy = [0] * count

    async def one(prompt: str) -> str:
        async with gate:
            index = busy.index(min(busy))
            busy[index] += 1
            try:
                response = await clients[index].post(url, json={"prompt": prompt})
            finally:
                busy[index] -= 1
            response.raise_for_status()
            text: str = response.json()["prompt"]
            return text

    try:
        return list(await asyncio.gather(*(one(p) for p in prompts)))
    finally:
        for client in clients:
            await client.aclose()


def timed(runner: Runner, url: str, prompts: list[str], concurrency: int) -> float:
    started = time.perf_counter()
    replies: list[str] = asyncio.run(runner(url, prompts, concurrency))
    elapsed = time.perf_counter() - started
    if replies != prompts:
        raise RuntimeError(f"{runner.__name__}: wrong replies")
    return elapsed


def run(quick: bool) -> BenchResult:
    prompts_n = 128 if quick else PROMPTS
    concurrency = CONCURRENCY
    reps = 3 if quick else 7
    community_reps = 1 if quick else 3
    prompts = [words(PROMPT_WORDS, seed=i) for i in range(prompts_n)]
    contenders: dict[str, Runner] = {
        "promptwire": run_promptwire,
        "raw httpx.AsyncClient": run_httpx,
        "langchain_community Modal": run_community,
        "promptwire, sync batch (threads)": run_promptwire_sync,
        f"raw httpx, {POOL_SIZE}-connection AsyncClients": run_httpx_pools,
    }
    samples: dict[str, list[float]] = {name: [] for name in contenders}
    with promptwire_serve(echo=True, first_token_delay=LATENCY) as server:
        for runner in contenders.values():  # warm-up: imports, first connections
            timed(runner, server.url, prompts[: concurrency * 2], concurrency)
        for rep in range(reps):
            names = list(contenders)
            order = names[rep % len(names) :] + names[: rep % len(names)]
            for name in order:
                if name == "langchain_community Modal" and rep >= community_reps:
                    continue
                samples[name].append(timed(contenders[name], server.url, prompts, concurrency))
    ideal = -(-prompts_n // concurrency) * LATENCY
    pw, raw, community = (samples[n] for n in list(contenders)[:3])
    result = BenchResult(
        key="batch",
        title="1. Batch concurrency",
        setup=(
            f"`abatch` of {prompts_n} prompts, `max_concurrency={concurrency}`, against "
            f"`promptwire serve` (dummy engine, echo, {LATENCY * 1000:.0f} ms before the reply). "
            f"Ideal: {prompts_n}/{concurrency} waves x {LATENCY * 1000:.0f} ms = {ideal:.2f} s. "
            "Fresh client objects every repetition (connection set-up included)."
        ),
        quick=quick,
    )
    for name in contenders:
        result.measurements.append(Measurement(name, "batch wall time", "s", samples[name]))
    result.ratios = [
        Ratio(
            "promptwire speed-up over langchain_community Modal",
            ratios(community, pw[: len(community)]),
            target=20.0,
            op=">=",
            note="community time / promptwire time, same repetition",
        ),
        Ratio(
            "promptwire throughput / raw httpx",
            ratios(raw, pw),
            target=0.85,
            op=">=",
            note="raw httpx time / promptwire time, same repetition",
        ),
    ]
    result.ratios.append(
        Ratio(
            f"promptwire / raw httpx over {POOL_SIZE}-connection clients",
            ratios(samples[f"raw httpx, {POOL_SIZE}-connection AsyncClients"], pw),
            note="raw httpx with promptwire's pool workaround done by hand",
        )
    )
    result.notes.append(
        "Raw httpx written the obvious way (one `AsyncClient`, a semaphore of 64) is slow here "
        "because httpcore 1.0's connection pool rescans every connection several times per "
        "request (work quadratic in the pool's size, encode/httpcore#1035): most of its time is "
        "client CPU. promptwire spreads concurrent requests over pools of 8 connections; the "
        "last row shows raw httpx doing the same by hand."
    )
    result.notes.append(
        "langchain_community's `Modal` has no `_acall`: LangChain runs its `_generate` in a "
        "thread, which calls the endpoint one prompt after another with a new `requests` "
        "connection each time, so `max_concurrency` only cuts the batch into chunks."
    )
    return result


def main() -> None:
    args = parse_args(__doc__ or "")
    started = time.perf_counter()
    finish(run(args.quick), started, args.json)


if __name__ == "__main__":
    main()
