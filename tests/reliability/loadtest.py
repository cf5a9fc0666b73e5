"""Load and soak test: ``promptwire serve`` (dummy engine, echo mode, bearer token) in a child
process, driven from this one.

Whole replies go to a server whose engine answers at once, so the figures are the protocol's own
cost, sent twice: by promptwire's client (what a chain sees) and by a bare keep-alive HTTP/1.1
client (the server's own capacity; httpx's pool bookkeeping costs more CPU than the server at
this concurrency). Streams go to a second server whose engine emits ``--stream-rate`` words a
second (a GPU's pace), so all the streams really are open together.

    uv run python -m tests.reliability.loadtest                      # 20,000 at 64 + 200 streams
    uv run python -m tests.reliability.loadtest --requests 2000 --concurrency 32 --streams 50

Every request carries a unique prompt and the echoed reply is compared with it, so a lost, mixed
up or truncated answer counts as an error, as does any exception (the client makes no retries
here, so none can hide a failure). The server's resident memory is sampled once a second; its
growth is measured from the end of a warm-up to the end of the run. Exit status 1 when any
request failed or memory grew more than ``--max-growth-mib``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import statistics
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager, suppress
from dataclasses import asdict, dataclass, field
from typing import Protocol
from urllib.parse import urlsplit

from promptwire.client import ClientConfig, EndpointClient
from promptwire.protocol import StreamDelta, StreamDone
from pydantic import SecretStr

from tests.reliability.served import ServedProcess, promptwire_serve

TOKEN = "loadtest-token-3f9d2c71"
MIB = 1 << 20


@dataclass(frozen=True)
class LoadConfig:
    requests: int = 20_000
    concurrency: int = 64
    streams: int = 200
    stream_words: int = 50
    stream_rate: float = 50.0
    """Words per second of the streaming server's engine."""
    stream_rounds: int = 5
    """Rounds of ``streams`` streams at once after a warm-up round (a soak for the streams)."""
    warmup: int = 1_000
    drivers: tuple[str, ...] = ("promptwire", "raw")
    """Clients sending the whole-reply requests, each ``requests`` of them, in turn."""
    timeout: float = 60.0
    max_growth_mib: float = 16.0


@dataclass
class Phase:
    name: str
    count: int
    concurrency: int
    seconds: float
    latencies_ms: list[float] = field(repr=False)
    errors: Counter[str]
    first_event_ms: list[float] = field(default_factory=list, repr=False)
    """Streams only: how long each waited for its first event."""

    @property
    def rps(self) -> float:
        return self.count / self.seconds if self.seconds else 0.0

    def percentile(self, p: float, values: list[float] | None = None) -> float:
        ordered = sorted(self.latencies_ms if values is None else values)
        if not ordered:
            return float("nan")
        return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]

    def summary(self) -> dict[str, object]:
        return {
            "phase": self.name,
            "count": self.count,
            "concurrency": self.concurrency,
            "seconds": round(self.seconds, 2),
            "rps": round(self.rps, 1),
            "p50_ms": round(self.percentile(50), 2),
            "p95_ms": round(self.percentile(95), 2),
            "p99_ms": round(self.percentile(99), 2),
            "max_ms": round(max(self.latencies_ms, default=float("nan")), 2),
            "mean_ms": round(statistics.fmean(self.latencies_ms), 2) if self.latencies_ms else None,
            "errors": sum(self.errors.values()),
            "error_kinds": dict(self.errors),
            **(
                {
                    "first_event_p50_ms": round(self.percentile(50, self.first_event_ms), 2),
                    "first_event_p99_ms": round(self.percentile(99, self.first_event_ms), 2),
                    "first_event_max_ms": round(max(self.first_event_ms), 2),
                }
                if self.first_event_ms
                else {}
            ),
        }


