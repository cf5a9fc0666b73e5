"""The errors other layers of the app answer on ``/v1`` paths (401 from auth, 404 for an unknown
path, 500), reshaped as OpenAI's: pure ASGI middleware."""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from promptwire.server.openai.protocol import (
    OpenAIErrorBody,
    OpenAIErrorDetail,
    error_type_for,
)

PREFIX = "/v1"
_UNDER_PREFIX = PREFIX + "/"


def is_openai_path(path: str) -> bool:
    return path.startswith(_UNDER_PREFIX) or path == PREFIX


class OpenAIErrorShape:
    """Pure ASGI middleware: on the OpenAI paths, an error answered in the prompt protocol's
    shape (``{"error": {"type", "message"}}``, by auth, routing or the app's last-resort 500)
    is reshaped as OpenAI's, the protocol's ``type`` becoming its ``code``. Other paths, and
    successful answers, pass untouched."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not is_openai_path(scope["path"]):
            await self.app(scope, receive, send)
            return
        held: Message | None = None
        body = bytearray()

        async def reshape(message: Message) -> None:
            nonlocal held
            if message["type"] == "http.response.start" and message["status"] >= 400:
                held = message
                return
            if held is None or message["type"] != "http.response.body":
                await send(message)
                return
            body.extend(message.get("body", b""))
            if not message.get("more_body", False):
                start, content = _reshaped(held, bytes(body))
                await send(start)
                await send({"type": "http.response.body", "body": content})

        await self.app(scope, receive, reshape)


def _reshaped(start: Message, content: bytes) -> tuple[Message, bytes]:
    try:
        error = json.loads(content)["error"]
        kind, message = error["type"], error["message"]
    except (ValueError, KeyError, TypeError):
        return start, content
    if not isinstance(error, dict) or "param" in error:  # already OpenAI's shape
        return start, content
    detail = OpenAIErrorDetail(
        message=str(message),
        type=error_type_for(start["status"]),
        code=str(kind),
        request_id=error.get("request_id"),
    )
    content = OpenAIErrorBody(error=detail).model_dump_json().encode()
    headers = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
    headers.append((b"content-length", str(len(content)).encode()))
    return {**start, "headers": headers}, content
