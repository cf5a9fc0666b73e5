"""Hostile input against a real server on 127.0.0.1: property-based bodies, headers and methods,
edge cases, raw HTTP garbage. The server must never answer 5xx, every error must be the
protocol's JSON error, it must refuse exactly what the protocol's model refuses, and it must stay
up and keep its request slots (nothing leaks when clients vanish mid-request).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import string
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, event, example, given, settings, strategies as st
from promptwire.protocol import (
    MAX_BODY_BYTES,
    MAX_STOP_LENGTH,
    MAX_STOP_SEQUENCES,
    MAX_TOKENS_LIMIT,
    PromptRequest,
)
from promptwire_modal_dummy.engine import DummyEngine
from promptwire_modal_dummy.settings import DummySettings
from pydantic import ValidationError

from tests.reliability import checks
from tests.support.engines import ObservedEngine
from tests.support.servers import serve_engine

FUZZ = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


@pytest.fixture(scope="module")
def echo_server() -> Iterator[str]:
    """The dummy engine echoing the prompt, so every prompt makes the trip back."""
    with serve_engine(DummyEngine(DummySettings(echo=True))) as server:
        yield server.url


@pytest.fixture(scope="module")
def http(echo_server: str) -> Iterator[httpx.Client]:
    """Posts its raw ``content`` declared as JSON (a body must be; 415 otherwise)."""
    headers = {"content-type": "application/json"}
    with httpx.Client(base_url=echo_server, timeout=30, headers=headers) as client:
        yield client


def assert_protocol_answer(response: httpx.Response) -> None:
    body = None
    if response.status_code >= 400:
        body = response.json()
    checks.assert_protocol_answer(
        response.status_code, response.headers.get("content-type", ""), body
    )


def is_json(data: Any) -> bool:
    """Whether ``json.dumps`` writes ``data`` as JSON: NaN and the infinities are Python's
    extensions (``NaN``, ``Infinity``), not JSON, and the server refuses them wherever they are."""
    try:
        json.dumps(data, allow_nan=False)
    except ValueError:
        return False
    return True


def protocol_accepts(data: Any) -> bool:
    """What the protocol's own model says of a decoded body: the oracle for the server."""
    if not isinstance(data, dict) or not is_json(data):
        return False
    try:
        PromptRequest.model_validate(data)
    except ValidationError:
        return False
    return True


def read_stream(response: httpx.Response) -> tuple[str, list[str]]:
    """The joined ``delta`` texts and the event names of an SSE body."""
    text, names = [], []
    for block in response.text.replace("\r\n", "\n").split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.split("\n") if ": " in line)
        if "event" in fields:
            names.append(fields["event"])
            if fields["event"] == "delta":
                text.append(json.loads(fields["data"])["text"])
    return "".join(text), names


# -- strategies ------------------------------------------------------------------------------

# Every code point, lone surrogates included (json.dumps escapes them, as a hostile client would).
any_text = st.text(st.characters(codec=None, categories=None), max_size=200)
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=True, allow_infinity=True)
    | any_text
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(any_text, children, max_size=5)
    ),
    max_leaves=20,
)
valid_text = st.text(st.characters(codec="utf-8"), max_size=200)
# For each known key: a value the protocol accepts, or one near or far outside its bounds.
param_values = {
    "max_tokens": st.integers(1, 50) | st.integers(-5, MAX_TOKENS_LIMIT + 5) | json_values,
    "temperature": st.floats(0, 10) | st.floats(-1, 20) | st.floats(allow_nan=True) | json_values,
    "top_p": st.floats(0, 1, exclude_min=True) | st.floats(-0.5, 1.5) | json_values,
    "top_k": st.integers(0, 100) | st.integers(-5, 2_000_000) | json_values,
    "seed": st.integers(0, 2**63 - 1) | st.integers(-(2**70), 2**70) | json_values,
    "stop": st.lists(valid_text.filter(bool), max_size=MAX_STOP_SEQUENCES)
    | st.lists(any_text, max_size=40)
    | json_values,
    "stream": st.booleans() | json_values,
}
unknown_keys = st.text(string.ascii_letters + "_", min_size=1, max_size=12).filter(
    lambda key: key not in PromptRequest.model_fields
)


