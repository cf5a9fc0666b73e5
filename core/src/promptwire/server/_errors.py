"""The protocol's error answers: ``RequestError`` (what a route raises to refuse a request) and
the JSON error body every non-2xx answer and stream ``error`` event carries; ``RouteError``,
what the other protocols' routes (OpenAI, Anthropic) raise to answer in their own shapes."""

from __future__ import annotations

from collections.abc import (
    Mapping,
)
from typing import Self

from sse_starlette import ServerSentEvent
from starlette.responses import Response
from starlette.types import Scope

from promptwire.engine import (
    EngineError,
)
from promptwire.protocol import (
    EVENT_ERROR,
    ErrorBody,
    ErrorDetail,
    ErrorType,
)
from promptwire.server._error_shape import error_shape
from promptwire.server.observability._request_context import note_error

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
        status, error_type = engine_status(exc)
        return cls(status, exc.message, error_type=error_type, retry_after=exc.retry_after)


def engine_status(exc: EngineError) -> tuple[int, str]:
    """The status and error type an engine's error is answered with. A backend's own subclass
    may set any ``status_code``: one that is not an error status (a 200 answered an error body
    as a reply; a 600 dropped the connection) is a 500 ``server_error``."""
    status = exc.status_code
    if not isinstance(status, int) or isinstance(status, bool) or not 400 <= status <= 599:
        return 500, ErrorType.SERVER_ERROR
    return status, str(exc.error_type)


def error_response(
    status_code: int,
    error_type: str,
    message: str,
    retry_after: float | None = None,
    *,
    close: bool = False,
    headers: Mapping[str, str] | None = None,
    scope: Scope | None = None,
) -> Response:
    """The error, with the request's id, in the prompt protocol's shape or, given the request's
    ``scope``, in that of the protocol whose path it was for (``_error_shape``). ``close`` asks
    the server to close the connection after it."""
    request_id = note_error(error_type)
    shape = None if scope is None else error_shape(scope)
    if shape is None:
        detail = ErrorDetail(type=error_type, message=message, request_id=request_id)
        content: str | bytes = ErrorBody(error=detail).model_dump_json(exclude_none=True)
    else:
        content = shape(status_code, error_type, message, request_id)
    headers = dict(headers or {})
    if retry_after is not None:
        headers["Retry-After"] = str(max(1, round(retry_after)))
    if status_code == 401:
        headers["WWW-Authenticate"] = "Bearer"
    if close:
        headers["Connection"] = "close"
    return Response(content, status_code, headers=headers, media_type="application/json")


def error_event(error_type: str, message: str, request_id: str | None) -> ServerSentEvent:
    body = ErrorBody(error=ErrorDetail(type=error_type, message=message, request_id=request_id))
    return ServerSentEvent(body.model_dump_json(exclude_none=True), event=EVENT_ERROR)


_PROTOCOL_ERROR_TYPES = frozenset(ErrorType)


class RouteError(RequestError):
    """A refusal that a route of another protocol (OpenAI's, Anthropic's) answers in that
    protocol's error shape (its subclass's ``response``): the status, the message, the
    protocol's own ``code`` (counted, in metrics and the request log, under the prompt
    protocol's error type when it is one, else under the status's) and ``Retry-After``."""

    def __init__(
        self, status_code: int, message: str, *, code: str | None = None, **retry: float | None
    ) -> None:
        counted = code if code in _PROTOCOL_ERROR_TYPES else None
        super().__init__(status_code, message, error_type=counted, **retry)  # type: ignore[arg-type]
        self.code = code

    @classmethod
    def from_engine(cls, exc: EngineError) -> Self:
        # OpenAI and Anthropic answer a request the model cannot serve (too long a prompt)
        # with 400.
        status, error_type = engine_status(exc)
        status = 400 if status == 422 else status
        return cls(status, exc.message, code=error_type, retry_after=exc.retry_after)

    def response(self) -> Response:
        """The answer, in the protocol's shape."""
        raise NotImplementedError

    def note(self) -> tuple[str | None, dict[str, str]]:
        """Count the error (metrics, the request log) as the prompt route's are; the request's
        id and the answer's headers."""
        request_id = note_error(self.error_type)
        headers = {}
        if self.retry_after is not None:
            headers["Retry-After"] = str(max(1, round(self.retry_after)))
        return request_id, headers
