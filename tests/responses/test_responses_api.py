"""OpenAI's Responses API (``POST /v1/responses``) of every promptwire app, called by OpenAI's
own Python SDK (sync, async, streaming, ``parse``) on a real uvicorn server: replies, input
items, parameters, the stream's events, tools, structured output, statelessness, errors in
OpenAI's shape, slots shared with the prompt route and generations cancelled when the client
leaves."""

from __future__ import annotations

import json
from typing import Any

import httpx
import openai
import pytest

from tests.support.client_tools import Person
from tests.support.engines import FailingMidStream, ObservedEngine
from tests.support.network import LOOPBACK_ONLY
from tests.support.route_servers import holding_the_slot
from tests.support.servers import serve_engine
from tests.support.waiting import wait_until

pytestmark = LOOPBACK_ONLY

TOKEN = "responses-routes-token-91c2"
WEATHER_TOOL: Any = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
        "additionalProperties": False,
    },
    "strict": True,
}


def _sdk(url: str, **options: Any) -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "v1", api_key=TOKEN, max_retries=0, **options)


def _error(exc: openai.APIStatusError) -> dict[str, Any]:
    error = exc.response.json()["error"]
    assert {"message", "type", "param", "code"} <= set(error)
    return dict(error)


# -- replies -----------------------------------------------------------------------------------


def test_a_string_input_with_instructions(echo: tuple[ObservedEngine, str]) -> None:
    engine, url = echo
    reply = _sdk(url).responses.create(
        model="dummy", input="Who are you?", instructions="Be brief."
    )
    assert reply.object == "response" and reply.id.startswith("resp_")
    assert (reply.status, reply.model, reply.store) == ("completed", "dummy", False)
    assert reply.output_text == "System: Be brief.\n\nUser: Who are you?\n\nAssistant:"
    assert [item.type for item in reply.output] == ["message"]
    assert reply.usage is not None and reply.usage.output_tokens == 8
    assert reply.usage.total_tokens == reply.usage.input_tokens + 8
    sent = engine.requests[-1].messages
    assert sent is not None and [m.role for m in sent] == ["system", "user"]


def test_input_items_and_parameters_reach_the_engine(echo: tuple[ObservedEngine, str]) -> None:
    engine, url = echo
    reply = _sdk(url).responses.create(
        model="dummy",
        input=[
            {"role": "developer", "content": "Rules."},
            {"role": "user", "content": [{"type": "input_text", "text": "Hi"}]},
            {
                "type": "message",
                "role": "assistant",
                "content": [{"type": "output_text", "text": "Hello", "annotations": []}],
            },
            {"type": "reasoning", "id": "rs_1", "summary": []},
            {"role": "user", "content": "Again"},
        ],
        max_output_tokens=40,
        temperature=0.5,
        top_p=0.9,
        metadata={"k": "v"},
        store=True,
        extra_body={"top_k": 5, "seed": 3},
    )
    assert reply.store is False and reply.metadata == {"k": "v"}
    sent = engine.requests[-1]
    assert sent.messages is not None
    assert [(m.role, m.content) for m in sent.messages] == [
        ("system", "Rules."),
        ("user", "Hi"),
        ("assistant", "Hello"),
        ("user", "Again"),
    ]
    assert (sent.max_tokens, sent.temperature, sent.top_p, sent.top_k, sent.seed) == (
        40,
        0.5,
        0.9,
        5,
        3,
    )


def test_max_output_tokens_makes_an_incomplete_response(echo: tuple[ObservedEngine, str]) -> None:
    reply = _sdk(echo[1]).responses.create(
        model="dummy", input="one two three", max_output_tokens=2
    )
    assert reply.status == "incomplete"
    assert reply.incomplete_details is not None
    assert reply.incomplete_details.reason == "max_output_tokens"
    assert reply.output_text == "User: one "
    assert reply.output[0].status == "incomplete"  # the message, cut as the response is
    events = list(
        _sdk(echo[1]).responses.create(
            model="dummy", input="one two three", max_output_tokens=2, stream=True
        )
    )
    done = [event.item for event in events if event.type == "response.output_item.done"]
    assert [item.status for item in done] == ["incomplete"]
    assert events[-1].type == "response.incomplete"
    assert events[-1].response.output[0].status == "incomplete"