@st.composite
def request_bodies(draw: st.DrawFn) -> dict[str, Any]:
    body: dict[str, Any] = {}
    if draw(st.integers(0, 9)):  # now and then no prompt at all
        body["prompt"] = draw(valid_text | any_text | st.text(max_size=2000) | json_values)
    for key in draw(st.sets(st.sampled_from(sorted(param_values)))):
        body[key] = draw(param_values[key])
    for key in draw(st.lists(unknown_keys, max_size=3)):
        body[key] = draw(json_values)
    return body


# -- properties ------------------------------------------------------------------------------


@FUZZ
@given(body=request_bodies())
def test_the_server_refuses_exactly_what_the_protocol_refuses(
    http: httpx.Client, body: dict[str, Any]
) -> None:
    response = http.post("/", content=json.dumps(body).encode())
    assert_protocol_answer(response)
    expected = 200 if protocol_accepts(json.loads(json.dumps(body))) else 422
    assert response.status_code == expected, (body, response.text[:300])
    event(f"status {response.status_code}, stream={body.get('stream') is True}")
    if response.status_code != 200:
        assert response.json()["error"]["type"] == "invalid_request"
        return
    if body.get("stream") is True:
        text, names = read_stream(response)
        assert names[-1] == "done" and set(names[:-1]) <= {"delta"}
    else:
        text = response.json()["prompt"]
    if "max_tokens" not in body and "stop" not in body:
        assert text == body["prompt"]  # the echo comes back whole, whatever the characters


@FUZZ
@given(
    prompt=valid_text | st.text(max_size=5000),
    stream=st.booleans(),
    extra=st.dictionaries(unknown_keys, json_values.filter(is_json), max_size=3),
)
def test_every_valid_prompt_comes_back_whole(
    http: httpx.Client, prompt: str, stream: bool, extra: dict[str, Any]
) -> None:
    response = http.post("/", content=json.dumps({**extra, "prompt": prompt, "stream": stream}))
    assert response.status_code == 200, response.text[:300]
    if stream:
        text, names = read_stream(response)
        assert names[-1] == "done"
    else:
        text = response.json()["prompt"]
    assert text == prompt


@FUZZ
@given(value=json_values)
def test_any_json_value_gets_a_protocol_answer(http: httpx.Client, value: Any) -> None:
    response = http.post("/", content=json.dumps(value).encode())
    assert_protocol_answer(response)
    assert response.status_code == (200 if protocol_accepts(value) else 422)


@FUZZ
@given(raw=st.binary(max_size=2000))
def test_arbitrary_bytes_get_a_protocol_answer(http: httpx.Client, raw: bytes) -> None:
    assert_protocol_answer(http.post("/", content=raw))


