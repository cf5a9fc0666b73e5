"""A model object collected while its event loop runs: its kept-alive connections are closed on
that loop, never by the garbage collector.

The collector used to reach the connections through a reference cycle and run asyncio's
transport finalizer, which closes the socket behind the loop's back. Its file descriptor number
then went to a new connection (any client's in the process: ChatOpenAI's too), and the old
transport's own close, run a moment later, removed that connection's reader from the loop: its
reply arrived and was never read. Benchmark 8 hung that way, with every reply sent.
"""

from __future__ import annotations

import asyncio
import gc
import warnings
from urllib.parse import urlsplit

import psutil
from promptwire import ChatPromptwire, PromptwireLLM

from tests.support.engines import ObservedEngine


def _open_connections_to(url: str) -> int:
    port = urlsplit(url).port
    return sum(
        1
        for connection in psutil.Process().net_connections(kind="tcp")
        if connection.raddr and connection.raddr.port == port and connection.status == "ESTABLISHED"
    )


async def _until_closed(url: str) -> int:
    for _ in range(200):  # up to 10 s on a loaded machine; closing takes a few loop turns
        if (still := _open_connections_to(url)) == 0:
            return 0
        await asyncio.sleep(0.05)
    return still


async def test_a_collected_models_connections_close_on_its_loop(
    slow: tuple[ObservedEngine, str],
) -> None:
    _, url = slow
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        for make in (PromptwireLLM, ChatPromptwire):
            model = make(endpoint_url=url, max_concurrency=16)
            await model.abatch(["one two"] * 16)
            assert _open_connections_to(url) >= 2  # kept alive, in several pools
            del model
            gc.collect()  # what the collector did on its own, at some allocation, mid-batch
            assert await _until_closed(url) == 0
    unclosed = [str(w.message) for w in caught if "unclosed" in str(w.message)]
    assert unclosed == []


async def test_another_models_calls_are_answered_after_one_is_collected(
    slow: tuple[ObservedEngine, str],
) -> None:
    """The user's view: models made and dropped one after another in one loop (one per request,
    in a web app) all get their replies."""
    _, url = slow
    for round_ in range(4):
        model = PromptwireLLM(endpoint_url=url, max_concurrency=16)
        prompts = [f"round {round_} call {index}" for index in range(32)]
        replies = await asyncio.wait_for(model.abatch(prompts), 60)
        assert replies == prompts
        del model
        if round_ % 2:
            gc.collect()
