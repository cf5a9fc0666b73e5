"""The conformance kit fails endpoints that break the protocol, each for the right reason.

Each faulty endpoint below is a small real server on 127.0.0.1 with one kind of mistake; the kit's
checks are called on it directly and must raise with a message naming the mistake.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from promptwire.testing import EndpointConformanceTests
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from tests.support.network import LOOPBACK_ONLY
from tests.support.servers import serve_asgi

pytestmark = LOOPBACK_ONLY


def _sse(*events: tuple[str, dict[str, Any]]) -> Response:
    body = "".join(f"event: {name}\ndata: {json.dumps(data)}\n\n" for name, data in events)
    return Response(body, media_type="text/event-stream")


async def faulty(request: Request) -> Response:
    """One endpoint per fault, picked by the path."""
    fault = request.path_params["fault"]
    try:
        body = await request.json()
    except ValueError:
        body = None
    if fault == "fastapi-errors":  # validation errors in FastAPI's own shape
        if not isinstance(body, dict) or not isinstance(body.get("prompt"), str):
            return JSONResponse({"detail": [{"msg": "field required"}]}, status_code=422)
        return JSONResponse({"prompt": "ok"})
    if fault == "no-validation":  # answers anything
        return JSONResponse({"prompt": "ok"})
    if fault == "wrong-key":
        return JSONResponse({"text": "the completion under the wrong key"})
    if fault == "bad-usage":
        return JSONResponse({"prompt": "ok", "usage": {"prompt_tokens": "3"}})
    if fault == "bad-finish":
        return JSONResponse({"prompt": "ok", "finish_reason": "eos"})
    if fault == "traceback":
        message = 'Traceback (most recent call last):\n  File "app.py"'
        return JSONResponse({"error": {"type": "server_error", "message": message}}, 422)
    if fault == "no-done":
        return _sse(("delta", {"text": "hello"}))
    if fault == "after-done":
        return _sse(("delta", {"text": "a"}), ("done", {}), ("delta", {"text": "b"}))
    if fault == "bad-delta":
        return _sse(("delta", {"content": "hello"}), ("done", {}))
    if fault == "ignores-stop":  # the same text whatever the stop sequences
        return JSONResponse({"prompt": "hello world", "finish_reason": "stop"})
    if fault == "drops-stop":  # leaves the stop sequences out instead of ending there
        text = "hello world"
        for stop in (body or {}).get("stop") or ():
            text = text.replace(stop, "")
        return JSONResponse({"prompt": text})
    if fault == "plain-401":
        return PlainTextResponse("go away", status_code=401)
    raise AssertionError(fault)


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    app = Starlette(routes=[Route("/{fault}/", faulty, methods=["POST"])])
    with serve_asgi(app) as server:
        yield server.url


@pytest.fixture
def kit() -> EndpointConformanceTests:
    return EndpointConformanceTests()


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=30) as client:
        yield client


def test_errors_in_another_shape_fail(
    kit: EndpointConformanceTests, http: httpx.Client, base_url: str
) -> None:
    with pytest.raises(AssertionError, match="an error must be"):
        kit.test_missing_prompt_is_422(http, base_url + "fastapi-errors/")


def test_an_endpoint_that_validates_nothing_fails(
    kit: EndpointConformanceTests, http: httpx.Client, base_url: str
) -> None:
    url = base_url + "no-validation/"
    with pytest.raises(AssertionError, match="expected HTTP 422, got 200"):
        kit.test_non_string_prompt_is_422(http, url, 123)
    with pytest.raises(AssertionError, match="expected HTTP 422, got 200"):
        kit.test_known_key_with_wrong_type_or_range_is_422(http, url, {"max_tokens": "5"})


@pytest.mark.parametrize(
    ("fault", "reason"),
    [
        ("wrong-key", "under 'prompt'"),
        ("bad-usage", "usage.prompt_tokens"),
        ("bad-finish", "finish_reason must be one of"),
    ],
)
def test_malformed_replies_fail(
    kit: EndpointConformanceTests, http: httpx.Client, base_url: str, fault: str, reason: str
) -> None:
    with pytest.raises(AssertionError, match=reason):
        kit.test_whole_reply(http, base_url + f"{fault}/")


def test_a_stack_trace_in_an_error_fails(
    kit: EndpointConformanceTests, http: httpx.Client, base_url: str
) -> None:
    with pytest.raises(AssertionError, match="stack trace"):
        kit.test_missing_prompt_is_422(http, base_url + "traceback/")


@pytest.mark.parametrize(
    ("fault", "reason"),
    [
        ("no-done", "without a 'done' event"),
        ("after-done", "after 'done'"),
        ("bad-delta", "needs a 'text' string"),
    ],
)
def test_malformed_streams_fail(
    kit: EndpointConformanceTests, http: httpx.Client, base_url: str, fault: str, reason: str
) -> None:
    with pytest.raises(AssertionError, match=reason):
        kit.test_stream_gives_deltas_then_one_done(http, base_url + f"{fault}/")


def test_a_non_json_401_fails(
    kit: EndpointConformanceTests, http: httpx.Client, base_url: str
) -> None:
    with pytest.raises(AssertionError, match="an error must be JSON"):
        kit.test_wrong_token_is_401_and_not_echoed(http, base_url + "plain-401/", "token")


def test_an_endpoint_that_ignores_stop_sequences_fails(
    kit: EndpointConformanceTests, http: httpx.Client, base_url: str
) -> None:
    with pytest.raises(AssertionError, match=r"stop=\[' '\], yet the whole reply contains it"):
        kit.test_stop_sequences_are_honoured(http, base_url + "ignores-stop/")


def test_a_deterministic_endpoint_must_end_right_before_the_stop_sequence(
    http: httpx.Client, base_url: str
) -> None:
    """ "hello world" stopped at " " is "hello": "helloworld" lacks the stop but is no cut."""
    url = base_url + "drops-stop/"
    EndpointConformanceTests().test_stop_sequences_are_honoured(http, url)  # not deterministic
    deterministic = type("Kit", (EndpointConformanceTests,), {"deterministic": True})()
    with pytest.raises(AssertionError, match="the whole reply is 'helloworld', not 'hello'"):
        deterministic.test_stop_sequences_are_honoured(http, url)
