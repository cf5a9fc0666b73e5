"""The request observer: pure ASGI middleware, outside everything else the app adds, that gives
every request an id and, once it is answered, counts it, logs it and annotates its span.

- The id is the request's ``X-Request-ID`` when it is short and plain
  (``request_context.REQUEST_ID_PATTERN``), else a new random one. It is returned as
  ``X-Request-ID`` on every answer and carried in error bodies, the log line and the span.
- The route is the template of the route serving the path (``/``, ``/health``, ``/v1/models``),
  or ``other``: routes added to the app later are keyed by their own path, and a client cannot
  create label values or log fields by inventing paths.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from promptwire.server._app_route import route_path
from promptwire.server.observability._metrics import ServerMetrics
from promptwire.server.observability._request_context import (
    REQUEST_ID_HEADER,
    REQUEST_ID_PATTERN,
    RequestRecord,
    reset_current,
    set_current,
)
from promptwire.server.observability._request_log import RequestLog

OTHER_ROUTE = "other"
#: Paths remembered with their route; beyond this many, routes with parameters are matched again.
MAX_KNOWN_PATHS = 1024


class RouteNames:
    """Which route template serves a path, looked up in the app's routes as they are when asked
    (so routes added after the app was made count too)."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self._known: dict[str, str] = {}

    def name(self, path: str) -> str:
        known = self._known.get(path)
        if known is not None:
            return known
        for route in self.app.routes:
            regex = getattr(route, "path_regex", None)
            if regex is not None and regex.match(path):
                name = str(route.path) or "/"
                break
        else:
            return OTHER_ROUTE
        if len(self._known) < MAX_KNOWN_PATHS:
            self._known[path] = name
        return name


def incoming_request_id(headers: list[tuple[bytes, bytes]]) -> str | None:
    for name, value in headers:
        if name == REQUEST_ID_HEADER:
            text = value.decode("latin-1")
            return text if REQUEST_ID_PATTERN.fullmatch(text) else None
    return None


def new_request_id() -> str:
    return os.urandom(12).hex()


class RequestObserver:
    """See the module. ``on_finish`` (tracing) gets each request's record once: just before the
    last byte of its answer goes out, while the server span that OpenTelemetry's instrumentation
    ends with that byte is still open; or, for a request that ends without a complete answer,
    when it ends."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        routes: RouteNames,
        metrics: ServerMetrics | None = None,
        request_log: RequestLog | None = None,
        on_finish: Callable[[RequestRecord], None] | None = None,
    ) -> None:
        self.app = app
        self.routes = routes
        self.metrics = metrics
        self.request_log = request_log
        self.on_finish = on_finish

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = incoming_request_id(scope["headers"]) or new_request_id()
        record = RequestRecord(
            request_id, scope["method"], self.routes.name(route_path(scope)), time.perf_counter()
        )
        id_header = (REQUEST_ID_HEADER, request_id.encode())
        on_finish = self.on_finish

        async def answer(message: Message) -> None:
            nonlocal on_finish
            if message["type"] == "http.response.start":
                record.status = message["status"]
                headers = message.get("headers", [])
                for name, value in headers:
                    if name == b"content-type" and value.startswith(b"text/event-stream"):
                        record.stream = True
                message = {**message, "headers": [*headers, id_header]}
            elif (
                on_finish is not None
                and message["type"] == "http.response.body"
                and not message.get("more_body", False)
            ):
                annotate = on_finish
                on_finish = None  # once
                annotate(record)
            await send(message)

        token = set_current(record)
        if self.metrics is not None:
            self.metrics.request_started(record)
        try:
            await self.app(scope, receive, answer)
        except BaseException:
            if record.status == 0:  # nothing was answered; the server will say 500
                record.status = 500
            record.error_type = record.error_type or "server_error"
            raise
        finally:
            reset_current(token)
            self._finish(record, on_finish)

    def _finish(
        self, record: RequestRecord, on_finish: Callable[[RequestRecord], None] | None
    ) -> None:
        duration = time.perf_counter() - record.started
        if record.error_type is None and (
            record.status == 499
            or (record.stream and record.generations and record.finish_reason is None)
        ):
            record.error_type = "client_disconnected"  # it left before the end of its answer
        if self.metrics is not None:
            self.metrics.request_finished(record, duration)
        if self.request_log is not None:
            self.request_log.write(record, duration)
        if on_finish is not None:  # not called yet: the answer never ended
            on_finish(record)
