"""``GET /metrics``: what the server is doing, in the Prometheus text format.

Every app has a registry of its own (several apps in one process, as in the tests, do not mix
their counts), written by prometheus-client. What it holds:

- requests by route, status and error type; requests in flight by route; requests whose
  generation waits for its first token (in the engine's queue, or in prefill);
- time to first token and whole-request latency as histograms, by route;
- prompt and completion tokens by route; tokens per second of each generation (after its first
  token), as a histogram;
- ``promptwire_info`` (version, model, protocol), the cold start's phases
  (``promptwire.coldstart``), and whatever the engine reports through ``Engine.metrics()``
  as ``promptwire_engine_<name>``.

Per request this costs a few dictionary lookups and lock-protected additions; engine and
cold-start figures are read only when scraped.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Iterator
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.responses import Response

from promptwire import __version__, coldstart
from promptwire.engine import Engine, EngineMetric
from promptwire.protocol import PROTOCOL_VERSION
from promptwire.server.request_context import RequestRecord

logger = logging.getLogger(__name__)

METRICS_PATH = "/metrics"
PREFIX = "promptwire"
ENGINE_PREFIX = f"{PREFIX}_engine_"

#: Seconds: from a few milliseconds (an instant engine) to a cold start's first request.
LATENCY_BUCKETS = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
)  # fmt: skip
#: Tokens per second of one stream: a CPU stand-in to a small model on a large GPU.
RATE_BUCKETS = (1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0)
_METRIC_NAME = re.compile(r"[a-z_][a-z0-9_]*")


class ServerMetrics:
    """The server's own metrics, in a registry of their own."""

    def __init__(self, engine: Engine) -> None:
        self.registry = CollectorRegistry()
        registry = self.registry
        self.requests = Counter(
            f"{PREFIX}_requests",
            "Requests answered, by route, HTTP status and protocol error type ('' for none).",
            ("route", "status", "error_type"),
            registry=registry,
        )
        self.in_flight = Gauge(
            f"{PREFIX}_requests_in_flight",
            "Requests being served now, by route.",
            ("route",),
            registry=registry,
        )
        self.queued = Gauge(
            f"{PREFIX}_requests_queued",
            "Generations begun that have no first token yet: waiting in the engine's queue or "
            "in prefill.",
            registry=registry,
        )
        self.first_token = Histogram(
            f"{PREFIX}_time_to_first_token_seconds",
            "From a request's arrival to its first generated token, by route.",
            ("route",),
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.duration = Histogram(
            f"{PREFIX}_request_duration_seconds",
            "From a request's arrival to the end of its answer (a stream's last event), by route.",
            ("route",),
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.prompt_tokens = Counter(
            f"{PREFIX}_prompt_tokens",
            "Prompt tokens of finished generations, by route.",
            ("route",),
            registry=registry,
        )
        self.completion_tokens = Counter(
            f"{PREFIX}_completion_tokens",
            "Completion tokens of finished generations, by route.",
            ("route",),
            registry=registry,
        )
        self.stream_rate = Histogram(
            f"{PREFIX}_stream_tokens_per_second",
            "Tokens per second of one generation after its first token, by route.",
            ("route",),
            buckets=RATE_BUCKETS,
            registry=registry,
        )
        registry.register(EngineCollector(engine))
        registry.register(ColdStartCollector())
        # labels() takes a lock and builds a key each time; the children are looked up once.
        self._children: dict[tuple[Any, ...], Any] = {}

    def _child(self, metric: Any, *labels: str) -> Any:
        key = (id(metric), *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def request_started(self, route: str) -> None:
        self._child(self.in_flight, route).inc()

    def request_finished(self, record: RequestRecord, duration: float) -> None:
        route = record.route
        self._child(self.in_flight, route).dec()
        self._child(self.requests, route, str(record.status), record.error_type or "").inc()
        self._child(self.duration, route).observe(duration)
        if record.first_token is not None:
            self._child(self.first_token, route).observe(record.first_token - record.started)
        if record.prompt_tokens is not None:
            self._child(self.prompt_tokens, route).inc(record.prompt_tokens)
        if record.completion_tokens is not None:
            self._child(self.completion_tokens, route).inc(record.completion_tokens)

    def stream_finished(self, route: str, tokens_per_second: float) -> None:
        self._child(self.stream_rate, route).observe(tokens_per_second)

    def response(self) -> Response:
        return Response(generate_latest(self.registry), media_type=CONTENT_TYPE_LATEST)


class EngineCollector(Collector):
    """``promptwire_info`` and the engine's own figures, read at each scrape. An engine whose
    ``metrics()`` fails, or reports a name Prometheus cannot take, costs the scrape those
    figures only (and one warning), never the answer."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._warned: set[str] = set()

    def collect(self) -> Iterator[Metric]:
        info = GaugeMetricFamily(
            f"{PREFIX}_info",
            "The server: promptwire's version, the model served and the protocol version.",
            labels=("version", "model", "protocol"),
        )
        info.add_metric((__version__, self.engine.model_name or "", PROTOCOL_VERSION), 1.0)
        yield info
        try:
            samples = list(self.engine.metrics())
        except Exception as exc:
            self._warn_once("metrics()", f"the engine's metrics() failed: {type(exc).__name__}")
            return
        yield from self._families(samples)

    def _families(self, samples: Iterable[EngineMetric]) -> Iterator[Metric]:
        families: dict[str, tuple[GaugeMetricFamily | CounterMetricFamily, tuple[str, ...]]] = {}
        for sample in samples:
            if not _METRIC_NAME.fullmatch(sample.name) or sample.kind not in ("gauge", "counter"):
                self._warn_once(sample.name, f"engine metric {sample.name!r} skipped: bad name")
                continue
            labels = tuple(sample.labels)
            if sample.name not in families:
                kind = CounterMetricFamily if sample.kind == "counter" else GaugeMetricFamily
                new = kind(ENGINE_PREFIX + sample.name, sample.documentation, labels=labels)
                families[sample.name] = (new, labels)
            family, expected = families[sample.name]
            if labels != expected:
                self._warn_once(
                    sample.name, f"engine metric {sample.name!r}: samples with other labels skipped"
                )
                continue
            family.add_metric(tuple(sample.labels.values()), float(sample.value))
        yield from (family for family, _ in families.values())

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            logger.warning("%s", message)


class ColdStartCollector(Collector):
    """The cold start's phases of this process (``promptwire.coldstart``)."""

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            f"{PREFIX}_cold_start_seconds",
            "Seconds each start-up phase of this process took; snapshot='true' for phases run "
            "before the memory snapshot this container was restored from.",
            labels=("phase", "snapshot"),
        )
        for phase in coldstart.phases():
            family.add_metric(
                (phase.name, "true" if phase.from_snapshot else "false"), phase.seconds
            )
        yield family
