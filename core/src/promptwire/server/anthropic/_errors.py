"""Anthropic's error answers: ``AnthropicError``, what the Messages route raises, its body, and
the shared layers' errors on ``/v1/messages`` paths written in Anthropic's shape."""

from __future__ import annotations

from fastapi import FastAPI
from starlette.responses import Response

from promptwire.server._conversation import answer_route_errors
from promptwire.server._error_shape import add_error_shape
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


def shared_error_body(
    status_code: int, error_type: str, message: str, request_id: str | None
) -> bytes:
    """An error of the app's shared layers on ``/v1/messages`` (auth's 401, the body's 413) in
    Anthropic's shape, whose type follows the status."""
    return error_body(status_code, message, request_id)


def answer_anthropic_errors(app: FastAPI) -> None:
    """``AnthropicError`` answered as such, and the shared layers' errors on ``/v1/messages``
    in Anthropic's shape."""
    answer_route_errors(app)
    add_error_shape(app, MESSAGES_PATH, shared_error_body)
