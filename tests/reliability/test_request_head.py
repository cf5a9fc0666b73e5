"""The request head is bounded on both of ``promptwire serve``'s parsers: at most
``PROMPTWIRE_MAX_HEADER_BYTES`` (16 KiB) and ``PROMPTWIRE_MAX_HEADERS`` (100) lines, else a
JSON 431 and the connection closed, however the head arrives (whole in one read, or dripped over
many) and wherever its bytes are (one long header, many short ones, the request target).

Before, on httptools (the default parser) nothing bounded it: a 200 KB header was answered 200, a
1 MB bearer token read whole and answered 401, four connections each sending a 32 MiB header grew
the server by 195 MiB and were all answered 200, one head of 2.3 million short headers (13.4 MiB)
by 285 MiB. h11 cut a head still arriving at 16 KiB (a plain 400), but served one of any size
that came in a single read.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from promptwire import PromptwireLLM, RequestTooLargeError
from promptwire.server import BackgroundServer, ConnectionLimits, create_app
from promptwire.settings import DEFAULT_MAX_HEADER_BYTES, DEFAULT_MAX_HEADERS, PromptwireSettings
from promptwire_modal_dummy.settings import DummySettings
from pydantic import ValidationError

from tests.reliability.checks import assert_protocol_answer
from tests.reliability.served import promptwire_serve
from tests.support.engines import ObservedEngine
from tests.support.network import LOOPBACK_ONLY

pytestmark = LOOPBACK_ONLY

PARSERS = ["httptools", "h11"]
TOKEN = "head-token-7c2e"
MAX_BYTES = 4096
MAX_LINES = 20
LIMITS = ConnectionLimits(max_header_bytes=MAX_BYTES, max_headers=MAX_LINES)


@pytest.fixture(scope="module", params=PARSERS)
def server(request: pytest.FixtureRequest) -> Iterator[tuple[BackgroundServer, ObservedEngine]]:
    engine = ObservedEngine(DummySettings(echo=True))
    app = create_app(engine, api_key=TOKEN)
    with BackgroundServer(app, limits=LIMITS, http=request.param) as running:
        yield running, engine


def _exchange(
    server: BackgroundServer, pieces: list[bytes], pause: float = 0.0
) -> tuple[list[tuple[int, dict[str, str], bytes]], bool]:
    """Send ``pieces`` (``pause`` seconds apart, so that each is its own read), then read the
    answers until the server closes; and whether it closed (a reset counts: the server closed
    with the client's bytes unread)."""
    received = b""
    closed = False
    with socket.create_connection((server.host, server.port), timeout=10) as sock:
        try:
            for piece in pieces:
                sock.sendall(piece)
                time.sleep(pause)
        except OSError:
            pass  # closed under us: read what it said
        try:
            while chunk := sock.recv(65536):
                received += chunk
            closed = True
        except ConnectionResetError:
            closed = True
        except TimeoutError:
            pass
    answers = []
    while received:
        head, _, rest = received.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        length = int(headers.get("content-length", "0"))
        answers.append((int(lines[0].split(" ")[1]), headers, rest[:length]))
        received = rest[length:]
    return answers, closed


def _get(*headers: str, target: str = "/health") -> bytes:
    lines = [f"GET {target} HTTP/1.1", "Host: 127.0.0.1", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _post(body: bytes, *headers: str) -> bytes:
    lines = [
        "POST / HTTP/1.1",
        "Host: 127.0.0.1",
        f"Authorization: Bearer {TOKEN}",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
        *headers,
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def _assert_refused(answers: list[tuple[int, dict[str, str], bytes]], closed: bool) -> None:
    assert closed, answers
    assert len(answers) == 1, answers
    status, headers, payload = answers[0]
    assert status == 431 and headers["connection"] == "close", answers
    body: Any = json.loads(payload)
    assert_protocol_answer(status, headers["content-type"], body)
    assert body["error"]["type"] == "request_too_large"


def _split(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


# -- size ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("pieces", [1, 8], ids=["one read", "dripped"])
def test_a_head_at_the_limit_is_served_and_one_over_it_refused(
    server: tuple[BackgroundServer, ObservedEngine], pieces: int
) -> None:
    running, _ = server
    for size, served in [(MAX_BYTES - 200, True), (MAX_BYTES + 100, False)]:
        request = _get("X-Big: " + "a" * size)
        answers, closed = _exchange(running, _split(request, -(-len(request) // pieces)), 0.05)
        if served:
            assert [status for status, _, _ in answers] == [200], answers
        else:
            _assert_refused(answers, closed)


@pytest.mark.parametrize(
    "request_bytes",
    [
        _get("X-Big: " + "a" * 200_000),
        _get(f"Authorization: Bearer {'t' * 1_000_000}"),  # refused before auth reads it
        _get(target="/health?" + "q" * 100_000),
        _get(*[f"X-{i}: {'v' * 200}" for i in range(MAX_LINES)]),  # each small, together not
    ],
    ids=["200 KB header", "1 MB bearer token", "100 KB target", "many medium headers"],
)
@pytest.mark.parametrize("pieces", [1, 50], ids=["one write", "dripped"])
def test_a_head_over_the_limit_gets_a_json_431_and_is_closed(
    server: tuple[BackgroundServer, ObservedEngine], request_bytes: bytes, pieces: int
) -> None:
    running, engine = server
    seen = len(engine.requests)
    chunks = _split(request_bytes, -(-len(request_bytes) // pieces))
    answers, closed = _exchange(running, chunks, 0.01 if pieces > 1 else 0.0)
    _assert_refused(answers, closed)
    assert len(engine.requests) == seen


# -- number of lines -----------------------------------------------------------------------------


def test_too_many_headers_get_a_json_431(server: tuple[BackgroundServer, ObservedEngine]) -> None:
    running, _ = server
    # Host is one of the lines: MAX_LINES in all are served, one more is refused.
    at_limit = _get(*[f"X-{i}: v" for i in range(MAX_LINES - 1)])
    answers, _ = _exchange(running, [at_limit])
    assert [status for status, _, _ in answers] == [200], answers
    answers, closed = _exchange(running, [_get(*[f"X-{i}: v" for i in range(MAX_LINES)])])
    _assert_refused(answers, closed)
    answers, closed = _exchange(running, [_get(*[f"X-{i}: v" for i in range(10_000)])])
    _assert_refused(answers, closed)


# -- what a bounded head must not break ----------------------------------------------------------


def test_bodies_and_pipelined_requests_do_not_count_as_a_head(
    server: tuple[BackgroundServer, ObservedEngine],
) -> None:
    """A body many times the head limit, then two requests pipelined behind it, the last one's
    head split across reads: every one is answered (a body's bytes, or earlier requests' in the
    same read, are not counted against the next head)."""
    running, _ = server
    prompt = "p " * (8 * MAX_BYTES)
    big = _post(json.dumps({"prompt": prompt, "max_tokens": 4}).encode())
    small = _get("X-Pad: " + "a" * (MAX_BYTES // 2))
    data = big + small + small + _get("Connection: close", "X-Pad: " + "b" * (MAX_BYTES // 2))
    cut = len(big) + 2 * len(small) + 40  # the last head is cut after its first 40 bytes
    answers, closed = _exchange(running, [data[:cut], data[cut:]], pause=0.3)
    assert [status for status, _, _ in answers] == [200, 200, 200, 200], answers
    assert closed


@pytest.mark.parametrize("parser", PARSERS)
def test_a_head_over_the_limit_behind_a_request_in_progress_does_not_garble_its_answer(
    parser: str,
) -> None:
    """A request still generating, and a head over the limit pipelined behind it: the answer
    on the wire is the first request's whole reply then the 431 (h11 reads the second head once
    the first is answered), or the 431 alone with the first request ended (llhttp reads on);
    never a 431 written into another answer."""
    engine = ObservedEngine(DummySettings(echo=True, first_token_delay=1.0))
    app = create_app(engine, api_key=TOKEN)
    with BackgroundServer(app, limits=LIMITS, http=parser) as running:
        first = _post(json.dumps({"prompt": "first"}).encode())
        answers, closed = _exchange(running, [first + _get("X-Big: " + "a" * (4 * MAX_BYTES))])
        deadline = time.monotonic() + 10
        while engine.active and time.monotonic() < deadline:
            time.sleep(0.02)
        assert engine.active == 0
    assert closed and answers, answers
    *before, last = answers
    assert last[0] == 431 and json.loads(last[2])["error"]["type"] == "request_too_large"
    assert [status for status, _, _ in before] in ([], [200]), answers
    if before:
        assert json.loads(before[0][2])["prompt"] == "first"


@pytest.mark.parametrize("parser", PARSERS)
def test_a_head_over_the_limit_behind_a_stream_is_not_written_into_it(parser: str) -> None:
    """A stream under way, and a head over the limit pipelined behind it: a 431 is written
    only where an answer may begin (after the stream's last chunk), else the connection just
    closes; the stream's generation ends either way."""
    engine = ObservedEngine(DummySettings(echo=True, tokens_per_second=10))
    app = create_app(engine, api_key=TOKEN)
    with BackgroundServer(app, limits=LIMITS, http=parser) as running:
        stream = _post(json.dumps({"prompt": "a b c d e f", "stream": True}).encode())
        received = b""
        with socket.create_connection((running.host, running.port), timeout=10) as sock:
            sock.sendall(stream)
            received = sock.recv(65536)  # the stream has begun
            assert received.startswith(b"HTTP/1.1 200 "), received
            try:
                sock.sendall(_get("X-Big: " + "a" * (4 * MAX_BYTES)))
                while chunk := sock.recv(65536):
                    received += chunk
            except (ConnectionResetError, BrokenPipeError):
                pass
        deadline = time.monotonic() + 10
        while engine.active and time.monotonic() < deadline:
            time.sleep(0.02)
        assert engine.active == 0
    before, refusal, _ = received.partition(b"HTTP/1.1 431 ")
    assert before.count(b"HTTP/1.1 ") == 1, received
    if refusal:
        assert before.endswith(b"0\r\n\r\n"), received  # after the stream's last chunk


def test_many_small_pipelined_requests_in_one_read_are_all_served(
    server: tuple[BackgroundServer, ObservedEngine],
) -> None:
    running, _ = server
    one = _get("X-Pad: " + "a" * 100)
    count = 3 * MAX_BYTES // len(one)  # together three times the head limit
    last = _get("Connection: close")
    answers, closed = _exchange(running, [one * count + last[:20], last[20:]], pause=0.3)
    assert [status for status, _, _ in answers] == [200] * (count + 1), answers
    assert closed


def test_the_client_reads_a_431_as_request_too_large(
    server: tuple[BackgroundServer, ObservedEngine],
) -> None:
    running, engine = server
    seen = len(engine.requests)
    llm = PromptwireLLM(endpoint_url=running.url, api_key="k" * (2 * MAX_BYTES), max_retries=0)
    with pytest.raises(RequestTooLargeError) as raised:
        llm.invoke("hi")
    assert raised.value.status_code == 431 and "k" * 100 not in str(raised.value)
    assert len(engine.requests) == seen


def test_the_head_limits_have_defaults_and_bounds(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = PromptwireSettings()
    assert settings.max_header_bytes == DEFAULT_MAX_HEADER_BYTES == 16 * 1024
    assert settings.max_headers == DEFAULT_MAX_HEADERS == 100
    assert ConnectionLimits().max_header_bytes == DEFAULT_MAX_HEADER_BYTES
    for name, value in [
        ("MAX_HEADER_BYTES", "100"),
        ("MAX_HEADER_BYTES", str(64 << 20)),
        ("MAX_HEADERS", "0"),
        ("MAX_HEADERS", "1000000"),
    ]:
        monkeypatch.setenv(f"PROMPTWIRE_{name}", value)
        with pytest.raises(ValidationError):
            PromptwireSettings()
        monkeypatch.delenv(f"PROMPTWIRE_{name}")


# -- memory under the attack, in the real server process ------------------------------------------

ATTACKERS = 4
ATTACK_BYTES = 16 << 20
RSS_BOUND = 24 << 20
"""What ``promptwire serve`` may grow by while four connections each send a 16 MiB head. Measured
(4 x 32 MiB; one head of 2.3 million short headers): +0.0 MiB and +3.9 MiB on httptools, +0.0
on h11, against 195 MiB and 285 MiB on httptools before the limit. The bound leaves room for the
allocator's noise and what each connection may hold (the limit and two reads of 256 KiB)."""


def _attack(url: str, shape: str, outcomes: list[bytes], index: int) -> None:
    host, _, port = url.removeprefix("http://").rstrip("/").partition(":")
    with socket.create_connection((host, int(port)), timeout=60) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        if shape == "one header":
            sock.sendall(b"X-Big: ")
            chunk = b"a" * 65536
        else:
            chunk = b"a: b\r\n" * 10_000
        sent = 0
        answer = b""
        try:
            while sent < ATTACK_BYTES:
                sock.sendall(chunk)
                sent += len(chunk)
            sock.sendall(b"\r\n\r\n")
        except OSError:
            pass  # the server closed the connection: read its answer
        try:
            while data := sock.recv(65536):
                answer += data
        except OSError:
            pass
        outcomes[index] = answer


@pytest.mark.parametrize("shape", ["one header", "many headers"])
@pytest.mark.parametrize("parser", PARSERS)
def test_heads_of_many_megabytes_do_not_grow_the_server(parser: str, shape: str) -> None:
    with promptwire_serve(env={"PROMPTWIRE_HTTP": parser}) as served:
        before = peak = served.rss()
        outcomes = [b""] * ATTACKERS
        threads = [
            threading.Thread(target=_attack, args=(served.url, shape, outcomes, i))
            for i in range(ATTACKERS)
        ]
        for thread in threads:
            thread.start()
        while any(thread.is_alive() for thread in threads):
            peak = max(peak, served.rss())
            time.sleep(0.02)
        for thread in threads:
            thread.join()
        peak = max(peak, served.rss())
        assert served.alive()
    assert peak - before < RSS_BOUND, f"grew by {(peak - before) / 2**20:.1f} MiB"
    # Each was refused with the 431 (or reset before it could read it: the server closed with
    # the rest of the attacker's head unread); never served.
    for answer in outcomes:
        assert not answer or answer.startswith(b"HTTP/1.1 431 "), answer[:200]
    assert any(outcomes), "no attacker read the 431"
