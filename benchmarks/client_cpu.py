"""(3) Client CPU cost per call: process CPU time (not wall time) against a fast local endpoint.

``promptwire serve`` (dummy engine, zero delay) runs in its own process; this process only runs
the client, so its CPU time (``time.process_time``) is the client's cost. Each repetition makes a
block of sequential calls per contender, in rotating order.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from typing import Any

import httpx
from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models.llms import LLM

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

Block = Callable[[str, str, int], None]


def promptwire_invoke(url: str, prompt: str, calls: int) -> None:
    from promptwire import PromptwireLLM

    llm = PromptwireLLM(endpoint_url=url)
    llm.invoke(prompt)
    started = time.process_time()
    for _ in range(calls):
        llm.invoke(prompt)
    _record(started)
    llm.close()


def promptwire_client(url: str, prompt: str, calls: int) -> None:
    """promptwire's HTTP layer alone (``EndpointClient.complete``), without LangChain."""
    from promptwire.client import ClientConfig, EndpointClient

    client = EndpointClient(ClientConfig(endpoint_url=url))
    client.complete({"prompt": prompt})
    started = time.process_time()
    for _ in range(calls):
        client.complete({"prompt": prompt})
    _record(started)
    client.close()


def httpx_sync(url: str, prompt: str, calls: int) -> None:
    with httpx.Client(timeout=60.0) as client:
        client.post(url, json={"prompt": prompt}).json()
        started = time.process_time()
        for _ in range(calls):
            response = client.post(url, json={"prompt": prompt})
            response.raise_for_status()
            response.json()["prompt"]
        _record(started)


def community_invoke(url: str, prompt: str, calls: int) -> None:
    from langchain_community.llms import Modal

    llm = Modal()
    llm.endpoint_url = url
    llm.invoke(prompt)
    started = time.process_time()
    for _ in range(calls):
        llm.invoke(prompt)
    _record(started)


def langchain_llm(url: str, prompt: str, calls: int) -> None:
    """The smallest LangChain LLM over raw httpx: what any LLM class pays per call (LangChain's
    callbacks and run bookkeeping) on top of the HTTP request itself."""
    with httpx.Client(timeout=60.0) as client:
        llm = _MinimalLLM(client=client, url=url)
        llm.invoke(prompt)
        started = time.process_time()
        for _ in range(calls):
            llm.invoke(prompt)
        _record(started)


def _async(block: Callable[[str, str, int], Coroutine[Any, Any, None]]) -> Block:
    def run(url: str, prompt: str, calls: int) -> None:
        asyncio.run(block(url, prompt, calls))

    run.__name__ = block.__name__
    return run


@_async
async def promptwire_ainvoke(url: str, prompt: str, calls: int) -> None:
    from promptwire import PromptwireLLM

    llm = PromptwireLLM(endpoint_url=url)
    await llm.ainvoke(prompt)
    started = time.process_time()
    for _ in range(calls):
        await llm.ainvoke(prompt)
    _record(started)
    await llm.aclose()


@_async
async def httpx_async(url: str, prompt: str, calls: int) -> None:
    async with httpx.AsyncClient(timeout=60.0) as client:
        (await client.post(url, json={"prompt": prompt})).json()
        started = time.process_time()
        for _ in range(calls):
            response = await client.post(url, json={"prompt": prompt})
            response.raise_for_status()
            response.json()["prompt"]
        _record(started)


@_async
async def langchain_llm_async(url: str, prompt: str, calls: int) -> None:
    async with httpx.AsyncClient(timeout=60.0) as client:
        llm = _MinimalLLM(aclient=client, url=url)
        await llm.ainvoke(prompt)
        started = time.process_time()
        for _ in range(calls):
            await llm.ainvoke(prompt)
        _record(started)


