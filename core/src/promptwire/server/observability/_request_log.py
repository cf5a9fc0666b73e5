"""One log line per request: id, method, route, status, error type, token counts, time to first
token, duration and finish reason.

Never the prompt (unless the operator opts in with ``PROMPTWIRE_LOG_PROMPTS``), never a header
(where tokens travel), never the raw path (a client chooses it): the route is the served route's
template, or ``other``. Plain text by default (``request request_id=… route=/ status=200 …``),
one JSON object per line with ``PROMPTWIRE_LOG_FORMAT=json``. Health checks and scrapes that
succeed are logged at DEBUG, so probes do not drown the requests.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Literal

from promptwire.server.observability._request_context import RequestRecord

logger = logging.getLogger("promptwire.requests")

#: Routes a load balancer, Prometheus or an open console page calls every few seconds.
QUIET_ROUTES = frozenset({"/health", "/metrics", "/console/stats"})

LogFormat = Literal["text", "json"]


class RequestLog:
    """Writes the line of a finished request to the ``promptwire.requests`` logger."""

    def __init__(self, log_format: LogFormat = "text") -> None:
        self.json = log_format == "json"

    def write(self, record: RequestRecord, duration: float) -> None:
        quiet = record.route in QUIET_ROUTES and record.status < 400
        level = logging.DEBUG if quiet else logging.INFO
        if not logger.isEnabledFor(level):
            return
        fields = self.fields(record, duration)
        if self.json:
            message = json.dumps({"event": "request", **fields})
        else:
            message = "request " + " ".join(
                f"{key}={_text(value)}" for key, value in fields.items()
            )
        logger.log(level, "%s", message)

    @staticmethod
    def fields(record: RequestRecord, duration: float) -> dict[str, Any]:
        """The line's fields, in order; those the request does not have are left out."""
        fields: dict[str, Any] = {
            "request_id": record.request_id,
            "method": record.method,
            "route": record.route,
            "status": record.status,
        }
        optional: dict[str, Any] = {
            "error": record.error_type,
            "stream": True if record.stream else None,
            "prompt_tokens": record.prompt_tokens,
            "completion_tokens": record.completion_tokens,
            "ttft_s": None
            if record.first_token is None
            else round(record.first_token - record.started, 6),
            "duration_s": round(duration, 6),
            "finish_reason": record.finish_reason,
            "prompt": record.prompt,
        }
        fields.update((key, value) for key, value in optional.items() if value is not None)
        return fields


def _text(value: Any) -> str:
    """A value of a plain-text line: words as they are, anything else quoted as JSON (so a
    prompt cannot forge a line or a field)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    text = str(value)
    if text and all(c.isalnum() or c in "._:/-" for c in text) and text.isascii():
        return text
    return json.dumps(text)
