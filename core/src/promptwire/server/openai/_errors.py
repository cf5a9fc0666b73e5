"""OpenAI's error answers: ``OpenAIError``, what the OpenAI routes raise, and its body with
the status codes OpenAI's SDK maps to its exceptions; other layers' errors on ``/v1`` paths
reshaped as OpenAI's (``reshaped_error``)."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from starlette.responses import Response

from promptwire.engine import (
    EngineError,
)
from promptwire.protocol import (
    ErrorType,
)
from promptwire.server._error_shape import reshape_errors
from promptwire.server._errors import STATUS_ERROR_TYPES
from promptwire.server.observability._request_context import note_error
from promptwire.server.openai.protocol import (
    OpenAIErrorBody,
    OpenAIErrorDetail,
    error_type_for,
)

_PROTOCOL_ERROR_TYPES = frozenset(ErrorType)

#: Where the OpenAI API's routes are (``/v1/messages`` is Anthropic's: its own shape).
PREFIX = "/v1"


class OpenAIError(Exception):
    """An answer in OpenAI's error shape."""

    def __init__(
        self,
        status_code: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.message = message
        self.param = param
        self.code = code
        self.retry_after = retry_after

    @classmethod
    def from_engine(cls, exc: EngineError) -> OpenAIError:
        # OpenAI answers a request its model cannot serve (too long a prompt) with 400.
        status = 400 if exc.status_code == 422 else exc.status_code
        return cls(status, exc.message, code=str(exc.error_type), retry_after=exc.retry_after)

    def response(self) -> Response:
        return error_response(
            self.status_code,
            self.message,
            param=self.param,
            code=self.code,
            retry_after=self.retry_after,
        )


def error_response(
    status_code: int,
    message: str,
    *,
    param: str | None = None,
    code: str | None = None,
    retry_after: float | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    # Counted (metrics, log line) under the protocol's error type, as the prompt route's are.
    protocol_type = code if code in _PROTOCOL_ERROR_TYPES else None
    request_id = note_error(
        protocol_type or STATUS_ERROR_TYPES.get(status_code, ErrorType.SERVER_ERROR)
    )
    detail = OpenAIErrorDetail(
        message=message,
        type=error_type_for(status_code),
        param=param,
        code=code,
        request_id=request_id,
    )
    headers = dict(headers or {})
    if retry_after is not None:
        headers["Retry-After"] = str(max(1, round(retry_after)))
    return Response(
        OpenAIErrorBody(error=detail).model_dump_json(),
        status_code,
        headers=headers,
        media_type="application/json",
    )


def reshaped_error(status_code: int, body: dict[str, Any]) -> bytes | None:
    """An error another layer answered on a ``/v1`` path (auth's 401, an unknown path's 404,
    the body's 413), in OpenAI's shape: the protocol's ``type`` becomes its ``code``. None
    when it is OpenAI's already (it has ``param``)."""
    error = body["error"]
    if "param" in error:
        return None
    detail = OpenAIErrorDetail(
        message=str(error["message"]),
        type=error_type_for(status_code),
        code=str(error["type"]),
        request_id=error.get("request_id"),
    )
    return OpenAIErrorBody(error=detail).model_dump_json().encode()


async def _on_openai_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, OpenAIError)
    return exc.response()


def answer_openai_errors(app: FastAPI) -> None:
    """``OpenAIError`` answered as such, and the errors of other layers on ``/v1`` paths
    reshaped as OpenAI's (once or more: each OpenAI route module calls it)."""
    app.add_exception_handler(OpenAIError, _on_openai_error)
    reshape_errors(app, PREFIX, reshaped_error)