@dataclass
class Memory:
    """Resident memory of one server: at start-up, after the warm-up, at the end, at most."""

    server: str
    cold: int
    start: int
    end: int
    peak: int
    alive: bool

    @property
    def growth_mib(self) -> float:
        return (self.end - self.start) / MIB

    def summary(self) -> dict[str, object]:
        return {
            "server": self.server,
            "cold_mib": round(self.cold / MIB, 1),
            "start_mib": round(self.start / MIB, 1),
            "end_mib": round(self.end / MIB, 1),
            "peak_mib": round(self.peak / MIB, 1),
            "growth_mib": round(self.growth_mib, 1),
            "alive": self.alive,
        }

    def text(self) -> str:
        return (
            f"{self.server} server RSS: cold {self.cold / MIB:.1f} MiB, after warm-up "
            f"{self.start / MIB:.1f} MiB, end {self.end / MIB:.1f} MiB, peak {self.peak / MIB:.1f}"
            f" MiB; growth {self.growth_mib:+.1f} MiB; alive at the end: {self.alive}"
        )


@dataclass
class Report:
    config: LoadConfig
    phases: list[Phase]
    memory: list[Memory]

    @property
    def errors(self) -> int:
        return sum(sum(p.errors.values()) for p in self.phases)

    @property
    def ok(self) -> bool:
        return self.errors == 0 and all(
            m.alive and m.growth_mib <= self.config.max_growth_mib for m in self.memory
        )

    def as_dict(self) -> dict[str, object]:
        return {
            "config": asdict(self.config),
            "phases": [p.summary() for p in self.phases],
            "memory": [m.summary() for m in self.memory],
            "errors": self.errors,
            "ok": self.ok,
        }

    def text(self) -> str:
        lines = [
            "promptwire load test: `promptwire serve` (modal_dummy, echo, bearer token), loopback",
            f"{'phase':<16}{'count':>8}{'conc':>6}{'secs':>8}{'rps':>9}"
            f"{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'max ms':>9}{'errors':>8}",
        ]
        for phase in self.phases:
            s = phase.summary()
            lines.append(
                f"{phase.name:<16}{s['count']:>8}{s['concurrency']:>6}{s['seconds']:>8}{s['rps']:>9}"
                f"{s['p50_ms']:>9}{s['p95_ms']:>9}{s['p99_ms']:>9}{s['max_ms']:>9}{s['errors']:>8}"
            )
            if phase.errors:
                lines.append(f"  errors: {dict(phase.errors)}")
            if phase.first_event_ms:
                lines.append(
                    f"  first event: p50 {s['first_event_p50_ms']} ms, p99 "
                    f"{s['first_event_p99_ms']} ms, max {s['first_event_max_ms']} ms"
                )
        lines += [m.text() for m in self.memory]
        lines.append(
            f"{'OK' if self.ok else 'FAILED'} (errors {self.errors}, growth limit "
            f"{self.config.max_growth_mib:g} MiB)"
        )
        return "\n".join(lines)


def _error_name(exc: BaseException) -> str:
    return type(exc).__name__


class Driver(Protocol):
    """Sends one whole-reply request and returns the completion text."""

    async def complete(self, prompt: str) -> str: ...

    async def aclose(self) -> None: ...


class PromptwireDriver:
    def __init__(self, client: EndpointClient) -> None:
        self.client = client

    async def complete(self, prompt: str) -> str:
        return (await self.client.acomplete({"prompt": prompt, "max_tokens": 64})).prompt

    async def aclose(self) -> None:
        await self.client.aclose()


