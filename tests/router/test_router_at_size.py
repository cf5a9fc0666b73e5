"""The router with hundreds of members: a call's ``timeout`` is one deadline over every member it
tries, members share one SSL context (none of their own), and a router takes at most
``MAX_MEMBERS``.

Before: with 400 members that refuse connections, one call with ``timeout=2, max_retries=0``
took 8.8 to 12.4 s and grew the process by 326 MiB (each member made its own SSL context, about
23 ms and 0.8 MiB); 1,000 members took 34 s and 907 MiB, and the error was 98 KB long. Members
that accept a connection and never answer held a call for ``timeout`` each, one after another.
"""

from __future__ import annotations

import asyncio
import json
import re
import resource
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from subprocess import CompletedProcess

import pytest
from promptwire import AllEndpointsFailedError, ConfigurationError, PromptwireLLM
from promptwire.router import routed
from promptwire.router._adapter import MAX_MEMBERS

from tests.support.installed_plugin import run_cli
from tests.support.network import LOOPBACK_ONLY

pytestmark = LOOPBACK_ONLY

MARGIN = 4.0
"""Seconds allowed on top of a deadline: generous, for a loaded two-core machine, and still far
from what a call took without one deadline (a member's ``timeout`` each)."""


@contextmanager
def loopback_urls(count: int, *, listening: bool) -> Iterator[list[str]]:
    """``count`` loopback URLs whose ports are held bound while the block runs (no other
    process on this machine can take one): refused when not ``listening``, else accepted by the
    kernel and never answered."""
    with ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
            if listening:
                sock.listen(64)
        yield [f"http://127.0.0.1:{sock.getsockname()[1]}/" for sock in socks]


# Run in a fresh interpreter: its memory is the router's alone, not this test session's.
AT_SIZE = """
import asyncio, json, sys, time
from promptwire import PromptwireLLM
from promptwire.router import routed

def rss_mib():
    with open("/proc/self/status") as status:
        return next(int(l.split()[1]) for l in status if l.startswith("VmRSS")) / 1024

urls, mode = json.loads(sys.argv[1]), sys.argv[2]
routed(PromptwireLLM, ["http://127.0.0.1:9/"])  # the imports, before the first measure
before = rss_mib()
llm = routed(PromptwireLLM, urls, timeout=60, max_retries=0)  # time to try every member
started, cpu, error = time.monotonic(), time.process_time(), None
try:
    llm.invoke("hi") if mode == "invoke" else asyncio.run(llm.ainvoke("hi"))
except Exception as exc:
    error = f"{type(exc).__name__}: {exc}"
print(json.dumps({"seconds": time.monotonic() - started, "cpu": time.process_time() - cpu,
                  "grown_mib": rss_mib() - before, "error": error}))
"""


@pytest.mark.parametrize("mode", ["invoke", "ainvoke"])
def test_a_call_tries_400_refusing_members_quickly_and_in_little_memory(mode: str) -> None:
    """Every member tried (the timeout is long): measured at load 5 to 9 on two cores, 0.7 s
    (sync) and 1.0 s (async) and 7 MiB for the 400 members (about 18 KiB each), against 12.4 s
    / 23.4 s and 326 MiB before. CPU time is bounded, not wall time: other tests share the
    machine's two cores."""
    with loopback_urls(400, listening=False) as urls:
        child = subprocess.run(
            [sys.executable, "-c", AT_SIZE, json.dumps(urls), mode],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    assert child.returncode == 0, child.stderr[-2000:]
    found = json.loads(child.stdout)
    assert found["cpu"] < 4, found  # about 23 ms of CPU a member before, 9 s in all
    assert found["grown_mib"] < 40, found  # 100 KiB a member at most; 0.8 MiB each before
    assert found["error"].startswith("AllEndpointsFailedError: no endpoint could take the call")
    assert len(found["error"]) < 2000  # five members named, then how many more


@pytest.mark.parametrize("mode", ["invoke", "ainvoke", "stream", "astream"])
def test_members_that_never_answer_hold_a_call_no_longer_than_its_timeout(mode: str) -> None:
    """Twenty members that accept and never answer: one deadline of ``timeout`` for the call,
    not ``timeout`` for each member in turn (20 s)."""
    with loopback_urls(20, listening=True) as urls:
        llm = routed(PromptwireLLM, urls, timeout=1, max_retries=0, retry_unsafe=True)
        started = time.monotonic()
        with pytest.raises(AllEndpointsFailedError) as caught:
            if mode == "invoke":
                llm.invoke("hi")
            elif mode == "stream":
                list(llm.stream("hi"))
            else:

                async def run() -> None:
                    if mode == "ainvoke":
                        await llm.ainvoke("hi")
                    else:
                        [piece async for piece in llm.astream("hi")]

                asyncio.run(run())
        elapsed = time.monotonic() - started
    assert elapsed < 1 + MARGIN, elapsed
    assert "timeout (1 s)" in " ".join(caught.value.failures.values())


def test_a_router_takes_at_most_max_members() -> None:
    urls = [f"http://127.0.0.1:{10_000 + i}/" for i in range(MAX_MEMBERS + 1)]
    with pytest.raises(ConfigurationError, match=f"1001 endpoints; it takes at most {MAX_MEMBERS}"):
        routed(PromptwireLLM, urls)
    assert routed(PromptwireLLM, urls[:MAX_MEMBERS]) is not None


def status_of(urls: list[str], seconds: float) -> tuple[float, float, CompletedProcess[str]]:
    """``promptwire status`` of a router over ``urls``: its wall time, its CPU time, itself."""
    env = {"PROMPTWIRE_BACKEND": "router", "PROMPTWIRE_ROUTER__ENDPOINTS": json.dumps(urls)}
    started, before = time.monotonic(), resource.getrusage(resource.RUSAGE_CHILDREN)
    result = run_cli("status", "--timeout", f"{seconds:g}", env=env)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return time.monotonic() - started, cpu, result


CLI_START = 10.0
"""Seconds a child ``promptwire`` may take to start and print, on top (a loaded machine)."""


def test_status_reads_500_refusing_members_quickly() -> None:
    """Measured with ``--timeout 3`` at load 6.5 to 8: 3.6 s for the whole command (3.4 s for
    one member: the interpreter's start), peak 67 MiB; before, 53.1 s and 475 MiB (an SSL
    context and a client per member, all at once). A long timeout here, so that every member is
    read even on a loaded machine."""
    with loopback_urls(500, listening=False) as urls:
        elapsed, cpu, result = status_of(urls, 20)
    assert result.returncode == 1, result.stderr  # none is healthy
    assert result.stdout.startswith("router       500 members (least-busy): 0 ready")
    assert result.stdout.count("could not reach the endpoint") == 500
    assert elapsed < 20 + CLI_START
    print(f"status of 500 members: {elapsed:.1f} s, {cpu:.1f} s of CPU")
    assert cpu < 8  # the interpreter's start, and little per member


def test_status_over_members_that_never_answer_ends_at_its_timeout() -> None:
    """Members are read a few at a time (``PROBES_AT_ONCE``), all within one ``--timeout``: the
    ones whose turn comes too late say so."""
    with loopback_urls(100, listening=True) as urls:
        elapsed, _, result = status_of(urls, 2)
    assert result.returncode == 1, result.stderr
    health = re.findall(r"^health +(.*)$", result.stdout, flags=re.MULTILINE)
    assert len(health) == 100
    late = [line for line in health if line == "not read: --timeout 2 s was up"]
    assert late and all(line.startswith("no answer within") or line in late for line in health), (
        set(health)
    )
    assert elapsed < 2 + CLI_START
