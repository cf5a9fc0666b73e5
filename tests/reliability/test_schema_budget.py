"""JSON Schemas a client can send (``response_format``, tools' ``parameters``) cost bounded work,
and the work done before generating never holds the event loop.

Before the schema budget and the worker threads, a 2 KB schema whose ``$ref``s fan out 8 ways
over 11 levels pinned the CPU inside the dummy engine's ``prepare``, on the event loop:
``/health`` never answered again (prompt route and ``/v1``, streamed or not). ``minLength: 1e8``
built 100 MB strings; a schema whose ``properties`` is a list, a numeric keyword of 700 digits or
``1e400``, and a ``/v1`` message whose ``role`` is a list or an object were 500s.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from promptwire.engine import RequestRejected
from promptwire.protocol import PromptRequest
from promptwire.server.schema_budget import (
    MAX_SCHEMA_COUNT,
    SchemaError,
    check_request_schemas,
    check_schema,
)
from promptwire_modal_dummy.engine import DummyEngine
from promptwire_modal_dummy.settings import DummySettings
from pydantic import BaseModel

from tests.reliability.checks import assert_protocol_answer
from tests.reliability.served import ServedProcess, promptwire_serve
from tests.support.network import LOOPBACK_ONLY
from tests.support.servers import serve_engine

pytestmark = LOOPBACK_ONLY

HEALTH_BOUND = 2.0
"""Seconds ``/health`` may take while another request is prepared: generous for a loaded
machine (measured: a few milliseconds); before the fixes it never answered."""
REQUEST_TIMEOUT = 60.0


def fan_out(ways: int = 8, levels: int = 11) -> dict[str, Any]:
    """About 2 KB of schema that expands to ``ways ** levels`` strings."""
    defs: dict[str, Any] = {f"d{levels}": {"type": "string"}}
    for level in range(levels):
        target = {"$ref": f"#/$defs/d{level + 1}"}
        defs[f"d{level}"] = {
            "type": "object",
            "properties": {f"p{way}": target for way in range(ways)},
        }
    return {"$ref": "#/$defs/d0", "$defs": defs}


def _messages() -> list[dict[str, str]]:
    return [{"role": "user", "content": "call it"}]


def _tool(parameters: Any) -> dict[str, Any]:
    return {"type": "function", "function": {"name": "f", "parameters": parameters}}


def _format(schema: Any) -> dict[str, Any]:
    return {"type": "json_schema", "json_schema": {"name": "s", "schema": schema}}


def _body(route: str, place: str, schema: Any, stream: bool) -> dict[str, Any]:
    """A request carrying ``schema`` as the response format or a required tool's parameters."""
    body: dict[str, Any] = {"messages": _messages(), "stream": stream}
    if route == "prompt":
        body["prompt"] = ""
    if place == "response_format":
        body["response_format"] = _format(schema)
    else:
        body["tools"] = [_tool(schema)]
        body["tool_choice"] = "required"
    return body


def _path(route: str) -> str:
    return "" if route == "prompt" else "v1/chat/completions"


def _assert_client_error(response: httpx.Response, route: str) -> None:
    """A 4xx in the route's JSON error shape: the protocol's, or OpenAI's on ``/v1``."""
    assert 400 <= response.status_code < 500, (response.status_code, response.text[:300])
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    if route == "prompt":
        assert_protocol_answer(response.status_code, response.headers["content-type"], body)
    else:
        assert isinstance(body["error"]["message"], str) and body["error"]["type"]
    assert "Traceback" not in response.text


@pytest.fixture(scope="module")
def tool_server() -> Iterator[ServedProcess]:
    """``promptwire serve`` of the dummy in tool mode: a child process, so that a server whose
    loop is pinned (the code before the fix) can be killed."""
    env = {"PROMPTWIRE_MODAL_DUMMY__TOOL_MODE": "true"}
    with promptwire_serve("--log-level", "warning", env=env) as served:
        yield served


