"""Property-based bodies for ``POST /v1/messages`` (Anthropic, and its ``count_tokens``) and
``POST /v1/responses`` (OpenAI Responses) against a real server on 127.0.0.1, streamed or not,
with tools and schemas, on an engine that has tools and structured output: never a 5xx, every
error in its protocol's shape, every 200 a reply of its protocol, and the server's slots all
free afterwards."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, event, given, settings, strategies as st
from promptwire_modal_dummy.settings import DummySettings

from tests.support.engines import ObservedEngine
from tests.support.network import LOOPBACK_ONLY
from tests.support.servers import serve_engine

pytestmark = LOOPBACK_ONLY

FUZZ = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[ObservedEngine, httpx.Client]]:
    engine = ObservedEngine(DummySettings(tool_mode=True))
    with serve_engine(engine) as server:
        headers = {"content-type": "application/json"}
        with httpx.Client(base_url=server.url, timeout=30, headers=headers) as client:
            yield engine, client


# -- strategies ------------------------------------------------------------------------------

any_text = st.text(st.characters(codec=None, categories=None), max_size=40)
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False)
    | any_text
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(any_text, children, max_size=4)
    ),
    max_leaves=12,
)
names = st.sampled_from(["get_weather", "lookup", "bad name!", ""]) | any_text
schemas = (
    st.sampled_from(
        [
            {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
            {"type": "object", "properties": {"n": {"type": "integer", "minimum": 3}}},
            {"type": "object", "properties": {"x": {"$ref": "#/$defs/nowhere"}}},
            {"type": "array", "items": {"type": "string", "maxLength": 10**9}},
            {"type": "string", "enum": ["a", "b"]},
            {},
            True,
        ]
    )
    | json_values
)
texts = st.text(max_size=60) | any_text | json_values


def _maybe(draw: st.DrawFn, body: dict[str, Any], key: str, values: Any) -> None:
    """``key`` left out three times in four, so that most bodies have few bad parts."""
    if draw(st.integers(0, 3)) == 0:
        body[key] = draw(values)


plain_text = st.text(max_size=30)


# Anthropic Messages.
anthropic_blocks = st.one_of(
    st.builds(lambda t: {"type": "text", "text": t}, texts),
    st.builds(
        lambda i, n, a: {"type": "tool_use", "id": i, "name": n, "input": a},
        texts,
        names,
        json_values,
    ),
    st.builds(
        lambda i, c: {"type": "tool_result", "tool_use_id": i, "content": c},
        texts,
        texts | st.lists(st.builds(lambda t: {"type": "text", "text": t}, texts), max_size=2),
    ),
    st.builds(lambda k: {"type": k}, st.sampled_from(["image", "document", "thinking", "x"])),
    json_values,
)
anthropic_messages = st.builds(
    lambda role, content: {"role": role, "content": content},
    st.sampled_from(["user", "assistant", "system", "tool"]) | json_values,
    texts | st.lists(anthropic_blocks, max_size=3),
)


@st.composite
def messages_bodies(draw: st.DrawFn) -> dict[str, Any]:
    body: dict[str, Any] = {"model": "dummy"}
    body["max_tokens"] = draw(st.integers(1, 40))
    _maybe(draw, body, "max_tokens", st.integers(-2, 0) | json_values)
    plain = st.builds(
        lambda role, text: {"role": role, "content": text},
        st.sampled_from(["user", "assistant"]),
        plain_text,
    )
    body["messages"] = draw(
        st.lists(plain, min_size=1, max_size=3)
        | st.lists(plain, min_size=1, max_size=3)
        | st.lists(anthropic_messages, max_size=4)
    )
    _maybe(draw, body, "messages", json_values)
    _maybe(draw, body, "system", texts)
    _maybe(draw, body, "stream", st.booleans())
    _maybe(draw, body, "stop_sequences", st.lists(texts, max_size=3) | json_values)
    _maybe(draw, body, "temperature", st.floats(-1, 12) | json_values)
    _maybe(draw, body, "top_k", st.integers(-1, 100) | json_values)
    tool = st.builds(
        lambda n, s: {"name": n, "description": "d", "input_schema": s}, names, schemas
    )
    _maybe(draw, body, "tools", st.lists(tool | json_values, max_size=3) | json_values)
    choice = st.builds(
        lambda kind, name: {"type": kind, "name": name},
        st.sampled_from(["auto", "any", "tool", "none", "other"]),
        names,
    )
    _maybe(draw, body, "tool_choice", choice | json_values)
    output = st.builds(lambda s: {"format": {"type": "json_schema", "schema": s}}, schemas)
    _maybe(draw, body, "output_config", output | json_values)
    _maybe(draw, body, "thinking", json_values)
    return body


# OpenAI Responses.
responses_items = st.one_of(
    st.builds(
        lambda role, content: {"role": role, "content": content},
        st.sampled_from(["user", "assistant", "system", "developer", "tool"]) | json_values,
        texts
        | st.lists(
            st.builds(
                lambda kind, text: {"type": kind, "text": text},
                st.sampled_from(["input_text", "output_text", "input_image"]),
                texts,
            ),
            max_size=2,
        ),
    ),
    st.builds(
        lambda c, n, a: {"type": "function_call", "call_id": c, "name": n, "arguments": a},
        texts,
        names,
        texts,
    ),
    st.builds(
        lambda c, o: {"type": "function_call_output", "call_id": c, "output": o}, texts, texts
    ),
    st.builds(lambda k: {"type": k}, st.sampled_from(["reasoning", "item_reference", "x"])),
    json_values,
)


@st.composite
def responses_bodies(draw: st.DrawFn) -> dict[str, Any]:
    body: dict[str, Any] = {}
    _maybe(draw, body, "model", st.just("dummy") | json_values)
    body["input"] = draw(plain_text | plain_text | texts | st.lists(responses_items, max_size=4))
    _maybe(draw, body, "instructions", texts)
    _maybe(draw, body, "stream", st.booleans())
    _maybe(draw, body, "max_output_tokens", st.integers(-2, 40) | json_values)
    _maybe(draw, body, "temperature", st.floats(-1, 12) | json_values)
    tool = st.builds(lambda n, s: {"type": "function", "name": n, "parameters": s}, names, schemas)
    _maybe(draw, body, "tools", st.lists(tool | json_values, max_size=3) | json_values)
    choice = st.sampled_from(["auto", "none", "required", "other"]) | st.builds(
        lambda n: {"type": "function", "name": n}, names
    )
    _maybe(draw, body, "tool_choice", choice | json_values)
    form = st.builds(
        lambda kind, s: {"type": kind, "name": "out", "schema": s},
        st.sampled_from(["json_schema", "json_object", "text", "yaml"]),
        schemas,
    )
    _maybe(draw, body, "text", st.builds(lambda f: {"format": f}, form) | json_values)
    _maybe(draw, body, "previous_response_id", st.none() | texts)
    return body


# -- checks ----------------------------------------------------------------------------------


def _events(text: str) -> list[tuple[str, Any]]:
    events = []
    for block in text.replace("\r\n", "\n").split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.split("\n") if ": " in line)
        if "event" in fields:
            events.append((fields["event"], json.loads(fields["data"])))
    return events


def _post(client: httpx.Client, path: str, body: dict[str, Any]) -> httpx.Response:
    return client.post(path, content=json.dumps(body).encode())


@FUZZ
@given(body=messages_bodies())
def test_messages_bodies(served: tuple[ObservedEngine, httpx.Client], body: dict[str, Any]) -> None:
    response = _post(served[1], "/v1/messages", body)
    event(f"status {response.status_code}")
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        answer = response.json()
        assert answer["type"] == "error" and set(answer["error"]) == {"type", "message"}
        assert isinstance(answer["error"]["message"], str)
    elif body.get("stream"):
        names = [name for name, _ in _events(response.text)]
        assert names[0] == "message_start" and names[-1] in ("message_stop", "error"), names
    else:
        answer = response.json()
        assert answer["type"] == "message" and answer["stop_reason"] in (
            "end_turn",
            "max_tokens",
            "stop_sequence",
            "tool_use",
        )
        for block in answer["content"]:
            assert block["type"] in ("text", "tool_use")


@FUZZ
@given(body=messages_bodies())
def test_count_tokens_bodies(
    served: tuple[ObservedEngine, httpx.Client], body: dict[str, Any]
) -> None:
    response = _post(served[1], "/v1/messages/count_tokens", body)
    event(f"status {response.status_code}")
    assert response.status_code < 500, response.text
    answer = response.json()
    if response.status_code >= 400:
        assert answer["type"] == "error" and set(answer["error"]) == {"type", "message"}
    else:
        assert set(answer) == {"input_tokens"} and answer["input_tokens"] >= 0


@FUZZ
@given(body=responses_bodies())
def test_responses_bodies(
    served: tuple[ObservedEngine, httpx.Client], body: dict[str, Any]
) -> None:
    response = _post(served[1], "/v1/responses", body)
    event(f"status {response.status_code}")
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        error = response.json()["error"]
        assert {"message", "type", "param", "code"} <= set(error)
    elif body.get("stream"):
        names = [name for name, _ in _events(response.text)]
        assert names[0] == "response.created", names
        assert names[-1] in ("response.completed", "response.incomplete", "error"), names
    else:
        answer = response.json()
        assert answer["object"] == "response" and answer["status"] in ("completed", "incomplete")
        for item in answer["output"]:
            assert item["type"] in ("message", "function_call")


def test_the_slots_are_all_free_afterwards(served: tuple[ObservedEngine, httpx.Client]) -> None:
    engine, client = served
    assert engine.active == 0
    answer = _post(
        client, "/v1/messages", {"max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}
    )
    assert answer.status_code == 200
