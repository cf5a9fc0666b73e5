"""prepare -> stream: the server prepares each request once, before answering, and the engine's
``stream`` gets exactly what ``prepare`` returned; what ``prepare`` raises is the reply and
nothing is generated. (It replaced a ``check`` that handed tokenization to ``stream`` through a
cache keyed by ``id(request)``.)"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import dataclass

import httpx
from promptwire import Engine, EngineEvent, PromptRequest, RequestRejected, TextChunk
from promptwire.server import create_app


@dataclass(frozen=True)
class Tokenized:
    words: tuple[str, ...]


class TokenizingEngine(Engine[Tokenized]):
    def __init__(self) -> None:
        self.prepared: list[PromptRequest] = []
        self.streamed: list[Tokenized] = []

    def prepare(self, request: PromptRequest) -> Tokenized:
        self.prepared.append(request)
        if "forbidden" in request.prompt:
            raise RequestRejected("no forbidden words")
        return Tokenized(tuple(request.prompt.split()))

    async def stream(self, prepared: Tokenized) -> AsyncGenerator[EngineEvent, None]:
        self.streamed.append(prepared)
        for word in reversed(prepared.words):
            yield TextChunk(f"{word} ")


async def _post(app: object, body: dict[str, object]) -> httpx.Response:
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
        return await client.post("/", json=body)


async def test_each_request_is_prepared_once_and_streamed_from_what_prepare_made() -> None:
    engine = TokenizingEngine()
    app = create_app(engine)
    async with app.router.lifespan_context(app):
        whole = await _post(app, {"prompt": "a b c"})
        streamed = await _post(app, {"prompt": "d e", "stream": True})
    assert whole.json()["prompt"] == "c b a "
    assert "e " in streamed.text and "d " in streamed.text
    assert [r.prompt for r in engine.prepared] == ["a b c", "d e"]
    assert engine.streamed == [Tokenized(("a", "b", "c")), Tokenized(("d", "e"))]


async def test_what_prepare_raises_is_the_reply_and_nothing_is_generated() -> None:
    engine = TokenizingEngine()
    app = create_app(engine)
    async with app.router.lifespan_context(app):
        for stream in (False, True):
            refused = await _post(app, {"prompt": "a forbidden word", "stream": stream})
            assert refused.status_code == 422
            assert refused.json()["error"]["message"] == "no forbidden words"
    assert engine.streamed == []


async def test_generate_prepares_the_request_itself_when_not_given() -> None:
    engine = TokenizingEngine()
    events = [e async for e in engine.generate(PromptRequest(prompt="x y", max_tokens=1))]
    assert events[0] == TextChunk("y ")
    assert len(engine.prepared) == 1
