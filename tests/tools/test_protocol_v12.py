"""Protocol v1.2 on the wire: tools, tool_choice and response_format on both routes, the
capabilities on /health, the refusals of an engine that cannot honour them, and what an engine's
tool calls look like in replies and streams."""

from __future__ import annotations

import json
from typing import Any

import httpx
import jsonschema_rs
import openai
import pytest
from promptwire.protocol import PromptRequest
from pydantic import ValidationError

from tests.support.engines import ObservedEngine

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The forecast for a city.",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "days": {"type": "integer", "minimum": 1, "maximum": 7},
                "unit": {"enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city", "days"],
        },
    },
}
CLOCK = {
    "type": "function",
    "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}},
}
ASK = [{"role": "user", "content": "What will the weather be in Paris?"}]
PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "minLength": 2},
        "tags": {"type": "array", "items": {"type": "string"}, "minItems": 2},
        "address": {"$ref": "#/$defs/Address"},
    },
    "required": ["name", "tags", "address"],
    "$defs": {
        "Address": {
            "type": "object",
            "properties": {"zip": {"type": "string", "format": "uuid"}},
            "required": ["zip"],
        }
    },
}


def _post(url: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(url, json={"prompt": "rendered by the client", **body}, timeout=30)


def _sse(text: str) -> list[tuple[str, dict[str, Any]]]:
    events = []
    for block in text.strip().split("\r\n\r\n" if "\r\n" in text else "\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if "event" in lines:
            events.append((lines["event"], json.loads(lines["data"])))
    return events


# -- /health -----------------------------------------------------------------------------------


def test_health_says_protocol_12_and_what_the_engine_honours(
    tool_url: str, text_only_url: str
) -> None:
    honoured = httpx.get(tool_url + "health").json()
    assert honoured["protocol"] == "1.2"
    assert honoured["capabilities"] == {"tools": True, "structured_output": True}
    plain = httpx.get(text_only_url + "health").json()
    assert plain["protocol"] == "1.2"
    assert plain["capabilities"] == {"tools": False, "structured_output": False}


# -- the prompt route --------------------------------------------------------------------------


def test_a_tool_call_comes_back_with_arguments_valid_for_the_tool(tool_url: str) -> None:
    reply = _post(tool_url, {"messages": ASK, "tools": [CLOCK, WEATHER]})
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["finish_reason"] == "tool_calls"
    assert body["prompt"] == ""
    [call] = body["tool_calls"]
    assert call["type"] == "function"
    assert call["id"].startswith("call_")
    # The last user message mentions "weather": of the two tools, that one is called.
    assert call["function"]["name"] == "get_weather"
    arguments = json.loads(call["function"]["arguments"])
    jsonschema_rs.validate(WEATHER["function"]["parameters"], arguments)


def test_a_stream_carries_the_call_as_a_tool_call_event(tool_url: str) -> None:
    reply = _post(tool_url, {"messages": ASK, "tools": [WEATHER], "stream": True})
    assert reply.headers["content-type"].startswith("text/event-stream")
    events = _sse(reply.text)
    assert [name for name, _ in events] == ["tool_call", "done"]
    piece = events[0][1]
    assert piece["index"] == 0 and piece["name"] == "get_weather" and piece["id"]
    jsonschema_rs.validate(WEATHER["function"]["parameters"], json.loads(piece["arguments"]))
    assert events[1][1]["finish_reason"] == "tool_calls"


def test_tool_choice_names_the_tool_and_none_means_text(tool_url: str) -> None:
    named = {"type": "function", "function": {"name": "get_time"}}
    body = _post(tool_url, {"messages": ASK, "tools": [WEATHER, CLOCK], "tool_choice": named})
    assert body.json()["tool_calls"][0]["function"]["name"] == "get_time"
    text = _post(tool_url, {"messages": ASK, "tools": [WEATHER], "tool_choice": "none"}).json()
    assert text["prompt"] == "hello world"
    assert "tool_calls" not in text and text["finish_reason"] == "stop"


def test_a_tool_result_is_answered_in_text_and_reaches_the_engine(
    tool_server: tuple[ObservedEngine, str],
) -> None:
    engine, url = tool_server
    call = {
        "id": "call_1",
        "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city": "Paris", "days": 2}'},
    }
    conversation = [
        *ASK,
        {"role": "assistant", "content": "", "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_1", "content": "Sunny, 24 C"},
    ]
    body = _post(url, {"messages": conversation, "tools": [WEATHER]}).json()
    assert body["prompt"] == "Sunny, 24 C"  # the dummy answers the result it was given
    assert body["finish_reason"] == "stop"
    seen = engine.requests[-1]
    assert seen.messages is not None
    assert seen.messages[1].tool_calls is not None
    assert seen.messages[1].tool_calls[0].function.arguments == call["function"]["arguments"]
    assert (seen.messages[2].role, seen.messages[2].tool_call_id) == ("tool", "call_1")
    # The plain template shows the call and the result to an engine without a template.
    assert "Tool call call_1: get_weather" in seen.prompt and "Tool: Sunny, 24 C" in seen.prompt


def test_a_json_schema_response_format_is_answered_with_a_valid_value(tool_url: str) -> None:
    fmt = {"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON}}
    for stream in (False, True):
        reply = _post(tool_url, {"messages": ASK, "response_format": fmt, "stream": stream})
        if stream:
            text = "".join(d["text"] for name, d in _sse(reply.text) if name == "delta")
        else:
            text = reply.json()["prompt"]
        value = json.loads(text)
        jsonschema_rs.validate(PERSON, value)
    json_object = _post(tool_url, {"messages": ASK, "response_format": {"type": "json_object"}})
    assert isinstance(json.loads(json_object.json()["prompt"]), dict)


@pytest.mark.parametrize(
    "body",
    [
        {"messages": ASK, "tools": [WEATHER]},
        {"messages": ASK, "tools": [WEATHER], "tool_choice": "required", "stream": True},
        {"messages": ASK, "response_format": {"type": "json_object"}},
        {
            "messages": ASK,
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "p", "schema": PERSON},
            },
        },
    ],
    ids=["tools", "required-stream", "json-object", "json-schema"],
)
def test_an_engine_without_the_capability_refuses_with_422_not_text(
    text_only_url: str, body: dict[str, Any]
) -> None:
    reply = _post(text_only_url, body)
    assert reply.status_code == 422
    error = reply.json()["error"]
    assert error["type"] == "unsupported"
    assert ("tool calling" if "tools" in body else "structured output") in error["message"]


