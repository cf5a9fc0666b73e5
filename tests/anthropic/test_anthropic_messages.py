"""Anthropic's Messages API (``POST /v1/messages``) of every promptwire app, called by
Anthropic's own Python SDK (sync, async, streaming) and by raw HTTP on a real uvicorn server:
replies, parameters, stop reasons, the stream's events, tools, errors in Anthropic's shape, auth
by ``x-api-key`` or bearer token, slots shared with the prompt route, metrics, and generations
cancelled when the client leaves."""

from __future__ import annotations

import json
from typing import Any

import anthropic
import httpx
import pytest
from promptwire_modal_dummy.engine import DummyEngine

from tests.support.engines import FailingMidStream, ObservedEngine
from tests.support.metrics import scrape
from tests.support.network import LOOPBACK_ONLY
from tests.support.route_servers import holding_the_slot
from tests.support.servers import serve_engine
from tests.support.waiting import wait_until

pytestmark = LOOPBACK_ONLY

TOKEN = "anthropic-routes-token-3f8b"
JSON = {"content-type": "application/json"}
HELLO: list[anthropic.types.MessageParam] = [{"role": "user", "content": "Identify yourself!"}]
WEATHER_TOOL: anthropic.types.ToolParam = {
    "name": "get_weather",
    "description": "The weather in a city",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}


def _sdk(url: str, **options: Any) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=url, api_key=TOKEN, max_retries=0, **options)


def _error(exc: anthropic.APIStatusError) -> dict[str, Any]:
    body = exc.response.json()
    assert body["type"] == "error" and set(body["error"]) == {"type", "message"}
    assert body["request_id"] == exc.response.headers["x-request-id"]
    return dict(body["error"])


# -- replies -----------------------------------------------------------------------------------


def test_a_message_is_rendered_by_the_engines_template(echo: tuple[ObservedEngine, str]) -> None:
    engine, url = echo
    reply = _sdk(url).messages.create(
        model="claude-any-name",
        max_tokens=64,
        system="Be brief.",
        messages=[
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": [{"type": "text", "text": "Hello"}]},
            {
                "role": "user",
                "content": [{"type": "text", "text": "Who"}, {"type": "text", "text": " are you?"}],
            },
        ],
    )
    assert reply.type == "message" and reply.role == "assistant" and reply.id.startswith("msg_")
    assert reply.model == "dummy"  # any model name is served by the one model
    assert [block.type for block in reply.content] == ["text"]
    assert reply.content[0].text == (  # type: ignore[union-attr]
        "System: Be brief.\n\nUser: Hi\n\nAssistant: Hello\n\nUser: Who are you?\n\nAssistant:"
    )
    assert (reply.stop_reason, reply.stop_sequence) == ("end_turn", None)
    assert reply.usage.output_tokens == 12 and reply.usage.input_tokens > 0
    sent = engine.requests[-1].messages
    assert sent is not None and [m.role for m in sent] == ["system", "user", "assistant", "user"]


def test_a_final_assistant_message_is_a_prefill_the_reply_continues(
    echo: tuple[ObservedEngine, str],
) -> None:
    engine, url = echo
    client = _sdk(url)
    hello: list[anthropic.types.MessageParam] = [{"role": "user", "content": "Hi"}]
    for prefill, rendered in [
        ("The answer is", "User: Hi\n\nAssistant: The answer is"),  # no turn after it
        ([{"type": "text", "text": "{"}], "User: Hi\n\nAssistant: {"),
        ("", "User: Hi\n\nAssistant:"),  # empty: a turn starts, as without it
    ]:
        reply = client.messages.create(
            model="m",
            max_tokens=64,
            messages=[*hello, {"role": "assistant", "content": prefill}],  # type: ignore[typeddict-item]
        )
        assert reply.content[0].text == rendered  # type: ignore[union-attr]
        assert engine.requests[-1].continue_final_message is bool(prefill)