class _MinimalLLM(LLM):
    """``_call``/``_acall`` posting the prompt with raw httpx and returning the reply's text."""

    url: str
    client: Any = None
    aclient: Any = None

    @property
    def _llm_type(self) -> str:
        return "minimal-httpx"

    def _call(
        self,
        prompt: str,
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> str:
        response = self.client.post(self.url, json={"prompt": prompt})
        response.raise_for_status()
        text: str = response.json()["prompt"]
        return text

    async def _acall(
        self,
        prompt: str,
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> str:
        response = await self.aclient.post(self.url, json={"prompt": prompt})
        response.raise_for_status()
        text: str = response.json()["prompt"]
        return text


_last: list[float] = []


def _record(started: float) -> None:
    _last.append(time.process_time() - started)


def run(quick: bool) -> BenchResult:
    calls = 60 if quick else 200
    reps = 2 if quick else 15  # many short blocks: a noisy 2-core machine evens out
    contenders: dict[str, Block] = {
        "promptwire invoke": promptwire_invoke,
        "raw httpx.Client": httpx_sync,
        "promptwire ainvoke": promptwire_ainvoke,
        "raw httpx.AsyncClient": httpx_async,
        "promptwire EndpointClient.complete": promptwire_client,
        "langchain_community Modal invoke": community_invoke,
        "minimal LangChain LLM over raw httpx, invoke": langchain_llm,
        "minimal LangChain LLM over raw httpx, ainvoke": langchain_llm_async,
    }
    cpu: dict[str, list[float]] = {name: [] for name in contenders}
    wall: dict[str, list[float]] = {name: [] for name in contenders}
    prompt = words(12)
    with promptwire_serve(echo=True) as server:
        for block in contenders.values():  # warm-up: imports, caches
            block(server.url, prompt, 5)
        for rep in range(reps):
            names = list(contenders)
            for name in names[rep % len(names) :] + names[: rep % len(names)]:
                started = time.perf_counter()
                contenders[name](server.url, prompt, calls)
                wall[name].append((time.perf_counter() - started) / calls * 1e6)
                cpu[name].append(_last.pop() / calls * 1e6)
    result = BenchResult(
        key="client_cpu",
        title="3. Client CPU cost per call",
        setup=(
            f"{calls} sequential calls per contender and repetition against `promptwire serve` "
            "(dummy engine in echo mode, zero delay) in another process; CPU time of the client "
            "process (user + system) per call. Wall time per call is shown for reference (it "
            "includes the server's time)."
        ),
        quick=quick,
    )
    for name in contenders:
        result.measurements += [
            Measurement(name, "client CPU per call", "µs", cpu[name]),
            Measurement(name, "wall time per call", "µs", wall[name]),
        ]
    result.ratios = [
        Ratio(
            "promptwire invoke CPU / raw httpx.Client",
            ratios(cpu["promptwire invoke"], cpu["raw httpx.Client"]),
            target=1.5,
            op="<=",
        ),
        Ratio(
            "promptwire ainvoke CPU / raw httpx.AsyncClient",
            ratios(cpu["promptwire ainvoke"], cpu["raw httpx.AsyncClient"]),
            target=1.5,
            op="<=",
        ),
        Ratio(
            "promptwire EndpointClient CPU / raw httpx.Client",
            ratios(cpu["promptwire EndpointClient.complete"], cpu["raw httpx.Client"]),
            note="the HTTP layer alone, without LangChain's run machinery",
        ),
        Ratio(
            "promptwire invoke CPU / minimal LangChain LLM over raw httpx",
            ratios(cpu["promptwire invoke"], cpu["minimal LangChain LLM over raw httpx, invoke"]),
            note="what promptwire adds over the smallest LangChain LLM making the same call",
        ),
        Ratio(
            "promptwire ainvoke CPU / minimal LangChain LLM over raw httpx",
            ratios(cpu["promptwire ainvoke"], cpu["minimal LangChain LLM over raw httpx, ainvoke"]),
        ),
        Ratio(
            "minimal LangChain LLM CPU / raw httpx.Client (LangChain's share)",
            ratios(cpu["minimal LangChain LLM over raw httpx, invoke"], cpu["raw httpx.Client"]),
        ),
        Ratio(
            "minimal LangChain LLM CPU / raw httpx.AsyncClient (LangChain's share, async)",
            ratios(
                cpu["minimal LangChain LLM over raw httpx, ainvoke"], cpu["raw httpx.AsyncClient"]
            ),
        ),
    ]
    return result


def main() -> None:
    args = parse_args(__doc__ or "")
    started = time.perf_counter()
    finish(run(args.quick), started, args.json)


if __name__ == "__main__":
    main()
