"""Anthropic's error answers: ``AnthropicError``, what the Messages route raises, its body, and
the errors other layers answer on ``/v1/messages`` paths reshaped as Anthropic's."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from starlette.responses import Response

from promptwire.engine import EngineError
from promptwire.protocol import ErrorType
from promptwire.server._error_shape import reshape_errors
from promptwire.server._errors import STATUS_ERROR_TYPES
from promptwire.server.anthropic.protocol import (
    AnthropicErrorBody,
    AnthropicErrorDetail,
    error_type_for,
)
from promptwire.server.observability._request_context import note_error

#: The Messages API's path; errors on it (and under it) are Anthropic's.
MESSAGES_PATH = "/v1/messages"
_PROTOCOL_ERROR_TYPES = frozenset(ErrorType)


class AnthropicError(Exception):
    """An answer in Anthropic's error shape; ``code`` is the prompt protocol's error type it
    is counted under (metrics, the request log)."""

    def __init__(
        self,
        status_code: int,
        message: str,
        *,
        code: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.message = message
        self.code = code
        self.retry_after = retry_after

    @classmethod
    def from_engine(cls, exc: EngineError) -> AnthropicError:
        # Anthropic answers a request it cannot serve (too long a prompt) with 400.
        status = 400 if exc.status_code == 422 else exc.status_code
        return cls(status, exc.message, code=str(exc.error_type), retry_after=exc.retry_after)

    def response(self) -> Response:
        code = self.code if self.code in _PROTOCOL_ERROR_TYPES else None
        request_id = note_error(
            code or STATUS_ERROR_TYPES.get(self.status_code, ErrorType.SERVER_ERROR)
        )
        headers = {}
        if self.retry_after is not None:
            headers["Retry-After"] = str(max(1, round(self.retry_after)))
        return Response(
            error_body(self.status_code, self.message, request_id),
            self.status_code,
            headers=headers,
            media_type="application/json",
        )


def error_body(status_code: int, message: str, request_id: str | None = None) -> bytes:
    detail = AnthropicErrorDetail(type=error_type_for(status_code), message=message)
    return AnthropicErrorBody(error=detail, request_id=request_id).model_dump_json().encode()


def reshaped_error(status_code: int, body: dict[str, Any]) -> bytes | None:
    """An error another layer answered on ``/v1/messages`` (auth's 401, the body's 413), in
    Anthropic's shape; None when it is Anthropic's already."""
    if body.get("type") == "error":
        return None
    error = body["error"]
    return error_body(status_code, str(error["message"]), error.get("request_id"))


async def _on_anthropic_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, AnthropicError)
    return exc.response()


def answer_anthropic_errors(app: FastAPI) -> None:
    """``AnthropicError`` answered as such, and other layers' errors on ``/v1/messages``
    reshaped as Anthropic's."""
    app.add_exception_handler(AnthropicError, _on_anthropic_error)
    reshape_errors(app, MESSAGES_PATH, reshaped_error)
