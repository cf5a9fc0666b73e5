"""(12) The router backend's own cost per call: client CPU through ``routed(...)`` against the
same calls made directly to one endpoint.

``promptwire serve`` (dummy engine, zero delay) runs in its own processes; this process only runs
the client, so its CPU time (``time.process_time``) is the client's cost. Contenders: a
``PromptwireLLM`` on one endpoint, and the same through a router of that one endpoint (what
routing adds: picking, counting, the served member in ``generation_info``); three direct models
called in turn, and a router over the same three endpoints (least-busy), since three pools cost
more than one whoever drives them. Each repetition makes a block of sequential calls per
contender, in rotating order.

Before each block the process's heap is collected and frozen (``gc.freeze``): a full collection
of this process's start-up heap (LangChain, pydantic, httpx: about 50 ms here) otherwise lands on
whichever block is running when the collector's thresholds are crossed, and was seen adding 27 us
per call to one block of 2,000 calls and nothing to the next. Both contenders allocate the same
young objects per call (44 young collections per 1,000 calls, routed or direct), which still
count.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from typing import TYPE_CHECKING

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

if TYPE_CHECKING:
    from promptwire import PromptwireLLM

Block = Callable[[Sequence[str], str, int], float]


def _models(urls: Sequence[str], routed_model: bool) -> list[PromptwireLLM]:
    """One router over ``urls``, or one direct model per URL (called in turn)."""
    from promptwire import PromptwireLLM
    from promptwire.router import routed

    if routed_model:
        return [routed(PromptwireLLM, list(urls))]
    return [PromptwireLLM(endpoint_url=url) for url in urls]


@contextmanager
def frozen_heap() -> Iterator[None]:
    """What exists now is out of the collector's reach until the block ends (see the module)."""
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def sync_block(routed_model: bool) -> Block:
    def run(urls: Sequence[str], prompt: str, calls: int) -> float:
        llms = _models(urls, routed_model)
        for _ in urls:  # each pool made (an httpx client costs milliseconds to make)
            for llm in llms:
                llm.invoke(prompt)
        with frozen_heap():
            started = time.process_time()
            for call in range(calls):
                llms[call % len(llms)].invoke(prompt)
            spent = time.process_time() - started
        for llm in llms:
            llm.close()
        return spent

    return run


def async_block(routed_model: bool) -> Block:
    def run(urls: Sequence[str], prompt: str, calls: int) -> float:
        llms = _models(urls, routed_model)

        async def calls_made() -> float:
            for _ in urls:
                for llm in llms:
                    await llm.ainvoke(prompt)
            with frozen_heap():
                started = time.process_time()
                for call in range(calls):
                    await llms[call % len(llms)].ainvoke(prompt)
                spent = time.process_time() - started
            for llm in llms:
                await llm.aclose()
            return spent

        return asyncio.run(calls_made())

    return run


def run(quick: bool) -> BenchResult:
    calls = 60 if quick else 200
    reps = 2 if quick else 21
    contenders: dict[str, tuple[Block, int]] = {
        "direct invoke": (sync_block(False), 1),
        "router of 1, invoke": (sync_block(True), 1),
        "3 direct models in turn, invoke": (sync_block(False), 3),
        "router of 3, invoke": (sync_block(True), 3),
        "direct ainvoke": (async_block(False), 1),
        "router of 1, ainvoke": (async_block(True), 1),
        "3 direct models in turn, ainvoke": (async_block(False), 3),
        "router of 3, ainvoke": (async_block(True), 3),
    }
    cpu: dict[str, list[float]] = {name: [] for name in contenders}
    prompt = words(12)
    with ExitStack() as servers:
        urls = [servers.enter_context(promptwire_serve(echo=True)).url for _ in range(3)]
        for block, members in contenders.values():  # warm-up: imports, caches
            block(urls[:members], prompt, 5)
        for rep in range(reps):
            names = list(contenders)
            for name in names[rep % len(names) :] + names[: rep % len(names)]:
                block, members = contenders[name]
                cpu[name].append(block(urls[:members], prompt, calls) / calls * 1e6)
    result = BenchResult(
        key="router",
        title="12. The router's own cost per call",
        setup=(
            f"{calls} sequential calls per contender and repetition against `promptwire serve` "
            "(dummy engine in echo mode, zero delay; three of them, in other processes); CPU "
            "time of the client process per call, direct to one endpoint and through the "
            "`router` backend; the heap collected and frozen before each block (a full "
            "collection of the start-up heap, about 50 ms, otherwise falls on one block at "
            "random)."
        ),
        quick=quick,
    )
    for name in contenders:
        result.measurements.append(Measurement(name, "client CPU per call", "µs", cpu[name]))
    for kind in ("invoke", "ainvoke"):
        result.ratios += [
            Ratio(
                f"router of 1 / direct, {kind} CPU",
                ratios(cpu[f"router of 1, {kind}"], cpu[f"direct {kind}"]),
                target=1.05,
                op="<=",
            ),
            Ratio(
                f"router of 3 / 3 direct models in turn, {kind} CPU",
                ratios(cpu[f"router of 3, {kind}"], cpu[f"3 direct models in turn, {kind}"]),
                target=1.05,
                op="<=",
                note="the same three pools either way: what routing itself adds",
            ),
            Ratio(
                f"router of 3 / direct, {kind} CPU",
                ratios(cpu[f"router of 3, {kind}"], cpu[f"direct {kind}"]),
                note="three endpoints' pools against one",
            ),
        ]
    return result


if __name__ == "__main__":
    args = parse_args(__doc__ or "")
    started = time.perf_counter()
    finish(run(args.quick), started, args.json)
