"""SIGTERM: ``promptwire serve`` gives running streams the same grace period as whole replies,
then ends each with the protocol's ``error`` event; a whole reply still running then gets a JSON
503 ``shutting_down``; whatever finishes within the grace period finishes normally.

Before, streams were cut at once with neither ``done`` nor ``error`` while whole replies had the
graceful-shutdown period, and a whole reply still running after it got uvicorn's plain-text 500.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from typing import Any

import httpx

from tests.reliability.served import promptwire_serve
from tests.support.network import LOOPBACK_ONLY

pytestmark = LOOPBACK_ONLY

GRACE = 2.0
RATE = 5.0  # words a second
MARGIN = 15.0


async def _stream(client: httpx.AsyncClient, url: str, words: int, log: list[Any]) -> None:
    """Record ``(time, event, data)`` for every event of one stream."""
    body = {"prompt": " ".join(f"w{i}" for i in range(words)), "stream": True}
    async with client.stream("POST", url, json=body) as response:
        assert response.status_code == 200
        name = None
        async for line in response.aiter_lines():
            if line.startswith("event: "):
                name = line.removeprefix("event: ")
            elif line.startswith("data: "):
                log.append((time.monotonic(), name, json.loads(line.removeprefix("data: "))))


def test_sigterm_gives_streams_the_grace_period_then_an_error_event() -> None:
    env = {
        "PROMPTWIRE_SHUTDOWN_GRACE": str(GRACE),
        "PROMPTWIRE_MODAL_DUMMY__ECHO": "true",
        "PROMPTWIRE_MODAL_DUMMY__TOKENS_PER_SECOND": str(RATE),
    }
    with promptwire_serve("--log-level", "warning", env=env) as served:
        url = served.url

        async def scenario() -> tuple[float, list[list[Any]], list[Any], httpx.Response]:
            long_streams: list[list[Any]] = [[], []]
            short_stream: list[Any] = []
            async with httpx.AsyncClient(timeout=60) as client:
                tasks = [
                    asyncio.create_task(_stream(client, url, 200, log)) for log in long_streams
                ]
                tasks.append(asyncio.create_task(_stream(client, url, 6, short_stream)))
                whole = asyncio.create_task(
                    client.post(url, json={"prompt": " ".join(["w"] * 200)})
                )
                deadline = time.monotonic() + MARGIN
                while not all(long_streams) or not short_stream:  # all under way
                    assert time.monotonic() < deadline
                    await asyncio.sleep(0.05)
                await asyncio.sleep(0.3)
                signalled = time.monotonic()
                served.process.terminate()  # SIGTERM
                await asyncio.gather(*tasks)
                return signalled, long_streams, short_stream, await whole

        signalled, long_streams, short_stream, whole = asyncio.run(scenario())
        served.process.wait(timeout=GRACE + MARGIN)
        exited = time.monotonic() - signalled

    for log in long_streams:
        after = [event for event in log if event[0] > signalled]
        assert [name for _, name, _ in after[:-1]] == ["delta"] * (len(after) - 1)
        assert len(after) > 1, "the stream was cut without its grace period"
        ended, name, data = log[-1]
        assert name == "error" and data["error"]["type"] == "shutting_down", log[-3:]
        assert ended - signalled < GRACE + MARGIN
    assert [name for _, name, _ in short_stream][-1] == "done"  # finished within the grace
    assert whole.status_code == 503, whole.text
    assert whole.json()["error"]["type"] == "shutting_down"
    assert whole.headers["retry-after"] == "1"
    assert exited < GRACE + MARGIN


def test_sigterm_to_the_whole_process_group_still_gives_the_grace_period() -> None:
    """systemd (``KillMode=control-group``), ``timeout`` and ``kill -TERM -PGID`` signal the
    engine process too: it leaves stopping to the server, so the streams still finish. It used
    to die at once, failing every request in flight, and the server began restarting it."""
    env = {
        "PROMPTWIRE_ENGINE_PROCESS": "true",
        "PROMPTWIRE_SHUTDOWN_GRACE": str(GRACE * 3),
        "PROMPTWIRE_MODAL_DUMMY__ECHO": "true",
        "PROMPTWIRE_MODAL_DUMMY__TOKENS_PER_SECOND": str(RATE),
    }
    with promptwire_serve("--log-level", "warning", env=env, new_session=True) as served:

        async def scenario() -> list[Any]:
            log: list[Any] = []
            async with httpx.AsyncClient(timeout=60) as client:
                task = asyncio.create_task(_stream(client, served.url, 8, log))
                deadline = time.monotonic() + MARGIN
                while not log:
                    assert time.monotonic() < deadline
                    await asyncio.sleep(0.05)
                os.killpg(served.process.pid, signal.SIGTERM)
                await task
            return log

        log = asyncio.run(scenario())
        served.process.wait(timeout=GRACE * 3 + MARGIN)
        names = [name for _, name, _ in log]
        assert names == ["delta"] * 8 + ["done"], (names, served.output())
