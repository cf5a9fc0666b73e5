"""Operating a server: request ids, ``GET /metrics``, the request log and OpenTelemetry traces.

``_hookup``            ``observe``: what ``create_app`` adds, from the ``Observability`` options
``_observe``           the request observer, pure ASGI middleware outside everything else
``_request_context``   what the server learns about one request while serving it
``_observed_engine``   the engine as the routes see it, every generation observed
``_metrics``           the Prometheus registry and ``GET /metrics``
``_request_log``       one log line per request
``telemetry``          OpenTelemetry traces, for operators who install the extra
"""

from promptwire.server.observability._hookup import Observability

__all__ = ["Observability"]
