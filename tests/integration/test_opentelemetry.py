"""OpenTelemetry, when the operator turns it on: the official FastAPI and httpx instrumentation
make the spans, promptwire puts the request id and token counts on the server span, and a
client's trace continues into the server. Off (the default), none of it is imported."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from promptwire.server import create_app
from promptwire.server.observability import Observability
from promptwire_modal_dummy.engine import DummyEngine
from promptwire_modal_dummy.settings import DummySettings

from tests.support.servers import serve_asgi

pytest.importorskip("opentelemetry.instrumentation.fastapi")

from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)
from opentelemetry.trace import SpanKind


@pytest.fixture()
def spans() -> Iterator[tuple[TracerProvider, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider, exporter
    HTTPXClientInstrumentor().uninstrument()  # instrumenting httpx is process-wide


def _finished(exporter: InMemorySpanExporter, kind: SpanKind, count: int) -> list[ReadableSpan]:
    deadline = time.monotonic() + 10
    while True:
        found = [s for s in exporter.get_finished_spans() if s.kind is kind]
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.01)


def test_server_spans_carry_the_request_id_and_token_counts(
    spans: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    provider, exporter = spans
    options = Observability(opentelemetry=True, tracer_provider=provider)
    app = create_app(DummyEngine(DummySettings(echo=True)), observability=options)
    with serve_asgi(app) as server:
        reply = httpx.post(server.url, json={"prompt": "a b c"}, headers={"X-Request-ID": "otel-1"})
        assert reply.status_code == 200
        refused = httpx.post(server.url, json={})
        assert refused.status_code == 422
        streamed = httpx.post(
            server.url,
            json={"prompt": "d e f g", "stream": True},
            headers={"X-Request-ID": "otel-2"},
        )
        assert streamed.status_code == 200 and "event: done" in streamed.text
        (ok, bad, stream) = _finished(exporter, SpanKind.SERVER, 3)
    attributes: dict[str, Any] = dict(ok.attributes or {})
    assert attributes["promptwire.request_id"] == "otel-1"
    assert attributes["promptwire.route"] == "/"
    assert attributes["promptwire.prompt_tokens"] == 3
    assert attributes["promptwire.completion_tokens"] == 3
    assert attributes["promptwire.finish_reason"] == "stop"
    assert attributes["promptwire.time_to_first_token_s"] >= 0
    # The instrumentation's own attribute, named by the semantic conventions it was set to.
    assert attributes.get("http.response.status_code", attributes.get("http.status_code")) == 200
    # A stream's span ends with its last event, the figures on it by then.
    streaming = dict(stream.attributes or {})
    assert streaming["promptwire.request_id"] == "otel-2"
    assert streaming["promptwire.completion_tokens"] == 4
    assert streaming["promptwire.finish_reason"] == "stop"
    failed = dict(bad.attributes or {})
    assert failed["promptwire.error_type"] == "invalid_request"
    assert failed["promptwire.request_id"] == refused.headers["x-request-id"]
    # httpx was instrumented too: the client's span is the server span's parent, one trace.
    clients = _finished(exporter, SpanKind.CLIENT, 3)
    parent = next(c for c in clients if c.context.span_id == ok.parent.span_id)  # type: ignore[union-attr]
    assert parent.context.trace_id == ok.context.trace_id


#: One request to a server with the defaults, run in a process of its own (what OpenTelemetry
#: imports and records is the whole process's) between a test's own code before and after.
_ONE_REQUEST = (
    "from promptwire.server import BackgroundServer, create_app\n"
    "from promptwire_modal_dummy.engine import DummyEngine\n"
    "import httpx\n"
    "with BackgroundServer(create_app(DummyEngine())) as server:\n"
    "    assert httpx.post(server.url, json={'prompt': 'p'}).status_code == 200\n"
)


def _printed(before: str, after: str) -> str:
    """What a process printed that runs ``before``, one request, then ``after``."""
    code = before + _ONE_REQUEST + after
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    return result.stdout.strip()


def test_off_nothing_of_opentelemetrys_instrumentation_is_imported() -> None:
    imported = _printed(
        "import sys\n",
        "print(sorted(m for m in sys.modules if m.startswith('opentelemetry.instrumentation')))\n",
    )
    assert imported == "[]"


def test_off_no_span_is_recorded_even_with_a_tracer_provider_in_the_process() -> None:
    """FastAPI's own OpenTelemetry bridge (0.165 and later) would record a server span for
    every request of a process that has a global tracer provider (one that
    ``opentelemetry-instrument`` set up, say), promptwire's setting off: the app turns it off,
    and traces only when promptwire's setting asks."""
    recorded = _printed(
        "from opentelemetry import trace\n"
        "from opentelemetry.sdk.trace import TracerProvider\n"
        "from opentelemetry.sdk.trace.export import SimpleSpanProcessor\n"
        "from opentelemetry.sdk.trace.export.in_memory_span_exporter import "
        "InMemorySpanExporter\n"
        "exporter = InMemorySpanExporter()\n"
        "provider = TracerProvider()\n"
        "provider.add_span_processor(SimpleSpanProcessor(exporter))\n"
        "trace.set_tracer_provider(provider)\n",
        "with trace.get_tracer('check').start_as_current_span('the test'):\n"
        "    pass\n"
        "print(sorted(span.name for span in exporter.get_finished_spans()))\n",
    )
    # The provider records (the test's own span), and the server made none.
    assert recorded == "['the test']", recorded
