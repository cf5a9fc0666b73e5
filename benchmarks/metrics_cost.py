"""Where metrics' cost goes: the app's CPU per request with metrics on and off, in-process.

Benchmark 5 measures ``promptwire serve`` over sockets, where the metrics' few microseconds sit
among about 180 us of uvicorn, the parser, the event loop and the load generator; its ratio moves
by a few percent from run to run. This drives the same app (the dummy engine, the prompt route)
through ASGI calls in one process, no socket, alternating metrics on and off, and times the
metrics' own calls alone, so the difference has a size and a place.

    uv run python -m benchmarks.metrics_cost [--rounds 12] [--requests 2000] [--stub-calls]

``--stub-calls`` keeps metrics on but makes the metrics' four calls do nothing: what is left of
the difference is not theirs.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import statistics
import time
from typing import Any

from promptwire.server import Observability, create_app
from promptwire.server.observability._metrics import ServerMetrics
from promptwire.server.observability._request_context import RequestRecord
from promptwire_modal_dummy.engine import DummyEngine
from promptwire_modal_dummy.settings import DummySettings

BODY = json.dumps({"prompt": "Tell me a story", "max_tokens": 16}).encode()
SCOPE: dict[str, Any] = {
    "type": "http",
    "asgi": {"version": "3.0"},
    "http_version": "1.1",
    "method": "POST",
    "scheme": "http",
    "path": "/",
    "raw_path": b"/",
    "root_path": "",
    "query_string": b"",
    "headers": [
        (b"host", b"127.0.0.1"),
        (b"content-type", b"application/json"),
        (b"content-length", str(len(BODY)).encode()),
    ],
    "client": ("127.0.0.1", 50000),
    "server": ("127.0.0.1", 8000),
}


async def _request(app: Any) -> int:
    status = 0
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            await asyncio.sleep(3600)  # the client stays: no disconnect
        sent = True
        return {"type": "http.request", "body": BODY, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(dict(SCOPE, state={}), receive, send)
    return status


async def _cpu_per_request(app: Any, requests: int) -> float:
    """Process CPU seconds per request, over ``requests`` one after another."""
    gc.collect()
    started = time.process_time()
    for _ in range(requests):
        assert await _request(app) == 200
    return (time.process_time() - started) / requests


async def _apps() -> tuple[Any, Any, Any]:
    """Both apps started (their lifespans entered), and a way to stop them."""
    apps = {
        metrics: create_app(
            DummyEngine(DummySettings()),
            observability=Observability(metrics=metrics, request_log=False),
        )
        for metrics in (True, False)
    }
    contexts = [app.router.lifespan_context(app) for app in apps.values()]
    for context in contexts:
        await context.__aenter__()

    async def stop() -> None:
        for context in contexts:
            await context.__aexit__(None, None, None)

    return apps[True], apps[False], stop


def _metrics_calls(count: int) -> float:
    """Seconds of the metrics' own calls for one whole reply (started, first token, finished)."""
    metrics = ServerMetrics(DummyEngine(DummySettings()))
    started = time.process_time()
    for _ in range(count):
        record = RequestRecord("id", "POST", "/", time.perf_counter())
        metrics.request_started(record)
        record.note_first_token()
        metrics.first_token_seen(record)
        record.status = 200
        metrics.request_finished(record, 0.001)
    return (time.process_time() - started) / count


async def main(rounds: int, requests: int) -> None:
    on, off, stop = await _apps()
    try:
        for app in (on, off):  # warm: imports, caches, the first request's work
            await _cpu_per_request(app, 200)
        per_round: list[tuple[float, float]] = []
        for index in range(rounds):
            order = (on, off) if index % 2 == 0 else (off, on)
            cpu = {id(app): await _cpu_per_request(app, requests) for app in order}
            per_round.append((cpu[id(on)], cpu[id(off)]))
    finally:
        await stop()
    on_us = statistics.median(r[0] for r in per_round) * 1e6
    off_us = statistics.median(r[1] for r in per_round) * 1e6
    ratios = sorted(r[0] / r[1] for r in per_round)
    calls_us = _metrics_calls(20_000) * 1e6
    print(f"app CPU per request, metrics on:  {on_us:.1f} us (median of {rounds} rounds)")
    print(f"app CPU per request, metrics off: {off_us:.1f} us")
    print(
        f"on / off: {statistics.median(ratios):.3f} (rounds {ratios[0]:.3f}-{ratios[-1]:.3f}); "
        f"difference {on_us - off_us:.1f} us"
    )
    print(f"the metrics' own calls for one reply: {calls_us:.2f} us")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--stub-calls", action="store_true")
    args = parser.parse_args()
    if args.stub_calls:
        for name in ("request_started", "request_finished", "first_token_seen", "stream_finished"):
            setattr(ServerMetrics, name, lambda *_, **__: None)
    asyncio.run(main(args.rounds, args.requests))
