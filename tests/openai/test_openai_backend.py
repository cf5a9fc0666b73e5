"""``PROMPTWIRE_BACKEND=openai``: ``PromptwireLLM`` and ``ChatPromptwire`` speaking the OpenAI API,
through promptwire's own client, against promptwire's ``/v1`` routes (a real server) and against
scripted OpenAI-compatible servers for what promptwire's never does (reasoning content, Modal's
proxy auth and 303, servers that fail)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage
from langchain_openai import ChatOpenAI
from promptwire import ChatPromptwire, PromptwireLLM
from promptwire.errors import (
    AuthenticationError,
    EndpointError,
    InvalidRequestError,
    OverloadedError,
    ProtocolError,
    ServerError,
    StreamError,
)
from promptwire_modal_dummy.settings import DummySettings
from promptwire_openai.wire import OpenAIWire

from tests.support.engines import ObservedEngine
from tests.support.network import LOOPBACK_ONLY
from tests.support.servers import serve_asgi, serve_engine

pytestmark = LOOPBACK_ONLY

TOKEN = "backend-openai-token-3f8b"


@pytest.fixture(scope="module")
def promptwire_v1() -> Iterator[tuple[ObservedEngine, str]]:
    """promptwire's own OpenAI routes (echo, 20 words a second): the base URL, ending in /v1."""
    engine = ObservedEngine(DummySettings(echo=True, tokens_per_second=200))
    with serve_engine(engine, api_key=TOKEN) as server:
        yield engine, server.url + "v1"


@pytest.fixture()
def openai_env(monkeypatch: pytest.MonkeyPatch, promptwire_v1: tuple[ObservedEngine, str]) -> str:
    monkeypatch.setenv("PROMPTWIRE_BACKEND", "openai")
    monkeypatch.setenv("PROMPTWIRE_ENDPOINT_URL", promptwire_v1[1])
    monkeypatch.setenv("PROMPTWIRE_API_KEY", TOKEN)
    monkeypatch.setenv("PROMPTWIRE_OPENAI__MODEL", "dummy")
    monkeypatch.setenv("PROMPTWIRE_TIMEOUT", "30")
    return promptwire_v1[1]


class Tokens(BaseCallbackHandler):
    def __init__(self) -> None:
        self.tokens: list[str] = []

    def on_llm_new_token(self, token: str, **kwargs: Any) -> None:
        self.tokens.append(token)


# -- against promptwire's own /v1 routes -------------------------------------------------------


def test_the_llm_needs_only_settings(
    openai_env: str, promptwire_v1: tuple[ObservedEngine, str]
) -> None:
    engine, _ = promptwire_v1
    llm = PromptwireLLM(max_tokens=50, temperature=0.2)
    assert llm.invoke("one two three") == "one two three"
    request = engine.requests[-1]
    assert request.prompt == "one two three"
    assert request.known_params() == {"max_tokens": 50, "temperature": 0.2}
    result = llm.generate(["a b", "c d e"])
    assert [g[0].text for g in result.generations] == ["a b", "c d e"]
    assert result.llm_output is not None
    assert result.llm_output["token_usage"] == {
        "prompt_tokens": 5,
        "completion_tokens": 5,
        "total_tokens": 10,
    }
    info = result.generations[0][0].generation_info
    assert info == {
        "finish_reason": "stop",
        "usage": {"prompt_tokens": 2, "completion_tokens": 2, "total_tokens": 4},
        "model": "dummy",
    }
    assert llm.invoke("one two three", stop=["two"]) == "one "
    llm.close()


def test_the_llm_streams_with_callbacks_and_usage(openai_env: str) -> None:
    llm = PromptwireLLM()
    tokens = Tokens()
    pieces = list(llm.stream("a b c d", config={"callbacks": [tokens]}))
    assert "".join(pieces) == "a b c d" and len(pieces) >= 4
    assert tokens.tokens == [piece for piece in pieces if piece]
    chunks = list(llm._stream("a b"))
    assert chunks[-1].generation_info == {
        "finish_reason": "stop",
        "usage": {"prompt_tokens": 2, "completion_tokens": 2, "total_tokens": 4},
        "model": "dummy",
    }


