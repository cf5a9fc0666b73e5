"""The OpenAI routes of every promptwire app, called by OpenAI's own Python SDK (sync, async,
streaming) on a real uvicorn server: replies, parameters, errors, auth, limits shared with the
prompt route, the engine's chat template, and generations cancelled when the client leaves."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncGenerator, Iterator
from typing import Any

import httpx
import openai
import pytest
from promptwire.engine import Engine, EngineError, EngineEvent, Finish, TextChunk
from promptwire.protocol import ChatMessage, FinishReason, PromptRequest, Usage
from promptwire_modal_dummy.engine import DummyEngine
from promptwire_reverse.engine import MAX_PROMPT_WORDS, ReverseEngine
from promptwire_reverse.settings import ReverseSettings

from tests.support.engines import ObservedEngine
from tests.support.network import LOOPBACK_ONLY
from tests.support.route_servers import holding_the_slot
from tests.support.servers import serve_engine
from tests.support.waiting import wait_until

pytestmark = LOOPBACK_ONLY

TOKEN = "openai-routes-token-5d1e"
HELLO = [{"role": "user", "content": "Identify yourself, bot!"}]


def _sdk(url: str, **options: Any) -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "v1", api_key=TOKEN, max_retries=0, **options)


def _async_sdk(url: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=url + "v1", api_key=TOKEN, max_retries=0)


@pytest.fixture(scope="module")
def reverse_url() -> Iterator[str]:
    with serve_engine(ReverseEngine(ReverseSettings()), api_key=TOKEN) as server:
        yield server.url


# -- replies -----------------------------------------------------------------------------------


def test_models_lists_the_served_model(echo: tuple[ObservedEngine, str]) -> None:
    client = _sdk(echo[1])
    models = client.models.list()
    assert [model.id for model in models.data] == ["dummy"]
    assert models.data[0].owned_by == "promptwire"
    assert client.models.retrieve("dummy").id == "dummy"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-4o")


def test_a_chat_completion_is_rendered_by_the_engines_template(
    echo: tuple[ObservedEngine, str],
) -> None:
    reply = _sdk(echo[1]).chat.completions.create(
        model="dummy",
        messages=[
            {"role": "developer", "content": "Be brief."},
            {
                "role": "user",
                "content": [{"type": "text", "text": "Hi "}, {"type": "text", "text": "there"}],
            },
        ],
    )
    choice = reply.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content == "System: Be brief.\n\nUser: Hi there\n\nAssistant:"
    assert choice.finish_reason == "stop"
    assert reply.object == "chat.completion" and reply.model == "dummy"
    assert reply.id.startswith("chatcmpl-")
    assert reply.usage is not None and reply.usage.completion_tokens == 7
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + 7


def test_continue_final_message_continues_the_assistants_text(
    echo: tuple[ObservedEngine, str],
) -> None:
    """vLLM's extension: the final assistant message is where the reply starts."""
    client = _sdk(echo[1])
    prefilled = [*HELLO, {"role": "assistant", "content": "I am"}]
    reply = client.chat.completions.create(
        model="dummy", messages=prefilled, extra_body={"continue_final_message": True}
    )
    assert reply.choices[0].message.content == "User: Identify yourself, bot!\n\nAssistant: I am"
    with pytest.raises(openai.BadRequestError, match="continue_final_message"):
        client.chat.completions.create(
            model="dummy", messages=HELLO, extra_body={"continue_final_message": True}
        )


def test_another_engines_chat_template_is_used(reverse_url: str) -> None:
    reply = _sdk(reverse_url).chat.completions.create(
        model="reverse-1",
        messages=[
            {"role": "system", "content": "ignored by this template"},
            {"role": "user", "content": "one two three"},
        ],
    )
    assert reply.choices[0].message.content == "three two one"


def test_a_completion_with_one_and_with_several_prompts(echo: tuple[ObservedEngine, str]) -> None:
    client = _sdk(echo[1])
    one = client.completions.create(model="dummy", prompt="one two three")
    assert [(c.index, c.text, c.finish_reason) for c in one.choices] == [
        (0, "one two three", "stop")
    ]
    assert one.object == "text_completion" and one.id.startswith("cmpl-")
    several = client.completions.create(model="dummy", prompt=["a b", "c d e"], max_tokens=1)
    assert [(c.index, c.text, c.finish_reason) for c in several.choices] == [
        (0, "a ", "length"),
        (1, "c ", "length"),
    ]
    assert several.usage is not None and several.usage.completion_tokens == 2
    echoed = client.completions.create(model="dummy", prompt="x y", echo=True, max_tokens=1)
    assert echoed.choices[0].text == "x yx "


