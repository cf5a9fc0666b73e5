"""OpenAI's error answers: ``OpenAIError``, what the OpenAI routes raise, and its body with
the status codes OpenAI's SDK maps to its exceptions; the shared layers' errors on ``/v1``
paths written in OpenAI's shape (``error_body``)."""

from __future__ import annotations

from fastapi import FastAPI
from starlette.responses import Response

from promptwire.server._conversation import answer_route_errors
from promptwire.server._error_shape import add_error_shape
from promptwire.server._errors import RouteError
from promptwire.server.openai.protocol import (
    OpenAIErrorBody,
    OpenAIErrorDetail,
    error_type_for,
)

#: Where the OpenAI API's routes are (``/v1/messages`` is Anthropic's: its own shape).
PREFIX = "/v1"


class OpenAIError(RouteError):
    """An answer in OpenAI's error shape; ``param`` names the request's field at fault."""

    def __init__(
        self,
        status_code: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(status_code, message, code=code, retry_after=retry_after)
        self.param = param

    def response(self) -> Response:
        request_id, headers = self.note()
        return Response(
            error_body(self.status_code, self.code, self.message, request_id, param=self.param),
            self.status_code,
            headers=headers,
            media_type="application/json",
        )


def error_body(
    status_code: int,
    code: str | None,
    message: str,
    request_id: str | None,
    *,
    param: str | None = None,
) -> bytes:
    """An error in OpenAI's shape, the type following the status. The shared layers' errors on
    ``/v1`` paths (auth's 401, an unknown path's 404, the body's 413) are written by it too,
    the prompt protocol's error type as their ``code``."""
    detail = OpenAIErrorDetail(
        message=message,
        type=error_type_for(status_code),
        param=param,
        code=code,
        request_id=request_id,
    )
    return OpenAIErrorBody(error=detail).model_dump_json().encode()


def answer_openai_errors(app: FastAPI) -> None:
    """``OpenAIError`` answered as such, and the shared layers' errors on ``/v1`` paths in
    OpenAI's shape (once or more: each OpenAI route module calls it)."""
    answer_route_errors(app)
    add_error_shape(app, PREFIX, error_body)
