"""Operating a server: what ``create_app`` adds so its operator can see what it does.

``observe(app, engine, options)`` is the one hook-up point: it serves ``GET /metrics``, puts the
request observer (request ids, metrics, the request log, span attributes) outside everything
else the app has, turns on OpenTelemetry when asked, and returns the engine the routes must use
(the observed one). Options come from ``create_app(observability=)``, or from the environment
through ``Observability.from_settings``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI
from starlette.responses import Response

from promptwire._logs import ensure_output
from promptwire.engine import Engine
from promptwire.server.observability._metrics import METRICS_PATH, ServerMetrics
from promptwire.server.observability._observe import RequestObserver, RouteNames
from promptwire.server.observability._observed_engine import ObservedEngine
from promptwire.server.observability._request_context import RequestRecord
from promptwire.server.observability._request_log import LogFormat, RequestLog
from promptwire.settings import PromptwireSettings

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Observability:
    """What a server shows of itself (defaults: metrics and a plain-text request log)."""

    metrics: bool = True
    """Serve ``GET /metrics``."""
    metrics_public: bool = False
    """Serve it without the bearer token (it shows no prompt and no secret, but does show load
    and the model's name)."""
    request_log: bool = True
    log_format: LogFormat = "text"
    log_prompts: bool = False
    """Put each request's prompt in its log line: for debugging, with the users' consent."""
    opentelemetry: bool = False
    """Trace requests with OpenTelemetry (the ``opentelemetry`` extra)."""
    tracer_provider: Any = None
    """The OpenTelemetry tracer provider to use; None: the global one."""

    @classmethod
    def from_settings(cls, settings: PromptwireSettings | None = None) -> Observability:
        settings = settings or PromptwireSettings()
        return cls(
            metrics=settings.metrics,
            metrics_public=settings.metrics_public,
            request_log=settings.request_log,
            log_format=settings.log_format,
            log_prompts=settings.log_prompts,
            opentelemetry=settings.opentelemetry,
        )

    def public_paths(self, health_path: str) -> frozenset[str]:
        """The paths served without the bearer token."""
        if self.metrics and self.metrics_public:
            return frozenset({health_path, METRICS_PATH})
        return frozenset({health_path})


def observe(app: FastAPI, engine: Engine, options: Observability) -> Engine:
    """Add what ``options`` asks for to ``app`` (see the module); returns the engine to serve."""
    metrics = ServerMetrics(engine) if options.metrics else None
    if metrics is not None:
        app.state.metrics = metrics

        async def serve_metrics() -> Response:
            return metrics.response()

        app.add_api_route(METRICS_PATH, serve_metrics, methods=["GET"], include_in_schema=False)
    request_log = RequestLog(options.log_format) if options.request_log else None
    app.state.logs_requests = request_log is not None
    if request_log is not None:
        ensure_output()
    on_finish: Callable[[RequestRecord], None] | None = None
    if options.opentelemetry:
        from promptwire.server.observability import telemetry

        on_finish = telemetry.span_annotator()
    app.add_middleware(
        RequestObserver,
        routes=RouteNames(app),
        metrics=metrics,
        request_log=request_log,
        on_finish=on_finish,
    )
    if options.opentelemetry:
        # After the observer: the server span must be open around it (it annotates the span).
        telemetry.instrument_server(app, options.tracer_provider)
        telemetry.instrument_httpx(options.tracer_provider)
    observed = ObservedEngine(engine, metrics, log_prompts=options.log_prompts)
    app.state.engine = observed  # for routes defined in other modules (request.app.state.engine)
    return observed


def logs_requests(app: Any) -> bool:
    """Whether ``app`` logs its requests itself (then the server's access log would repeat it)."""
    return getattr(getattr(app, "state", None), "logs_requests", False) is True
