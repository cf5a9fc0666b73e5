"""What the conformance kit asserts about replies, errors and streams, as plain functions."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from httpx_sse import EventSource

from promptwire.protocol import EVENT_DELTA, EVENT_DONE, EVENT_ERROR

FINISH_REASONS = ("stop", "length", "tool_calls")  # tool_calls: v1.2
JSON = "application/json"
EVENT_STREAM = "text/event-stream"


def speaks(version: str, major: int, minor: int) -> bool:
    """Whether a ``/health`` protocol version is ``major.minor`` or later."""
    try:
        found = tuple(int(part) for part in f"{version}.0".split(".")[:2])
    except ValueError:
        return False
    return found >= (major, minor)


@dataclass
class StreamResult:
    """What a streaming request produced: the text, and the ``done`` event's payload."""

    text: str
    done: dict[str, Any]
    deltas: int
    events: list[str] = field(default_factory=list)
    """The event names in order (unknown ones included, comments and pings not)."""
    streamed: bool = True
    """False when the server answered one whole JSON reply instead of a stream."""


def assert_protocol_error(
    response: httpx.Response, status: int | tuple[int, ...]
) -> dict[str, Any]:
    """The reply is the protocol's JSON error with ``status``; returns its ``error`` object."""
    expected = (status,) if isinstance(status, int) else status
    assert response.status_code in expected, (
        f"expected HTTP {' or '.join(map(str, expected))}, got {response.status_code}: "
        f"{response.text[:300]!r}"
    )
    assert response.headers.get("content-type", "").startswith(JSON), (
        f"an error must be JSON, got content-type {response.headers.get('content-type')!r}"
    )
    body = response.json()
    assert isinstance(body, dict) and isinstance(body.get("error"), dict), (
        f"an error must be {{'error': {{'type': ..., 'message': ...}}}}, got {body!r}"
    )
    error: dict[str, Any] = body["error"]
    assert isinstance(error.get("type"), str) and error["type"], f"error.type: {error!r}"
    assert isinstance(error.get("message"), str), f"error.message: {error!r}"
    assert "Traceback" not in response.text, "an error reply must never carry a stack trace"
    return error


def assert_usage(usage: Any) -> None:
    assert isinstance(usage, dict), f"usage must be an object, got {usage!r}"
    for key in ("prompt_tokens", "completion_tokens"):
        if key in usage:
            value = usage[key]
            assert isinstance(value, int) and not isinstance(value, bool) and value >= 0, (
                f"usage.{key} must be a non-negative integer, got {value!r}"
            )


def assert_reply_metadata(body: dict[str, Any]) -> None:
    """``usage``, ``finish_reason`` and ``model`` are well typed where present."""
    if body.get("usage") is not None:
        assert_usage(body["usage"])
    if body.get("finish_reason") is not None:
        assert body["finish_reason"] in FINISH_REASONS, (
            f"finish_reason must be one of {FINISH_REASONS}, got {body['finish_reason']!r}"
        )
    if body.get("model") is not None:
        assert isinstance(body["model"], str), f"model must be a string, got {body['model']!r}"


def assert_whole_reply(response: httpx.Response) -> dict[str, Any]:
    """A 200 JSON reply whose ``prompt`` is the completion text; returns the body."""
    assert response.status_code == 200, f"HTTP {response.status_code}: {response.text[:300]!r}"
    assert response.headers.get("content-type", "").startswith(JSON), (
        f"a whole reply must be JSON, got {response.headers.get('content-type')!r}"
    )
    body = response.json()
    assert isinstance(body, dict), f"a reply must be a JSON object, got {type(body).__name__}"
    assert isinstance(body.get("prompt"), str), (
        f"a reply must hold the completion text under 'prompt', got keys {sorted(body)}"
    )
    assert_reply_metadata(body)
    return body


def read_stream(response: httpx.Response) -> StreamResult:
    """Read a reply to ``"stream": true`` and check its shape: ``delta`` events, each with a
    ``text`` string, then exactly one ``done``, last; or one whole JSON reply."""
    assert response.status_code == 200, (
        f"HTTP {response.status_code}: {response.read()[:300].decode(errors='replace')!r}"
    )
    content_type = response.headers.get("content-type", "")
    if not content_type.startswith(EVENT_STREAM):
        response.read()
        body = assert_whole_reply(response)
        return StreamResult(body["prompt"], body, deltas=0, streamed=False)
    pieces: list[str] = []
    names: list[str] = []
    done: dict[str, Any] | None = None
    for sse in EventSource(response).iter_sse():
        names.append(sse.event)
        assert done is None, f"event {sse.event!r} after 'done'"
        if sse.event == EVENT_ERROR:
            pytest.fail(f"the stream reported an error: {sse.data}")
        if sse.event not in (EVENT_DELTA, EVENT_DONE):
            continue  # unknown events are allowed; clients skip them
        data = json.loads(sse.data)
        assert isinstance(data, dict), f"{sse.event!r} data must be a JSON object: {sse.data!r}"
        if sse.event == EVENT_DELTA:
            assert isinstance(data.get("text"), str), f"a delta needs a 'text' string: {data!r}"
            pieces.append(data["text"])
        else:
            assert_reply_metadata(data)
            done = data
    assert done is not None, f"the stream ended without a 'done' event (events: {names})"
    return StreamResult("".join(pieces), done, deltas=len(pieces), events=names)
