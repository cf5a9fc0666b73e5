"""A well-behaved client's latency while the connection cap is full of connections doing no
work: ``--half-sent`` connections that sent half a request line (under ``ulimit -n 1024``), or
``--idle`` kept-alive connections that each made one request. Not a test: prints figures.

    uv run python -m tests.reliability.shedding
    uv run python -m tests.reliability.shedding --against /tmp/old/core/src   # another checkout

``--against`` puts another checkout's ``core/src`` first on the server's ``PYTHONPATH``, to
compare its ``promptwire serve`` with this one's on the same machine, in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections import Counter
from pathlib import Path

import httpx

from tests.reliability.served import promptwire_serve

HALF_LINE = b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Ty"
HEALTH = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


async def _open(host: str, port: int, kind: str) -> asyncio.StreamWriter | None:
    try:
        reader, writer = await asyncio.open_connection(host, port)
        if kind == "half-sent":
            writer.write(HALF_LINE)
            await writer.drain()
        else:
            writer.write(HEALTH)
            await writer.drain()
            await asyncio.wait_for(reader.readuntil(b"}"), 30)
        return writer
    except (OSError, asyncio.IncompleteReadError, TimeoutError):
        return None  # refused or shed: it is not held


async def _measure(url: str, kind: str, count: int, probes: int) -> str:
    parsed = httpx.URL(url)
    host, port = parsed.host, parsed.port or 80
    held: list[asyncio.StreamWriter] = []
    for start in range(0, count, 100):  # in batches, as a flood arrives
        opened = await asyncio.gather(
            *(_open(host, port, kind) for _ in range(min(100, count - start)))
        )
        held += [w for w in opened if w is not None]
    statuses: Counter[str] = Counter()
    latencies = []
    began = time.monotonic()
    first_ok: float | None = None
    async with httpx.AsyncClient(timeout=15, limits=httpx.Limits(max_keepalive_connections=0)) as c:
        for _ in range(probes):
            started = time.monotonic()
            try:
                status = str((await c.get(url + "health")).status_code)
            except httpx.HTTPError as exc:
                status = type(exc).__name__
            latencies.append(time.monotonic() - started)
            statuses[status] += 1
            if status == "200" and first_ok is None:
                first_ok = time.monotonic() - began
            await asyncio.sleep(0.1)
    for writer in held:
        writer.close()
    first = "none" if first_ok is None else f"{first_ok:.2f} s"
    return (
        f"{count:>5} {kind:<9}: {probes} /health probes, one connection each: "
        f"{dict(statuses)}; p50 {statistics.median(latencies) * 1000:.0f} ms, "
        f"max {max(latencies) * 1000:.0f} ms; first 200 after {first}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--half-sent", type=int, default=1_100)
    parser.add_argument("--idle", type=int, default=2_000)
    parser.add_argument("--probes", type=int, default=20)
    parser.add_argument("--against", type=Path, help="another checkout's core/src")
    args = parser.parse_args()
    env = {"PYTHONPATH": str(args.against.resolve())} if args.against else {}
    for kind, count, open_files in (
        ("half-sent", args.half_sent, 1024),
        ("idle", args.idle, None),
    ):
        with promptwire_serve("--log-level", "warning", env=env, open_files=open_files) as served:
            print(asyncio.run(_measure(served.url, kind, count, args.probes)), flush=True)


if __name__ == "__main__":
    main()
