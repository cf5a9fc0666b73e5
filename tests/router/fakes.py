"""Fake members that fail the ways real endpoints do, as raw ASGI apps under real uvicorn."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


class FakeEndpoint:
    """Answers every POST with ``status`` (and ``headers``), or, with ``status`` 200 and a
    stream asked for, one ``delta`` event and then a cut connection. Counts requests."""

    def __init__(self, status: int, headers: dict[str, str] | None = None) -> None:
        self.status = status
        self.headers = headers or {}
        self.hits = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        self.hits += 1
        if self.status == 200:  # a stream cut after its first event
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [(b"content-type", b"text/event-stream")],
                }
            )
            event = b'event: delta\ndata: {"text": "cut "}\n\n'
            await send({"type": "http.response.body", "body": event, "more_body": True})
            raise RuntimeError("the connection drops here")
        error = {"error": {"type": "overloaded", "message": "busy"}}
        headers = [(b"content-type", b"application/json")]
        headers += [(k.encode(), v.encode()) for k, v in self.headers.items()]
        await send({"type": "http.response.start", "status": self.status, "headers": headers})
        await send({"type": "http.response.body", "body": json.dumps(error).encode()})
