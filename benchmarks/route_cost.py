"""What each generating route costs the app, in-process: CPU per request for the prompt route,
the OpenAI routes (Completions, Chat Completions, Responses) and Anthropic's Messages route.

Benchmark 8 measures requests/s over sockets, where the routes' difference sits among uvicorn,
the parser, the event loop and the load generator, all sharing two cores, and where the
machine's speed moves from one run of 1.5 s to the next by more than the routes differ. This
drives one app (the dummy engine, the same request as benchmark 8, the request log off) through
ASGI calls in one process, no socket, one request of each route in turn (their order rotating),
and reports each route's median CPU time per request (the event loop's thread) and its ratio
to the prompt route's: requests a few hundred microseconds apart meet the same machine, so the
ratio comes out again within about 1 % on a rerun.

    uv run python -m benchmarks.route_cost [--requests 3000] [--bytecodes [--by-function 20]]

``--bytecodes`` counts instead the Python bytecodes each route executes per request
(``sys.settrace``'s opcode events, every frame, after a warm-up): a figure that comes out the
same on every run, which a change to any route's Python code moves. It does not see the work
done in C and Rust (pydantic-core's validation, the JSON codecs), which the CPU time includes.
``--by-function N`` adds, for each route, the N functions that execute the most bytecodes per
request beyond what they execute on the prompt route: where a route's extra Python goes.

Each call ends as it does under a server: once the answer is complete, the app's next
``receive`` gets ``http.disconnect`` (as uvicorn answers it), and the event loop turns twice, so
the callbacks the request left behind run (a server's loop runs them between requests). Without
either, every request left objects behind (its disconnect watcher waiting, callbacks never run),
which the garbage collector's full collections then walked: 30-330 ms each after 15,000
requests, counted in the CPU time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import statistics
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from types import CodeType, FrameType
from typing import Any

from promptwire.server import create_app
from promptwire_modal_dummy.engine import DummyEngine
from promptwire_modal_dummy.settings import DummySettings

from benchmarks.openai_compat import ROUTES


def _scope(path: str, size: int) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"127.0.0.1"),
            (b"content-type", b"application/json"),
            (b"content-length", str(size).encode()),
        ],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
    }


def _caller(app: Any, name: str) -> Callable[[], Awaitable[None]]:
    """One request of route ``name`` through ``app``, answered 200."""
    path, request = ROUTES[name]
    body = json.dumps(request).encode()
    scope = _scope(path, len(body))

    async def call() -> None:
        sent = False
        complete = asyncio.Event()
        statuses = []

        async def receive() -> dict[str, Any]:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            await complete.wait()  # as uvicorn: the client is done once its answer is
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                statuses.append(message["status"])
            elif message["type"] == "http.response.body" and not message.get("more_body"):
                complete.set()

        await app(scope, receive, send)
        # Two turns of the event loop, as a server's loop takes between requests: the callbacks
        # a request left (a generator's finalization) run, and count as its work.
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert statuses == [200], (name, statuses)

    return call


async def _measure(requests: int) -> dict[str, list[int]]:
    """Each route's CPU nanoseconds per request (this thread's), ``requests`` of each, one
    request of each route in turn."""
    logging.disable(logging.INFO)  # the request log line, the same for every route
    app = create_app(DummyEngine(DummySettings()))
    calls = {name: _caller(app, name) for name in ROUTES}
    cpu: dict[str, list[int]] = {name: [] for name in ROUTES}
    names = list(ROUTES)
    clock = time.thread_time_ns
    async with app.router.lifespan_context(app):
        for name in names:  # warm-up
            for _ in range(200):
                await calls[name]()
        for index in range(requests):
            for name in names[index % len(names) :] + names[: index % len(names)]:
                started = clock()
                await calls[name]()
                cpu[name].append(clock() - started)
    return cpu


#: A function, as ``--by-function`` names it: its file (from the package on), first line, name.
Function = tuple[str, int, str]


def _function(code: CodeType) -> Function:
    path = code.co_filename
    for marker in ("site-packages/", "/src/"):
        path = path.rsplit(marker, 1)[-1]
    return path, code.co_firstlineno, code.co_name


async def _bytecodes(requests: int) -> dict[str, Counter[Function]]:
    """The Python bytecodes each route executes per request, by function, all frames counted."""
    logging.disable(logging.INFO)
    app = create_app(DummyEngine(DummySettings()))
    executed: Counter[CodeType] = Counter()

    def count(frame: FrameType, event: str, arg: Any) -> Any:
        if event == "call":
            frame.f_trace_opcodes = True
            frame.f_trace_lines = False
        elif event == "opcode":
            executed[frame.f_code] += 1
        return count

    counts: dict[str, Counter[Function]] = {}
    async with app.router.lifespan_context(app):
        for name in ROUTES:
            call = _caller(app, name)
            for _ in range(200):  # warm-up: caches, the first request's imports
                await call()
            executed.clear()
            sys.settrace(count)
            try:
                for _ in range(requests):
                    await call()
            finally:
                sys.settrace(None)
            by_function: Counter[Function] = Counter()
            for code, times in executed.items():
                by_function[_function(code)] += times
            counts[name] = by_function
    return counts


def _print_bytecodes(counts: dict[str, Counter[Function]], requests: int, top: int) -> None:
    prompt = counts["prompt route /"]
    prompt_total = prompt.total() / requests
    for name, by_function in counts.items():
        executed = by_function.total() / requests
        print(
            f"{name:30} bytecodes per request {executed:7,.0f}; prompt route / this "
            f"{prompt_total / executed:.3f}"
        )
        if not top or by_function is prompt:
            continue
        differences = sorted(
            ((by_function[f] - prompt[f]) / requests, f) for f in by_function.keys() | prompt.keys()
        )
        for difference, (path, line, function) in differences[::-1][:top]:
            if difference:
                print(f"    {difference:+7.0f}  {path}:{line} {function}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=3000, help="of each route")
    parser.add_argument("--bytecodes", action="store_true", help="count bytecodes, not CPU time")
    parser.add_argument(
        "--by-function",
        type=int,
        default=0,
        metavar="N",
        help="with --bytecodes: the N functions that add most to each route over the prompt route",
    )
    args = parser.parse_args()
    if args.bytecodes:
        requests = min(args.requests, 200)
        _print_bytecodes(asyncio.run(_bytecodes(requests)), requests, args.by_function)
        return
    cpu = asyncio.run(_measure(args.requests))
    prompt = statistics.median(cpu["prompt route /"])
    for name, samples in cpu.items():
        median = statistics.median(samples)
        print(
            f"{name:30} CPU per request {median / 1e3:6.1f} us median "
            f"({statistics.fmean(samples) / 1e3:.1f} mean); prompt route / this "
            f"{prompt / median:.3f}"
        )


if __name__ == "__main__":
    main()
