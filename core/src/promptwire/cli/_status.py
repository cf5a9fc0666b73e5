"""``promptwire status URL``: what an endpoint is doing, from its ``/health`` and ``/metrics``.

One look at a running server, for its operator: which model and version it serves, how many
requests it holds and queues, how full the engine's cache is, how fast its streams go and what
its cold start cost. The metrics are read with prometheus-client's own parser (the ``server``
extra), imported only here.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from promptwire.client import parse_endpoint_url
from promptwire.client._transport.pools import stateless_async_client
from promptwire.client.wire import parse_json
from promptwire.errors import (
    ConfigurationError,
    EndpointConnectError,
    EndpointError,
    EndpointTimeoutError,
    PromptwireError,
    ProtocolError,
)

#: Routes that are the server's own plumbing, left out of the request counts.
PLUMBING_ROUTES = frozenset({"/health", "/metrics"})
MIB = 1 << 20
#: The most of each answer read: far more than a real one, far less than memory.
MAX_HEALTH_BYTES = MIB
MAX_METRICS_BYTES = 16 * MIB
#: Endpoints read at once (a router's members): hundreds within seconds, without a socket and
#: a request each all at the same moment.
PROBES_AT_ONCE = 32


@dataclass
class Sample:
    name: str
    labels: dict[str, str]
    value: float


@dataclass
class EndpointStatus:
    """What ``status`` found. Figures an endpoint does not report are None."""

    url: str
    health: str
    """``ok``, ``not ready`` or what went wrong."""
    ready: bool
    model: str | None = None
    protocol: str | None = None
    version: str | None = None
    metrics: str = "ok"
    """``ok``, or why there are none (off on this server, refused)."""
    in_flight: int | None = None
    queued: int | None = None
    answered: int | None = None
    client_errors: int | None = None
    server_errors: int | None = None
    cache_used: int | None = None
    cache_free: int | None = None
    streams: int | None = None
    tokens_per_second: float | None = None
    """The mean over finished generations of their tokens per second."""
    completion_tokens: int | None = None
    first_token: float | None = None
    """The mean time to first token, in seconds."""
    cold_start: dict[str, float] = field(default_factory=dict)

    def lines(self) -> list[tuple[str, str]]:
        """The summary, as (label, text) rows."""
        rows = [("endpoint", self.url), ("health", self.health)]
        if self.model is not None or self.version is not None:
            rows.append(("model", self.model or "(none)"))
            if self.version is not None:
                rows.append(("version", f"promptwire {self.version} (protocol {self.protocol})"))
        if self.metrics != "ok":
            rows.append(("metrics", self.metrics))
            return rows
        if self.in_flight is not None:
            queued = f" ({self.queued} waiting for a first token)" if self.queued else ""
            rows.append(("in flight", f"{self.in_flight}{queued}"))
        if self.answered is not None:
            rows.append(
                (
                    "requests",
                    f"{self.answered} answered (4xx: {self.client_errors}, "
                    f"5xx: {self.server_errors})",
                )
            )
        if self.cache_used is not None and self.cache_free is not None:
            total = self.cache_used + self.cache_free
            share = 100 * self.cache_used / total if total else 0.0
            rows.append(("cache", f"{self.cache_used} of {total} pages used ({share:.1f} %)"))
        else:
            rows.append(("cache", "not reported by this engine"))
        if self.tokens_per_second is not None:
            rows.append(
                (
                    "tokens/s",
                    f"{self.tokens_per_second:.1f} per stream (mean of {self.streams}); "
                    f"{self.completion_tokens} completion tokens in all",
                )
            )
        else:
            rows.append(("tokens/s", "no finished generation yet"))
        if self.first_token is not None:
            rows.append(("first token", f"{self.first_token:.3f} s (mean)"))
        if self.cold_start:
            rows.append(
                (
                    "cold start",
                    ", ".join(f"{name} {took:.3f} s" for name, took in self.cold_start.items()),
                )
            )
        return rows


def read_status(
    url: str, *, headers: Mapping[str, str] | None = None, timeout: float = 10.0
) -> EndpointStatus:
    """Read ``url``'s health and metrics (``headers``: its credentials) within ``timeout``
    seconds in all, however slowly the endpoint answers."""
    endpoint = parse_endpoint_url(url)  # before anything is sent: no credentials in the URL

    async def read() -> EndpointStatus:
        async with _client(timeout) as client:
            return await _read_status(client, endpoint, dict(headers or {}), limit=timeout)

    return asyncio.run(read())


def read_statuses(
    endpoints: Sequence[tuple[str, Mapping[str, str]]], *, timeout: float = 10.0
) -> list[EndpointStatus]:
    """Read several endpoints (a router's members: each URL with its credentials), at most
    ``PROBES_AT_ONCE`` at a time, all within ``timeout`` seconds however many they are. One that
    cannot be read, or whose turn came too late, is a status saying why, not an error: the
    others are still worth showing."""
    parsed = [(parse_endpoint_url(url), dict(headers)) for url, headers in endpoints]

    async def every() -> list[EndpointStatus]:
        ends = time.monotonic() + timeout
        gate = asyncio.Semaphore(PROBES_AT_ONCE)

        async def one(url: httpx.URL, headers: dict[str, str]) -> EndpointStatus:
            async with gate:
                left = ends - time.monotonic()
                if left <= 0:
                    return EndpointStatus(
                        shown_url(url),
                        f"not read: --timeout {seconds(timeout)} s was up",
                        ready=False,
                    )
                try:
                    return await _read_status(client, url, headers, limit=left)
                except PromptwireError as exc:
                    why = str(exc.args[0]) if exc.args else str(exc)
                    return EndpointStatus(shown_url(url), why, ready=False)

        async with _client(timeout) as client:
            return list(await asyncio.gather(*(one(url, headers) for url, headers in parsed)))

    return asyncio.run(every())


def seconds(value: float) -> str:
    """Seconds as ``status`` shows them: three significant digits, none after the point past 1000
    (``3.69``, ``10``, ``0.25``, ``3600``), not ``3.68877``."""
    return f"{value:.3g}" if abs(value) < 1000 or not math.isfinite(value) else f"{value:.0f}"


def shown_url(url: httpx.URL) -> str:
    """An endpoint as ``status`` shows it: no query (it may hold a token) or fragment."""
    return str(url.copy_with(query=None, fragment=None))


def _client(timeout: float) -> httpx.AsyncClient:
    """The one client of a ``status`` command, for every endpoint it reads (one SSL context, no
    cookies kept); each request brings its endpoint's headers. Redirects are not followed."""
    return stateless_async_client(
        timeout=timeout, limits=httpx.Limits(max_connections=PROBES_AT_ONCE)
    )


def _under(endpoint: httpx.URL, route: str) -> httpx.URL:
    """``route`` under the endpoint's path, its query kept (``https://h/v1?k=x`` gives
    ``https://h/v1/health?k=x``)."""
    return endpoint.copy_with(path=endpoint.path.rstrip("/") + route)


async def _read_status(
    client: httpx.AsyncClient, endpoint: httpx.URL, headers: dict[str, str], *, limit: float
) -> EndpointStatus:
    label = shown_url(endpoint)
    where = _under(endpoint, "/health")
    try:
        # One deadline for everything: httpx's own timeouts restart with every byte, so an
        # endpoint dripping its answer would hold the command for as long as it liked.
        async with asyncio.timeout(limit):
            health = await _get(client, where, headers, MAX_HEALTH_BYTES)
            status = _health(label, shown_url(where), health)
            where = _under(endpoint, "/metrics")
            metrics = await _get(client, where, headers, MAX_METRICS_BYTES)
    except TimeoutError:
        raise EndpointTimeoutError(
            f"no answer within {seconds(limit)} s (an endpoint scaled to zero starts a container "
            "for this request, which can take minutes: try a longer --timeout)",
            url=shown_url(where),
        ) from None
    if metrics.status_code == 404:
        status.metrics = "off on this server (GET /metrics answered 404)"
    elif metrics.status_code in (401, 403):
        status.metrics = (
            f"refused ({metrics.status_code}): give the endpoint's token (--api-key or "
            "PROMPTWIRE_API_KEY)"
        )
    elif metrics.status_code != 200:
        status.metrics = f"GET /metrics answered {metrics.status_code}"
    else:
        try:
            samples = parse_metrics(metrics.body.decode("utf-8", errors="replace"))
        except (ValueError, TypeError, IndexError, OverflowError):
            status.metrics = "unreadable (GET /metrics answered something not Prometheus text)"
        else:
            _summarize(status, samples)
    return status


@dataclass
class _Answer:
    status_code: int
    body: bytes


async def _get(
    client: httpx.AsyncClient, url: httpx.URL, headers: dict[str, str], limit: int
) -> _Answer:
    """The answer to ``GET url``, its body read to at most ``limit`` bytes (decoded); errors
    show the URL without its query."""
    try:
        async with client.stream("GET", url, headers=headers) as response:
            body = bytearray()
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > limit:
                    raise ProtocolError(
                        f"the answer is larger than {limit // MIB} MiB: not a prompt endpoint's",
                        url=shown_url(url),
                    )
            return _Answer(response.status_code, bytes(body))
    except httpx.TimeoutException:
        raise TimeoutError from None  # the deadline's own error, said once above
    except httpx.TransportError as exc:
        raise EndpointConnectError(
            f"could not reach the endpoint ({type(exc).__name__})", url=shown_url(url)
        ) from None


def _health(url: str, where: str, response: _Answer) -> EndpointStatus:
    """What ``GET where`` (the ``/health`` of ``url``, both as shown) says."""
    try:
        body = parse_json(response.body)
    except ValueError:
        body = None
    if response.status_code == 200 and isinstance(body, dict):
        model, protocol = body.get("model"), body.get("protocol", "1")
        return EndpointStatus(
            url,
            "ok",
            ready=True,
            model=model if isinstance(model, str) else None,
            protocol=protocol if isinstance(protocol, str) else None,
        )
    if response.status_code == 503:
        return EndpointStatus(url, "not ready (the model is loading)", ready=False)
    if response.status_code == 404:
        raise EndpointError("no /health here: is it a prompt endpoint?", url=where)
    if response.status_code == 200:
        return EndpointStatus(url, "GET /health answered 200 without a JSON object", ready=False)
    return EndpointStatus(url, f"GET /health answered {response.status_code}", ready=False)


def parse_metrics(text: str) -> list[Sample]:
    """The samples of a Prometheus text exposition, read by prometheus-client's parser."""
    try:
        from prometheus_client.parser import text_string_to_metric_families
    except ImportError:
        raise ConfigurationError(
            "reading /metrics needs prometheus-client: pip install 'promptwire[server]'"
        ) from None
    return [
        Sample(sample.name, dict(sample.labels), sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    ]


def _total(samples: Iterable[Sample], name: str, **match: Any) -> float | None:
    found = [
        s.value
        for s in samples
        if s.name == name
        and math.isfinite(s.value)  # NaN and infinities say nothing a summary can show
        and all(check(s.labels) for check in match.values())
    ]
    return sum(found) if found else None


def _summarize(status: EndpointStatus, samples: list[Sample]) -> None:
    def not_plumbing(labels: dict[str, str]) -> bool:
        return labels.get("route") not in PLUMBING_ROUTES

    for sample in samples:
        if sample.name == "promptwire_info":
            status.version = sample.labels.get("version")
            status.model = status.model or sample.labels.get("model") or None
            status.protocol = status.protocol or sample.labels.get("protocol")
        elif sample.name == "promptwire_cold_start_seconds" and math.isfinite(sample.value):
            status.cold_start[sample.labels.get("phase", "?")] = sample.value
    in_flight = _total(samples, "promptwire_requests_in_flight", route=not_plumbing)
    status.in_flight = None if in_flight is None else int(in_flight)
    queued = _total(samples, "promptwire_requests_queued")
    status.queued = None if queued is None else int(queued)
    answered = _total(samples, "promptwire_requests_total", route=not_plumbing)
    if answered is not None:
        status.answered = int(answered)
        status.client_errors = int(
            _total(
                samples,
                "promptwire_requests_total",
                route=not_plumbing,
                status=lambda labels: labels.get("status", "").startswith("4"),
            )
            or 0
        )
        status.server_errors = int(
            _total(
                samples,
                "promptwire_requests_total",
                route=not_plumbing,
                status=lambda labels: labels.get("status", "").startswith("5"),
            )
            or 0
        )
    used = _total(samples, "promptwire_engine_cache_pages_used")
    free = _total(samples, "promptwire_engine_cache_pages_free")
    status.cache_used = None if used is None else int(used)
    status.cache_free = None if free is None else int(free)
    streams = _total(samples, "promptwire_stream_tokens_per_second_count")
    rate_sum = _total(samples, "promptwire_stream_tokens_per_second_sum")
    if streams and rate_sum is not None:
        status.streams = int(streams)
        status.tokens_per_second = rate_sum / streams
    completion = _total(samples, "promptwire_completion_tokens_total")
    status.completion_tokens = int(completion or 0)
    firsts = _total(samples, "promptwire_time_to_first_token_seconds_count")
    first_sum = _total(samples, "promptwire_time_to_first_token_seconds_sum")
    if firsts and first_sum is not None:
        status.first_token = first_sum / firsts
