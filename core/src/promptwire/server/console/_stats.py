"""``GET /console/stats``: the server's own counters as one small JSON object, for the console's
charts.

Built only when asked, from what the metrics already count (``ServerMetrics``) and the engine's
own figures (``Engine.metrics()``): nothing is added to a request's path, so a server nobody
watches pays nothing, and one that is watched pays one of these a second. Counters are
cumulative and histograms are bucket counts: the page takes rates and windowed percentiles from
the difference between two answers.

The figures are those of the generation routes: a route of the console itself, ``/health``,
``/metrics`` and ``/v1/models`` would otherwise count the watcher's own polling as load.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Collection
from typing import Any

from promptwire.engine import Engine
from promptwire.server._guard import HEALTH_PATH
from promptwire.server.observability._metrics import LATENCY_BUCKETS, METRICS_PATH, ServerMetrics

logger = logging.getLogger(__name__)

#: Routes whose requests are not generations: left out of the load, latency and error figures.
NOT_GENERATIONS = frozenset(
    {HEALTH_PATH, METRICS_PATH, "/openapi.json", "/v1/models", "/v1/models/{name:path}"}
)


def stats(
    metrics: ServerMetrics | None,
    engine: Engine[Any],
    serving: bool,
    console_paths: Collection[str],
) -> dict[str, Any]:
    """The figures now (see the module). ``metrics`` None: the server counts nothing
    (``PROMPTWIRE_METRICS=false``); only the engine's own figures are given."""
    answer: dict[str, Any] = {
        "time": time.monotonic(),
        "model": engine.model_name,
        "ready": serving,
        "metrics": metrics is not None,
        "latency_bounds": LATENCY_BUCKETS,
        "engine": _engine_figures(engine),
    }
    if metrics is None:
        return answer
    skipped = NOT_GENERATIONS.union(console_paths)
    in_flight = prompt_tokens = completion_tokens = 0
    first_token = [0] * (len(LATENCY_BUCKETS) + 1)
    duration = [0] * (len(LATENCY_BUCKETS) + 1)
    for route, figures in list(metrics.routes.items()):
        if route in skipped:
            continue
        in_flight += figures.in_flight
        prompt_tokens += figures.prompt_tokens
        completion_tokens += figures.completion_tokens
        for total, counts in ((first_token, figures.first_token.counts),
                              (duration, figures.duration.counts)):  # fmt: skip
            for index, count in enumerate(counts):
                total[index] += count
    requests = 0
    errors: dict[str, int] = {}
    for (route, _status, error_type), count in list(metrics.requests.items()):
        if route in skipped:
            continue
        requests += count
        if error_type:
            errors[error_type] = errors.get(error_type, 0) + count
    answer.update(
        in_flight=in_flight,
        waiting=metrics.queued,
        requests=requests,
        errors=errors,
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        first_token=first_token,
        duration=duration,
    )
    return answer


def _engine_figures(engine: Engine[Any]) -> list[dict[str, Any]]:
    """The engine's own gauges and counters (as ``/metrics`` shows them, without the prefix);
    an engine whose ``metrics()`` fails costs the answer only these."""
    try:
        samples = list(engine.metrics())
    except Exception as exc:
        logger.debug("the engine's metrics() failed: %s", type(exc).__name__)
        return []
    figures = []
    for sample in samples:
        name = sample.name
        if sample.labels:
            name += "{" + ",".join(f"{k}={v}" for k, v in sample.labels.items()) + "}"
        figures.append(
            {
                "name": name,
                "kind": sample.kind,
                "value": float(sample.value),
                "help": sample.documentation,
            }
        )
    return figures
