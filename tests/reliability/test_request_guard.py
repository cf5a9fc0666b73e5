"""Requests that servers, proxies and browsers read differently, and the small print of HTTP:
request smuggling (``Content-Length`` with ``Transfer-Encoding``), two ``Authorization`` headers,
cross-site "simple" requests and DNS rebinding against a loopback server, websocket upgrades,
``HEAD``, ``/health/``, ``nosniff`` and the server banner. Every answer is the protocol's JSON.

Before: the smuggled second request was served; with two ``Authorization`` headers the
middleware and Starlette each read another one; a ``text/plain`` POST from a foreign page and any
``Host`` were served; ``/health/`` answered an empty 307 built from the ``Host`` header; a
websocket upgrade got an empty text/plain 403; ``HEAD /health`` was 405; no ``nosniff``;
``server: uvicorn``.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from promptwire.server import BackgroundServer, create_app
from promptwire_modal_dummy.settings import DummySettings

from tests.reliability.checks import assert_protocol_answer
from tests.reliability.served import promptwire_serve
from tests.support.engines import ObservedEngine
from tests.support.network import LOOPBACK_ONLY

pytestmark = LOOPBACK_ONLY

TOKEN = "guard-token-5d1f"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
PARSERS = ["httptools", "h11"]
SERVERS = [*(f"promptwire serve ({parser})" for parser in PARSERS), "plain uvicorn"]
"""The app under ``promptwire serve``'s connection handling on each of its parsers, and alone
under plain uvicorn (as under Modal's server): the app-level guarantees must hold in all."""


@pytest.fixture(scope="module", params=SERVERS)
def server(request: pytest.FixtureRequest) -> Iterator[tuple[BackgroundServer, ObservedEngine]]:
    engine = ObservedEngine(DummySettings(echo=True))
    app = create_app(engine, api_key=TOKEN)
    if request.param == "plain uvicorn":
        running = BackgroundServer(app, limits=None)
    else:
        running = BackgroundServer(app, http=request.param.partition("(")[2].rstrip(")"))
    with running:
        yield running, engine


def _exchange(server: BackgroundServer, data: bytes) -> list[tuple[int, dict[str, str], bytes]]:
    """Send raw bytes; read answers until the server closes (or goes quiet for 5 s)."""
    received = b""
    with socket.create_connection((server.host, server.port), timeout=5) as sock:
        sock.sendall(data)
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except (TimeoutError, ConnectionResetError):
            pass
    answers = []
    while received:
        head, _, rest = received.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        length = int(headers.get("content-length", "0"))
        answers.append((int(lines[0].split(" ")[1]), headers, rest[:length]))
        received = rest[length:]
    return answers


def _request(method: str, headers: list[str], body: bytes = b"") -> bytes:
    head = "\r\n".join([f"{method} / HTTP/1.1", "Host: 127.0.0.1", *headers])
    return head.encode() + b"\r\n\r\n" + body


# -- request smuggling ---------------------------------------------------------------------


def test_content_length_with_transfer_encoding_is_refused_and_the_connection_closed(
    server: tuple[BackgroundServer, ObservedEngine],
) -> None:
    running, engine = server
    inner = b'{"prompt": "smuggled"}'
    smuggled = _request(
        "POST",
        [
            f"Authorization: Bearer {TOKEN}",
            "Content-Type: application/json",
            f"Content-Length: {len(inner)}",
        ],
        inner,
    )
    chunk = b'{"prompt": "first"}'
    body = f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n0\r\n\r\n" + smuggled
    first = _request(
        "POST",
        [
            f"Authorization: Bearer {TOKEN}",
            "Content-Type: application/json",
            f"Content-Length: {len(body)}",
            "Transfer-Encoding: chunked",
        ],
        body,
    )
    seen = len(engine.requests)
    answers = _exchange(running, first)
    assert len(answers) == 1, answers  # nothing after the refusal: the connection was closed
    status, headers, payload = answers[0]
    assert status == 400 and headers["connection"] == "close"
    assert_protocol_answer(status, headers["content-type"], json.loads(payload))
    assert len(engine.requests) == seen  # neither request reached the engine


@pytest.mark.parametrize("order", ["good first", "good last"])
def test_two_authorization_headers_are_refused(
    server: tuple[BackgroundServer, ObservedEngine], order: str
) -> None:
    running, _ = server
    pair = [("Authorization", f"Bearer {TOKEN}"), ("Authorization", "Bearer wrong")]
    headers = pair if order == "good first" else pair[::-1]
    response = httpx.post(running.url, json={"prompt": "p"}, headers=headers)
    assert response.status_code == 400
    assert_protocol_answer(400, response.headers["content-type"], response.json())


# -- browsers: cross-site requests and DNS rebinding --------------------------------------------


@pytest.mark.parametrize(
    "content_type",
    [
        None,
        "text/plain",
        "text/plain;charset=UTF-8",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/jsonx",
        "text/json",
    ],
)
def test_a_body_not_declared_json_is_refused_with_415(
    server: tuple[BackgroundServer, ObservedEngine], content_type: str | None
) -> None:
    """A page on another site may POST ``text/plain`` (and the two form types) without asking
    the server first; anything else makes the browser ask (a CORS preflight), which this server
    never grants."""
    running, engine = server
    headers = {**AUTH, "Origin": "http://attacker.example"}
    if content_type is not None:
        headers["Content-Type"] = content_type
    seen = len(engine.requests)
    response = httpx.post(running.url, content=b'{"prompt": "p"}', headers=headers)
    assert response.status_code == 415
    assert response.json()["error"]["type"] == "unsupported_media_type"
    assert len(engine.requests) == seen


@pytest.mark.parametrize(
    "content_type", ["application/json", "application/json; charset=utf-8", "Application/JSON"]
)
def test_a_body_declared_json_is_served(
    server: tuple[BackgroundServer, ObservedEngine], content_type: str
) -> None:
    running, _ = server
    headers = {**AUTH, "Content-Type": content_type}
    response = httpx.post(running.url, content=b'{"prompt": "p"}', headers=headers)
    assert response.status_code == 200 and response.json()["prompt"] == "p"


def test_the_loopback_server_answers_only_loopback_host_names() -> None:
    """``promptwire serve`` on 127.0.0.1 refuses a page whose own name resolves to 127.0.0.1
    (DNS rebinding, Ollama's CVE-2024-28224); the names of this machine are answered."""
    with promptwire_serve("--log-level", "warning") as served:
        port = httpx.URL(served.url).port
        for host, status in [
            (f"attacker.example:{port}", 400),
            ("attacker.example", 400),
            ("127.0.0.1.attacker.example", 400),
            (f"127.0.0.1:{port}", 200),
            (f"localhost:{port}", 200),
            (f"LOCALHOST.:{port}", 200),
            (f"[::1]:{port}", 200),
        ]:
            for path, method in [("", "POST"), ("health", "GET")]:
                response = httpx.request(
                    method, served.url + path, json={"prompt": "p"}, headers={"Host": host}
                )
                assert response.status_code == status, (host, path, response.text)
                if status == 400:
                    assert response.json()["error"]["type"] == "bad_request"


def test_an_app_without_allowed_hosts_answers_any_host() -> None:
    """The default, for Modal, where the platform routes by its own names."""
    with BackgroundServer(create_app(ObservedEngine())) as running:
        response = httpx.post(running.url, json={"prompt": "p"}, headers={"Host": "x.modal.run"})
        assert response.status_code == 200


# -- the small print ---------------------------------------------------------------------------


def test_a_websocket_upgrade_gets_a_json_answer(
    server: tuple[BackgroundServer, ObservedEngine],
) -> None:
    running, _ = server
    upgrade = {
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version": "13",
    }
    with httpx.Client(timeout=10) as client:
        for path in ("", "health", "nowhere"):
            response = client.get(running.url + path, headers={**AUTH, **upgrade})
            assert response.status_code != 101
            body = response.json()
            if response.status_code >= 400:
                assert_protocol_answer(response.status_code, response.headers["content-type"], body)
            assert response.headers["x-content-type-options"] == "nosniff"
            # The next request, on the same connection if the server kept it, is answered
            # (llhttp parses nothing after an upgrade request: httptools closes the connection).
            assert client.get(running.url + "health").status_code == 200


@pytest.mark.parametrize("parser", PARSERS)
def test_a_request_after_an_upgrade_request_is_answered_or_the_connection_closed(
    parser: str,
) -> None:
    """Pipelined behind an ``Upgrade`` request. Before, on httptools, the second request was
    dropped and the connection left open: the client waited for an answer that never came.
    (Plain uvicorn, with a websocket library installed, refuses the upgrade itself.)"""
    upgrade = _request("GET", ["Connection: Upgrade", "Upgrade: websocket"])
    health = _request("GET", [])
    with BackgroundServer(create_app(ObservedEngine()), http=parser) as running:
        answers = _exchange(running, (upgrade + health).replace(b"GET / ", b"GET /health "))
    assert [status for status, _, _ in answers][:1] == [200], answers
    assert len(answers) == 2 or answers[0][1].get("connection") == "close", answers


def test_head_is_answered_as_get_without_a_body(
    server: tuple[BackgroundServer, ObservedEngine],
) -> None:
    running, _ = server
    get, head = httpx.get(running.url + "health"), httpx.head(running.url + "health")
    assert head.status_code == get.status_code == 200
    assert head.content == b"" and head.headers["content-length"] == get.headers["content-length"]
    refused = httpx.head(running.url, headers=AUTH)  # POST only, as for GET
    assert refused.status_code == 405 and refused.headers["allow"] == "POST"
    assert refused.headers["content-type"] == "application/json" and refused.content == b""


def test_health_with_a_slash_is_not_found_and_nothing_redirects(
    server: tuple[BackgroundServer, ObservedEngine],
) -> None:
    running, _ = server
    response = httpx.get(running.url + "health/", headers={**AUTH, "Host": "attacker.example"})
    assert response.status_code == 404 and "location" not in response.headers
    assert response.json()["error"]["type"] == "not_found"


def test_every_answer_says_nosniff_and_no_server_banner(
    server: tuple[BackgroundServer, ObservedEngine],
) -> None:
    running, _ = server
    responses: list[httpx.Response] = [
        httpx.get(running.url + "health"),
        httpx.post(running.url, json={"prompt": "p"}, headers=AUTH),
        httpx.post(running.url, json={"prompt": "p", "stream": True}, headers=AUTH),
        httpx.post(running.url, json={"prompt": "p"}),  # 401
        httpx.post(running.url, json={"prompt": 5}, headers=AUTH),  # 422
        httpx.get(running.url + "nowhere", headers=AUTH),  # 404
        httpx.post(running.url, content=b"p", headers=AUTH),  # 415
    ]
    for response in responses:
        assert response.headers.get("x-content-type-options") == "nosniff", response
        assert "server" not in response.headers, response.headers


MALFORMED = {
    "garbage": b"\x00\x01\x02garbage\r\n\r\n",
    "negative length": b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n{}",
    "length not a number": b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n{}",
    "two lengths": (
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 2\r\nContent-Length: 30\r\n\r\n{}"
    ),
    "space before the colon": (
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length : 2\r\n\r\n{}"
    ),
    "transfer coding not chunked": (
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: identity\r\n\r\n{}"
    ),
    "chunked, then another coding": (
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked, identity\r\n\r\n2\r\n{}\r\n0\r\n\r\n"
    ),
    "bad chunk size": (  # the head is good: the app has the request when the body fails
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n"
    ),
    "NUL in a header": b"GET /health HTTP/1.1\r\nHost: x\r\nX: a\x00b\r\n\r\n",
}


@pytest.mark.parametrize("parser", PARSERS)
@pytest.mark.parametrize("shape", MALFORMED)
def test_malformed_http_gets_a_json_400_under_promptwire_serve(parser: str, shape: str) -> None:
    """Before, the bad chunk (on both parsers) and a transfer coding other than chunked (on
    httptools) were closed with no answer at all: the head had reached the app already."""
    engine = ObservedEngine()
    with BackgroundServer(create_app(engine), http=parser) as running:
        answers = _exchange(running, MALFORMED[shape])
    assert len(answers) == 1, answers
    status, headers, payload = answers[0]
    assert status == 400 and headers["connection"] == "close"
    body: Any = json.loads(payload)
    assert_protocol_answer(status, headers["content-type"], body)
    assert engine.requests == []
