"""A model object made before a fork (gunicorn ``--preload``, Celery's prefork pool,
``multiprocessing`` on Linux) and used on both sides of it: the child opens connections of its
own, so each process reads its own replies, and a lock another thread held at the fork does not
hang the child."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Callable

import pytest
from promptwire import PromptwireLLM
from promptwire.client._transport import sync

from tests.support.network import LOOPBACK_ONLY

pytestmark = [
    *LOOPBACK_ONLY,
    pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork on this platform"),
    # Python 3.12 warns that forking a process with threads may deadlock the child: that
    # deadlock is what one of these tests looks for.
    pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning"),
]

CALLS = 40


def in_child(work: Callable[[], int], timeout: float = 60.0) -> int:
    """Fork; the child runs ``work`` and exits with its status (3 for an exception), the parent
    gets that status (None as -1 when the child had to be killed after ``timeout``)."""
    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        status = 3
        try:
            status = work()
        finally:
            os._exit(status)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.05)
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    return -1


def answers_own_prompts(model: PromptwireLLM, who: str) -> int:
    """0 when each of ``CALLS`` prompts came back in its own reply (the server echoes), 1 when
    a reply was another's."""
    for index in range(CALLS):
        prompt = f"{who}-{index}"
        if model.invoke(prompt) != prompt:
            return 1
    return 0


def test_parent_and_child_each_read_their_own_replies(echo_url: str) -> None:
    model = PromptwireLLM(endpoint_url=echo_url, max_retries=0)
    assert model.invoke("warm-up") == "warm-up"  # a kept-alive connection in the pool
    before = model.client.sync.http_client

    def child() -> int:
        if model.client.sync.http_client is before:
            return 2  # the parent's pool, with the parent's connections
        return answers_own_prompts(model, "child")

    result: list[int] = []
    parent = threading.Thread(target=lambda: result.append(answers_own_prompts(model, "parent")))
    parent.start()
    assert in_child(child) == 0
    parent.join()
    assert result == [0]
    assert model.client.sync.http_client is before  # the parent kept its own


def test_a_lock_held_at_the_fork_does_not_hang_the_child(echo_url: str) -> None:
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with sync._MAKING:  # as a batch's thread making its model's client
            held.set()
            release.wait()

    holder = threading.Thread(target=hold)
    holder.start()
    held.wait()
    try:
        status = in_child(
            lambda: answers_own_prompts(PromptwireLLM(endpoint_url=echo_url), "child"), 30
        )
    finally:
        release.set()
        holder.join()
    assert status == 0


def test_async_calls_in_a_child_of_a_process_that_made_async_pools(echo_url: str) -> None:
    model = PromptwireLLM(endpoint_url=echo_url, max_retries=0)
    loop = asyncio.new_event_loop()  # left open: its pools stay in the model at the fork
    try:
        assert loop.run_until_complete(model.ainvoke("warm-up")) == "warm-up"

        async def ask() -> int:
            replies = await asyncio.gather(*(model.ainvoke(f"child-{i}") for i in range(8)))
            return 0 if replies == [f"child-{i}" for i in range(8)] else 1

        assert in_child(lambda: asyncio.run(ask())) == 0
        assert loop.run_until_complete(model.ainvoke("parent")) == "parent"
    finally:
        loop.run_until_complete(model.client.aio.aclose())
        loop.close()
