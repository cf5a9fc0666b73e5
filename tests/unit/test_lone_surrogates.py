"""A lone surrogate (``"\\ud800"``, valid JSON, no UTF-8 form) anywhere in a /v1 body is a 400 that
says where it is, on every route, streamed or not: the Responses and Messages replies echo
fields of the request, which failed to encode mid-answer (a 500, or a stream opening with an
error) before. The prompt route checks the fields it reads and ignores the keys it does not
know, as its protocol says. The client refuses to send one, naming the same path."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from promptwire.protocol._unicode_text import LoneSurrogate, lone_surrogate
from promptwire.server import create_app
from promptwire_modal_dummy.engine import DummyEngine

BAD = "\\ud800"  # as it travels: a JSON escape


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(DummyEngine())
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        headers = {"content-type": "application/json"}
        async with httpx.AsyncClient(
            transport=transport, base_url="http://127.0.0.1", headers=headers
        ) as client:
            yield client


def _body(template: str, stream: bool) -> bytes:
    return template.replace("@", BAD).replace("STREAM", "true" if stream else "false").encode()


V1_CASES = [
    ("/v1/responses", '{"input": "hi", "instructions": "a@", "stream": STREAM}', "instructions"),
    ("/v1/responses", '{"input": "hi", "metadata": {"k": "@"}, "stream": STREAM}', "metadata.k"),
    ("/v1/responses", '{"input": "hi", "user": "@", "stream": STREAM}', "user"),
    ("/v1/responses", '{"input": "hi", "previous_response_id": "@", "stream": STREAM}', None),
    ("/v1/responses", '{"input": "hi", "metadata": {"@": "v"}, "stream": STREAM}', "metadata."),
    ("/v1/responses", '{"input": [{"role": "user", "content": "@"}], "stream": STREAM}', "input"),
    (
        "/v1/messages",
        '{"max_tokens": 5, "system": "@", "messages": [{"role": "user", "content": "x"}], '
        '"stream": STREAM}',
        "system",
    ),
    (
        "/v1/messages",
        '{"max_tokens": 5, "messages": [{"role": "user", "content": "x@"}], "stream": STREAM}',
        "messages[0].content",
    ),
    (
        "/v1/chat/completions",
        '{"model": "m@", "messages": [{"role": "user", "content": "x"}], "stream": STREAM}',
        "model",
    ),
    ("/v1/completions", '{"model": "m", "prompt": "x@", "stream": STREAM}', "prompt"),
]


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize(("path", "template", "where"), V1_CASES)
async def test_a_lone_surrogate_in_a_v1_body_is_a_400_saying_where(
    client: httpx.AsyncClient, path: str, template: str, where: str | None, stream: bool
) -> None:
    response = await client.post(path, content=_body(template, stream))
    assert response.status_code == 400, response.text
    message = response.json()["error"]["message"]
    assert "not valid Unicode text" in message and "U+D800" in message
    if where is not None:
        assert where in message


async def test_the_prompt_route_refuses_it_where_it_reads_and_ignores_unknown_keys(
    client: httpx.AsyncClient,
) -> None:
    read = await client.post("/", content=_body('{"prompt": "a@"}', False))
    assert read.status_code == 422 and "lone surrogate" in read.json()["error"]["message"]
    ignored = await client.post("/", content=_body('{"prompt": "hi", "extra": "@"}', False))
    assert ignored.status_code == 200 and ignored.json()["prompt"]


@pytest.mark.parametrize(
    ("template", "where"),
    [
        ('{"prompt": "p", "messages": [{"role": "user", "content": "@"}]}', "messages.0.content"),
        (
            '{"prompt": "p", "messages": [{"role": "tool", "content": "r", "tool_call_id": "@"}]}',
            "messages.0.tool_call_id",
        ),
        (
            '{"prompt": "p", "messages": [{"role": "assistant", "content": "", "tool_calls": '
            '[{"id": "c", "function": {"name": "f", "arguments": "@"}}]}]}',
            "messages.0.tool_calls.0.function.arguments",
        ),
        (
            '{"prompt": "p", "messages": [{"role": "user", "content": "u"}], "tools": [{"type": '
            '"function", "function": {"name": "f", "description": "@"}}]}',
            "tools.0.function.description",
        ),
    ],
)
async def test_the_prompt_route_says_it_alike_in_texts_with_bounds(
    client: httpx.AsyncClient, template: str, where: str
) -> None:
    """pydantic-core finds a lone surrogate in a text with bounds before the protocol's own
    check does, in words of its own: the server says the protocol's."""
    response = await client.post("/", content=_body(template, False))
    assert response.status_code == 422, response.text
    message = response.json()["error"]["message"]
    said = "Value error, must be valid Unicode text (it holds a lone surrogate)"
    assert f"{where}: {said}" in message


def test_the_bounds_of_texts_are_checked_by_pydantic_core() -> None:
    """A bound after a validator function would be a Python function of pydantic's, two calls
    more per field on every message of every conversation."""
    from promptwire.protocol import ChatMessage, PromptRequest

    def python_functions(schema: object) -> list[str]:
        found = []
        if isinstance(schema, dict):
            if str(schema.get("type", "")).startswith("function-"):
                called = schema["function"]["function"]
                found.append(getattr(called, "__name__", repr(called)))
            for value in schema.values():
                found += python_functions(value)
        elif isinstance(schema, list):
            for value in schema:
                found += python_functions(value)
        return found

    for model in (ChatMessage, PromptRequest):
        functions = python_functions(model.__pydantic_core_schema__)
        assert not [name for name in functions if "length" in name], functions


async def test_a_surrogate_pair_is_text_and_is_answered(client: httpx.AsyncClient) -> None:
    body = b'{"input": "hi", "instructions": "\\ud83d\\ude00"}'
    response = await client.post("/v1/responses", content=body)
    assert response.status_code == 200 and response.json()["instructions"] == "\U0001f600"
    # An escaped backslash before "ud800" is text too, not an escape.
    body = b'{"input": "hi", "instructions": "\\\\ud800"}'
    response = await client.post("/v1/responses", content=body)
    assert response.status_code == 200 and response.json()["instructions"] == "\\ud800"


def test_the_finder_names_values_and_keys_without_their_text() -> None:
    assert lone_surrogate({"a": [1, {"b": "x\ud800"}]}) == LoneSurrogate("a[1].b", 1, 0xD800)
    assert lone_surrogate({"m": {"k\udc00": 1}}) == LoneSurrogate("m.<key>", 1, 0xDC00)
    assert lone_surrogate({"ok": "\U0001f600", "n": [None, 2.5]}) is None
    assert lone_surrogate("\udfff").described() == (  # type: ignore[union-attr]
        "the body, at character 0, holds U+DFFF, a lone surrogate"
    )
