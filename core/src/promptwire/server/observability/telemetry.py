"""OpenTelemetry traces, for operators who install the ``opentelemetry`` extra
(``pip install 'promptwire[opentelemetry]'``) and turn them on (``PROMPTWIRE_OPENTELEMETRY=true``).

The server's spans come from the official FastAPI instrumentation; promptwire adds to each
request's server span what only it knows: the request id, the route, the token counts, the time
to first token, the finish reason and the error type. Outgoing httpx requests are traced by the
official httpx instrumentation, which also sends the trace context (``traceparent``): a client
that calls ``instrument_httpx()`` gets the server's spans in its own traces.

Where the spans go (an exporter, a sampler) is the operator's choice, made with OpenTelemetry's
own SDK or environment variables; without one, OpenTelemetry records nothing. Nothing here
imports OpenTelemetry until a function is called.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from promptwire.server.observability._request_context import RequestRecord

INSTALL_HINT = "OpenTelemetry is not installed: pip install 'promptwire[opentelemetry]'"


def instrument_server(app: Any, tracer_provider: Any = None) -> None:
    """Trace every request ``app`` (a FastAPI app) serves, one server span each."""
    try:
        from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
    except ImportError as exc:
        raise ImportError(INSTALL_HINT) from exc
    # The ASGI messages' own spans ("http send") would add one span per streamed token.
    FastAPIInstrumentor.instrument_app(
        app, tracer_provider=tracer_provider, exclude_spans=["receive", "send"]
    )


def instrument_httpx(tracer_provider: Any = None) -> None:
    """Trace every httpx request of this process (promptwire's clients included), sending the
    trace context along. Calling it again does nothing."""
    try:
        from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
    except ImportError as exc:
        raise ImportError(INSTALL_HINT) from exc
    instrumentor = HTTPXClientInstrumentor()
    if not instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.instrument(tracer_provider=tracer_provider)


def span_annotator() -> Callable[[RequestRecord], None]:
    """A function that puts a finished request's figures on its server span (the current span
    where the request observer runs)."""
    from opentelemetry import trace

    def annotate(record: RequestRecord) -> None:
        span = trace.get_current_span()
        if not span.is_recording():
            return
        attributes: dict[str, Any] = {
            "promptwire.request_id": record.request_id,
            "promptwire.route": record.route,
        }
        optional: dict[str, Any] = {
            "promptwire.prompt_tokens": record.prompt_tokens,
            "promptwire.completion_tokens": record.completion_tokens,
            "promptwire.finish_reason": record.finish_reason,
            "promptwire.error_type": record.error_type,
            "promptwire.time_to_first_token_s": None
            if record.first_token is None
            else record.first_token - record.started,
        }
        attributes.update((key, value) for key, value in optional.items() if value is not None)
        span.set_attributes(attributes)

    return annotate


__all__ = ["INSTALL_HINT", "instrument_httpx", "instrument_server", "span_annotator"]