def test_what_the_text_only_engine_can_honour_still_passes(text_only_url: str) -> None:
    """Tools with tool_choice 'none', a text response format and tool messages ask for text."""
    conversation = [*ASK, {"role": "tool", "tool_call_id": "c", "content": "r"}]
    for body in (
        {"messages": ASK, "tools": [WEATHER], "tool_choice": "none"},
        {"messages": ASK, "response_format": {"type": "text"}},
        {"messages": conversation},
    ):
        reply = _post(text_only_url, body)
        assert reply.status_code == 200, reply.text
        assert reply.json()["prompt"] == "hello world"


@pytest.mark.parametrize(
    ("body", "said"),
    [
        ({"tools": [WEATHER]}, "tools needs messages"),
        ({"messages": ASK, "tool_choice": "required"}, "needs tools"),
        (
            {
                "messages": ASK,
                "tools": [WEATHER],
                "tool_choice": {"type": "function", "function": {"name": "x"}},
            },
            "'x', which is not in tools",
        ),
        ({"messages": ASK, "tools": [WEATHER, WEATHER]}, "same name"),
        (
            {"messages": ASK, "tools": [{"type": "function", "function": {"name": "a b"}}]},
            "pattern",
        ),
        ({"messages": ASK, "tools": [{"type": "retrieval"}]}, "tools.0"),
        ({"messages": ASK, "response_format": {"type": "xml"}}, "response_format"),
        ({"messages": [{"role": "tool", "content": "r"}]}, "tool_call_id"),
        ({"messages": [{"role": "user", "content": "x", "tool_calls": []}]}, "tool_calls"),
        ({"messages": [{"role": "user", "content": None}]}, "content"),
    ],
)
def test_malformed_v12_fields_are_422_naming_the_problem(
    tool_url: str, body: dict[str, Any], said: str
) -> None:
    reply = _post(tool_url, body)
    assert reply.status_code == 422, reply.text
    assert reply.json()["error"]["type"] == "invalid_request"
    assert said in reply.json()["error"]["message"]


