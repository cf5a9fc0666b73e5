"""OpenAI's error answers: ``OpenAIError``, what the OpenAI routes raise, and its body with
the status codes OpenAI's SDK maps to its exceptions; other layers' errors on ``/v1`` paths
reshaped as OpenAI's (``reshaped_error``)."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from starlette.responses import Response

from promptwire.server._conversation import answer_route_errors
from promptwire.server._error_shape import reshape_errors
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
        detail = OpenAIErrorDetail(
            message=self.message,
            type=error_type_for(self.status_code),
            param=self.param,
            code=self.code,
            request_id=request_id,
        )
        return Response(
            OpenAIErrorBody(error=detail).model_dump_json(),
            self.status_code,
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


def answer_openai_errors(app: FastAPI) -> None:
    """``OpenAIError`` answered as such, and the errors of other layers on ``/v1`` paths
    reshaped as OpenAI's (once or more: each OpenAI route module calls it)."""
    answer_route_errors(app)
    reshape_errors(app, PREFIX, reshaped_error)
