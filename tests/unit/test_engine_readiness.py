"""The server serves an engine only between its start() and its stop(), whatever ``ready`` says:
``Engine.ready`` defaults to True, and used to make /health answer 200 before the model loaded."""

from __future__ import annotations

from collections.abc import AsyncGenerator

import httpx
from promptwire import Engine, EngineEvent, Finish, FinishReason, PromptRequest, TextChunk, Usage
from promptwire.server import create_app


class CountingEngine(Engine):
    def __init__(self) -> None:
        self.starts = 0

    async def start(self) -> None:
        self.starts += 1

    async def stream(self, request: PromptRequest) -> AsyncGenerator[EngineEvent, None]:
        yield TextChunk("ok")
        yield Finish(FinishReason.STOP, Usage(prompt_tokens=1, completion_tokens=1))


async def _get(app: object, path: str, **kwargs: object) -> httpx.Response:
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]  # no lifespan run
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
        if path == "/":
            return await client.post(path, json={"prompt": "x"}, **kwargs)  # type: ignore[arg-type]
        return await client.get(path, **kwargs)  # type: ignore[arg-type]


async def test_not_served_before_start_nor_after_stop() -> None:
    engine = CountingEngine()
    app = create_app(engine)
    before = await _get(app, "/health")
    assert before.status_code == 503
    assert before.json()["error"]["type"] == "not_ready"
    assert (await _get(app, "/")).status_code == 503

    async with app.router.lifespan_context(app):
        assert engine.starts == 1
        assert (await _get(app, "/health")).status_code == 200
        reply = await _get(app, "/")
        assert reply.status_code == 200
        assert reply.json()["prompt"] == "ok"

    after = await _get(app, "/health")
    assert after.status_code == 503
