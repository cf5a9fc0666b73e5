"""``GET /metrics``: what the server is doing, in the Prometheus text format.

Every app has a registry of its own (several apps in one process, as in the tests, do not mix
their counts), written by prometheus-client. What it holds:

- requests by route, status and error type; requests in flight by route; requests whose
  generation waits for its first token (in the engine's queue, or in prefill);
- time to first token and whole-request latency as histograms, by route;
- prompt and completion tokens by route; tokens per second of each generation (after its first
  token), as a histogram;
- ``promptwire_info`` (version, model, protocol), the cold start's phases
  (``promptwire.modal.coldstart``), and whatever the engine reports through ``Engine.metrics()``
  as ``promptwire_engine_<name>``.

Per request this costs a dictionary lookup and a few additions (see ``ServerMetrics``); engine
and cold-start figures are read only when scraped.
"""

from __future__ import annotations

import logging
import re
from bisect import bisect_left
from collections.abc import Iterable, Iterator, Sequence

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString
from starlette.responses import Response

import promptwire
from promptwire.engine import Engine, EngineMetric
from promptwire.modal import coldstart
from promptwire.protocol import PROTOCOL_VERSION
from promptwire.server.observability._request_context import RequestRecord

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


class _Histogram:
    """Observations in buckets (``bounds``: their upper bounds, inclusive, ascending; one more
    bucket above them, ``+Inf``), and their sum."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    def cumulative(self) -> list[tuple[str, float]]:
        """The buckets as Prometheus writes them: ``(le, observations <= le)``."""
        buckets, total = [], 0
        for bound, count in zip(
            (*map(floatToGoString, self.bounds), "+Inf"), self.counts, strict=True
        ):
            total += count
            buckets.append((bound, float(total)))
        return buckets


class _RouteFigures:
    """What is counted for one route."""

    __slots__ = (
        "completion_tokens",
        "duration",
        "first_token",
        "generated",
        "in_flight",
        "prompt_tokens",
        "rate",
    )

    def __init__(self) -> None:
        self.in_flight = 0
        self.generated = False
        """Whether a generation has finished for the route (its token counts are shown)."""
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.duration = _Histogram(LATENCY_BUCKETS)
        self.first_token = _Histogram(LATENCY_BUCKETS)
        self.rate = _Histogram(RATE_BUCKETS)


class ServerMetrics:
    """The server's own metrics, in a registry of their own.

    Counted in plain Python numbers, not prometheus-client's metric objects, and turned into
    prometheus-client's metric families when scraped: every figure changes on the event loop
    (the observing middleware and the observed engine run there, and so does a scrape), so no
    lock is needed, and a request costs a few additions instead of a dozen locked updates (about
    10 us less per request, measured). The exposition is still prometheus-client's.
    """

    def __init__(self, engine: Engine) -> None:
        self.registry = CollectorRegistry()
        self.routes: dict[str, _RouteFigures] = {}
        self.requests: dict[tuple[str, int, str], int] = {}
        """Answered requests by (route, status, error type)."""
        self.queued = 0
        """Generations begun that have no first token yet."""
        self.registry.register(_ServerCollector(self))
        self.registry.register(EngineCollector(engine))
        self.registry.register(ColdStartCollector())

    def _route(self, route: str) -> _RouteFigures:
        figures = self.routes.get(route)
        if figures is None:
            figures = self.routes[route] = _RouteFigures()
        return figures

    def request_started(self, record: RequestRecord) -> None:
        figures = self.routes.get(record.route) or self._route(record.route)
        figures.in_flight += 1
        record.figures = figures

    def request_finished(self, record: RequestRecord, duration: float) -> None:
        figures: _RouteFigures = record.figures
        figures.in_flight -= 1
        key = (record.route, record.status, record.error_type or "")
        self.requests[key] = self.requests.get(key, 0) + 1
        figures.duration.observe(duration)
        if record.prompt_tokens is not None:
            figures.generated = True
            figures.prompt_tokens += record.prompt_tokens
        if record.completion_tokens is not None:
            figures.generated = True
            figures.completion_tokens += record.completion_tokens

    def first_token_seen(self, record: RequestRecord) -> None:
        """Observed as it happens (a long stream's first token shows before its end)."""
        assert record.first_token is not None
        figures = record.figures or self._route(record.route)
        figures.first_token.observe(record.first_token - record.started)

    def stream_finished(self, record: RequestRecord | None, tokens_per_second: float) -> None:
        figures = (
            self._route("") if record is None else (record.figures or self._route(record.route))
        )
        figures.rate.observe(tokens_per_second)

    def response(self) -> Response:
        return Response(generate_latest(self.registry), media_type=CONTENT_TYPE_LATEST)


class _ServerCollector(Collector):
    """``ServerMetrics``' figures as prometheus-client's metric families, at each scrape."""

    def __init__(self, metrics: ServerMetrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        metrics = self.metrics
        routes = sorted(metrics.routes.items())
        requests = CounterMetricFamily(
            f"{PREFIX}_requests",
            "Requests answered, by route, HTTP status and protocol error type ('' for none).",
            labels=("route", "status", "error_type"),
        )
        for (route, status, error_type), count in sorted(metrics.requests.items()):
            requests.add_metric((route, str(status), error_type), count)
        yield requests
        in_flight = GaugeMetricFamily(
            f"{PREFIX}_requests_in_flight",
            "Requests being served now, by route.",
            labels=("route",),
        )
        for route, figures in routes:
            in_flight.add_metric((route,), figures.in_flight)
        yield in_flight
        yield GaugeMetricFamily(
            f"{PREFIX}_requests_queued",
            "Generations begun that have no first token yet: waiting in the engine's queue or "
            "in prefill.",
            value=metrics.queued,
        )
        histograms = (
            (
                "time_to_first_token_seconds",
                "From a request's arrival to its first generated token, by route.",
                "first_token",
            ),
            (
                "request_duration_seconds",
                "From a request's arrival to the end of its answer (a stream's last event), by "
                "route.",
                "duration",
            ),
            (
                "stream_tokens_per_second",
                "Tokens per second of one generation after its first token, by route.",
                "rate",
            ),
        )
        for name, documentation, attribute in histograms:
            family = HistogramMetricFamily(f"{PREFIX}_{name}", documentation, labels=("route",))
            for route, figures in routes:
                histogram: _Histogram = getattr(figures, attribute)
                if any(histogram.counts):
                    family.add_metric((route,), histogram.cumulative(), histogram.sum)
            yield family
        for name, documentation, attribute in (
            ("prompt_tokens", "Prompt tokens of finished generations, by route.", "prompt_tokens"),
            (
                "completion_tokens",
                "Completion tokens of finished generations, by route.",
                "completion_tokens",
            ),
        ):
            counter = CounterMetricFamily(f"{PREFIX}_{name}", documentation, labels=("route",))
            for route, figures in routes:
                if figures.generated:
                    counter.add_metric((route,), getattr(figures, attribute))
            yield counter


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
        info.add_metric(
            (promptwire.__version__, self.engine.model_name or "", PROTOCOL_VERSION), 1.0
        )
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
    """The cold start's phases of this process (``promptwire.modal.coldstart``)."""

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