# -- streams -----------------------------------------------------------------------------------


def test_a_stream_has_the_responses_event_sequence(echo: tuple[ObservedEngine, str]) -> None:
    events = list(_sdk(echo[1]).responses.create(model="dummy", input="a b", stream=True))
    kinds = [event.type for event in events]
    assert kinds[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert kinds[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert set(kinds[4:-4]) == {"response.output_text.delta"}
    assert [event.sequence_number for event in events] == list(range(len(events)))
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == "User: a b\n\nAssistant:"
    done = events[-1].response  # type: ignore[union-attr]
    assert done.output_text == text and done.status == "completed" and done.usage is not None
    assert events[0].response.status == "in_progress"  # type: ignore[union-attr]


def test_the_sdks_stream_helper_and_the_async_sdk(echo: tuple[ObservedEngine, str]) -> None:
    with _sdk(echo[1]).responses.stream(model="dummy", input="a b") as stream:
        final = stream.get_final_response()
    assert final.output_text == "User: a b\n\nAssistant:"


async def test_the_async_sdk(echo: tuple[ObservedEngine, str]) -> None:
    client = openai.AsyncOpenAI(base_url=echo[1] + "v1", api_key=TOKEN, max_retries=0)
    whole = await client.responses.create(model="dummy", input="x y")
    stream = await client.responses.create(model="dummy", input="x y", stream=True)
    text = "".join([e.delta async for e in stream if e.type == "response.output_text.delta"])
    assert text == whole.output_text
    await client.close()


# -- tools and structured output ---------------------------------------------------------------


@pytest.mark.parametrize("choice", ["required", {"type": "function", "name": "get_weather"}])
def test_a_function_call(tools: tuple[ObservedEngine, str], choice: Any) -> None:
    reply = _sdk(tools[1]).responses.create(
        model="dummy", input="Weather in Paris?", tools=[WEATHER_TOOL], tool_choice=choice
    )
    assert [item.type for item in reply.output] == ["function_call"]
    call = reply.output[0]
    assert call.type == "function_call" and call.name == "get_weather"
    assert isinstance(json.loads(call.arguments)["city"], str)
    assert reply.output_text == ""


def test_a_function_call_round_trip(tools: tuple[ObservedEngine, str]) -> None:
    engine, url = tools
    client = _sdk(url)
    first = client.responses.create(model="dummy", input="Weather in Paris?", tools=[WEATHER_TOOL])
    call = first.output[0]
    assert call.type == "function_call"
    history: list[Any] = [{"role": "user", "content": "Weather in Paris?"}, *first.output]
    history.append({"type": "function_call_output", "call_id": call.call_id, "output": "sunny"})
    second = client.responses.create(model="dummy", input=history, tools=[WEATHER_TOOL])
    assert second.output_text == "sunny"
    sent = engine.requests[-1].messages
    assert sent is not None and [m.role for m in sent] == ["user", "assistant", "tool"]
    assert sent[1].tool_calls is not None and sent[1].tool_calls[0].id == call.call_id
    assert sent[2].tool_call_id == call.call_id


def test_a_streamed_function_call(tools: tuple[ObservedEngine, str]) -> None:
    events = list(
        _sdk(tools[1]).responses.create(
            model="dummy",
            input="Weather?",
            tools=[WEATHER_TOOL],
            tool_choice="required",
            stream=True,
        )
    )
    kinds = [event.type for event in events]
    assert kinds == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    arguments = events[3].delta  # type: ignore[union-attr]
    done = events[-1].response  # type: ignore[union-attr]
    assert done.output[0].arguments == arguments and json.loads(arguments)["city"]


def test_structured_output_by_text_format(tools: tuple[ObservedEngine, str]) -> None:
    engine, url = tools
    parsed = _sdk(url).responses.parse(model="dummy", input="Someone", text_format=Person)
    assert isinstance(parsed.output_parsed, Person)
    sent = engine.requests[-1].response_format
    assert sent is not None and sent.type == "json_schema"
    mode = _sdk(url).responses.create(
        model="dummy", input="Any JSON", text={"format": {"type": "json_object"}}
    )
    assert isinstance(json.loads(mode.output_text), dict)


# -- errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "param", "said"),
    [
        ({"previous_response_id": "resp_1"}, "previous_response_id", "whole conversation"),
        ({"conversation": "conv_1"}, "conversation", "whole conversation"),
        ({"background": True}, "background", "background"),
        ({"tools": [{"type": "web_search"}]}, "tools.0", "only function tools"),
        ({"tool_choice": {"type": "file_search"}}, "tool_choice", "tool_choice"),
        ({"input": [{"type": "item_reference", "id": "x"}]}, "input.0.type", "item_reference"),
        (
            {"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "u"}]}]},
            "input.0.content",
            "only text",
        ),
        ({"input": []}, "input", "input"),
        (  # checked with the whole request, the fault named by the item that holds it
            {
                "instructions": "Be brief.",
                "input": [
                    {"role": "user", "content": "hi"},
                    {"type": "function_call_output", "call_id": "", "output": "x"},
                ],
            },
            "input.1.tool_call_id",
            "input.1.tool_call_id: String should have at least 1 character",
        ),
        ({"max_output_tokens": 0}, "max_output_tokens", "max_output_tokens"),
        ({"text": {"format": {"type": "yaml"}}}, "text.format", "text.format: "),  # its own name
        (
            {"tools": [WEATHER_TOOL], "tool_choice": {"type": "function", "name": "nope"}},
            "tool_choice",
            "not in tools",
        ),
        ({"top_logprobs": 3}, "top_logprobs", "logprobs"),
        (  # a type that is not a string names no kind of item or part (was a 500)
            {"input": [{"type": ["message"], "role": "user", "content": "hi"}]},
            "input.0.type",
            "['message']",
        ),
        (
            {"input": [{"role": "user", "content": [{"type": {"a": 1}, "text": "hi"}]}]},
            "input.0.content",
            "only text",
        ),
    ],
)
def test_what_cannot_be_served_is_a_400_naming_it(
    echo: tuple[ObservedEngine, str], changes: dict[str, Any], param: str, said: str
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        _sdk(echo[1]).post(
            "/responses", cast_to=httpx.Response, body={"model": "dummy", "input": "x", **changes}
        )
    error = _error(caught.value)
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param and said in error["message"], error


def test_other_errors_in_openais_shape(echo: tuple[ObservedEngine, str]) -> None:
    client = _sdk(echo[1])
    with pytest.raises(openai.NotFoundError) as caught:
        client.responses.create(model="gpt-4o", input="x")
    assert _error(caught.value)["code"] == "model_not_found"
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve("resp_123")  # nothing is stored
    with pytest.raises(openai.AuthenticationError) as refused:
        openai.OpenAI(base_url=echo[1] + "v1", api_key="wrong", max_retries=0).responses.create(
            model="dummy", input="x"
        )
    assert TOKEN not in refused.value.response.text
    headers = {"x-api-key": TOKEN, "content-type": "application/json"}
    garbage = httpx.post(echo[1] + "v1/responses", content=b"{", headers=headers)
    assert garbage.status_code == 400 and garbage.json()["error"]["code"] == "invalid_json"


@pytest.mark.parametrize(
    ("number", "said"),
    [("1e400", "beyond a double's range: 1e400"), ("-1" + "0" * 700, "an integer of 701 digits")],
)
def test_a_number_no_reply_could_echo_is_a_400(
    echo: tuple[ObservedEngine, str], number: str, said: str
) -> None:
    """``metadata`` comes back in the reply: an infinity there would make it invalid JSON."""
    body = f'{{"model": "dummy", "input": "x", "metadata": {{"n": {number}}}}}'
    headers = {"x-api-key": TOKEN, "content-type": "application/json"}
    refused = httpx.post(echo[1] + "v1/responses", content=body, headers=headers)
    assert refused.status_code == 400, refused.text
    assert said in refused.json()["error"]["message"]


def test_requests_in_flight_are_counted_with_the_prompt_route(
    one_slot: tuple[ObservedEngine, str],
) -> None:
    engine, url = one_slot
    with holding_the_slot(url, TOKEN), pytest.raises(openai.InternalServerError) as caught:
        _sdk(url).responses.create(model="dummy", input="x")
    assert caught.value.status_code == 503 and _error(caught.value)["code"] == "overloaded"
    wait_until(lambda: engine.active == 0)


def test_leaving_a_stream_or_a_whole_reply_cancels_the_generation(
    one_slot: tuple[ObservedEngine, str],
) -> None:
    engine, url = one_slot
    wait_until(lambda: engine.active == 0)
    stream = _sdk(url).responses.create(model="dummy", input="w " * 200, stream=True)
    next(iter(stream))
    assert engine.active == 1
    stream.close()
    wait_until(lambda: engine.active == 0, timeout=5)
    with pytest.raises(openai.APITimeoutError):
        _sdk(url, timeout=0.5).responses.create(model="dummy", input="w " * 200)
    wait_until(lambda: engine.active == 0, timeout=5)


def test_a_failure_mid_stream_is_an_error_event() -> None:
    with serve_engine(FailingMidStream(), api_key=TOKEN) as server:
        events = list(_sdk(server.url).responses.create(model="failing", input="x", stream=True))
    assert [e.type for e in events][-2:] == ["response.output_text.delta", "error"]
    error = events[-1]
    assert error.message == "the GPU fell over" and error.code == "server_error"  # type: ignore[union-attr]


# -- counting input tokens ---------------------------------------------------------------------


def test_input_tokens_is_what_the_answer_reports_as_input(
    echo: tuple[ObservedEngine, str],
) -> None:
    """``POST /v1/responses/input_tokens`` (the SDK's ``responses.input_tokens.count``) renders
    the input with the engine's template and counts it with the engine: the ``input_tokens`` of
    the answer to the same request; nothing generated."""
    engine, url = echo
    requests: list[dict[str, Any]] = [
        {"input": "Hello there"},
        {"input": "Hello there", "instructions": "Be brief and kind, always."},
        {
            "input": [
                {"role": "user", "content": "one two"},
                {"role": "assistant", "content": "three"},
                {"role": "user", "content": [{"type": "input_text", "text": "four five"}]},
            ]
        },
    ]
    seen = len(engine.requests)
    for request in requests:
        counted = _sdk(url).responses.input_tokens.count(model="dummy", **request)
        answered = _sdk(url).responses.create(model="dummy", max_output_tokens=16, **request)
        assert counted.object == "response.input_tokens"
        assert answered.usage is not None
        assert counted.input_tokens == answered.usage.input_tokens > 0, request
    assert len(engine.requests) == seen + len(requests)


def test_input_tokens_with_tools_takes_no_slot_and_refuses_in_openais_shape(
    tools: tuple[ObservedEngine, str], one_slot: tuple[ObservedEngine, str]
) -> None:
    _, url = tools
    counted = _sdk(url).responses.input_tokens.count(model="dummy", input="x", tools=[WEATHER_TOOL])
    answered = _sdk(url).responses.create(model="dummy", input="x", tools=[WEATHER_TOOL])
    assert answered.usage is not None and counted.input_tokens == answered.usage.input_tokens
    with pytest.raises(openai.NotFoundError) as other:
        _sdk(url).responses.input_tokens.count(model="another-model", input="x")
    assert _error(other.value)["code"] == "model_not_found"
    with pytest.raises(openai.BadRequestError) as bad:
        _sdk(url).responses.input_tokens.count(model="dummy", input=[{"type": "x"}])  # type: ignore[list-item]
    assert _error(bad.value)["type"] == "invalid_request_error"
    _, slow_url = one_slot
    with holding_the_slot(slow_url, TOKEN):
        assert _sdk(slow_url).responses.input_tokens.count(input="x").input_tokens > 0