def test_the_request_model_refuses_the_same_without_a_server() -> None:
    with pytest.raises(ValidationError, match="needs tools"):
        PromptRequest.model_validate({"prompt": "", "messages": ASK, "tool_choice": "required"})


# -- the OpenAI route --------------------------------------------------------------------------


def _sdk(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "v1", api_key="unused", max_retries=0)


def test_openai_sdk_gets_tool_calls(tool_url: str) -> None:
    client = _sdk(tool_url)
    reply = client.chat.completions.create(
        model="dummy",
        messages=ASK,
        tools=[WEATHER],
        tool_choice="required",  # type: ignore[list-item]
    )
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    [call] = choice.message.tool_calls or []
    assert call.function.name == "get_weather"  # type: ignore[union-attr]
    jsonschema_rs.validate(
        WEATHER["function"]["parameters"],
        json.loads(call.function.arguments),  # type: ignore[union-attr]
    )
    # The call and its result sent back: answered in text.
    follow = client.chat.completions.create(
        model="dummy",
        messages=[
            *ASK,
            choice.message.model_dump(exclude_none=True),  # type: ignore[list-item]
            {"role": "tool", "tool_call_id": call.id, "content": "Rain"},
        ],
        tools=[WEATHER],  # type: ignore[list-item]
    )
    assert follow.choices[0].message.content == "Rain"


def test_openai_sdk_streams_tool_call_deltas(tool_url: str) -> None:
    stream = _sdk(tool_url).chat.completions.create(
        model="dummy",
        messages=ASK,
        tools=[WEATHER],
        stream=True,  # type: ignore[list-item]
    )
    pieces = [chunk.choices[0] for chunk in stream if chunk.choices]
    calls = [d for p in pieces for d in (p.delta.tool_calls or [])]
    assert len(calls) == 1 and calls[0].index == 0 and calls[0].function is not None
    assert calls[0].function.name == "get_weather"
    assert pieces[-1].finish_reason == "tool_calls"


def test_openai_sdk_gets_json_for_a_json_schema(tool_url: str) -> None:
    reply = _sdk(tool_url).chat.completions.create(
        model="dummy",
        messages=ASK,
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "person", "schema": PERSON},
        },
    )
    jsonschema_rs.validate(PERSON, json.loads(reply.choices[0].message.content or ""))


@pytest.mark.parametrize(
    ("options", "param"),
    [
        ({"tools": [WEATHER]}, "tools"),
        ({"response_format": {"type": "json_object"}}, "response_format"),
    ],
)
def test_openai_route_refuses_what_the_engine_cannot_honour(
    text_only_url: str, options: dict[str, Any], param: str
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        _sdk(text_only_url).chat.completions.create(model="dummy", messages=ASK, **options)
    error = caught.value.response.json()["error"]
    assert (error["param"], error["code"]) == (param, "unsupported_parameter")


@pytest.mark.parametrize(
    ("options", "param"),
    [
        ({"tool_choice": "required"}, "tool_choice"),
        ({"tools": [{"type": "function", "function": {"name": "a b"}}]}, "tools"),
        ({"functions": [{"name": "f"}]}, "functions"),
        ({"function_call": "auto"}, "function_call"),
    ],
)
def test_openai_route_names_the_malformed_parameter(
    tool_url: str, options: dict[str, Any], param: str
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        _sdk(tool_url).chat.completions.create(model="dummy", messages=ASK, **options)
    assert caught.value.response.json()["error"]["param"] == param
