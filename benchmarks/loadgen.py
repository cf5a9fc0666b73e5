"""A small HTTP/1.1 load generator on raw asyncio sockets (far lighter than any HTTP client, so
on two cores the server, not the generator, is what runs out of CPU).

``connections`` keep-alive connections each send one request at a time for ``duration`` seconds
after ``warmup`` seconds; the result (requests/s, latency percentiles, errors) is one JSON line
on stdout. A chunked answer (a stream of server-sent events) is read to its end, and its
events are counted (``events``).

``stream_data`` reads one streamed answer's events as they arrive, for the benchmarks that time
each token (an async httpx client spends about 1 ms of CPU per token at one stream on this
machine, more than the server it measures).

Run: ``python -m benchmarks.loadgen --port P --connections 16 --duration 3 --body '{...}'``
(``--path /v1/completions`` to load another route than ``/``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import AsyncIterator

HOST = "127.0.0.1"
MAX_HEAD = 65536
MAX_STREAM = 2**24
#: The end of a chunked body: the last data chunk's CRLF, then the empty chunk. (A server-sent
#: event's data ends with a CRLF and never with a chunk size, so it cannot contain this.)
LAST_CHUNK = b"\r\n0\r\n\r\n"


def request_bytes(body: bytes, path: str = "/") -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {HOST}\r\nContent-Type: application/json\r\n"
        f"Accept: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def connection(
    port: int,
    request: bytes,
    warmup_end: float,
    end: float,
    latencies: list[float],
    events: list[int],
) -> int:
    """Requests on one keep-alive connection until ``end``; returns the number of errors. The
    server-sent events (``data:`` fields) of streamed answers are added up in ``events[0]``."""
    errors = 0
    reader, writer = await asyncio.open_connection(HOST, port, limit=MAX_STREAM)
    try:
        while (started := time.perf_counter()) < end:
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            if len(head) > MAX_HEAD:
                raise RuntimeError("response head too large")
            status = int(head.split(b" ", 2)[1])
            length = 0
            chunked = False
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                name = name.strip().lower()
                if name == b"content-length":
                    length = int(value)
                elif name == b"transfer-encoding" and b"chunked" in value.lower():
                    chunked = True
            if chunked:  # a stream: up to its last (empty) chunk, in one read
                body = await reader.readuntil(LAST_CHUNK)
                if started >= warmup_end:
                    events[0] += body.count(b"data:")
            else:
                await reader.readexactly(length)
            if status != 200:
                errors += 1
            elif started >= warmup_end:
                latencies.append(time.perf_counter() - started)
    finally:
        writer.close()
    return errors


async def stream_data(port: int, path: str, body: bytes) -> AsyncIterator[bytes]:
    """The ``data:`` fields of one streamed answer (``text/event-stream``, chunked), each as
    soon as its line has arrived; one connection, closed at the end. Another status than 200
    raises ``RuntimeError``."""
    reader, writer = await asyncio.open_connection(HOST, port, limit=MAX_STREAM)
    try:
        writer.write(request_bytes(body, path))
        head = await reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        if status != 200:
            raise RuntimeError(f"{path} answered {status}: {head[:200]!r}")
        if b"chunked" not in head.lower():
            raise RuntimeError(f"{path} did not stream: {head[:200]!r}")
        pending = b""
        while size := int((await reader.readline()).split(b";")[0], 16):
            pending += (await reader.readexactly(size + 2))[:-2]
            *lines, pending = pending.split(b"\n")
            for line in lines:
                if line.startswith(b"data:"):
                    yield line[5:].strip()
    finally:
        writer.close()


async def run(
    port: int, connections: int, duration: float, warmup: float, body: bytes, path: str = "/"
) -> dict[str, float]:
    request = request_bytes(body, path)
    latencies: list[float] = []
    events = [0]
    now = time.perf_counter()
    warmup_end, end = now + warmup, now + warmup + duration
    errors = await asyncio.wait_for(
        asyncio.gather(
            *(
                connection(port, request, warmup_end, end, latencies, events)
                for _ in range(connections)
            )
        ),
        timeout=warmup + duration + 30,
    )
    latencies.sort()

    def pct(q: float) -> float:
        if not latencies:
            return float("nan")
        return latencies[min(len(latencies) - 1, int(q / 100 * len(latencies)))] * 1000

    return {
        "requests": len(latencies),
        "errors": sum(errors),
        "rps": len(latencies) / duration,
        "events": events[0],
        "p50_ms": pct(50),
        "p99_ms": pct(99),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--duration", type=float, default=3.0)
    parser.add_argument("--warmup", type=float, default=0.5)
    parser.add_argument("--body", default='{"prompt": "hello"}')
    parser.add_argument("--path", default="/", help="the path to POST to")
    args = parser.parse_args()
    result = asyncio.run(
        run(args.port, args.connections, args.duration, args.warmup, args.body.encode(), args.path)
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
