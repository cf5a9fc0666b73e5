"""One request must not hold the server's event loop: while a crafted stop list or a long echo is
being served, ``/health`` keeps answering.

Before stop matching was linear, each streamed word under 32 stops of 256 characters cost
thousands of ``endswith`` calls, and the dummy engine never yielded: a 12 KB request delayed
``/health`` by seconds, a long echo held the loop for as long as it took.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import httpx
import pytest
from promptwire.protocol import MAX_STOP_LENGTH, MAX_STOP_SEQUENCES
from promptwire.protocol.stops import StopScanner, truncate_at_stop
from promptwire_modal_dummy.engine import DummyEngine
from promptwire_modal_dummy.settings import DummySettings

from tests.support.network import LOOPBACK_ONLY
from tests.support.servers import serve_engine

pytestmark = LOOPBACK_ONLY

# The prompt's words keep the last stop almost matched (255 characters held back after each
# word), and the 31 before it match nothing: a scan that retried every prefix of every stop
# after each word made thousands of calls per word, 2-4 s of blocked loop for a 12 KB request.
CRAFTED_STOPS = [chr(0x4E00 + i) * MAX_STOP_LENGTH for i in range(MAX_STOP_SEQUENCES - 1)] + [
    ("x " * MAX_STOP_LENGTH)[: MAX_STOP_LENGTH - 1] + "Z"
]
HEALTH_BOUND = 2.0
"""Seconds ``/health`` may take while the other request runs: generous for a loaded machine;
before the fixes it took longer than the whole request, several seconds."""


@pytest.fixture(scope="module")
def echo_url() -> Iterator[str]:
    with serve_engine(DummyEngine(DummySettings(echo=True))) as server:
        yield server.url


async def _slowest_health_while(url: str, body: dict[str, object]) -> tuple[float, int]:
    """Send ``body``; until it is answered, time ``/health`` back to back. Return the slowest
    health check and the request's status."""
    async with httpx.AsyncClient(timeout=120) as client:
        request = asyncio.create_task(client.post(url, json=body))
        slowest = 0.0
        await asyncio.sleep(0.05)  # let it reach the engine
        deadline = time.monotonic() + 120
        while not request.done() and time.monotonic() < deadline:
            started = time.monotonic()
            health = await client.get(url + "health")
            slowest = max(slowest, time.monotonic() - started)
            assert health.status_code == 200
            await asyncio.sleep(0.02)
        response = await request
        return slowest, response.status_code


@pytest.mark.parametrize("stream", [False, True])
def test_a_crafted_stop_list_does_not_hold_the_loop(echo_url: str, stream: bool) -> None:
    body = {"prompt": "x " * 200_000, "stop": CRAFTED_STOPS, "stream": stream}
    slowest, status = asyncio.run(_slowest_health_while(echo_url, body))
    assert status == 200
    print(f"slowest /health: {slowest:.3f} s")
    assert slowest < HEALTH_BOUND, f"/health took {slowest:.2f} s"


def test_a_long_streamed_echo_does_not_hold_the_loop(echo_url: str) -> None:
    body = {"prompt": "word " * 104_000, "stream": True}  # 512 KiB
    slowest, status = asyncio.run(_slowest_health_while(echo_url, body))
    assert status == 200
    print(f"slowest /health: {slowest:.3f} s")
    assert slowest < HEALTH_BOUND, f"/health took {slowest:.2f} s"


# -- the matcher itself ------------------------------------------------------------------------


def test_stops_are_still_found_earliest_first() -> None:
    text = "x " * 200 + "x B"
    assert truncate_at_stop(text, CRAFTED_STOPS) == (text, False)
    exact = CRAFTED_STOPS[-1]
    assert truncate_at_stop("yy " + exact + " zz", [*CRAFTED_STOPS, "zz"]) == ("yy ", True)
    assert truncate_at_stop("abcd", ["abcd", "c"]) == ("", True)  # the earliest start wins
    scanner = StopScanner(["abcd", "c"])
    assert scanner.feed("ab") == "" and scanner.feed("cd") == ""
