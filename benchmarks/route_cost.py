"""What each generating route costs the app, in-process: CPU per request for the prompt route,
the OpenAI routes (Completions, Chat Completions, Responses) and Anthropic's Messages route.

Benchmark 8 measures requests/s over sockets, where the routes' difference sits among uvicorn,
the parser, the event loop and the load generator, all sharing two cores (and, on a busy
machine, with whatever else runs). This drives one app (the dummy engine, the same request as
benchmark 8, the request log off) through ASGI calls in one process, no socket, the routes in
rotating order, and reports the process's CPU time per request (the preparer's threads
included) and each route's ratio to the prompt route, round by round.

    uv run python -m benchmarks.route_cost [--rounds 9] [--requests 1000] [--bytecodes]

CPU time moves with the machine (a shared one's other work, its caches), by more than a change
to one route saves. ``--bytecodes`` counts instead the Python bytecodes each route executes per
request (``sys.settrace``'s opcode events, every frame, after a warm-up): a figure that comes
out the same on every run, which a change to any route's Python code moves. It does not see
the work done in C and Rust (pydantic-core's validation, the JSON codecs), so it complements
the CPU time rather than replacing it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from types import FrameType
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
        statuses = []

        async def receive() -> dict[str, Any]:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            await asyncio.sleep(3600)  # the client never leaves
            raise AssertionError

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                statuses.append(message["status"])

        await app(scope, receive, send)
        assert statuses == [200], (name, statuses)

    return call


async def _measure(rounds: int, requests: int) -> dict[str, list[float]]:
    logging.disable(logging.INFO)  # the request log line, the same for every route
    app = create_app(DummyEngine(DummySettings()))
    calls = {name: _caller(app, name) for name in ROUTES}
    cpu: dict[str, list[float]] = {name: [] for name in ROUTES}
    names = list(ROUTES)
    async with app.router.lifespan_context(app):
        for name in names:  # warm-up
            for _ in range(200):
                await calls[name]()
        for index in range(rounds):
            for name in names[index % len(names) :] + names[: index % len(names)]:
                started = time.process_time()
                for _ in range(requests):
                    await calls[name]()
                cpu[name].append((time.process_time() - started) / requests * 1e6)
    return cpu


async def _bytecodes(requests: int) -> dict[str, float]:
    """The Python bytecodes each route executes per request, all frames counted."""
    logging.disable(logging.INFO)
    app = create_app(DummyEngine(DummySettings()))
    executed = 0

    def count(frame: FrameType, event: str, arg: Any) -> Any:
        nonlocal executed
        if event == "call":
            frame.f_trace_opcodes = True
            frame.f_trace_lines = False
        elif event == "opcode":
            executed += 1
        return count

    counts: dict[str, float] = {}
    async with app.router.lifespan_context(app):
        for name in ROUTES:
            call = _caller(app, name)
            for _ in range(200):  # warm-up: caches, the first request's imports
                await call()
            executed = 0
            sys.settrace(count)
            try:
                for _ in range(requests):
                    await call()
            finally:
                sys.settrace(None)
            counts[name] = executed / requests
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--bytecodes", action="store_true", help="count bytecodes, not CPU time")
    args = parser.parse_args()
    if args.bytecodes:
        counts = asyncio.run(_bytecodes(min(args.requests, 200)))
        prompt_count = counts["prompt route /"]
        for name, executed in counts.items():
            print(
                f"{name:30} bytecodes per request {executed:7,.0f}; prompt route / this "
                f"{prompt_count / executed:.3f}"
            )
        return
    cpu = asyncio.run(_measure(args.rounds, args.requests))
    prompt = cpu["prompt route /"]
    for name, samples in cpu.items():
        ratios = sorted(p / s for p, s in zip(prompt, samples, strict=True))
        print(
            f"{name:30} CPU per request {statistics.median(samples):6.1f} us "
            f"({min(samples):.0f}-{max(samples):.0f}); prompt route / this "
            f"{statistics.median(ratios):.3f} ({ratios[0]:.3f}-{ratios[-1]:.3f})"
        )


if __name__ == "__main__":
    main()
