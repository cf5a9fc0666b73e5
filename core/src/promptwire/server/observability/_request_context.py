"""What the server learns about one request while serving it, for its metrics, log line and
span: its id, route, status, error type, token counts, first token and finish reason.

The observing middleware (``promptwire.server.observability._observe``) makes a ``RequestRecord``
for every HTTP request and makes it current for everything that runs on the request's behalf
(routes, exception handlers, the tasks that stream an answer). Any route, including ones added
later, gets counted without change: errors written after ``note_error`` carry the request id and
set the error type, and the observed engine notes tokens and timing for whichever route calls it."""

from __future__ import annotations

import contextvars
import re
import time
from dataclasses import dataclass
from typing import Any

#: An incoming ``X-Request-ID`` is kept when it is this short and plain (it ends up in logs and
#: headers); otherwise the server makes its own.
REQUEST_ID_PATTERN = re.compile(r"[A-Za-z0-9._:\-]{1,128}")
REQUEST_ID_HEADER = b"x-request-id"


@dataclass(slots=True)
class RequestRecord:
    """One request, as it is being served. Times are ``time.perf_counter()`` readings."""

    request_id: str
    method: str
    route: str
    started: float
    status: int = 0
    error_type: str | None = None
    stream: bool = False
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    first_token: float | None = None
    finish_reason: str | None = None
    generations: int = 0
    """Generations begun for the request (an engine's ``stream`` entered)."""
    prompt: str | None = None
    """The prompt text: set only when the operator opted in to logging prompts."""
    figures: Any = None
    """What the server's metrics count for the request's route (``ServerMetrics``), if on."""

    def note_first_token(self) -> bool:
        """The request's first token is here; False when it had one already."""
        if self.first_token is not None:
            return False
        self.first_token = time.perf_counter()
        return True

    def note_finish(self, finish_reason: str, prompt_tokens: int, completion_tokens: int) -> None:
        """A generation finished; several (one request, several choices) add up."""
        self.finish_reason = finish_reason
        self.prompt_tokens = (self.prompt_tokens or 0) + prompt_tokens
        self.completion_tokens = (self.completion_tokens or 0) + completion_tokens


_current: contextvars.ContextVar[RequestRecord | None] = contextvars.ContextVar(
    "promptwire_request", default=None
)


def current_request() -> RequestRecord | None:
    """The request being served here, or None outside an observed request."""
    return _current.get()


def set_current(record: RequestRecord | None) -> contextvars.Token[RequestRecord | None]:
    return _current.set(record)


def reset_current(token: contextvars.Token[RequestRecord | None]) -> None:
    _current.reset(token)


def note_error(error_type: str) -> str | None:
    """Count the current request under ``error_type``; its id, for the error body (None outside
    an observed request)."""
    record = _current.get()
    if record is None:
        return None
    record.error_type = error_type
    return record.request_id
