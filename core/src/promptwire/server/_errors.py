"""The protocol's error answers: ``RequestError`` (what a route raises to refuse a request) and
the JSON error body every non-2xx answer and stream ``error`` event carries."""

from __future__ import annotations

from collections.abc import (
    Mapping,
)

from sse_starlette import ServerSentEvent
from starlette.responses import Response

from promptwire.engine import (
    EngineError,
)
from promptwire.protocol import (
    EVENT_ERROR,
    ErrorBody,
    ErrorType,
)
from promptwire.server.observability._request_context import error_detail

STATUS_ERROR_TYPES = {
    400: ErrorType.BAD_REQUEST,
    401: ErrorType.UNAUTHORIZED,
    404: ErrorType.NOT_FOUND,
    405: ErrorType.METHOD_NOT_ALLOWED,
    408: ErrorType.REQUEST_TIMEOUT,
    413: ErrorType.TOO_LARGE,
    415: ErrorType.UNSUPPORTED_MEDIA_TYPE,
    422: ErrorType.INVALID_REQUEST,
    503: ErrorType.OVERLOADED,
}


class RequestError(Exception):
    """A request the server refuses; carries the protocol error to answer with."""

    def __init__(
        self,
        status_code: int,
        message: str,
        *,
        error_type: str | None = None,
        retry_after: float | None = None,
        close: bool = False,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.error_type = error_type or STATUS_ERROR_TYPES.get(status_code, ErrorType.SERVER_ERROR)
        self.message = message
        self.retry_after = retry_after
        self.close = close

    @classmethod
    def from_engine(cls, exc: EngineError) -> RequestError:
        return cls(
            exc.status_code, exc.message, error_type=exc.error_type, retry_after=exc.retry_after
        )


def error_response(
    status_code: int,
    error_type: str,
    message: str,
    retry_after: float | None = None,
    *,
    close: bool = False,
    headers: Mapping[str, str] | None = None,
) -> Response:
    """The protocol's JSON error, with the request's id. ``close`` asks the server to close the
    connection after it."""
    body = ErrorBody(error=error_detail(error_type, message))
    headers = dict(headers or {})
    if retry_after is not None:
        headers["Retry-After"] = str(max(1, round(retry_after)))
    if status_code == 401:
        headers["WWW-Authenticate"] = "Bearer"
    if close:
        headers["Connection"] = "close"
    return Response(
        body.model_dump_json(exclude_none=True),
        status_code,
        headers=headers,
        media_type="application/json",
    )


def error_event(error_type: str, message: str) -> ServerSentEvent:
    body = ErrorBody(error=error_detail(error_type, message))
    return ServerSentEvent(body.model_dump_json(exclude_none=True), event=EVENT_ERROR)
