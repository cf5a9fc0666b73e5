"""``generate`` over several prompts (``run_concurrently`` / ``arun_concurrently``): the first
error ends the call without leaving the other prompts' calls running or still to be made."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from promptwire.langchain._endpoint_model import arun_concurrently, run_concurrently


class Refused(Exception):
    pass


async def test_the_first_error_cancels_the_other_async_calls() -> None:
    started: list[int] = []
    cancelled: list[int] = []
    never = asyncio.Event()

    async def call(item: int) -> int:
        started.append(item)
        if item == 0:
            await asyncio.sleep(0)  # the others are waiting by now
            raise Refused(item)
        try:
            await never.wait()
        except asyncio.CancelledError:
            cancelled.append(item)
            raise
        return item

    with pytest.raises(Refused):
        await arun_concurrently(call, list(range(6)), limit=4)
    # The limit held: the failed call's place went to one more (4) at most, never to 5; every
    # call that started besides the failed one was cancelled before the error was raised.
    assert {0, 1, 2, 3} <= set(started) <= {0, 1, 2, 3, 4}
    assert sorted(cancelled) == sorted(set(started) - {0})


async def test_the_callers_cancellation_reaches_every_call() -> None:
    cancelled: list[int] = []
    entered = asyncio.Event()

    async def call(item: int) -> int:
        entered.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.append(item)
            raise
        return item

    batch = asyncio.ensure_future(arun_concurrently(call, [1, 2, 3], limit=3))
    await entered.wait()
    await asyncio.sleep(0)
    batch.cancel()
    with pytest.raises(asyncio.CancelledError):
        await batch
    assert sorted(cancelled) == [1, 2, 3]


async def test_async_answers_come_in_order() -> None:
    async def call(item: int) -> int:
        await asyncio.sleep(0.001 * (5 - item))
        return item * 10

    assert await arun_concurrently(call, list(range(5)), limit=2) == [0, 10, 20, 30, 40]


def test_the_first_error_stops_sync_calls_not_yet_made() -> None:
    made: list[int] = []
    lock = threading.Lock()
    second, failing = threading.Event(), threading.Event()

    def call(item: int) -> int:
        with lock:
            made.append(item)
        if item == 0:  # fails while the other thread's call runs
            second.wait()
            failing.set()
            raise Refused(item)
        if item == 1:
            second.set()
            failing.wait()
            time.sleep(0.2)  # the failing thread marks the failure in the meantime
        return item

    with pytest.raises(Refused):
        run_concurrently(call, list(range(50)), limit=2)
    # Two threads: no call starts once one has failed, however late the caller's thread reads
    # the error (it once read it after the other thread had made all 49 calls).
    assert sorted(made) == [0, 1]
    assert run_concurrently(lambda item: item + 1, [1, 2, 3], limit=2) == [2, 3, 4]
