"""prepare -> stream: the server prepares each request once, before answering, and the engine's
``stream`` gets exactly what ``prepare`` returned; what ``prepare`` raises is the reply and
nothing is generated. (It replaced a ``check`` that handed tokenization to ``stream`` through a
cache keyed by ``id(request)``.) ``prepare`` runs in a worker thread, unless it is marked
``@quick_prepare`` and the request is a plain prompt, or a conversation without tools or a JSON
reply for an engine whose templates are marked too (the plain template's are)."""

from __future__ import annotations

import threading
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass

import httpx
from promptwire import (
    Capabilities,
    ChatMessage,
    Engine,
    EngineEvent,
    PromptRequest,
    RequestRejected,
    TextChunk,
)
from promptwire.engine import quick_prepare
from promptwire.protocol import ToolSpec
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


# -- where prepare runs: the event loop only for a prepare marked quick -------------------------


class ThreadRecordingEngine(Engine):
    """Records the thread each ``prepare`` ran in."""

    def __init__(self) -> None:
        self.threads: list[int] = []

    def prepare(self, request: PromptRequest) -> PromptRequest:
        self.threads.append(threading.get_ident())
        return request

    async def stream(self, prepared: PromptRequest) -> AsyncGenerator[EngineEvent, None]:
        yield TextChunk("ok")


class QuickEngine(ThreadRecordingEngine):
    @quick_prepare
    def prepare(self, request: PromptRequest) -> PromptRequest:
        return super().prepare(request)


class SlowAgainEngine(QuickEngine):
    """Overrides a quick ``prepare`` without marking its own: prepared in the thread again."""

    def prepare(self, request: PromptRequest) -> PromptRequest:
        return super().prepare(request)


class TemplatedEngine(QuickEngine):
    """A quick ``prepare`` but a template of its own, unmarked (as a Jinja one would be)."""

    def render_chat(self, messages: Sequence[ChatMessage]) -> str:
        return "|".join(message.content for message in messages)


class QuickTemplateEngine(TemplatedEngine):
    @quick_prepare
    def render_chat(self, messages: Sequence[ChatMessage]) -> str:
        return super().render_chat(messages)

    @quick_prepare
    def render_chat_with_tools(
        self, messages: Sequence[ChatMessage], tools: Sequence[ToolSpec]
    ) -> str:
        return self.render_chat(messages)

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(structured_output=True)


async def _threads(engine: ThreadRecordingEngine) -> list[bool]:
    """For a plain prompt, a conversation, and a plain prompt on ``/v1/completions``: whether
    each was prepared on the event loop's thread."""
    app = create_app(engine)
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client,
    ):
        for path, body in (
            ("/", {"prompt": "a"}),
            ("/", {"prompt": "", "messages": [{"role": "user", "content": "a"}]}),
            ("/v1/completions", {"prompt": "a"}),
        ):
            assert (await client.post(path, json=body)).status_code == 200
    return [ident == threading.get_ident() for ident in engine.threads]


def test_which_prepare_is_quick() -> None:
    assert Engine.prepare.__promptwire_quick_prepare__ is True  # type: ignore[attr-defined]
    assert QuickEngine().prepares_quickly
    assert not ThreadRecordingEngine().prepares_quickly
    assert not SlowAgainEngine().prepares_quickly


def test_which_template_is_quick() -> None:
    assert QuickEngine().renders_quickly  # the plain template's
    assert not TemplatedEngine().renders_quickly
    assert QuickTemplateEngine().renders_quickly


async def test_a_quick_prepare_runs_on_the_loop_for_plain_prompts_and_conversations() -> None:
    assert await _threads(QuickEngine()) == [True, True, True]
    assert await _threads(QuickTemplateEngine()) == [True, True, True]


async def test_a_template_not_marked_quick_is_rendered_in_a_worker_thread() -> None:
    assert await _threads(TemplatedEngine()) == [True, False, True]


async def test_a_conversation_asking_for_json_is_prepared_in_a_worker_thread() -> None:
    engine = QuickTemplateEngine()
    app = create_app(engine)
    transport = httpx.ASGITransport(app=app)
    body = {
        "prompt": "",
        "messages": [{"role": "user", "content": "a"}],
        "response_format": {"type": "json_object"},
    }
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client,
    ):
        assert (await client.post("/", json=body)).status_code == 200
    assert engine.threads and engine.threads[0] != threading.get_ident()


async def test_an_unmarked_prepare_runs_in_a_worker_thread() -> None:
    assert await _threads(ThreadRecordingEngine()) == [False, False, False]
    assert await _threads(SlowAgainEngine()) == [False, False, False]