def test_parameters_reach_the_engine(echo: tuple[ObservedEngine, str]) -> None:
    engine, url = echo
    _sdk(url).messages.create(
        model="dummy",
        max_tokens=40,
        messages=HELLO,
        stop_sequences=["never"],
        metadata={"user_id": "someone"},
        # Not in this SDK's signature any more; still Anthropic's API's.
        extra_body={"temperature": 0.5, "top_p": 0.9, "top_k": 7},
    )
    sent = engine.requests[-1]
    assert (sent.max_tokens, sent.temperature, sent.top_p, sent.top_k, sent.stop) == (
        40,
        0.5,
        0.9,
        7,
        ["never"],
    )


def test_stop_reasons(echo: tuple[ObservedEngine, str]) -> None:
    client = _sdk(echo[1])
    cut = client.messages.create(model="dummy", max_tokens=2, messages=HELLO)
    assert (cut.content[0].text, cut.stop_reason) == ("User: Identify ", "max_tokens")  # type: ignore[union-attr]
    stopped = client.messages.create(
        model="dummy", max_tokens=50, messages=HELLO, stop_sequences=["zzz", "yourself"]
    )
    assert stopped.content[0].text == "User: Identify "  # type: ignore[union-attr]
    assert (stopped.stop_reason, stopped.stop_sequence) == ("stop_sequence", "yourself")


# -- streams -----------------------------------------------------------------------------------


def _events(url: str, body: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """The stream's events as ``(event, data)``, read raw."""
    events, name = [], None
    headers = {"x-api-key": TOKEN, "anthropic-version": "2023-06-01"}
    with httpx.stream("POST", url + "v1/messages", json=body, headers=headers) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith("event: "):
                name = line.removeprefix("event: ")
            elif line.startswith("data: "):
                data = json.loads(line.removeprefix("data: "))
                assert data["type"] == name
                events.append((name, data))
    return events


def test_a_stream_has_anthropics_event_sequence(echo: tuple[ObservedEngine, str]) -> None:
    body = {"model": "dummy", "max_tokens": 50, "messages": HELLO, "stream": True}
    events = _events(echo[1], body)
    names = [name for name, _ in events]
    assert names[:4] == ["message_start", "ping", "content_block_start", "content_block_delta"]
    assert names[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert set(names[3:-3]) == {"content_block_delta"}
    start = events[0][1]["message"]
    assert (start["role"], start["content"], start["stop_reason"]) == ("assistant", [], None)
    text = "".join(data["delta"]["text"] for name, data in events if name == "content_block_delta")
    assert text == "User: Identify yourself!\n\nAssistant:"
    delta = events[-2][1]
    assert delta["delta"] == {"stop_reason": "end_turn", "stop_sequence": None}
    assert delta["usage"]["output_tokens"] == 4 and delta["usage"]["input_tokens"] > 0


def test_the_sdks_stream_helpers(echo: tuple[ObservedEngine, str]) -> None:
    client = _sdk(echo[1])
    whole = client.messages.create(model="dummy", max_tokens=50, messages=HELLO)
    with client.messages.stream(model="dummy", max_tokens=50, messages=HELLO) as stream:
        assert "".join(stream.text_stream) == whole.content[0].text  # type: ignore[union-attr]
        final = stream.get_final_message()
    assert final.stop_reason == "end_turn" and final.usage.output_tokens == 4
    with client.messages.stream(
        model="dummy", max_tokens=50, messages=HELLO, stop_sequences=["yourself"]
    ) as stream:
        final = stream.get_final_message()
    assert (final.stop_reason, final.stop_sequence) == ("stop_sequence", "yourself")


async def test_the_async_sdk_whole_and_streamed(echo: tuple[ObservedEngine, str]) -> None:
    client = anthropic.AsyncAnthropic(base_url=echo[1], api_key=TOKEN, max_retries=0)
    whole = await client.messages.create(model="dummy", max_tokens=50, messages=HELLO)
    stream = await client.messages.create(model="dummy", max_tokens=50, messages=HELLO, stream=True)
    pieces = [
        event.delta.text
        async for event in stream
        if event.type == "content_block_delta" and event.delta.type == "text_delta"
    ]
    assert "".join(pieces) == whole.content[0].text  # type: ignore[union-attr]
    await client.close()


# -- tools -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "choice",
    [{"type": "any"}, {"type": "tool", "name": "get_weather"}, {"type": "auto"}],
)
def test_a_tool_call(tools: tuple[ObservedEngine, str], choice: Any) -> None:
    engine, url = tools
    reply = _sdk(url).messages.create(
        model="dummy",
        max_tokens=50,
        messages=[{"role": "user", "content": "The weather in Paris?"}],
        tools=[WEATHER_TOOL],
        tool_choice=choice,
    )
    assert reply.stop_reason == "tool_use"
    call = reply.content[-1]
    assert call.type == "tool_use" and call.name == "get_weather"
    assert isinstance(call.input, dict) and isinstance(call.input["city"], str)
    sent = engine.requests[-1]
    expected = {"any": "required", "auto": "auto"}.get(choice["type"])
    if expected is None:
        assert sent.tool_choice is not None and sent.tool_choice.function.name == "get_weather"  # type: ignore[union-attr]
    else:
        assert sent.tool_choice == expected
    assert (
        sent.tools is not None and sent.tools[0].function.parameters == WEATHER_TOOL["input_schema"]
    )


def test_tool_choice_none_answers_in_text(tools: tuple[ObservedEngine, str]) -> None:
    reply = _sdk(tools[1]).messages.create(
        model="dummy",
        max_tokens=50,
        messages=[{"role": "user", "content": "The weather in Paris?"}],
        tools=[WEATHER_TOOL],
        tool_choice={"type": "none"},
    )
    assert reply.stop_reason == "end_turn" and [b.type for b in reply.content] == ["text"]


def test_a_tool_round_trip(tools: tuple[ObservedEngine, str]) -> None:
    engine, url = tools
    client = _sdk(url)
    question: anthropic.types.MessageParam = {"role": "user", "content": "Weather in Paris?"}
    first = client.messages.create(
        model="dummy", max_tokens=50, messages=[question], tools=[WEATHER_TOOL]
    )
    call = first.content[-1]
    assert call.type == "tool_use"
    second = client.messages.create(
        model="dummy",
        max_tokens=50,
        tools=[WEATHER_TOOL],
        messages=[
            question,
            {"role": "assistant", "content": first.content},  # type: ignore[typeddict-item]
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": call.id, "content": "sunny, 21 C"},
                ],
            },
        ],
    )
    assert second.stop_reason == "end_turn"
    assert second.content[0].text == "sunny, 21 C"  # type: ignore[union-attr]
    sent = engine.requests[-1].messages
    assert sent is not None
    assert [m.role for m in sent] == ["user", "assistant", "tool"]
    assistant, result = sent[1], sent[2]
    assert assistant.tool_calls is not None and assistant.tool_calls[0].id == call.id
    assert json.loads(assistant.tool_calls[0].function.arguments) == call.input
    assert (result.tool_call_id, result.content) == (call.id, "sunny, 21 C")


