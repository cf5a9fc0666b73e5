"""ChatPromptwire against real servers: protocol v1.1 messages, chat templates, the fallback for v1
servers, streaming, stop, usage, auth and concurrency."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator, Sequence
from itertools import pairwise
from typing import Any

import httpx
import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    ChatMessage,
    HumanMessage,
    SystemMessage,
)
from promptwire import AuthenticationError, ChatPromptwire, InvalidRequestError
from promptwire.engine import RequestRejected
from promptwire.protocol import ChatMessage as WireMessage, PromptRequest
from promptwire.protocol.chat_template import render_plain
from promptwire_modal_dummy.engine import DummyEngine
from promptwire_modal_dummy.settings import DummySettings
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tests.support.engines import ObservedEngine
from tests.support.network import LOOPBACK_ONLY
from tests.support.servers import serve_asgi, serve_engine

pytestmark = LOOPBACK_ONLY

CONVERSATION: list[BaseMessage] = [
    SystemMessage("Answer briefly."),
    HumanMessage("Hello"),
    AIMessage("Hi there"),
    HumanMessage("How are you?"),
]
WIRE = [
    {"role": "system", "content": "Answer briefly."},
    {"role": "user", "content": "Hello"},
    {"role": "assistant", "content": "Hi there"},
    {"role": "user", "content": "How are you?"},
]
RENDERED = (
    "System: Answer briefly.\n\nUser: Hello\n\nAssistant: Hi there\n\nUser: How are you?"
    "\n\nAssistant:"
)
V1_KEYS = {"prompt", "max_tokens", "temperature", "top_p", "top_k", "stop", "seed", "stream"}


class TokenRecorder(BaseCallbackHandler):
    def __init__(self) -> None:
        self.tokens: list[str] = []

    def on_llm_new_token(self, token: str, **kwargs: Any) -> None:
        self.tokens.append(token)


class OldServer:
    """A protocol v1 endpoint as someone may have written it for ``langchain_community``'s Modal
    class: it reads ``prompt`` only, never streams, and, when ``strict``, refuses unknown keys."""

    def __init__(self, *, strict: bool) -> None:
        self.strict = strict
        self.bodies: list[dict[str, Any]] = []
        self.app = Starlette(routes=[Route("/", self.answer, methods=["POST"])])

    async def answer(self, request: Request) -> JSONResponse:
        body = await request.json()
        self.bodies.append(body)
        if self.strict and (unknown := sorted(set(body) - V1_KEYS)):
            error = {"type": "invalid_request", "message": f"unknown keys: {unknown}"}
            return JSONResponse({"error": error}, status_code=422)
        return JSONResponse({"prompt": f"[v1] {body['prompt']}"})


class BracketEngine(DummyEngine):
    """An echoing engine whose model has its own chat template."""

    def render_chat(self, messages: Sequence[WireMessage]) -> str:
        return "".join(f"<|{m.role}|>{m.content}<|end|>" for m in messages) + "<|assistant|>"


class StrictTemplateEngine(DummyEngine):
    """An echoing engine whose template, like many models', needs user and assistant turns to
    alternate."""

    def render_chat(self, messages: Sequence[WireMessage]) -> str:
        roles = [m.role for m in messages]
        if any(a == b for a, b in pairwise(roles)):
            raise RequestRejected("roles must alternate user/assistant")
        return "".join(f"<{m.role}>{m.content}" for m in messages) + "<assistant>"


@pytest.fixture
def tolerant() -> Iterator[tuple[OldServer, str]]:
    old = OldServer(strict=False)
    with serve_asgi(old.app) as server:
        yield old, server.url


@pytest.fixture
def strict() -> Iterator[tuple[OldServer, str]]:
    old = OldServer(strict=True)
    with serve_asgi(old.app) as server:
        yield old, server.url


# -- what goes on the wire -----------------------------------------------------------------------


def test_request_carries_messages_and_the_plain_rendered_prompt(
    tolerant: tuple[OldServer, str],
) -> None:
    old, url = tolerant
    chat = ChatPromptwire(endpoint_url=url, temperature=0.5, max_tokens=7)
    chat.invoke(CONVERSATION)
    body = old.bodies[-1]
    assert body["messages"] == WIRE
    assert body["prompt"] == RENDERED == render_plain(WireMessage(**m) for m in WIRE)
    assert body["temperature"] == 0.5 and body["max_tokens"] == 7
    assert "stream" not in body and "stop" not in body


def test_server_serves_the_rendered_conversation(observed: tuple[ObservedEngine, str]) -> None:
    engine, url = observed
    reply = ChatPromptwire(endpoint_url=url).invoke(CONVERSATION)
    assert reply.content == RENDERED  # the echo engine answers with what it was given
    seen = engine.requests[-1]
    assert seen.prompt == RENDERED
    assert [m.model_dump(exclude_none=True) for m in seen.messages or []] == WIRE


def test_server_applies_the_engine_chat_template() -> None:
    with serve_engine(BracketEngine(DummySettings(echo=True))) as server:
        reply = ChatPromptwire(endpoint_url=server.url).invoke(
            [SystemMessage("Be kind."), HumanMessage("Hi")]
        )
    assert reply.content == "<|system|>Be kind.<|end|><|user|>Hi<|end|><|assistant|>"


def test_default_dummy_still_says_hello_world(dummy_url: str) -> None:
    reply = ChatPromptwire(endpoint_url=dummy_url).invoke(CONVERSATION)
    assert reply.content == "hello world"
    assert reply.response_metadata["model_name"] == "dummy"
    assert reply.response_metadata["finish_reason"] == "stop"


def test_roles_and_content_are_mapped() -> None:
    from promptwire.langchain.chat import to_protocol_messages

    messages = to_protocol_messages(
        [
            ChatMessage(role="developer", content="d"),
            ChatMessage(role="human", content="h"),
            ChatMessage(role="ai", content="a"),
            HumanMessage(content=[{"type": "text", "text": "x"}, "y"]),
            HumanMessage("named", name="someone"),
        ]
    )
    assert [(m.role, m.content) for m in messages] == [
        ("system", "d"),
        ("user", "h"),
        ("assistant", "a"),
        ("user", "xy"),
        ("user", "named"),
    ]


@pytest.mark.parametrize(
    "messages",
    [
        [],
        [ChatMessage(role="narrator", content="once upon a time")],
        [HumanMessage(content=[{"type": "image_url", "image_url": {"url": "data:,"}}])],
    ],
    ids=["empty", "unknown-role", "image"],
)
def test_what_cannot_be_sent_is_refused_before_sending(messages: list[BaseMessage]) -> None:
    chat = ChatPromptwire(endpoint_url="http://127.0.0.1:9/")
    with pytest.raises(ValueError, match="ChatPromptwire"):
        chat.invoke(messages)


# -- servers that speak only protocol v1 ---------------------------------------------------------


def test_v1_server_that_ignores_messages_answers_the_prompt(
    tolerant: tuple[OldServer, str],
) -> None:
    old, url = tolerant
    chat = ChatPromptwire(endpoint_url=url)
    assert chat.invoke(CONVERSATION).content == f"[v1] {RENDERED}"
    streamed = "".join(str(chunk.content) for chunk in chat.stream(CONVERSATION))
    assert streamed == f"[v1] {RENDERED}"  # a server that does not stream: one whole reply
    assert len(old.bodies) == 2


def test_v1_server_that_refuses_unknown_keys_is_asked_once_more_then_remembered(
    strict: tuple[OldServer, str],
) -> None:
    old, url = strict
    chat = ChatPromptwire(endpoint_url=url)
    assert chat.invoke(CONVERSATION).content == f"[v1] {RENDERED}"
    assert ["messages" in body for body in old.bodies] == [True, False]
    assert chat.invoke("again").content == "[v1] User: again\n\nAssistant:"
    assert len(old.bodies) == 3  # no second refusal: the object now sends prompt only


@pytest.mark.parametrize("mode", ["stream", "ainvoke", "astream"])
def test_fallback_works_for_streams_and_async(strict: tuple[OldServer, str], mode: str) -> None:
    old, url = strict
    chat = ChatPromptwire(endpoint_url=url)

    async def run_async() -> str:
        if mode == "ainvoke":
            return str((await chat.ainvoke(CONVERSATION)).content)
        return "".join([str(chunk.content) async for chunk in chat.astream(CONVERSATION)])

    if mode == "stream":
        text = "".join(str(chunk.content) for chunk in chat.stream(CONVERSATION))
    else:
        text = asyncio.run(run_async())
    assert text == f"[v1] {RENDERED}"
    assert ["messages" in body for body in old.bodies] == [True, False]


def test_a_v11_refusal_of_a_bad_parameter_is_reported_not_masked(
    observed: tuple[ObservedEngine, str],
) -> None:
    engine, url = observed
    chat = ChatPromptwire(endpoint_url=url)
    with pytest.raises(InvalidRequestError, match="temperature"):
        chat.invoke("hi", temperature=-1.0)  # a call's keyword arguments go to the server as is
    # The server says protocol 1.1 on /health, so the refusal was not about messages.
    assert chat.invoke("hi", temperature=0.5).content == "User: hi\n\nAssistant:"
    assert engine.requests[-1].messages is not None


@pytest.mark.parametrize("mode", ["invoke", "stream", "ainvoke", "astream"])
def test_a_conversation_the_template_cannot_render_is_reported(mode: str) -> None:
    """Not silently answered with the plain template instead."""
    with serve_engine(StrictTemplateEngine(DummySettings(echo=True))) as server:
        chat = ChatPromptwire(endpoint_url=server.url)
        twice = [HumanMessage("one"), HumanMessage("two")]

        async def run_async() -> None:
            if mode == "ainvoke":
                await chat.ainvoke(twice)
            else:
                async for _ in chat.astream(twice):
                    pass

        with pytest.raises(InvalidRequestError, match="alternate"):
            if mode == "invoke":
                chat.invoke(twice)
            elif mode == "stream":
                list(chat.stream(twice))
            else:
                asyncio.run(run_async())
        assert chat.invoke([HumanMessage("one")]).content == "<user>one<assistant>"


# -- streaming, stop, usage ----------------------------------------------------------------------


def test_stream_yields_pieces_as_made_with_usage_on_the_last_chunk_only(
    slow: tuple[ObservedEngine, str],
) -> None:
    _, url = slow
    recorder = TokenRecorder()
    chat = ChatPromptwire(endpoint_url=url)
    chunks: list[AIMessageChunk] = []
    arrivals: list[float] = []
    for chunk in chat.stream("w1 w2 w3 w4", config={"callbacks": [recorder]}):
        chunks.append(chunk)
        arrivals.append(time.monotonic())
    texts = [str(c.content) for c in chunks]
    assert "".join(texts) == "User: w1 w2 w3 w4\n\nAssistant:"
    assert len([t for t in texts if t]) == 6  # one per word
    assert arrivals[-1] - arrivals[0] > 0.1  # spread over the generation, not all at once
    assert [c.usage_metadata is not None for c in chunks] == [False] * 6 + [True]
    last = chunks[-1]
    assert last.chunk_position == "last"
    assert last.usage_metadata == {"input_tokens": 6, "output_tokens": 6, "total_tokens": 12}
    assert last.response_metadata["finish_reason"] == "stop"
    assert last.response_metadata["model_name"] == "dummy"
    assert recorder.tokens == texts  # each piece reaches callbacks exactly once


def test_astream(slow: tuple[ObservedEngine, str]) -> None:
    _, url = slow

    async def run() -> list[AIMessageChunk]:
        return [chunk async for chunk in ChatPromptwire(endpoint_url=url).astream("x y")]

    chunks = asyncio.run(run())
    assert "".join(str(c.content) for c in chunks) == "User: x y\n\nAssistant:"
    assert chunks[-1].usage_metadata is not None and chunks[-1].chunk_position == "last"


def test_streaming_flag_makes_invoke_stream(observed: tuple[ObservedEngine, str]) -> None:
    engine, url = observed
    recorder = TokenRecorder()
    chat = ChatPromptwire(endpoint_url=url, streaming=True)
    reply = chat.invoke("a b", config={"callbacks": [recorder]})
    assert reply.content == "User: a b\n\nAssistant:"
    assert engine.requests[-1].stream is True
    assert "".join(recorder.tokens) == reply.content


@pytest.mark.parametrize("how", ["invoke", "stream", "field"])
def test_stop_is_sent_and_applied(observed: tuple[ObservedEngine, str], how: str) -> None:
    engine, url = observed
    stop = ["b c"]
    chat = ChatPromptwire(endpoint_url=url, stop=stop if how == "field" else None)
    call_stop = None if how == "field" else stop
    if how == "stream":
        chunks = list(chat.stream("a b c d", stop=call_stop))
        text = "".join(str(c.content) for c in chunks)
        finish = chunks[-1].response_metadata["finish_reason"]
    else:
        reply = chat.invoke("a b c d", stop=call_stop)
        text, finish = str(reply.content), reply.response_metadata["finish_reason"]
    assert text == "User: a "
    assert finish == "stop"
    assert engine.requests[-1].stop == stop


def test_max_tokens_and_usage(observed: tuple[ObservedEngine, str]) -> None:
    _, url = observed
    reply = ChatPromptwire(endpoint_url=url, max_tokens=2).invoke("one two three")
    assert reply.content == "User: one "
    assert reply.response_metadata["finish_reason"] == "length"
    assert reply.usage_metadata == {"input_tokens": 5, "output_tokens": 2, "total_tokens": 7}


def test_generate_sums_usage_over_conversations(observed: tuple[ObservedEngine, str]) -> None:
    _, url = observed
    result = ChatPromptwire(endpoint_url=url).generate([[HumanMessage("a")], [HumanMessage("b")]])
    assert result.llm_output == {
        "token_usage": {"prompt_tokens": 6, "completion_tokens": 6, "total_tokens": 12},
        "model_name": "dummy",
    }


# -- auth, settings, concurrency -----------------------------------------------------------------


def test_bearer_token_is_sent_and_required() -> None:
    with serve_engine(DummyEngine(DummySettings()), api_key="s3cret") as server:
        assert ChatPromptwire(endpoint_url=server.url, api_key="s3cret").invoke("hi").content
        with pytest.raises(AuthenticationError) as caught:
            ChatPromptwire(endpoint_url=server.url, api_key="wrong").invoke("hi")
    assert caught.value.status_code == 401
    assert "wrong" not in str(caught.value)


def test_endpoint_and_model_from_the_environment(
    dummy_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PROMPTWIRE_ENDPOINT_URL", dummy_url)
    monkeypatch.setenv("PROMPTWIRE_MAX_CONCURRENCY", "3")
    chat = ChatPromptwire()
    assert chat.endpoint_url == dummy_url and chat.max_concurrency == 3
    assert chat.invoke("hi").content == "hello world"
    assert ChatPromptwire(endpoint_url="http://127.0.0.1:9/").endpoint_url == "http://127.0.0.1:9/"


def test_tracing_params() -> None:
    chat = ChatPromptwire(endpoint_url="http://127.0.0.1:9/", model="m", temperature=0.2)
    params = chat._get_ls_params(stop=["x"], max_tokens=5)
    assert params == {
        "ls_provider": "promptwire",
        "ls_model_name": "m",
        "ls_model_type": "chat",
        "ls_temperature": 0.2,
        "ls_max_tokens": 5,
        "ls_stop": ["x"],
    }


def test_batch_runs_conversations_concurrently(slow: tuple[ObservedEngine, str]) -> None:
    engine, url = slow
    engine.peak = 0
    chat = ChatPromptwire(endpoint_url=url, max_concurrency=4)
    prompts = [f"p{i}" for i in range(12)]
    replies = chat.batch(prompts)  # type: ignore[arg-type]
    assert [r.content for r in replies] == [f"User: {p}\n\nAssistant:" for p in prompts]
    assert 2 <= engine.peak <= 4  # bounded by max_concurrency, and truly concurrent


def test_abatch_runs_conversations_concurrently(slow: tuple[ObservedEngine, str]) -> None:
    engine, url = slow
    engine.peak = 0
    chat = ChatPromptwire(endpoint_url=url, max_concurrency=6)
    prompts = [f"q{i}" for i in range(18)]
    replies = asyncio.run(chat.abatch(prompts))  # type: ignore[arg-type]
    assert [r.content for r in replies] == [f"User: {p}\n\nAssistant:" for p in prompts]
    assert 3 <= engine.peak <= 6


def test_a_batch_config_can_set_its_own_limit(slow: tuple[ObservedEngine, str]) -> None:
    engine, url = slow
    engine.peak = 0
    chat = ChatPromptwire(endpoint_url=url, max_concurrency=8)
    chat.batch(["a", "b", "c", "d"], config={"max_concurrency": 1})
    assert engine.peak == 1


def test_request_model_is_unchanged_without_messages() -> None:
    request = PromptRequest.model_validate({"prompt": "p"})
    assert request.messages is None


@pytest.mark.parametrize(
    "messages",
    [
        '[{"role": "user", "content": "\\ud800"}]',
        '[{"role": "user", "content": "ok"}, {"role": "tool", "content": "42"}]',
        "[" + ", ".join(['{"role": "user", "content": "m"}'] * 1025) + "]",
    ],
    ids=["lone-surrogate", "tool-role", "too-many"],
)
def test_server_refuses_invalid_messages(dummy_url: str, messages: str) -> None:
    body = f'{{"prompt": "p", "messages": {messages}}}'.encode()
    response = httpx.post(
        dummy_url, content=body, headers={"Content-Type": "application/json"}, timeout=30
    )
    assert response.status_code == 422
    assert response.json()["error"]["type"] == "invalid_request"
    assert "messages" in response.json()["error"]["message"]


def test_generation_fields_are_sent(observed: tuple[ObservedEngine, str]) -> None:
    engine, url = observed
    fields = {"max_tokens": 50, "temperature": 0.2, "top_p": 0.9, "top_k": 3, "seed": 7}
    chat = ChatPromptwire(endpoint_url=url, stop=["STOP"], **fields)  # type: ignore[arg-type]
    chat.invoke([HumanMessage("one")])
    assert engine.requests[-1].known_params() == {**fields, "stop": ["STOP"]}