async def _health_while(url: str, path: str, body: bytes) -> tuple[float, httpx.Response]:
    """Send ``body`` to ``path``; until it is answered, time ``/health`` back to back. Return
    the slowest health check and the answer."""
    async with httpx.AsyncClient(timeout=REQUEST_TIMEOUT) as client:
        headers = {"content-type": "application/json"}
        request = asyncio.create_task(client.post(url + path, content=body, headers=headers))
        slowest = 0.0
        await asyncio.sleep(0.02)
        deadline = time.monotonic() + REQUEST_TIMEOUT
        while not request.done() and time.monotonic() < deadline:
            started = time.monotonic()
            try:
                health = await client.get(url + "health", timeout=HEALTH_BOUND + 1)
            except httpx.TimeoutException:
                pytest.fail(f"/health did not answer within {HEALTH_BOUND + 1:g} s")
            slowest = max(slowest, time.monotonic() - started)
            assert health.status_code == 200
            await asyncio.sleep(0.02)
        response = await request
        return slowest, response


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("place", ["response_format", "tools"])
@pytest.mark.parametrize("route", ["prompt", "v1"])
def test_a_fanning_out_schema_is_refused_and_health_answers(
    tool_server: ServedProcess, route: str, place: str, stream: bool
) -> None:
    body = json.dumps(_body(route, place, fan_out(), stream)).encode()
    assert len(body) < 4096
    slowest, response = asyncio.run(_health_while(tool_server.url, _path(route), body))
    _assert_client_error(response, route)
    assert "too large" in response.json()["error"]["message"]
    assert slowest < HEALTH_BOUND, f"/health took {slowest:.2f} s"
    assert tool_server.alive()


@pytest.mark.parametrize(
    ("place", "schema"),
    [
        ("response_format", {"type": "string", "minLength": 100_000_000}),
        ("response_format", {"type": "string", "minLength": 1e8}),
        ("tools", {"type": "object", "properties": {"a": {"type": "array", "minItems": 1e7}}}),
        ("tools", {"type": "array", "items": {"type": "string"}, "maxItems": 10**7}),
    ],
)
@pytest.mark.parametrize("route", ["prompt", "v1"])
def test_lengths_and_counts_past_what_can_be_honoured_are_refused(
    tool_server: ServedProcess, route: str, place: str, schema: dict[str, Any]
) -> None:
    rss_before = tool_server.rss()
    body = json.dumps(_body(route, place, schema, False)).encode()
    slowest, response = asyncio.run(_health_while(tool_server.url, _path(route), body))
    _assert_client_error(response, route)
    assert f"{MAX_SCHEMA_COUNT:,}" in response.json()["error"]["message"]
    assert slowest < HEALTH_BOUND, f"/health took {slowest:.2f} s"
    assert tool_server.rss() - rss_before < 64 << 20  # nothing of 100 MB was built


# -- 500s for bodies a client can send -----------------------------------------------------------


def _raw_body(route: str, place: str, schema_json: str, stream: bool = False) -> bytes:
    """A body with ``schema_json`` spliced in as written (``1e400`` and 700-digit integers
    cannot pass through ``json.dumps``)."""
    body = json.dumps(_body(route, place, "SCHEMA", stream))
    return body.replace('"SCHEMA"', schema_json).encode()


NUMERIC_KEYWORDS = [
    '{"type": "integer", "minimum": ' + "9" * 700 + "}",
    '{"type": "integer", "maximum": 1e400}',
    '{"type": "number", "exclusiveMinimum": -1e400}',
    '{"type": "integer", "multipleOf": ' + "7" * 700 + "}",
    '{"type": "integer", "minimum": ' + "9" * 400 + "}",  # an int a float cannot hold
    '{"type": "string", "maxLength": ' + "9" * 700 + "}",
    '{"type": "array", "minItems": 1e400}',
]
MALFORMED = [
    '{"type": "object", "properties": ["a", "b"]}',
    '{"type": "object", "properties": {"a": 5}}',
    '{"anyOf": {"type": "string"}}',
    '{"type": "object", "required": "a"}',
    '{"$ref": "#/$defs/missing"}',
    '{"$ref": "https://example.com/schema.json"}',
    '{"type": "object", "$defs": []}',
]


@pytest.mark.parametrize("schema_json", NUMERIC_KEYWORDS + MALFORMED)
@pytest.mark.parametrize("place", ["response_format", "tools"])
@pytest.mark.parametrize("route", ["prompt", "v1"])
def test_schemas_a_client_can_send_get_a_4xx_not_a_500(
    tool_server: ServedProcess, route: str, place: str, schema_json: str
) -> None:
    body = _raw_body(route, place, schema_json)
    headers = {"content-type": "application/json"}
    response = httpx.post(
        tool_server.url + _path(route), content=body, headers=headers, timeout=REQUEST_TIMEOUT
    )
    _assert_client_error(response, route)