def test_tool_results_come_before_the_text_beside_them(
    tools: tuple[ObservedEngine, str],
) -> None:
    engine, url = tools
    _sdk(url).messages.create(
        model="dummy",
        max_tokens=50,
        messages=[
            {"role": "user", "content": "Weather?"},
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": "hmm", "signature": "s"},
                    {"type": "tool_use", "id": "t1", "name": "get_weather", "input": {}},
                    {
                        "type": "tool_use",
                        "id": "t2",
                        "name": "get_weather",
                        "input": {"city": "Oslo"},
                    },
                ],
            },
            {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": "t1",
                        "content": [{"type": "text", "text": "rain"}],
                    },
                    {
                        "type": "tool_result",
                        "tool_use_id": "t2",
                        "content": "snow",
                        "is_error": False,
                    },
                    {"type": "text", "text": "And tomorrow?"},
                ],
            },
        ],
    )
    sent = engine.requests[-1].messages
    assert sent is not None
    assert [(m.role, m.content, m.tool_call_id) for m in sent[2:]] == [
        ("tool", "rain", "t1"),
        ("tool", "snow", "t2"),
        ("user", "And tomorrow?", None),
    ]
    assert sent[1].tool_calls is not None and len(sent[1].tool_calls) == 2


def test_structured_output_by_output_config(tools: tuple[ObservedEngine, str]) -> None:
    schema = {
        "type": "object",
        "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
        "required": ["name", "age"],
        "additionalProperties": False,
    }
    reply = _sdk(tools[1]).messages.create(
        model="dummy",
        max_tokens=50,
        messages=HELLO,
        output_config={"format": {"type": "json_schema", "schema": schema}},
    )
    value = json.loads(reply.content[0].text)  # type: ignore[union-attr]
    assert set(value) == {"name", "age"} and isinstance(value["age"], int)


