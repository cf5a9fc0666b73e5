"""A worker thread's events reach each request's event loop in the order put, through the
courier thread; in a forked child too, with a courier of its own."""

from __future__ import annotations

import asyncio
import gc
import os
import threading
import weakref

import pytest
from promptwire.engine import TextChunk
from promptwire.engine.worker import EventChannel


async def _read(channel: EventChannel, count: int) -> list[str]:
    texts = []
    for _ in range(count):
        item = await asyncio.wait_for(channel.queue.get(), timeout=10)
        assert isinstance(item, TextChunk)
        texts.append(item.text)
    return texts


async def test_events_from_a_thread_arrive_in_order_on_each_loop() -> None:
    channels = [EventChannel(), EventChannel()]

    def worker() -> None:
        for index in range(500):
            for number, channel in enumerate(channels):
                channel.put(TextChunk(f"{number}:{index}"))

    thread = threading.Thread(target=worker)
    thread.start()
    got = await asyncio.gather(*(_read(channel, 500) for channel in channels))
    thread.join()
    assert got == [[f"{number}:{index}" for index in range(500)] for number in range(2)]


async def test_the_courier_keeps_no_request_once_its_events_are_delivered() -> None:
    """A channel holds its request's job (an engine's cache pages, gigabytes on a GPU): once
    its events are delivered, only the request refers to it (no full collection needed)."""
    channel = EventChannel()
    thread = threading.Thread(target=channel.put, args=(TextChunk("last"),))
    thread.start()
    assert await _read(channel, 1) == ["last"]
    thread.join()
    gone = weakref.ref(channel)
    gc.disable()
    try:
        del channel
        for _ in range(100):  # the courier lets go once it is back waiting for the next event
            if gone() is None:
                break
            await asyncio.sleep(0.05)
        assert gone() is None
    finally:
        gc.enable()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_delivers_with_a_courier_of_its_own() -> None:
    async def one_event() -> None:
        channel = EventChannel()
        threading.Thread(target=channel.put, args=(TextChunk("x"),)).start()
        assert await _read(channel, 1) == ["x"]

    asyncio.run(one_event())  # the parent's courier is running
    pid = os.fork()
    if pid == 0:  # the child: exits 0 only if its event arrives
        try:
            asyncio.run(asyncio.wait_for(one_event(), timeout=10))
        except BaseException:
            os._exit(1)
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