class RawDriver:
    """A bare keep-alive HTTP/1.1 client on asyncio streams, one connection per worker."""

    def __init__(self, url: str, connections: int, timeout: float) -> None:
        parts = urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.timeout = timeout
        self.connections = connections
        self.opened = 0
        self.idle: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = (
            asyncio.Queue()
        )

    async def _connection(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self.idle.empty() and self.opened < self.connections:
            self.opened += 1
            return await asyncio.open_connection(self.host, self.port)
        return await self.idle.get()

    async def complete(self, prompt: str) -> str:
        reader, writer = await self._connection()
        body = json.dumps({"prompt": prompt, "max_tokens": 64}).encode()
        request = (
            f"POST / HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nAuthorization: Bearer {TOKEN}"
            f"\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode() + body
        try:
            async with asyncio.timeout(self.timeout):
                writer.write(request)
                await writer.drain()
                head = await reader.readuntil(b"\r\n\r\n")
                length = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
                if length is None:
                    raise ValueError(f"no content-length: {head[:200]!r}")
                data = await reader.readexactly(int(length[1]))
        except BaseException:
            writer.close()
            self.opened -= 1
            raise
        self.idle.put_nowait((reader, writer))
        status = int(head.split(b" ", 2)[1])
        if status != 200:
            raise RuntimeError(f"HTTP {status}: {data[:200]!r}")
        return str(json.loads(data)["prompt"])

    async def aclose(self) -> None:
        while not self.idle.empty():
            _, writer = self.idle.get_nowait()
            writer.close()


async def _whole_replies(
    driver: Driver, name: str, count: int, concurrency: int, offset: int
) -> Phase:
    latencies: list[float] = []
    errors: Counter[str] = Counter()
    next_index = iter(range(offset, offset + count))

    async def worker() -> None:
        for index in next_index:
            prompt = f"request {index} of the load test"
            started = time.perf_counter()
            try:
                reply = await driver.complete(prompt)
            except Exception as exc:
                errors[_error_name(exc)] += 1
                continue
            latencies.append((time.perf_counter() - started) * 1000)
            if reply != prompt:
                errors["wrong reply"] += 1

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return Phase(name, count, concurrency, time.perf_counter() - started, latencies, errors)


async def _streams(client: EndpointClient, count: int, words: int, rounds: int = 1) -> Phase:
    """``rounds`` times, ``count`` streams at once, all open together; latency is the whole
    stream's."""
    latencies: list[float] = []
    first: list[float] = []
    errors: Counter[str] = Counter()

    async def one(index: int) -> None:
        prompt = " ".join(f"s{index}w{n}" for n in range(words))
        started = time.perf_counter()
        pieces: list[str] = []
        done = False
        try:
            async for event in client.astream({"prompt": prompt, "max_tokens": words}):
                if not pieces and not done:
                    first.append((time.perf_counter() - started) * 1000)
                if isinstance(event, StreamDelta):
                    pieces.append(event.text)
                elif isinstance(event, StreamDone):
                    done = True
        except Exception as exc:
            errors[_error_name(exc)] += 1
            return
        latencies.append((time.perf_counter() - started) * 1000)
        if not done or "".join(pieces) != prompt:
            errors["wrong stream"] += 1

    started = time.perf_counter()
    for round_ in range(rounds):
        await asyncio.gather(*(one(round_ * count + i) for i in range(count)))
    seconds = time.perf_counter() - started
    return Phase("streams", count * rounds, count, seconds, latencies, errors, first)


async def _sample_rss(served: ServedProcess, samples: list[int], stop: asyncio.Event) -> None:
    while not stop.is_set():
        samples.append(served.rss())
        with suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 1.0)


def _client(served: ServedProcess, config: LoadConfig, connections: int) -> EndpointClient:
    return EndpointClient(
        ClientConfig(
            endpoint_url=served.url,
            api_key=SecretStr(TOKEN),
            timeout=config.timeout,
            max_retries=0,  # a retry would hide a failure
            max_concurrency=connections,
        )
    )


async def _measured(
    served: ServedProcess,
    name: str,
    warm_up: Callable[[], Awaitable[object]],
    loads: list[Callable[[], Awaitable[Phase]]],
) -> tuple[list[Phase], Memory]:
    cold = served.rss()
    await warm_up()
    start = served.rss()
    samples: list[int] = []
    stop = asyncio.Event()
    sampler = asyncio.create_task(_sample_rss(served, samples, stop))
    try:
        phases = [await load() for load in loads]
    finally:
        stop.set()
        await sampler
    end = served.rss()
    return phases, Memory(name, cold, start, end, max([end, *samples]), served.alive())


async def drive_requests(served: ServedProcess, config: LoadConfig) -> tuple[list[Phase], Memory]:
    """Warm up, then the same number of requests through each driver, in turn."""
    promptwire = PromptwireDriver(_client(served, config, config.concurrency))
    raw = RawDriver(served.url, config.concurrency, config.timeout)
    drivers: dict[str, Driver] = {"promptwire": promptwire, "raw": raw}
    chosen = [(name, drivers[name]) for name in config.drivers]

    def load(name: str, driver: Driver, offset: int) -> Callable[[], Awaitable[Phase]]:
        return lambda: _whole_replies(
            driver, f"req/{name}", config.requests, config.concurrency, offset
        )

    try:
        return await _measured(
            served,
            "requests",
            lambda: _whole_replies(
                chosen[0][1], "warm-up", config.warmup, config.concurrency, 10**9
            ),
            [load(name, driver, n * config.requests) for n, (name, driver) in enumerate(chosen)],
        )
    finally:
        await promptwire.aclose()
        await raw.aclose()


async def drive_streams(served: ServedProcess, config: LoadConfig) -> tuple[list[Phase], Memory]:
    client = _client(served, config, config.streams)
    try:
        return await _measured(
            served,
            "streams",
            lambda: _streams(client, config.streams, config.stream_words),
            [lambda: _streams(client, config.streams, config.stream_words, config.stream_rounds)],
        )
    finally:
        await client.aclose()


def _serve(extra_env: dict[str, str] | None = None) -> AbstractContextManager[ServedProcess]:
    env = {"PROMPTWIRE_MODAL_DUMMY__ECHO": "true", "PROMPTWIRE_API_KEY": TOKEN, **(extra_env or {})}
    return promptwire_serve("--log-level", "warning", env=env)


def run_load(config: LoadConfig) -> Report:
    """Start the servers one after the other, drive each, stop it; check it printed no secret."""
    phases: list[Phase] = []
    memory: list[Memory] = []
    rate = {"PROMPTWIRE_MODAL_DUMMY__TOKENS_PER_SECOND": str(config.stream_rate)}
    for drive, extra in ((drive_requests, None), (drive_streams, rate)):
        if drive is drive_streams and config.streams == 0:
            continue
        with _serve(extra) as served:
            done, used = asyncio.run(drive(served, config))
            output = served.output()
        if TOKEN in output:
            raise AssertionError("the server printed its token")
        phases += done
        memory.append(used)
    return Report(config, phases, memory)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    defaults = LoadConfig()
    parser.add_argument("--requests", type=int, default=defaults.requests)
    parser.add_argument("--concurrency", type=int, default=defaults.concurrency)
    parser.add_argument("--streams", type=int, default=defaults.streams)
    parser.add_argument("--stream-words", type=int, default=defaults.stream_words)
    parser.add_argument("--stream-rate", type=float, default=defaults.stream_rate)
    parser.add_argument("--stream-rounds", type=int, default=defaults.stream_rounds)
    parser.add_argument("--warmup", type=int, default=defaults.warmup)
    parser.add_argument("--max-growth-mib", type=float, default=defaults.max_growth_mib)
    parser.add_argument(
        "--drivers",
        default=",".join(defaults.drivers),
        help="clients for the whole-reply phase, in turn: promptwire, raw or both (a,b)",
    )
    parser.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    args = parser.parse_args(argv)
    config = LoadConfig(
        requests=args.requests,
        concurrency=args.concurrency,
        streams=args.streams,
        stream_words=args.stream_words,
        stream_rate=args.stream_rate,
        stream_rounds=args.stream_rounds,
        warmup=args.warmup,
        max_growth_mib=args.max_growth_mib,
        drivers=tuple(name.strip() for name in args.drivers.split(",") if name.strip()),
    )
    report = run_load(config)
    print(report.text())
    if args.json:
        with open(args.json, "w") as out:
            json.dump(report.as_dict(), out, indent=2)
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