def test_a_streamed_tool_call(tools: tuple[ObservedEngine, str]) -> None:
    client = _sdk(tools[1])
    with client.messages.stream(
        model="dummy",
        max_tokens=50,
        messages=[{"role": "user", "content": "Weather in Paris?"}],
        tools=[WEATHER_TOOL],
        tool_choice={"type": "any"},
    ) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_message()
    assert "input_json" in kinds
    assert final.stop_reason == "tool_use"
    call = final.content[-1]
    assert call.type == "tool_use" and isinstance(call.input["city"], str)  # type: ignore[index]


def test_tools_on_an_engine_without_them_are_a_400(echo: tuple[ObservedEngine, str]) -> None:
    with pytest.raises(anthropic.BadRequestError) as caught:
        _sdk(echo[1]).messages.create(
            model="dummy", max_tokens=50, messages=HELLO, tools=[WEATHER_TOOL]
        )
    error = _error(caught.value)
    assert error["type"] == "invalid_request_error" and "tool calling" in error["message"]


# -- errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "said"),
    [
        ({"messages": HELLO}, "max_tokens"),
        ({"max_tokens": 0, "messages": HELLO}, "max_tokens"),
        ({"max_tokens": 5, "messages": []}, "messages"),
        ({"max_tokens": 5, "messages": [{"role": "system", "content": "x"}]}, "role"),
        (
            {
                "max_tokens": 5,
                "messages": [
                    {"role": "user", "content": [{"type": "image", "source": {"type": "url"}}]}
                ],
            },
            "'image' blocks",
        ),
        (
            {
                "max_tokens": 5,
                "messages": [
                    *HELLO,
                    {
                        "role": "assistant",
                        "content": [{"type": "tool_use", "id": "t1", "name": "f", "input": [1]}],
                    },
                ],
            },
            "messages.1.content.0.input must be an object",
        ),
        (
            {
                "max_tokens": 5,
                "messages": [*HELLO, {"role": "assistant", "content": "Hello "}],
            },
            "messages.1: final assistant content cannot end with whitespace",
        ),
        (
            {
                "max_tokens": 5,
                "messages": [*HELLO, {"role": "assistant", "content": "{"}],
                "tools": [WEATHER_TOOL],
                "tool_choice": {"type": "any"},
            },
            "continue_final_message cannot go with",
        ),
        (  # a type that is not a string names no kind of block (was a 500)
            {
                "max_tokens": 5,
                "messages": [{"role": "user", "content": [{"type": ["text"], "text": "hi"}]}],
            },
            "\"['text']\" blocks",
        ),
        (
            {
                "max_tokens": 5,
                "messages": HELLO,
                "tools": [{"type": "web_search_20250305", "name": "web_search"}],
            },
            "custom tools",
        ),
        ({"max_tokens": 5, "messages": HELLO, "tool_choice": {"type": "every"}}, "tool_choice"),
        (  # named as Anthropic names it, not as Chat Completions does
            {"max_tokens": 5, "messages": HELLO, "tools": [{"name": "f", "input_schema": 5}]},
            "tools.0.input_schema: Input should be a valid dictionary",
        ),
        (
            {"max_tokens": 5, "messages": HELLO, "tool_choice": {"type": "any"}},
            "a tool_choice that requires a call needs tools",
        ),
        (
            {
                "max_tokens": 5,
                "messages": HELLO,
                "tools": [WEATHER_TOOL],
                "tool_choice": {"type": "tool", "name": "other"},
            },
            "not in tools",
        ),
        (
            {
                "max_tokens": 5,
                "messages": HELLO,
                "thinking": {"type": "enabled", "budget_tokens": 1024},
            },
            "thinking",
        ),
        ({"max_tokens": 5, "messages": HELLO, "temperature": "hot"}, "temperature"),
        (  # checked with the whole request, the fault named by the block that holds it
            {
                "max_tokens": 5,
                "messages": [
                    *HELLO,
                    {"role": "assistant", "content": "Hello"},
                    {
                        "role": "user",
                        "content": [
                            {"type": "tool_result", "tool_use_id": "", "content": "x"},
                            {"type": "text", "text": "and?"},
                        ],
                    },
                ],
            },
            "messages.2.content.0: invalid request: tool_call_id",
        ),
    ],
)
def test_invalid_requests_are_400_in_anthropics_shape(
    echo: tuple[ObservedEngine, str], body: dict[str, Any], said: str
) -> None:
    with pytest.raises(anthropic.BadRequestError) as caught:
        _sdk(echo[1]).post("/v1/messages", cast_to=httpx.Response, body={"model": "m", **body})
    error = _error(caught.value)
    assert error["type"] == "invalid_request_error" and said in error["message"], error


