"""``promptwire status URL``: what an endpoint is doing, from its ``/health`` and ``/metrics``.

One look at a running server, for its operator: which model and version it serves, how many
requests it holds and queues, how full the engine's cache is, how fast its streams go and what
its cold start cost. The metrics are read with prometheus-client's own parser (the ``server``
extra), imported only here.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

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
                    ", ".join(
                        f"{name} {seconds:.3f} s" for name, seconds in self.cold_start.items()
                    ),
                )
            )
        return rows


def read_status(
    url: str, *, headers: Mapping[str, str] | None = None, timeout: float = 10.0
) -> EndpointStatus:
    """Read ``url``'s health and metrics (``headers``: its credentials) within ``timeout``
    seconds in all, however slowly the endpoint answers."""
    if not url.startswith(("http://", "https://")):
        raise ConfigurationError(f"not an endpoint URL: {url!r} (http://… or https://…)")
    return asyncio.run(_read_status(url, dict(headers or {}), seconds=timeout))


def read_statuses(
    endpoints: Sequence[tuple[str, Mapping[str, str]]], *, timeout: float = 10.0
) -> list[EndpointStatus]:
    """Read several endpoints at once (a router's members: each URL with its credentials),
    within ``timeout`` seconds in all. One that cannot be read is a status saying why, not an
    error: the others are still worth showing."""
    for url, _ in endpoints:
        if not url.startswith(("http://", "https://")):
            raise ConfigurationError(f"not an endpoint URL: {url!r} (http://… or https://…)")

    async def one(url: str, headers: Mapping[str, str]) -> EndpointStatus:
        try:
            return await _read_status(url, dict(headers), seconds=timeout)
        except PromptwireError as exc:
            return EndpointStatus(url, str(exc.args[0]) if exc.args else str(exc), ready=False)

    async def every() -> list[EndpointStatus]:
        return list(await asyncio.gather(*(one(url, headers) for url, headers in endpoints)))

    return asyncio.run(every())


async def _read_status(url: str, headers: dict[str, str], *, seconds: float) -> EndpointStatus:
    base = url.rstrip("/")
    where = base + "/health"
    try:
        # One deadline for everything: httpx's own timeouts restart with every byte, so an
        # endpoint dripping its answer would hold the command for as long as it liked.
        async with (
            asyncio.timeout(seconds),
            httpx.AsyncClient(headers=headers, timeout=seconds) as client,
        ):
            health = await _get(client, where, MAX_HEALTH_BYTES)
            status = _health(url, health)
            where = base + "/metrics"
            metrics = await _get(client, where, MAX_METRICS_BYTES)
    except TimeoutError:
        raise EndpointTimeoutError(
            f"no answer within {seconds:g} s (an endpoint scaled to zero starts a container "
            "for this request, which can take minutes: try a longer --timeout)",
            url=where,
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


async def _get(client: httpx.AsyncClient, url: str, limit: int) -> _Answer:
    """The answer to ``GET url``, its body read to at most ``limit`` bytes (decoded)."""
    try:
        async with client.stream("GET", url) as response:
            body = bytearray()
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > limit:
                    raise ProtocolError(
                        f"the answer is larger than {limit // MIB} MiB: not a prompt endpoint's",
                        url=url,
                    )
            return _Answer(response.status_code, bytes(body))
    except httpx.TimeoutException:
        raise TimeoutError from None  # the deadline's own error, said once above
    except httpx.TransportError as exc:
        raise EndpointConnectError(
            f"could not reach the endpoint ({type(exc).__name__})", url=url
        ) from None


def _health(url: str, response: _Answer) -> EndpointStatus:
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
        raise EndpointError("no /health here: is it a prompt endpoint?", url=url)
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