async def test_the_llm_async_and_a_bounded_batch(
    openai_env: str, promptwire_v1: tuple[ObservedEngine, str]
) -> None:
    engine, _ = promptwire_v1
    engine.peak = 0
    llm = PromptwireLLM(max_concurrency=4)
    prompts = [" ".join(["w"] * 20) + f" {i}" for i in range(12)]
    assert await llm.abatch(prompts) == prompts
    assert engine.peak == 4
    assert "".join([piece async for piece in llm.astream("x y")]) == "x y"
    assert await llm.ainvoke("z") == "z"
    await llm.aclose()


def test_the_chat_model_sends_the_conversation(
    openai_env: str, promptwire_v1: tuple[ObservedEngine, str]
) -> None:
    chat = ChatPromptwire()
    reply = chat.invoke([SystemMessage("Be brief."), HumanMessage("Who won?")])
    # promptwire's server rendered the conversation with the engine's template, which the dummy
    # engine echoes: proof that the messages, not a client-side rendering, were sent.
    assert reply.content == "System: Be brief.\n\nUser: Who won?\n\nAssistant:"
    assert reply.usage_metadata == {"input_tokens": 7, "output_tokens": 7, "total_tokens": 14}
    assert reply.response_metadata["model_name"] == "dummy"
    assert reply.response_metadata["finish_reason"] == "stop"
    chunks = list(chat.stream("a b"))
    assert "".join(str(c.content) for c in chunks) == "User: a b\n\nAssistant:"
    assert chunks[-1].usage_metadata is not None
    assert chunks[-1].usage_metadata["output_tokens"] == 4
    replies = chat.batch(["x", "y"])
    assert [r.content for r in replies] == ["User: x\n\nAssistant:", "User: y\n\nAssistant:"]
    chat.close()


async def test_the_chat_model_async(openai_env: str) -> None:
    chat = ChatPromptwire(max_tokens=2)
    reply = await chat.ainvoke("one two three")
    assert (reply.content, reply.response_metadata["finish_reason"]) == ("User: one ", "length")
    chunks = [chunk async for chunk in chat.astream("p q")]
    assert "".join(str(c.content) for c in chunks) == "User: p "
    await chat.aclose()


def test_which_model_is_asked_for(
    openai_env: str, monkeypatch: pytest.MonkeyPatch, promptwire_v1: tuple[ObservedEngine, str]
) -> None:
    # The settings' model is sent; ChatPromptwire(model=...) and a call's model beat it.
    with pytest.raises(InvalidRequestError) as caught:
        ChatPromptwire(model="gpt-4o").invoke("x")
    assert caught.value.status_code == 404 and caught.value.error_type == "model_not_found"
    assert promptwire_v1[1] in str(caught.value)
    assert "'gpt-4o'" in str(caught.value)
    with pytest.raises(InvalidRequestError):
        PromptwireLLM().invoke("x", model="gpt-4o")
    with pytest.raises(InvalidRequestError):
        PromptwireLLM(model_kwargs={"model": "gpt-4o"}).invoke("x")
    assert ChatPromptwire(model="dummy").invoke("x").content == "User: x\n\nAssistant:"
    # No model set anywhere: none is sent, and the server answers with its own.
    monkeypatch.delenv("PROMPTWIRE_OPENAI__MODEL")
    assert PromptwireLLM().invoke("q") == "q"
    assert ChatPromptwire()._get_ls_params()["ls_model_name"] == "openai"
    monkeypatch.setenv("PROMPTWIRE_OPENAI__MODEL", "dummy")
    assert ChatPromptwire()._get_ls_params()["ls_model_name"] == "dummy"
    assert PromptwireLLM()._get_ls_params()["ls_model_name"] == "dummy"  # traced as it is sent


def test_errors_are_typed_and_name_the_url(openai_env: str) -> None:
    with pytest.raises(AuthenticationError) as caught:
        PromptwireLLM(api_key="wrong-key-1234").invoke("x")
    assert caught.value.error_type == "unauthorized" and openai_env in str(caught.value)
    assert "wrong-key-1234" not in str(caught.value)
    with pytest.raises(InvalidRequestError) as refused:
        ChatPromptwire().invoke("x", logprobs=True)
    assert refused.value.status_code == 400
    assert "logprobs" in str(refused.value)