def test_the_model_may_be_left_out(echo: tuple[ObservedEngine, str]) -> None:
    reply = httpx.post(
        echo[1] + "v1/chat/completions",
        json={"messages": HELLO},
        headers={"Authorization": f"Bearer {TOKEN}"},
    )
    assert reply.status_code == 200 and reply.json()["model"] == "dummy"


def test_parameters_reach_the_engine(echo: tuple[ObservedEngine, str]) -> None:
    engine, url = echo
    client = _sdk(url)
    before = len(engine.requests)
    client.chat.completions.create(
        model="dummy",
        messages=HELLO,
        max_completion_tokens=3,
        max_tokens=9,
        temperature=0.5,
        top_p=0.9,
        seed=7,
        stop="yourself",
        user="someone",
        extra_body={"top_k": 40, "repetition_penalty": 1.1, "unknown": {"any": "thing"}},
    )
    client.completions.create(model="dummy", prompt="p", stop=["a", "b"], max_tokens=4)
    chat, completion = engine.requests[before:]
    assert chat.known_params() == {
        "max_tokens": 3,
        "temperature": 0.5,
        "top_p": 0.9,
        "top_k": 40,
        "seed": 7,
        "stop": ["yourself"],
    }
    assert completion.known_params() == {"max_tokens": 4, "stop": ["a", "b"]}
    # As on the prompt route, a conversation reaches the engine rendered in ``prompt`` and kept
    # in ``messages`` (ExLlamaV2's engine tokenizes a template's rendering without adding BOS).
    assert chat.prompt == "User: Identify yourself, bot!\n\nAssistant:"
    assert chat.messages == [ChatMessage(role="user", content="Identify yourself, bot!")]
    assert completion.messages is None


def test_stop_and_length_finish_reasons(echo: tuple[ObservedEngine, str]) -> None:
    client = _sdk(echo[1])
    stopped = client.completions.create(model="dummy", prompt="one two three", stop="two")
    assert (stopped.choices[0].text, stopped.choices[0].finish_reason) == ("one ", "stop")
    cut = client.chat.completions.create(model="dummy", messages=HELLO, max_tokens=2)
    assert (cut.choices[0].message.content, cut.choices[0].finish_reason) == (
        "User: Identify ",
        "length",
    )


# -- streams -----------------------------------------------------------------------------------


