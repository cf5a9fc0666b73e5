"""Anthropic's error answers: ``AnthropicError``, what the Messages route raises, its body, and
the errors other layers answer on ``/v1/messages`` paths reshaped as Anthropic's."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from starlette.responses import Response

from promptwire.server._conversation import answer_route_errors
from promptwire.server._error_shape import reshape_errors
from promptwire.server._errors import RouteError
from promptwire.server.anthropic.protocol import AnthropicErrorBody

#: The Messages API's path; errors on it (and under it) are Anthropic's.
MESSAGES_PATH = "/v1/messages"
#: Its token counting, under it.
COUNT_TOKENS_PATH = MESSAGES_PATH + "/count_tokens"


class AnthropicError(RouteError):
    """An answer in Anthropic's error shape."""

    def response(self) -> Response:
        request_id, headers = self.note()
        return Response(
            error_body(self.status_code, self.message, request_id),
            self.status_code,
            headers=headers,
            media_type="application/json",
        )


def error_body(status_code: int, message: str, request_id: str | None = None) -> bytes:
    return AnthropicErrorBody.of(status_code, message, request_id).model_dump_json().encode()


def reshaped_error(status_code: int, body: dict[str, Any]) -> bytes | None:
    """An error another layer answered on ``/v1/messages`` (auth's 401, the body's 413), in
    Anthropic's shape; None when it is Anthropic's already."""
    if body.get("type") == "error":
        return None
    error = body["error"]
    return error_body(status_code, str(error["message"]), error.get("request_id"))


def answer_anthropic_errors(app: FastAPI) -> None:
    """``AnthropicError`` answered as such, and other layers' errors on ``/v1/messages``
    reshaped as Anthropic's."""
    answer_route_errors(app)
    reshape_errors(app, MESSAGES_PATH, reshaped_error)