# -- against scripted OpenAI-compatible servers ------------------------------------------------


class Scripted:
    """A raw ASGI OpenAI-compatible server whose answers the test sets; it records requests."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, dict[str, str], Any]] = []
        self.answers: list[tuple[int, dict[str, str], bytes | list[bytes]]] = []

    def answer(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        content = body if isinstance(body, bytes | list) else json.dumps(body).encode()
        kind = "text/event-stream" if isinstance(body, list) else "application/json"
        self.answers.append((status, {"content-type": kind, **(headers or {})}, content))

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (message := await receive())["type"] != "lifespan.shutdown":
                await send({"type": message["type"] + ".complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        self.requests.append(
            (scope["method"], scope["path"], headers, json.loads(body) if body else None)
        )
        status, answer_headers, content = self.answers.pop(0)
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(k.encode(), v.encode()) for k, v in answer_headers.items()],
            }
        )
        pieces = content if isinstance(content, list) else [content]
        for piece in pieces:
            await send({"type": "http.response.body", "body": piece, "more_body": True})
            await asyncio.sleep(0)
        await send({"type": "http.response.body", "body": b""})


@pytest.fixture()
def scripted(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Scripted, str]]:
    server = Scripted()
    with serve_asgi(server) as running:
        base = running.url + "v1"
        monkeypatch.setenv("PROMPTWIRE_BACKEND", "openai")
        monkeypatch.setenv("PROMPTWIRE_ENDPOINT_URL", base)
        monkeypatch.setenv("PROMPTWIRE_OPENAI__MODEL", "qwen3")
        monkeypatch.setenv("PROMPTWIRE_TIMEOUT", "10")
        yield server, base


def _chat_reply(content: str | None, **message: Any) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "model": "qwen3",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content, **message},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7},
    }


def _sse(*chunks: Any, done: bool = True) -> list[bytes]:
    lines = [f"data: {json.dumps(chunk)}\n\n".encode() for chunk in chunks]
    return [*lines, b"data: [DONE]\n\n"] if done else lines


def _delta(**delta: Any) -> dict[str, Any]:
    return {
        "object": "chat.completion.chunk",
        "model": "qwen3",
        "choices": [{"index": 0, "delta": delta, "finish_reason": None}],
    }


FINISH = {
    "object": "chat.completion.chunk",
    "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
}
USAGE = {
    "object": "chat.completion.chunk",
    "choices": [],
    "usage": {"prompt_tokens": 3, "completion_tokens": 2},
}


def test_reasoning_content_reaches_the_message(scripted: tuple[Scripted, str]) -> None:
    server, base = scripted
    server.answer(200, _chat_reply("42", reasoning_content="Six times seven."))
    reply = ChatPromptwire().invoke("What is six times seven?")
    assert reply.content == "42"
    assert reply.additional_kwargs == {"reasoning_content": "Six times seven."}
    assert {"type": "reasoning", "reasoning": "Six times seven."} in [
        {k: block.get(k) for k in ("type", "reasoning")} for block in reply.content_blocks
    ]
    method, path, _, body = server.requests[-1]
    assert (method, path) == ("POST", "/v1/chat/completions")
    assert body == {
        "model": "qwen3",
        "messages": [{"role": "user", "content": "What is six times seven?"}],
    }
    # ChatOpenAI, on the same reply, drops the reasoning.
    server.answer(200, _chat_reply("42", reasoning_content="Six times seven."))
    dropped = ChatOpenAI(model="qwen3", base_url=base, api_key="x").invoke("six times seven?")
    assert dropped.content == "42" and "reasoning_content" not in dropped.additional_kwargs


def test_streamed_reasoning_reaches_the_chunks(scripted: tuple[Scripted, str]) -> None:
    server, _ = scripted
    server.answer(
        200,
        _sse(
            _delta(role="assistant", content=""),
            _delta(reasoning="Six "),  # newer vLLM's key
            _delta(reasoning_content="times seven."),
            _delta(content="4"),
            _delta(content="2"),
            FINISH,
            USAGE,
        ),
    )
    chunks = list(ChatPromptwire().stream("six times seven?"))
    merged = chunks[0]
    for chunk in chunks[1:]:
        merged += chunk
    assert isinstance(merged, AIMessage)
    assert merged.content == "42"
    assert merged.additional_kwargs == {"reasoning_content": "Six times seven."}
    assert merged.usage_metadata == {"input_tokens": 3, "output_tokens": 2, "total_tokens": 5}
    body = server.requests[-1][3]
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}


def test_modal_proxy_auth_and_the_303_for_long_requests(
    scripted: tuple[Scripted, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    server, base = scripted
    monkeypatch.setenv("PROMPTWIRE_MODAL_KEY", "wk-modal-key")
    monkeypatch.setenv("PROMPTWIRE_MODAL_SECRET", "ws-modal-secret")
    server.answer(303, b"", {"location": base + "/result?id=7", "content-type": "text/plain"})
    server.answer(200, _chat_reply("done at last"))
    assert ChatPromptwire().invoke("a long one").content == "done at last"
    (post, _, post_headers, _), (get, path, get_headers, _) = server.requests
    assert (post, get, path) == ("POST", "GET", "/v1/result")
    for headers in (post_headers, get_headers):
        assert headers["modal-key"] == "wk-modal-key"
        assert headers["modal-secret"] == "ws-modal-secret"


def test_only_safe_failures_are_retried(scripted: tuple[Scripted, str]) -> None:
    server, _ = scripted
    overloaded = {"error": {"message": "busy", "type": "server_error", "code": "overloaded"}}
    server.answer(503, overloaded, {"retry-after": "0"})
    server.answer(200, _chat_reply("after a retry"))
    assert ChatPromptwire(max_retries=1).invoke("x").content == "after a retry"
    assert len(server.requests) == 2
    server.answer(502, b"<html>bad gateway</html>", {"content-type": "text/html"})
    with pytest.raises(ServerError) as caught:
        ChatPromptwire(max_retries=2).invoke("x")
    assert caught.value.status_code == 502 and len(server.requests) == 3
    server.answer(503, overloaded, {"retry-after": "0"})
    with pytest.raises(OverloadedError) as busy:
        ChatPromptwire(max_retries=0).invoke("x")
    assert busy.value.error_type == "overloaded" and "busy" in str(busy.value)


@pytest.mark.parametrize(
    ("body", "kind", "message"),
    [
        (
            {"error": {"message": "no such model", "type": "invalid_request_error", "code": None}},
            "invalid_request_error",
            "no such model",
        ),
        (
            {"object": "error", "message": "old vLLM", "type": "BadRequestError", "code": 400},
            "BadRequestError",
            "old vLLM",
        ),
        ({"error": "plain words"}, None, "plain words"),
        ({"detail": "Not Found"}, None, "Not Found"),
    ],
)
def test_error_bodies_of_every_dialect(
    scripted: tuple[Scripted, str], body: Any, kind: str | None, message: str
) -> None:
    server, _ = scripted
    server.answer(400, body)
    with pytest.raises(InvalidRequestError) as caught:
        PromptwireLLM().invoke("x")
    assert caught.value.error_type == kind and message in str(caught.value)


def test_broken_streams_are_typed_errors(scripted: tuple[Scripted, str]) -> None:
    server, base = scripted
    server.answer(200, _sse(_delta(content="half"), done=False))
    with pytest.raises(ProtocolError, match=r"ended before its 'data: \[DONE\]'"):
        list(ChatPromptwire().stream("x"))
    error = {"error": {"message": "CUDA out of memory", "type": "server_error", "code": 500}}
    server.answer(200, _sse(_delta(content="half"), error, done=False))
    with pytest.raises(StreamError, match="CUDA out of memory") as failed:
        list(ChatPromptwire().stream("x"))
    assert failed.value.url == base
    server.answer(200, [b"data: {not json\n\n"])
    with pytest.raises(ProtocolError, match="not JSON"):
        list(PromptwireLLM().stream("x"))
    # Closed after its finish reason without [DONE]: finished all the same.
    server.answer(200, _sse(_delta(content="all"), FINISH, done=False))
    assert "".join(str(c.content) for c in ChatPromptwire().stream("x")) == "all"
    server.answer(200, {"choices": []})
    with pytest.raises(ProtocolError, match="no 'choices'"):
        PromptwireLLM().invoke("x")


def test_a_completion_request_and_reply(scripted: tuple[Scripted, str]) -> None:
    server, _ = scripted
    server.answer(
        200,
        {
            "object": "text_completion",
            "model": "qwen3",
            "choices": [{"index": 0, "text": " Paris.", "finish_reason": "length"}],
            "usage": {"prompt_tokens": "bad"},  # malformed: the text is kept all the same
        },
    )
    llm = PromptwireLLM(max_tokens=3, top_k=20, seed=1, model_kwargs={"min_p": 0.1})
    result = llm.generate(["The capital of France is"], stop=["\n"])
    generation = result.generations[0][0]
    assert generation.text == " Paris."
    assert generation.generation_info == {"finish_reason": "length", "model": "qwen3"}
    _, path, _, body = server.requests[-1]
    assert path == "/v1/completions"
    assert body == {
        "model": "qwen3",
        "prompt": "The capital of France is",
        "max_tokens": 3,
        "top_k": 20,
        "seed": 1,
        "min_p": 0.1,
        "stop": ["\n"],
    }


def test_stream_usage_can_be_turned_off(
    scripted: tuple[Scripted, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    server, _ = scripted
    monkeypatch.setenv("PROMPTWIRE_OPENAI__STREAM_USAGE", "false")
    server.answer(200, _sse({"choices": [{"index": 0, "text": "hi", "finish_reason": "stop"}]}))
    assert "".join(PromptwireLLM().stream("x")) == "hi"
    assert "stream_options" not in server.requests[-1][3]


def test_the_wire_joins_the_base_url_once() -> None:
    import httpx

    wire = OpenAIWire()
    base = httpx.URL("https://example.test/v1/?api-version=2")
    url, body = wire.request(base, {"prompt": "p", "messages": [1]}, stream=False)
    assert str(url) == "https://example.test/v1/chat/completions?api-version=2"
    assert body == {"messages": [1]}
    assert wire.request(base, {"prompt": "p", "messages": [1]}, stream=False)[0] is url


async def test_errors_are_endpoint_errors_everywhere(scripted: tuple[Scripted, str]) -> None:
    server, _ = scripted
    server.answer(401, {"error": {"message": "bad key", "type": "authentication_error"}})
    with pytest.raises(AuthenticationError):
        await ChatPromptwire().ainvoke("x")
    server.answer(200, _sse(_delta(content="a"), done=False))

    async def drain() -> AsyncIterator[Any]:
        async for chunk in PromptwireLLM().astream("x"):
            yield chunk

    with pytest.raises(EndpointError):
        [chunk async for chunk in drain()]


def test_a_call_whose_id_and_name_come_on_every_piece_is_named_once(
    scripted: tuple[Scripted, str],
) -> None:
    """llama-cpp-python's server sends a call's ``id`` and ``name`` on every piece; LangChain
    joins what the chunks carry, so the call was named ``get_weatherget_weather...`` (and
    ChatOpenAI's still is): a streaming agent called a tool that does not exist."""
    server, _ = scripted

    def piece(arguments: str) -> dict[str, Any]:
        call = {"index": 0, "id": "call_1", "type": "function"}
        return _delta(
            tool_calls=[{**call, "function": {"name": "get_weather", "arguments": arguments}}]
        )

    finish = {**FINISH, "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]}
    server.answer(200, _sse(piece('{"city": '), piece('"Paris"'), piece("}"), finish))
    chunks = list(ChatPromptwire().stream("Weather in Paris?"))
    merged = chunks[0]
    for chunk in chunks[1:]:
        merged += chunk
    assert isinstance(merged, AIMessage)
    (call,) = merged.tool_calls
    assert call["name"] == "get_weather" and call["id"] == "call_1"
    assert call["args"] == {"city": "Paris"}