def test_auth_takes_x_api_key_or_bearer_and_other_layers_errors_are_reshaped(
    echo: tuple[ObservedEngine, str],
) -> None:
    url = echo[1] + "v1/messages"
    body = {"model": "dummy", "max_tokens": 5, "messages": HELLO}
    assert httpx.post(url, json=body, headers={"x-api-key": TOKEN}).status_code == 200
    bearer = {"authorization": f"Bearer {TOKEN}"}
    assert httpx.post(url, json=body, headers=bearer).status_code == 200
    for headers in ({}, {"x-api-key": "wrong"}, {"authorization": "Bearer wrong"}):
        refused = httpx.post(url, json=body, headers=headers)
        assert refused.status_code == 401
        assert refused.json()["error"]["type"] == "authentication_error"
        assert TOKEN not in refused.text
    # x-api-key works on the other routes too.
    assert httpx.post(echo[1], json={"prompt": "p"}, headers={"x-api-key": TOKEN}).is_success
    two = [("x-api-key", TOKEN), ("x-api-key", TOKEN)]
    assert httpx.post(url, json=body, headers=two).status_code == 400
    key = {"x-api-key": TOKEN}
    checks = [
        (httpx.post(url + "/batches", json=body, headers=key), 404, "not_found_error"),
        (httpx.get(url, headers=key), 405, "invalid_request_error"),
        (
            httpx.post(url, content=b"{", headers=key | {"content-type": "application/json"}),
            400,
            "invalid_request_error",
        ),
        (httpx.post(url, content=b"{}", headers=key), 415, "invalid_request_error"),
        (
            httpx.post(url, json={**body, "system": "x" * (2 << 20)}, headers=key),
            413,
            "request_too_large",
        ),
    ]
    for answer, status, kind in checks:
        assert answer.status_code == status, answer.text
        assert answer.json()["type"] == "error" and answer.json()["error"]["type"] == kind


def test_requests_in_flight_are_counted_with_the_prompt_route(
    one_slot: tuple[ObservedEngine, str],
) -> None:
    engine, url = one_slot
    with holding_the_slot(url, TOKEN), pytest.raises(anthropic.APIStatusError) as caught:
        _sdk(url).messages.create(model="dummy", max_tokens=5, messages=HELLO)
    assert caught.value.status_code == 503
    assert caught.value.response.headers["retry-after"] == "1"
    assert _error(caught.value)["type"] == "overloaded_error"
    wait_until(lambda: engine.active == 0)


def test_leaving_a_stream_or_a_whole_reply_cancels_the_generation(
    one_slot: tuple[ObservedEngine, str],
) -> None:
    engine, url = one_slot
    wait_until(lambda: engine.active == 0)
    long: list[anthropic.types.MessageParam] = [{"role": "user", "content": "w " * 200}]
    stream = _sdk(url).messages.create(model="dummy", max_tokens=500, messages=long, stream=True)
    next(iter(stream))
    assert engine.active == 1
    stream.close()
    wait_until(lambda: engine.active == 0, timeout=5)
    with pytest.raises(anthropic.APITimeoutError):
        _sdk(url, timeout=0.5).messages.create(model="dummy", max_tokens=500, messages=long)
    wait_until(lambda: engine.active == 0, timeout=5)


