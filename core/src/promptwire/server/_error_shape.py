"""The errors other layers of the app answer (401 from auth, 404 for an unknown path, 413 and
415 from reading the body, the last-resort 500), in the prompt protocol's shape, reshaped on a
protocol's paths as that protocol's: pure ASGI middleware, one for every protocol."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

#: ``(status, the error body: a JSON object with an "error" object that has a "type" and a
#: "message")`` -> the protocol's error body, or None when the body is left as it is (it is the
#: protocol's already).
Reshape = Callable[[int, dict[str, Any]], bytes | None]


def reshape_errors(app: FastAPI, prefix: str, reshape: Reshape) -> None:
    """Answer the errors on ``prefix`` (the path itself and those under it) in the shape
    ``reshape`` writes; of two prefixes that hold a path, the longer one reshapes its errors.
    The app gets one ``ErrorShapes`` middleware, whatever the number of protocols."""
    shapes: dict[str, Reshape] | None = getattr(app.state, "error_shapes", None)
    if shapes is None:
        shapes = app.state.error_shapes = {}
        app.add_middleware(ErrorShapes, shapes=shapes)
    shapes[prefix] = reshape


class ErrorShapes:
    """Pure ASGI middleware: on a path one of ``shapes`` holds, an error answered in the prompt
    protocol's shape (``{"error": {"type", "message"}}``) is reshaped by that protocol's
    ``Reshape``. Other paths, and successful answers, pass untouched."""

    def __init__(self, app: ASGIApp, shapes: dict[str, Reshape]) -> None:
        self.app = app
        self.shapes = shapes

    def _reshape_for(self, path: str) -> Reshape | None:
        found: tuple[int, Reshape] | None = None
        for prefix, reshape in self.shapes.items():
            if (path == prefix or path.startswith(prefix + "/")) and (
                found is None or len(prefix) > found[0]
            ):
                found = (len(prefix), reshape)
        return None if found is None else found[1]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        reshape = self._reshape_for(scope["path"]) if scope["type"] == "http" else None
        if reshape is None:
            await self.app(scope, receive, send)
            return
        held: Message | None = None
        body = bytearray()

        async def reshaping(message: Message) -> None:
            nonlocal held
            if message["type"] == "http.response.start" and message["status"] >= 400:
                held = message
                return
            if held is None or message["type"] != "http.response.body":
                await send(message)
                return
            body.extend(message.get("body", b""))
            if not message.get("more_body", False):
                start, content = _reshaped(held, bytes(body), reshape)
                await send(start)
                await send({"type": "http.response.body", "body": content})

        await self.app(scope, receive, reshaping)


def _reshaped(start: Message, content: bytes, reshape: Reshape) -> tuple[Message, bytes]:
    try:
        body = json.loads(content)
        body["error"]["type"], body["error"]["message"]
    except (ValueError, KeyError, TypeError):
        return start, content
    if (new := reshape(start["status"], body)) is None:
        return start, content
    headers = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
    headers.append((b"content-length", str(len(new)).encode()))
    return {**start, "headers": headers}, new
