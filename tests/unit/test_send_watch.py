"""``SendWatch``: a stream's writes each bounded in time by one timer for the stream. A write
that waits past the limit has its task cancelled (and the watch says it did); one that does not
is left alone, however many came before; each task's write counts from its own beginning."""

from __future__ import annotations

import asyncio
import time

from promptwire.server._deadline import SendWatch

LIMIT = 0.2


async def _write(watch: SendWatch, waits: float) -> str:
    """A write that takes ``waits`` seconds: what became of it."""
    writer = watch.begin()
    try:
        await asyncio.sleep(waits)
    except asyncio.CancelledError:
        if not watch.caught(writer):
            raise
        return "timed out"
    finally:
        watch.end(writer)
    return "written"


async def test_writes_that_do_not_wait_are_left_alone_and_one_that_waits_is_ended() -> None:
    watch = SendWatch(LIMIT)
    for _ in range(200):
        assert await _write(watch, 0) == "written"
    started = time.monotonic()
    assert await _write(watch, 60) == "timed out"
    assert time.monotonic() - started >= LIMIT * 0.9
    watch.close()


async def test_a_write_counts_from_its_own_beginning() -> None:
    watch = SendWatch(LIMIT)
    assert await _write(watch, LIMIT * 0.6) == "written"  # sets the stream's timer
    started = time.monotonic()
    # Due LIMIT after it began, not when the timer the first write set fires.
    assert await _write(watch, 60) == "timed out"
    assert time.monotonic() - started >= LIMIT * 0.9
    watch.close()


async def test_each_task_is_watched_apart() -> None:
    watch = SendWatch(LIMIT)
    stuck = asyncio.create_task(_write(watch, 60))
    quick = 0
    while not stuck.done():
        assert await _write(watch, 0.01) == "written"
        quick += 1
    assert stuck.result() == "timed out" and quick >= 5
    watch.close()


async def test_a_cancellation_from_elsewhere_is_not_taken_for_the_timeout() -> None:
    watch = SendWatch(60)
    task = asyncio.create_task(_write(watch, 60))
    await asyncio.sleep(0.01)
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass
    else:
        raise AssertionError("the write's cancellation was swallowed")
    watch.close()


async def test_a_closed_watch_holds_no_timer() -> None:
    watch = SendWatch(LIMIT)
    assert await _write(watch, 0) == "written"
    watch.close()
    await asyncio.sleep(LIMIT * 1.5)  # its timer would have fired: nothing to find
    assert await _write(watch, 0) == "written"
    watch.close()