@FUZZ
@given(
    method=st.sampled_from(["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD"]),
    path=st.sampled_from(["/", "/health", "/openapi.json", "/nope", "/health/", "//", "/%00"])
    | st.text(string.ascii_letters + string.digits + "/-._~%", max_size=30).map(lambda p: "/" + p),
    content_type=st.sampled_from(
        [
            "application/json",
            "text/plain",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
            "application/json; charset=latin-1",
            "",
            "garbage/\x7f",
        ]
    ),
    query=st.dictionaries(st.text(string.ascii_letters, max_size=5), st.text(max_size=10)),
)
@example(method="GET", path="/v1/nope", content_type="application/json", query={})
@example(method="PUT", path="/v1/messages/x", content_type="text/plain", query={})
@example(method="POST", path="////", content_type="application/json", query={})
@example(method="GET", path="//a/b", content_type="application/json", query={"q": "x"})
def test_any_method_path_and_content_type_get_a_protocol_answer(
    http: httpx.Client, method: str, path: str, content_type: str, query: dict[str, str]
) -> None:
    headers = {"content-type": content_type} if content_type.isprintable() else {}
    # The path as drawn, as the request target: a relative URL would be re-read by httpx ("//a/b"
    # is a host "a" and the path "/b"; "////" is refused before anything is sent).
    target = http.base_url.copy_with(raw_path=path.encode())
    response = http.request(
        method, target, params=query, content=b'{"prompt": "p"}', headers=headers
    )
    if method == "HEAD":  # no body to check
        assert response.status_code < 500
        return
    if path == "/v1" or path.startswith("/v1/"):  # the OpenAI and Anthropic routes' own shapes
        assert_v1_answer(
            response, anthropic=path == "/v1/messages" or path.startswith("/v1/messages/")
        )
        return
    assert_protocol_answer(response)


def assert_v1_answer(response: httpx.Response, *, anthropic: bool) -> None:
    """Under ``/v1`` errors take OpenAI's shape (Anthropic's under ``/v1/messages``): never a
    5xx or a redirect, JSON with the error's type and message."""
    assert response.status_code < 500 and not 300 <= response.status_code < 400
    if response.status_code < 400:
        return
    body = response.json()
    if anthropic:
        assert body["type"] == "error" and {"type", "message"} <= set(body["error"]), body
    else:
        assert {"message", "type", "param", "code"} <= set(body["error"]), body


# -- edge cases, one by one ------------------------------------------------------------------


def _deep(depth: int) -> bytes:
    return b'{"prompt": "p", "x": ' + b"[" * depth + b"]" * depth + b"}"


@pytest.mark.parametrize(
    ("name", "content", "status"),
    [
        ("empty body", b"", 422),
        ("empty prompt", b'{"prompt": ""}', 200),
        ("null", b"null", 422),
        ("a list", b'[{"prompt": "p"}]', 422),
        ("NaN temperature", b'{"prompt": "p", "temperature": NaN}', 422),
        ("Infinity top_p", b'{"prompt": "p", "top_p": Infinity}', 422),
        ("1e400 max_tokens", b'{"prompt": "p", "max_tokens": 1e400}', 422),
        ("5000-digit seed", b'{"prompt": "p", "seed": ' + b"9" * 5000 + b"}", 422),
        ("4301-digit unknown key", b'{"prompt": "p", "n": ' + b"9" * 4301 + b"}", 200),
        ("negative 5000-digit unknown key", b'{"prompt": "p", "n": [-' + b"1" * 5000 + b"]}", 200),
        ("500,000-digit unknown key", b'{"prompt": "p", "n": ' + b"7" * 500_000 + b"}", 200),
        ("5000-digit temperature", b'{"prompt": "p", "temperature": ' + b"1" * 5000 + b"}", 422),
        ("NaN in an unknown key", b'{"prompt": "p", "n": NaN}', 422),
        ("Infinity in an unknown key", b'{"prompt": "p", "n": {"a": [Infinity]}}', 422),
        ("-Infinity in an unknown key", b'{"prompt": "p", "n": -Infinity}', 422),
        ("UTF-16 body", '{"prompt": "p"}'.encode("utf-16"), 422),
        ("UTF-8-encoded surrogate", b'{"prompt": "p", "n": "\xed\xa0\x80"}', 422),
        ("negative max_tokens", b'{"prompt": "p", "max_tokens": -1}', 422),
        ("zero max_tokens", b'{"prompt": "p", "max_tokens": 0}', 422),
        ("absurd max_tokens", b'{"prompt": "p", "max_tokens": 10000000000}', 422),
        ("bool as int", b'{"prompt": "p", "max_tokens": true}', 422),
        ("string as int", b'{"prompt": "p", "max_tokens": "5"}', 422),
        ("integral float as int", b'{"prompt": "p", "seed": 1.0, "max_tokens": 2e1}', 200),
        ("fractional float as int", b'{"prompt": "p", "seed": 1.5}', 422),
        ("stop as string", b'{"prompt": "p", "stop": "x"}', 422),
        ("empty stop string", b'{"prompt": "p", "stop": [""]}', 422),
        ("stream as string", b'{"prompt": "p", "stream": "yes"}', 422),
        ("lone surrogate prompt", b'{"prompt": "a \\ud800 b"}', 422),
        ("lone surrogate stream", b'{"prompt": "\\udfff", "stream": true}', 422),
        ("lone surrogate stop", b'{"prompt": "p", "stop": ["\\ud800"]}', 422),
        ("NUL in prompt", b'{"prompt": "a\\u0000b"}', 200),
        ("invalid UTF-8", b'{"prompt": "\xff\xfe"}', 422),
        ("UTF-8 BOM", b'\xef\xbb\xbf{"prompt": "p"}', 200),
        ("duplicate keys, last wins", b'{"prompt": "p", "prompt": 5}', 422),
        ("unknown keys are ignored", b'{"prompt": "p", "n": 3, "model": {"a": [1]}}', 200),
        ("nesting 900 deep", _deep(900), 200),
        ("nesting 100000 deep", _deep(100_000), 422),
        ("form body", b"prompt=p", 422),
    ],
)
def test_edge_cases(http: httpx.Client, name: str, content: bytes, status: int) -> None:
    response = http.post("/", content=content, headers={"content-type": "application/json"})
    assert_protocol_answer(response)
    assert response.status_code == status, response.text[:300]