def test_a_chat_stream_with_usage(echo: tuple[ObservedEngine, str]) -> None:
    chunks = list(
        _sdk(echo[1]).chat.completions.create(
            model="dummy",
            messages=[{"role": "user", "content": "a b c"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "User: a b c\n\nAssistant:"
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "stop" and set(finishes[:-1]) == {None}
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 5
    assert {c.id for c in chunks} == {chunks[0].id}
    assert {c.object for c in chunks} == {"chat.completion.chunk"}


def test_a_stream_ends_with_done_and_has_usage_only_when_asked(
    echo: tuple[ObservedEngine, str],
) -> None:
    with httpx.stream(
        "POST",
        echo[1] + "v1/completions",
        json={"model": "dummy", "prompt": "x y", "stream": True, "max_tokens": 1},
        headers={"Authorization": f"Bearer {TOKEN}"},
    ) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in response.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    assert all(line.startswith("data: ") for line in lines)
    assert '"usage"' not in "".join(lines)
    assert '"finish_reason":"length"' in lines[-2]


def test_a_completion_stream(echo: tuple[ObservedEngine, str]) -> None:
    stream = _sdk(echo[1]).completions.create(
        model="dummy", prompt="one two", stream=True, echo=True
    )
    chunks = list(stream)
    assert "".join(c.choices[0].text for c in chunks) == "one twoone two"
    assert chunks[-1].choices[0].finish_reason == "stop"


async def test_the_async_sdk_whole_and_streamed(echo: tuple[ObservedEngine, str]) -> None:
    client = _async_sdk(echo[1])
    replies = await asyncio.gather(
        *(
            client.chat.completions.create(
                model="dummy", messages=[{"role": "user", "content": f"n {i}"}]
            )
            for i in range(4)
        )
    )
    assert [r.choices[0].message.content for r in replies] == [
        f"User: n {i}\n\nAssistant:" for i in range(4)
    ]
    stream = await client.completions.create(model="dummy", prompt="a b c", stream=True)
    assert "".join([c.choices[0].text async for c in stream]) == "a b c"
    await client.close()


# -- errors ------------------------------------------------------------------------------------


def _openai_error(exc: openai.APIStatusError) -> dict[str, Any]:
    body = exc.response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code", "request_id"}
    assert body["error"]["request_id"] == exc.response.headers["x-request-id"]
    assert exc.response.headers["content-type"].startswith("application/json")
    return body["error"]  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    ("options", "param"),
    [
        ({"n": 2}, "n"),
        ({"logprobs": True}, "logprobs"),
        ({"top_logprobs": 2}, "top_logprobs"),
        ({"tools": [{"type": "function", "function": {"name": "f"}}]}, "tools"),
        ({"tool_choice": "required"}, "tool_choice"),
        ({"response_format": {"type": "json_object"}}, "response_format"),
        ({"presence_penalty": 0.5}, "presence_penalty"),
        ({"logit_bias": {"50256": -100}}, "logit_bias"),
        ({"temperature": -1}, "temperature"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"extra_body": {"seed": "7"}}, "seed"),
        ({"stop": [""]}, "stop"),
    ],
)
def test_what_cannot_be_honoured_is_a_400_naming_it(
    echo: tuple[ObservedEngine, str], options: dict[str, Any], param: str
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        _sdk(echo[1]).chat.completions.create(model="dummy", messages=HELLO, **options)
    error = _openai_error(caught.value)
    assert (error["type"], error["param"]) == ("invalid_request_error", param)
    assert caught.value.param == param


@pytest.mark.parametrize(
    ("messages", "param"),
    [
        ([{"role": "tool", "content": "x"}], "messages.0"),  # no tool_call_id
        ([{"role": "narrator", "content": "x"}], "messages.0.role"),
        (
            [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}],
            "messages.0.content",
        ),
        ([{"role": "user", "content": 5}], "messages.0.content"),
        (  # checked with the whole request: the first message at fault is named
            [
                {"role": "system", "content": "x"},
                {"role": "assistant", "content": None, "tool_calls": [{"id": "", "function": {}}]},
                {"role": "tool", "content": "x"},
            ],
            "messages.1.tool_calls.0.id",
        ),
        ([], "messages"),
    ],
)
def test_messages_that_are_not_text_are_refused(
    echo: tuple[ObservedEngine, str], messages: list[Any], param: str
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        _sdk(echo[1]).chat.completions.create(model="dummy", messages=messages)
    assert _openai_error(caught.value)["param"] == param


def test_completion_refusals(echo: tuple[ObservedEngine, str]) -> None:
    client = _sdk(echo[1])
    for options, param in [
        ({"prompt": [1, 2, 3]}, "prompt"),
        ({"prompt": "x", "best_of": 2}, "best_of"),
        ({"prompt": "x", "suffix": "y"}, "suffix"),
        ({"prompt": ["a", "b"], "stream": True}, "prompt"),
        ({"prompt": "x", "logprobs": 1}, "logprobs"),
        ({"prompt": ["a"] * 5}, "prompt"),  # more than the server's 4 requests in flight
    ]:
        with pytest.raises(openai.BadRequestError) as caught:
            client.completions.create(model="dummy", **options)
        assert _openai_error(caught.value)["param"] == param, options


def test_a_model_the_server_does_not_serve_is_404(echo: tuple[ObservedEngine, str]) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        _sdk(echo[1]).chat.completions.create(model="gpt-4o", messages=HELLO)
    error = _openai_error(caught.value)
    assert error["code"] == "model_not_found" and "'dummy'" in error["message"]


def test_auth_and_unknown_paths_answer_in_openais_shape(echo: tuple[ObservedEngine, str]) -> None:
    url = echo[1]
    with pytest.raises(openai.AuthenticationError) as caught:
        openai.OpenAI(base_url=url + "v1", api_key="wrong", max_retries=0).models.list()
    error = _openai_error(caught.value)
    assert (error["type"], error["code"]) == ("authentication_error", "unauthorized")
    assert caught.value.response.headers["www-authenticate"] == "Bearer"
    assert TOKEN not in caught.value.response.text
    headers = {"Authorization": f"Bearer {TOKEN}"}
    missing = httpx.post(url + "v1/embeddings", json={}, headers=headers)
    assert missing.status_code == 404
    assert missing.json()["error"]["type"] == "invalid_request_error"
    assert httpx.get(url + "v1/chat/completions", headers=headers).status_code == 405
    # The prompt route keeps its own shape.
    native = httpx.post(url, json={}, headers=headers)
    assert native.status_code == 422
    assert set(native.json()["error"]) == {"type", "message", "request_id"}


def test_invalid_json_and_oversized_bodies(echo: tuple[ObservedEngine, str]) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    url = echo[1] + "v1/chat/completions"
    for body in [b"{", b"[1]", b'{"messages": NaN}']:
        bad = httpx.post(url, content=body, headers=headers)
        assert bad.status_code == 400, body
        assert set(bad.json()["error"]) == {"message", "type", "param", "code", "request_id"}
    with pytest.raises(openai.APIStatusError) as caught:
        _sdk(echo[1]).chat.completions.create(
            model="dummy", messages=[{"role": "user", "content": "x" * (1 << 20)}]
        )
    assert caught.value.status_code == 413
    assert _openai_error(caught.value)["code"] == "request_too_large"


def test_a_prompt_the_engine_rejects_is_a_400(reverse_url: str) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        _sdk(reverse_url).completions.create(
            model="reverse-1", prompt="w " * (MAX_PROMPT_WORDS + 1)
        )
    assert "longer than" in _openai_error(caught.value)["message"]


def test_requests_in_flight_are_counted_with_the_prompt_route(
    one_slot: tuple[ObservedEngine, str],
) -> None:
    engine, url = one_slot
    headers = {"Authorization": f"Bearer {TOKEN}"}
    with holding_the_slot(url, TOKEN), pytest.raises(openai.InternalServerError) as caught:
        _sdk(url).chat.completions.create(model="dummy", messages=HELLO)
    assert caught.value.status_code == 503
    assert caught.value.response.headers["retry-after"] == "1"
    assert _openai_error(caught.value)["code"] == "overloaded"
    wait_until(lambda: engine.active == 0)
    # And the other way round; the slot is given back after each.
    stream = _sdk(url).chat.completions.create(
        model="dummy", messages=[{"role": "user", "content": "w " * 40}], stream=True
    )
    next(iter(stream))
    assert httpx.post(url, json={"prompt": "p"}, headers=headers).status_code == 503
    stream.close()
    wait_until(lambda: engine.active == 0)
    done = _sdk(url, timeout=30).chat.completions.create(model="dummy", messages=HELLO)
    assert done.choices[0].finish_reason == "stop"


def test_leaving_a_stream_or_a_whole_reply_cancels_the_generation(
    one_slot: tuple[ObservedEngine, str],
) -> None:
    engine, url = one_slot
    wait_until(lambda: engine.active == 0)
    stream = _sdk(url).chat.completions.create(
        model="dummy", messages=[{"role": "user", "content": "w " * 200}], stream=True
    )
    next(iter(stream))
    assert engine.active == 1
    stream.close()
    wait_until(lambda: engine.active == 0, timeout=5)
    with pytest.raises(openai.APITimeoutError):
        _sdk(url, timeout=0.5).completions.create(model="dummy", prompt="w " * 200)
    wait_until(lambda: engine.active == 0, timeout=5)


class _Failing(Engine):
    """Fails after its first piece: with an engine error, or with a bug."""

    model_name = "failing"

    def __init__(self) -> None:
        self.bug = False

    async def stream(self, request: PromptRequest) -> AsyncGenerator[EngineEvent, None]:
        if request.prompt.startswith("bug now"):
            raise RuntimeError("a bug before the first piece")
        yield TextChunk("first ")
        if request.prompt.startswith("bug"):
            raise RuntimeError("a bug")
        raise EngineError("the GPU fell over")
        yield Finish(FinishReason.STOP, Usage())  # pragma: no cover


def test_failures_mid_stream_and_server_errors_reach_the_sdk() -> None:
    with serve_engine(_Failing(), api_key=TOKEN) as server:
        client = _sdk(server.url)
        stream = client.chat.completions.create(model="failing", messages=HELLO, stream=True)
        with pytest.raises(openai.APIError, match="the GPU fell over"):
            list(stream)
        stream = client.completions.create(model="failing", prompt="bug", stream=True)
        with pytest.raises(openai.APIError, match="internal server error"):
            list(stream)
        with pytest.raises(openai.InternalServerError) as caught:
            client.completions.create(model="failing", prompt="bug now")
        error = _openai_error(caught.value)
        assert (error["type"], error["message"]) == ("server_error", "internal server error")
        with pytest.raises(openai.InternalServerError):
            client.completions.create(model="failing", prompt="no bug")


def test_a_loading_engine_is_503_with_retry_after() -> None:
    class Loading(DummyEngine):
        @property
        def ready(self) -> bool:
            return False

    with serve_engine(Loading(), api_key=TOKEN) as server:
        with pytest.raises(openai.InternalServerError) as caught:
            _sdk(server.url).chat.completions.create(model="dummy", messages=HELLO)
        assert caught.value.status_code == 503
        assert caught.value.response.headers["retry-after"] == "1"
        assert _openai_error(caught.value)["code"] == "not_ready"


def test_concurrent_sync_calls_from_threads(echo: tuple[ObservedEngine, str]) -> None:
    client = _sdk(echo[1])
    answers: list[str] = []

    def call(i: int) -> None:
        reply = client.completions.create(model="dummy", prompt=f"t {i}")
        answers.append(reply.choices[0].text)

    threads = [threading.Thread(target=call, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert sorted(answers) == [f"t {i}" for i in range(4)]
