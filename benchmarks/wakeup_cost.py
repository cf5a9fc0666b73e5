"""What a thread's wake-up costs on this machine, and what it does to a server's CPU per token.

At one stream a token comes every 8-10 ms, and every thread that handles it (the server's event
loop, the engine process's loop and courier) sleeps in between. On this machine (a virtual one)
work done right after such a sleep takes several times its CPU time on a busy core: caches and
branch predictors have been used by others meanwhile. So the CPU a thread spends per token at one
stream is mostly the cost of being woken, not of the work done once awake, and a change that
trims the work changes it little; one that wakes fewer threads per token changes it more.

Two measurements, each on a quiet machine:

- A fixed piece of Python (about 13 us on a warm core) run right after the thread slept 0, 0.5,
  2, 8 or 33 ms: its median CPU time, and the thread's CPU per wake-up (the work, the sleep's
  system calls and the wake-up).
- ``promptwire serve`` (dummy engine, its own process) streaming 128-word chat replies over
  ``/v1/chat/completions`` at 30, 120 and 480 words/s, and unpaced: the server's CPU per streamed
  token (the same work per token at every rate).

    uv run python -m benchmarks.wakeup_cost [--seconds 2] [--replies 4]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import httpx

from benchmarks.common import promptwire_serve

SLEEPS_MS = (0.0, 0.5, 2.0, 8.0, 33.0)
RATES = (30.0, 120.0, 480.0, None)
REPLY_WORDS = 128


def _work() -> int:
    """A fixed piece of interpreter work: arithmetic, a small dict, a JSON dump."""
    total = 0
    for index in range(300):
        total += index * index
    return total + len(json.dumps({"a": [1, 2, 3], "b": "x" * 50}))


def after_sleeps(seconds: float) -> None:
    """The work's CPU time right after each sleep, for ``seconds`` per sleep."""
    print("A fixed piece of work, right after the thread slept:")
    warm = None
    for sleep_ms in SLEEPS_MS:
        samples = []
        wakes = 0
        thread_started = time.thread_time_ns()
        ends = time.perf_counter() + seconds
        while time.perf_counter() < ends:
            if sleep_ms:
                time.sleep(sleep_ms / 1000)
            started = time.thread_time_ns()
            _work()
            samples.append(time.thread_time_ns() - started)
            wakes += 1
        median = statistics.median(samples) / 1e3
        per_wake = (time.thread_time_ns() - thread_started) / wakes / 1e3
        warm = warm or median
        print(
            f"  slept {sleep_ms:4.1f} ms: the work {median:6.1f} us ({median / warm:4.1f}x), "
            f"the thread per wake-up {per_wake:6.1f} us"
        )


def runtime(pid: int) -> float:
    """Seconds the threads of process ``pid`` have run, to the nanosecond (``/proc``'s
    schedstat; its ``stat`` counts in ticks of 10 ms)."""
    total = 0
    for thread in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{thread}/schedstat", encoding="ascii") as file:
                total += int(file.read().split()[0])
        except OSError:  # a thread that ended meanwhile
            continue
    return total / 1e9


def _stream(client: httpx.Client, url: str) -> int:
    body = {
        "model": "dummy",
        "messages": [{"role": "user", "content": "Tell me a story"}],
        "max_tokens": 1000,
        "stream": True,
    }
    with client.stream("POST", url + "v1/chat/completions", json=body) as response:
        response.raise_for_status()
        return sum(1 for line in response.iter_lines() if line.startswith("data: {"))


def server_per_token(replies: int) -> None:
    """The server's CPU per streamed token at each rate, ``replies`` streams one at a time."""
    print(f"promptwire serve (dummy engine), {REPLY_WORDS}-word chat streams one at a time:")
    settings = {"PROMPTWIRE_MODAL_DUMMY__REPLY": " ".join(["word"] * REPLY_WORDS)}
    unpaced = None
    for rate in reversed(RATES):  # unpaced first: the others' ratio is to it
        with (
            promptwire_serve(tokens_per_second=rate, settings=settings) as server,
            httpx.Client(timeout=120) as client,
        ):
            _stream(client, server.url)  # warm-up
            before = runtime(server.process.pid)
            started = time.perf_counter()
            chunks = sum(_stream(client, server.url) for _ in range(replies))
            wall = time.perf_counter() - started
            per_token = (runtime(server.process.pid) - before) / chunks * 1e6
        unpaced = unpaced or per_token
        pace = "unpaced" if rate is None else f"{rate:5.0f} words/s"
        print(
            f"  {pace:>15}: {chunks / wall:7.0f} chunks/s, server CPU per chunk "
            f"{per_token:6.1f} us ({per_token / unpaced:4.1f}x)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=2.0, help="per sleep length")
    parser.add_argument("--replies", type=int, default=4, help="streams per rate")
    args = parser.parse_args()
    after_sleeps(args.seconds)
    server_per_token(args.replies)


if __name__ == "__main__":
    main()