ROLES = ['["user"]', '{"user": true}', "[[]]", '{"a": {"b": []}}', "5", "null"]


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("role", ROLES)
def test_a_v1_message_whose_role_is_not_a_string_is_a_400(
    tool_server: ServedProcess, role: str, stream: bool
) -> None:
    message = '{"role": ' + role + ', "content": "hi"}'
    body = json.dumps({"messages": ["MESSAGE"], "stream": stream}).replace('"MESSAGE"', message)
    response = httpx.post(
        tool_server.url + "v1/chat/completions",
        content=body.encode(),
        headers={"content-type": "application/json"},
        timeout=REQUEST_TIMEOUT,
    )
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == "messages.0.role"


# -- the event loop while a request is prepared --------------------------------------------------


class SlowPrepareEngine(DummyEngine):
    """An engine whose ``prepare`` holds its thread for seconds, as tokenizing a long prompt or
    compiling a grammar can; it never awaits, so it must not run on the event loop."""

    SECONDS = 3.0

    def prepare(self, request: PromptRequest) -> PromptRequest:
        end = time.monotonic() + self.SECONDS
        while time.monotonic() < end:
            pass
        return request


@pytest.fixture(scope="module")
def slow_prepare_url() -> Iterator[str]:
    with serve_engine(SlowPrepareEngine(DummySettings())) as server:
        yield server.url


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("", {"prompt": "hi"}),
        ("", {"prompt": "hi", "stream": True}),
        ("v1/chat/completions", {"messages": _messages()}),
        ("v1/completions", {"prompt": ["a", "b"]}),
    ],
)
def test_health_answers_while_a_request_is_prepared(
    slow_prepare_url: str, path: str, body: dict[str, Any]
) -> None:
    slowest, response = asyncio.run(
        _health_while(slow_prepare_url, path, json.dumps(body).encode())
    )
    assert response.status_code == 200, response.text
    print(f"slowest /health: {slowest:.3f} s")
    assert slowest < HEALTH_BOUND, f"/health took {slowest:.2f} s"


# -- the budget itself ---------------------------------------------------------------------------


class Leaf(BaseModel):
    name: str
    size: int


class Tree(BaseModel):
    label: str
    children: list[Tree]
    left: Tree | None = None
    right: Tree | None = None
    leaves: list[Leaf]


def test_recursive_and_ordinary_schemas_are_within_the_budget() -> None:
    check_schema(Tree.model_json_schema())
    check_schema({"type": "object", "properties": {"next": {"$ref": "#"}}})
    check_schema(fan_out(ways=8, levels=3))  # 512 strings
    check_schema({"type": "string", "minLength": 1, "maxLength": MAX_SCHEMA_COUNT})
    check_schema(True)
    check_schema({"type": "integer", "exclusiveMinimum": True, "minimum": 0})  # draft 4


def test_the_budget_is_shared_by_a_request_s_schemas() -> None:
    """128 tools of about 800 values each: each is fine alone, together they are too much."""
    parameters = {"type": "object", "properties": {f"p{i}": {"type": "string"} for i in range(400)}}
    check_schema(parameters)
    request = PromptRequest.model_validate(
        {
            "prompt": "",
            "messages": _messages(),
            "tools": [
                {"type": "function", "function": {"name": f"f{i}", "parameters": parameters}}
                for i in range(128)
            ],
        }
    )
    with pytest.raises(RequestRejected, match="too large"):
        check_request_schemas(request)


def test_the_check_stops_when_the_budget_is_spent() -> None:
    started = time.monotonic()
    with pytest.raises(SchemaError, match="too large"):
        check_schema(fan_out(ways=64, levels=20))
    assert time.monotonic() - started < 5.0  # 64**20 nodes were never walked


def test_the_dummy_engine_bounds_the_value_it_makes_too() -> None:
    """A recursive schema passes the budget (a ``$ref`` back to itself counts once) but filling
    it to the dummy's depth would make 2**32 values: refused, not built."""
    tree = {
        "type": "object",
        "properties": {"l": {"$ref": "#"}, "r": {"$ref": "#"}},
        "required": ["l", "r"],
    }
    check_schema(tree)
    engine = DummyEngine(DummySettings(tool_mode=True))
    request = PromptRequest.model_validate(
        {"prompt": "", "messages": _messages(), "response_format": _format(tree)}
    )
    started = time.monotonic()
    with pytest.raises(RequestRejected):
        engine.prepare(request)
    assert time.monotonic() - started < 10.0
