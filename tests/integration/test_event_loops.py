"""One model object used from several event loops and threads, as scripts, notebooks, web apps and
test suites do: every loop gets connections of its own, released when that loop shuts down."""

from __future__ import annotations

import asyncio
import gc
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psutil
import pytest
from langchain_core.messages import HumanMessage
from promptwire import ChatPromptwire, PromptwireLLM
from promptwire.langchain._endpoint_model import EndpointModel

from tests.support.network import LOOPBACK_ONLY

pytestmark = LOOPBACK_ONLY

Model = PromptwireLLM | ChatPromptwire


def make(kind: str, url: str) -> Model:
    if kind == "llm":
        return PromptwireLLM(endpoint_url=url)
    return ChatPromptwire(endpoint_url=url)


async def ask(model: Model) -> str:
    """One ainvoke and one astream, as text."""
    if isinstance(model, PromptwireLLM):
        whole = await model.ainvoke("one two three")
        streamed = "".join([piece async for piece in model.astream("one two three")])
    else:
        whole = str((await model.ainvoke([HumanMessage("one two three")])).content)
        streamed = "".join(
            [str(c.content) async for c in model.astream([HumanMessage("one two three")])]
        )
    assert whole == streamed
    return whole


def open_connections_to(url: str) -> int:
    """This process's established TCP connections to the server at ``url``."""
    port = int(url.rstrip("/").rsplit(":", 1)[1])
    return sum(
        1
        for c in psutil.Process().net_connections(kind="tcp")
        if c.raddr and c.raddr.port == port and c.status == psutil.CONN_ESTABLISHED
    )


@pytest.mark.parametrize("kind", ["llm", "chat"])
def test_asyncio_run_twice(echo_url: str, kind: str) -> None:
    model = make(kind, echo_url)
    for _ in range(3):  # the second run raised "Event loop is closed"
        assert "one two three" in asyncio.run(ask(model))


@pytest.mark.parametrize("kind", ["llm", "chat"])
def test_abatch_in_successive_loops(echo_url: str, kind: str) -> None:
    model = make(kind, echo_url)
    prompts: list[Any] = (
        [f"p{i}" for i in range(20)]
        if kind == "llm"
        else [[HumanMessage(f"p{i}")] for i in range(20)]
    )
    for _ in range(2):
        replies = asyncio.run(model.abatch(prompts))
        assert len(replies) == 20


@pytest.mark.parametrize("kind", ["llm", "chat"])
def test_threads_with_their_own_loops_at_once(echo_url: str, kind: str) -> None:
    model = make(kind, echo_url)
    start = threading.Barrier(6)

    def in_own_loop(_: int) -> list[str]:
        async def several() -> list[str]:
            start.wait(timeout=30)  # every thread's loop is alive at the same time
            return list(await asyncio.gather(*(ask(model) for _ in range(4))))

        return asyncio.run(several())

    with ThreadPoolExecutor(6) as pool:
        results = list(pool.map(in_own_loop, range(6)))
    assert len(results) == 6 and all(len(r) == 4 for r in results)
    # Sync calls still work beside them, from this thread and from the pool threads.
    assert model.invoke("sync") if kind == "llm" else model.invoke([HumanMessage("sync")])


def test_a_loop_that_is_never_closed_keeps_serving(echo_url: str) -> None:
    """A notebook's loop runs for the whole session in another thread; calls come and go."""
    model = PromptwireLLM(endpoint_url=echo_url)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        for _ in range(3):
            future = asyncio.run_coroutine_threadsafe(model.ainvoke("kept"), loop)
            assert future.result(timeout=30) == "kept"
            assert asyncio.run(model.ainvoke("elsewhere")) == "elsewhere"
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()


def test_connections_are_released_when_their_loop_shuts_down(echo_url: str) -> None:
    model = PromptwireLLM(endpoint_url=echo_url, max_concurrency=8)
    gc.collect()  # models of earlier tests
    before = open_connections_to(echo_url)

    async def work() -> None:
        await model.abatch([f"p{i}" for i in range(16)])
        assert open_connections_to(echo_url) > before  # this loop's own pools are open

    for _ in range(3):
        asyncio.run(work())
        assert open_connections_to(echo_url) == before  # closed with the loop, at once


def test_a_loop_closed_without_shutting_down_leaves_nothing_behind(echo_url: str) -> None:
    model = PromptwireLLM(endpoint_url=echo_url, max_concurrency=8)
    gc.collect()  # models of earlier tests
    before = open_connections_to(echo_url)
    for _ in range(3):
        loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(model.abatch([f"p{i}" for i in range(16)]))
        finally:
            loop.close()  # no shutdown_asyncgens(): nothing tells the client
    assert asyncio.run(model.ainvoke("next loop")) == "next loop"  # drops the closed loops' pools
    gc.collect()
    assert open_connections_to(echo_url) == before


def test_aclose_closes_only_the_current_loops_pool(echo_url: str) -> None:
    model: EndpointModel = PromptwireLLM(endpoint_url=echo_url)

    async def use_then_close() -> None:
        assert await model.ainvoke("x") == "x"  # type: ignore[attr-defined]
        await model.aclose()
        assert await model.ainvoke("y") == "y"  # type: ignore[attr-defined]

    asyncio.run(use_then_close())
    asyncio.run(use_then_close())