def test_requests_are_counted_in_the_metrics(echo: tuple[ObservedEngine, str]) -> None:
    _sdk(echo[1]).messages.create(model="dummy", max_tokens=5, messages=HELLO)
    metrics = scrape(echo[1], TOKEN)
    served = metrics.value("promptwire_requests_total", route="/v1/messages", status="200")
    assert served is not None and served >= 1


def test_a_failure_mid_stream_is_anthropics_error_event() -> None:
    with serve_engine(FailingMidStream(), api_key=TOKEN) as server:
        stream = _sdk(server.url).messages.create(
            model="failing", max_tokens=5, messages=HELLO, stream=True
        )
        with pytest.raises(anthropic.APIStatusError, match="the GPU fell over"):
            list(stream)


def test_a_loading_engine_is_503_overloaded() -> None:
    class Loading(DummyEngine):
        @property
        def ready(self) -> bool:
            return False

    with serve_engine(Loading(), api_key=TOKEN) as server:
        with pytest.raises(anthropic.APIStatusError) as caught:
            _sdk(server.url).messages.create(model="dummy", max_tokens=5, messages=HELLO)
        assert caught.value.status_code == 503
        assert _error(caught.value)["message"] == "the model is loading"
        with pytest.raises(anthropic.APIStatusError) as counting:
            _sdk(server.url).messages.count_tokens(model="dummy", messages=HELLO)
        assert counting.value.status_code == 503
        assert _error(counting.value)["type"] == "overloaded_error"


# -- counting tokens ---------------------------------------------------------------------------


def test_count_tokens_is_what_the_answer_reports_as_input(
    echo: tuple[ObservedEngine, str],
) -> None:
    """``POST /v1/messages/count_tokens`` renders the conversation with the engine's template and
    counts it with the engine: the ``input_tokens`` of the answer to the same conversation."""
    engine, url = echo
    conversations: list[dict[str, Any]] = [
        {"messages": HELLO},
        {"messages": HELLO, "system": "Be brief and kind, always."},
        {
            "messages": [
                {"role": "user", "content": "one two"},
                {"role": "assistant", "content": "three"},
                {"role": "user", "content": [{"type": "text", "text": "four five six"}]},
            ]
        },
    ]
    seen = len(engine.requests)
    for conversation in conversations:
        counted = _sdk(url).messages.count_tokens(model="dummy", **conversation)
        answered = _sdk(url).messages.create(model="dummy", max_tokens=1, **conversation)
        assert counted.input_tokens == answered.usage.input_tokens > 0, conversation
    assert len(engine.requests) == seen + len(conversations)  # counting generated nothing


def test_count_tokens_counts_the_tools_an_engine_is_prompted_with(
    tools: tuple[ObservedEngine, str],
) -> None:
    _, url = tools
    counted = _sdk(url).messages.count_tokens(model="dummy", messages=HELLO, tools=[WEATHER_TOOL])
    answered = _sdk(url).messages.create(
        model="dummy", max_tokens=64, messages=HELLO, tools=[WEATHER_TOOL]
    )
    assert counted.input_tokens == answered.usage.input_tokens


def test_count_tokens_takes_no_slot(one_slot: tuple[ObservedEngine, str]) -> None:
    _, url = one_slot
    with holding_the_slot(url, TOKEN):
        assert _sdk(url).messages.count_tokens(model="dummy", messages=HELLO).input_tokens > 0


def test_count_tokens_refuses_in_anthropics_shape(echo: tuple[ObservedEngine, str]) -> None:
    _, url = echo
    key = {"x-api-key": TOKEN}
    count_url = url + "v1/messages/count_tokens"
    checks = [
        (httpx.post(count_url, json={"model": "dummy"}, headers=key), 400, "invalid_request_error"),
        (httpx.post(count_url, content=b"{", headers=key | JSON), 400, "invalid_request_error"),
        (
            httpx.post(
                count_url,
                json={"messages": [{"role": "user", "content": [{"type": "image"}]}]},
                headers=key,
            ),
            400,
            "invalid_request_error",
        ),
        (httpx.post(count_url, json={"messages": HELLO}), 401, "authentication_error"),
        (httpx.get(count_url, headers=key), 405, "invalid_request_error"),
    ]
    for answer, status, kind in checks:
        assert answer.status_code == status, answer.text
        assert answer.json()["type"] == "error" and answer.json()["error"]["type"] == kind