@pytest.mark.parametrize(
    ("stop", "status"),
    [
        (["x"] * MAX_STOP_SEQUENCES, 200),
        (["x"] * (MAX_STOP_SEQUENCES + 1), 422),
        (["x"] * 100_000, 422),
        (["y" * MAX_STOP_LENGTH], 200),
        (["y" * (MAX_STOP_LENGTH + 1)], 422),
    ],
)
def test_stop_lists_are_bounded(http: httpx.Client, stop: list[str], status: int) -> None:
    response = http.post("/", json={"prompt": "p", "stop": stop})
    assert_protocol_answer(response)
    assert response.status_code == status


@pytest.mark.parametrize("stream", [False, True])
def test_the_largest_prompt_under_the_body_limit_comes_back_whole(
    http: httpx.Client, stream: bool
) -> None:
    envelope = len(json.dumps({"prompt": "", "stream": stream}).encode())
    prompt = "é" * ((MAX_BODY_BYTES - envelope) // 2)  # two bytes each in UTF-8
    body = json.dumps({"prompt": prompt, "stream": stream}, ensure_ascii=False).encode()
    assert len(body) <= MAX_BODY_BYTES
    response = http.post("/", content=body)
    assert response.status_code == 200
    text = read_stream(response)[0] if stream else response.json()["prompt"]
    assert text == prompt


def test_one_byte_over_the_limit_is_413(http: httpx.Client) -> None:
    body = b'{"prompt": "' + b"x" * (MAX_BODY_BYTES - 13) + b'"}'
    assert len(body) == MAX_BODY_BYTES + 1
    response = http.post("/", content=body)
    assert_protocol_answer(response)
    assert response.status_code == 413 and response.json()["error"]["type"] == "request_too_large"


def test_a_chunked_body_over_the_limit_is_413_without_reading_it_all(http: httpx.Client) -> None:
    sent = 0

    def chunks() -> Iterator[bytes]:
        nonlocal sent
        for _ in range(64):  # 4 MiB offered, no Content-Length
            sent += 65536
            yield b"x" * 65536

    response = http.post("/", content=chunks())
    assert_protocol_answer(response)
    assert response.status_code == 413


def test_the_body_limit_is_settable() -> None:
    with serve_engine(DummyEngine(), max_body_bytes=2048) as server:
        small = httpx.post(server.url, json={"prompt": "x" * 1000})
        large = httpx.post(server.url, json={"prompt": "x" * 3000})
    assert small.status_code == 200
    assert large.status_code == 413 and "2048" in large.json()["error"]["message"]


# -- raw HTTP garbage: answered by uvicorn's parser (400, plain text) or closed, never 5xx -----


def _raw_exchange(url: str, data: bytes) -> bytes:
    host, port = httpx.URL(url).host, httpx.URL(url).port
    received = b""
    with socket.create_connection((host, port or 80), timeout=10) as sock:
        try:  # the server may answer and close before it has read everything
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except (ConnectionResetError, TimeoutError):
            pass
    return received


@pytest.mark.parametrize(
    "data",
    [
        b"\x00\x01\x02garbage\r\n\r\n",
        b"GET / HTTP/9.9\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n{}",
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n{}",
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 200_000 + b"\r\n\r\n",
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",  # an HTTP/2 preface
        bytes.fromhex("160301002f0100002b0303") + b"\x00" * 40,  # the start of a TLS hello
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n{}",  # promises more than sent
    ],
    ids=[
        "binary",
        "http-9.9",
        "bad-length",
        "negative-length",
        "bad-chunk",
        "200KB-header",
        "http2",
        "tls",
        "short-body",
    ],
)
def test_malformed_http_is_refused_and_the_server_stays_up(echo_server: str, data: bytes) -> None:
    answer = _raw_exchange(echo_server, data)
    if answer:
        status = int(answer.split(b" ", 2)[1])
        assert 400 <= status < 500, answer[:200]
    health = httpx.get(echo_server + "health", timeout=10)
    assert health.status_code == 200


# -- nothing leaks: slots are given back whatever the client does -----------------------------


def test_request_slots_come_back_after_clients_vanish_mid_request() -> None:
    """With ``max_in_flight=4``, abandon streams after their first event and whole replies by
    timing out, several rounds; afterwards four requests at once must all be served."""
    engine = ObservedEngine(DummySettings(echo=True, tokens_per_second=20))
    long_prompt = " ".join(f"w{i}" for i in range(200))
    with serve_engine(engine, max_in_flight=4) as server:

        async def abandon_rounds() -> None:
            for _ in range(3):
                async with httpx.AsyncClient(timeout=10) as client:

                    async def one_event() -> None:
                        body = {"prompt": long_prompt, "stream": True}
                        async with client.stream("POST", server.url, json=body) as response:
                            assert response.status_code == 200
                            async for line in response.aiter_lines():
                                if line.startswith("data"):
                                    return

                    await asyncio.gather(*(one_event() for _ in range(4)))
                async with httpx.AsyncClient(timeout=0.3) as client:

                    async def time_out() -> None:
                        with contextlib.suppress(httpx.TimeoutException):
                            await client.post(server.url, json={"prompt": long_prompt})

                    await asyncio.gather(*(time_out() for _ in range(4)))

        async def four_at_once() -> list[int]:
            async with httpx.AsyncClient(timeout=30) as client:
                replies = await asyncio.gather(
                    *(client.post(server.url, json={"prompt": "a b"}) for _ in range(4))
                )
            return [reply.status_code for reply in replies]

        asyncio.run(abandon_rounds())
        deadline = time.monotonic() + 30
        while engine.active and time.monotonic() < deadline:  # the cancellations land
            time.sleep(0.05)
        statuses = asyncio.run(four_at_once())
    assert engine.active == 0, "a generation kept running after its client left"
    assert statuses == [200, 200, 200, 200], "a request slot leaked"


def test_the_server_is_still_up_after_all_that(echo_server: str) -> None:
    assert httpx.get(echo_server + "health").json()["status"] == "ok"
    assert httpx.post(echo_server, json={"prompt": "still here"}).json()["prompt"] == "still here"
