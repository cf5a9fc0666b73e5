"""The server against slow or absent clients: connections that send nothing, half a request or a
byte at a time are closed after the header timeout; past the connection cap a connection is
refused with the protocol's 503; a process short of file descriptors keeps answering; a client
that leaves before the first token frees its slot at once; one that never reads its stream is
dropped after the send timeout.

Before these limits, 110 such connections were all still open after 25 s, 1,100 half-sent
request lines exhausted a 1,024-descriptor limit (``/health`` stopped answering, the log filled
with "Too many open files"), and a stream's slot stayed taken for as long as its client wished.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from collections.abc import AsyncGenerator, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from promptwire.engine import EngineEvent, Finish, TextChunk
from promptwire.protocol import FinishReason, PromptRequest, Usage
from promptwire.server import BackgroundServer, ConnectionLimits, create_app
from promptwire.settings import PromptwireSettings
from promptwire_modal_dummy.engine import DummyEngine
from promptwire_modal_dummy.settings import DummySettings
from pydantic import ValidationError

from tests.reliability.served import promptwire_serve
from tests.support.engines import ObservedEngine
from tests.support.network import LOOPBACK_ONLY

pytestmark = LOOPBACK_ONLY

HEADER_TIMEOUT = 2.0
PARSERS = ["httptools", "h11"]
"""``promptwire serve``'s two HTTP parsers: every connection guard holds on each."""
MARGIN = 15.0
"""Seconds allowed on top of a timeout: generous, for a loaded two-core machine."""


@dataclass
class Outcome:
    closed: bool
    answer: bytes


def _status_and_json(answer: bytes) -> tuple[int, Any]:
    head, _, body = answer.partition(b"\r\n\r\n")
    assert b"content-type: application/json" in head.lower(), answer[:300]
    assert b"x-content-type-options: nosniff" in head.lower(), answer[:300]
    return int(head.split(b" ", 2)[1]), json.loads(body)


async def _read_to_end(reader: asyncio.StreamReader, seconds: float) -> Outcome:
    """Everything until the server closes, or what came before ``seconds`` ran out."""
    answer = b""
    deadline = time.monotonic() + seconds
    try:
        while (left := deadline - time.monotonic()) > 0:
            chunk = await asyncio.wait_for(reader.read(65536), left)
            if not chunk:
                return Outcome(True, answer)
            answer += chunk
    except ConnectionError:
        # Reset: the server closed with the client's unread bytes in its buffer (a refused
        # half-sent head), so the kernel sent RST, not FIN. Closed all the same; under load the
        # reset can overtake the answer before it is read.
        return Outcome(True, answer)
    except TimeoutError:
        pass
    return Outcome(reader.at_eof(), answer)


async def _silent(host: str, port: int, seconds: float) -> Outcome:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        return await _read_to_end(reader, seconds)
    finally:
        writer.close()


async def _half_head(host: str, port: int, seconds: float) -> Outcome:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Ty")
        await writer.drain()
        return await _read_to_end(reader, seconds)
    finally:
        writer.close()


async def _dripping(host: str, port: int, seconds: float) -> Outcome:
    """A request head sent one byte every half second, far slower than anyone sends one."""
    request = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"z" * 1000 + b"\r\n\r\n"
    reader, writer = await asyncio.open_connection(host, port)
    deadline = time.monotonic() + seconds
    try:
        for byte in request:
            if time.monotonic() > deadline:
                return Outcome(False, b"")
            try:
                writer.write(bytes([byte]))
                await writer.drain()
            except ConnectionError:
                break  # closed under us: read what it said
            outcome = await _read_to_end(reader, 0.5)
            if outcome.closed or outcome.answer:
                rest = await _read_to_end(reader, 5)
                return Outcome(outcome.closed or rest.closed, outcome.answer + rest.answer)
        return await _read_to_end(reader, 5)
    finally:
        writer.close()


def _host_port(url: str) -> tuple[str, int]:
    parsed = httpx.URL(url)
    return parsed.host, parsed.port or 80


@pytest.mark.parametrize("parser", PARSERS)
def test_idle_half_sent_and_dripping_connections_are_closed_after_the_header_timeout(
    parser: str,
) -> None:
    env = {"PROMPTWIRE_HEADER_TIMEOUT": str(HEADER_TIMEOUT), "PROMPTWIRE_HTTP": parser}
    with promptwire_serve("--log-level", "warning", env=env) as served:
        host, port = _host_port(served.url)
        seconds = HEADER_TIMEOUT + MARGIN

        async def everyone() -> list[tuple[str, Outcome]]:
            kinds = [("silent", _silent), ("half head", _half_head), ("dripping", _dripping)]
            jobs = [(name, job(host, port, seconds)) for name, job in kinds for _ in range(40)]
            outcomes = await asyncio.gather(*(job for _, job in jobs))
            return [(name, outcome) for (name, _), outcome in zip(jobs, outcomes, strict=True)]

        started = time.monotonic()
        results = asyncio.run(everyone())
        elapsed = time.monotonic() - started
        still_open = [name for name, outcome in results if not outcome.closed]
        assert not still_open, f"{len(still_open)} of {len(results)} open after {elapsed:.0f} s"
        for name, outcome in results:
            if name == "silent":
                assert outcome.answer == b""  # nothing asked, nothing said
            else:
                status, body = _status_and_json(outcome.answer)
                assert status == 408 and body["error"]["type"] == "request_timeout", outcome
        assert httpx.get(served.url + "health", timeout=10).status_code == 200
        assert served.alive()


def test_a_process_short_of_descriptors_caps_its_connections_and_keeps_answering() -> None:
    """256 open files allowed, 300 half-sent request lines: the cap (what fits) holds, the
    oldest are shed for the newest, nothing fails for want of a descriptor, and ``/health``
    answers."""
    env = {"PROMPTWIRE_HEADER_TIMEOUT": str(HEADER_TIMEOUT)}
    with promptwire_serve("--log-level", "warning", env=env, open_files=256) as served:
        host, port = _host_port(served.url)

        async def flood() -> list[Outcome]:
            return list(
                await asyncio.gather(
                    *(_half_head(host, port, HEADER_TIMEOUT + MARGIN) for _ in range(300))
                )
            )

        outcomes = asyncio.run(flood())
        statuses = [_status_and_json(o.answer)[0] for o in outcomes if o.answer]
        assert all(o.closed for o in outcomes)
        assert set(statuses) <= {408, 503}, statuses
        # More than fit were shed (the oldest half-sent heads, for newer ones), not left
        # hanging: at most the 128 that fit waited for the header timeout.
        assert statuses.count(408) <= 128, statuses
        deadline = time.monotonic() + MARGIN
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(served.url + "health", timeout=5).status_code == 200:
                    break
            time.sleep(0.2)
        else:
            pytest.fail("/health did not answer after the flood")
        output = served.output()
    assert "Too many open files" not in output
    assert "at most 128 at once" in output  # the cap was lowered to fit, and said so


def _busy(host: str, port: int) -> socket.socket:
    """A connection in a request: its whole request sent, its answer not yet come."""
    sock = socket.create_connection((host, port))
    body = b'{"prompt": "hi"}'
    sock.sendall(
        b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    return sock


def _kept_alive(host: str, port: int) -> socket.socket:
    """A connection that made one request, read its answer and stays open, idle."""
    sock = socket.create_connection((host, port), timeout=MARGIN)
    sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    answer = b""
    while b"\r\n\r\n" not in answer or not answer.endswith(b"}"):
        chunk = sock.recv(65536)
        assert chunk, answer
        answer += chunk
    assert answer.startswith(b"HTTP/1.1 200"), answer
    return sock


def _half_sent(host: str, port: int) -> socket.socket:
    sock = socket.create_connection((host, port))
    sock.sendall(b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Ty")
    return sock


def _closed_by_server(sock: socket.socket, seconds: float = 0.5) -> tuple[bool, bytes]:
    """Whether the server closed ``sock`` (within ``seconds``), and what it said first."""
    sock.settimeout(seconds)
    answer = b""
    try:
        while chunk := sock.recv(65536):
            answer += chunk
    except TimeoutError:
        return False, answer
    except ConnectionError:
        return True, answer
    return True, answer


def _health_now(url: str) -> int:
    return httpx.get(url + "health", timeout=MARGIN).status_code


@pytest.mark.parametrize("parser", PARSERS)
def test_idle_kept_alive_connections_make_room_for_a_new_client(parser: str) -> None:
    """Eight idle kept-alive connections fill the cap: a new client is served at once, and
    only the longest idle connection is closed to make room (it was 503 before)."""
    limits = ConnectionLimits(max_connections=8, header_timeout=30, keep_alive_timeout=60)
    with BackgroundServer(create_app(DummyEngine()), limits=limits, http=parser) as server:
        idle = []
        for _ in range(8):
            idle.append(_kept_alive(server.host, server.port))
            time.sleep(0.02)  # an order to shed them in
        try:
            assert _health_now(server.url) == 200
            closed = [_closed_by_server(sock)[0] for sock in idle]
            assert closed[0], "the longest idle connection was not the one closed"
            assert not any(closed[2:]), closed  # one per new connection, two at most
        finally:
            for sock in idle:
                sock.close()


@pytest.mark.parametrize("parser", PARSERS)
def test_half_sent_heads_make_room_oldest_first(parser: str) -> None:
    """Eight half-sent request heads fill the cap: a new client is served at once; the oldest
    half-sent one is answered with the JSON 503 and closed, the newest stay."""
    limits = ConnectionLimits(max_connections=8, header_timeout=30)
    with BackgroundServer(create_app(DummyEngine()), limits=limits, http=parser) as server:
        half = []
        for _ in range(8):
            half.append(_half_sent(server.host, server.port))
            time.sleep(0.02)
        try:
            time.sleep(0.3)  # all eight accepted, their bytes read
            assert _health_now(server.url) == 200
            closed, answer = _closed_by_server(half[0], MARGIN)
            assert closed
            status, body = _status_and_json(answer)
            assert status == 503 and body["error"]["type"] == "overloaded"
            assert not any(_closed_by_server(sock)[0] for sock in half[2:])
        finally:
            for sock in half:
                sock.close()


@pytest.mark.parametrize("parser", PARSERS)
def test_idle_kept_alive_connections_go_before_half_sent_heads(parser: str) -> None:
    limits = ConnectionLimits(max_connections=8, header_timeout=30, keep_alive_timeout=60)
    with BackgroundServer(create_app(DummyEngine()), limits=limits, http=parser) as server:
        half = [_half_sent(server.host, server.port) for _ in range(4)]  # the oldest
        time.sleep(0.3)
        idle = []
        for _ in range(4):
            idle.append(_kept_alive(server.host, server.port))
            time.sleep(0.02)
        # Three new clients that stay (kept alive): each sheds the longest idle connection.
        new = [_kept_alive(server.host, server.port) for _ in range(3)]
        try:
            closed = [_closed_by_server(sock)[0] for sock in idle]
            assert closed == [True, True, True, False], closed
            assert not any(_closed_by_server(sock)[0] for sock in half)
        finally:
            for sock in half + idle + new:
                sock.close()


@pytest.mark.parametrize("parser", PARSERS)
def test_one_connection_past_the_cap_gets_a_json_503(parser: str) -> None:
    """When every connection is in a request, there is nothing to shed: the new one is
    refused."""
    limits = ConnectionLimits(max_connections=8, header_timeout=30)
    engine = DummyEngine(DummySettings(first_token_delay=MARGIN))
    with BackgroundServer(create_app(engine), limits=limits, http=parser) as server:
        held = [_busy(server.host, server.port) for _ in range(8)]
        try:
            time.sleep(0.5)  # all eight accepted, their requests read
            with socket.create_connection((server.host, server.port), timeout=10) as extra:
                answer = b""
                while chunk := extra.recv(65536):
                    answer += chunk
            status, body = _status_and_json(answer)
            assert status == 503 and body["error"]["type"] == "overloaded"
            assert b"retry-after: 1" in answer.lower()
        finally:
            for sock in held:
                sock.close()
        deadline = time.monotonic() + MARGIN  # the closed ones are let go
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(server.url + "health", timeout=5).status_code == 200:
                    break
            time.sleep(0.1)
        else:
            pytest.fail("the closed connections still count against the cap")


@pytest.mark.parametrize("limits", ["promptwire serve", "plain uvicorn"])
def test_a_body_that_does_not_arrive_in_time_gets_a_json_408(limits: str) -> None:
    """App-level, so also under Modal: the body has ``body_timeout`` seconds, all of it."""
    options = ConnectionLimits() if limits == "promptwire serve" else None
    with BackgroundServer(create_app(DummyEngine(), body_timeout=1.0), limits=options) as server:
        host, port = _host_port(server.url)

        async def slow_body() -> Outcome:
            reader, writer = await asyncio.open_connection(host, port)
            try:
                writer.write(
                    b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                    b'Content-Length: 100\r\n\r\n{"prompt": '
                )
                await writer.drain()
                return await _read_to_end(reader, 1.0 + MARGIN)
            finally:
                writer.close()

        outcome = asyncio.run(slow_body())
    status, body = _status_and_json(outcome.answer)
    assert status == 408 and body["error"]["type"] == "request_timeout"
    assert b"connection: close" in outcome.answer.lower() and outcome.closed


@pytest.mark.parametrize("parser", PARSERS)
def test_a_body_left_unread_after_an_answer_is_bounded_too(parser: str) -> None:
    """``/health`` answers at once without reading a body; the rest of a dripped body must not
    keep the connection open."""
    limits = ConnectionLimits(header_timeout=HEADER_TIMEOUT)
    with BackgroundServer(create_app(DummyEngine()), limits=limits, http=parser) as server:
        host, port = _host_port(server.url)

        async def drip_after_answer() -> Outcome:
            reader, writer = await asyncio.open_connection(host, port)
            try:
                writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n")
                await writer.drain()
                deadline = time.monotonic() + HEADER_TIMEOUT + MARGIN
                answer = b""
                while time.monotonic() < deadline:
                    try:
                        writer.write(b"z")
                        await writer.drain()
                    except ConnectionError:
                        return Outcome(True, answer)
                    outcome = await _read_to_end(reader, 0.5)
                    answer += outcome.answer
                    if outcome.closed:
                        return Outcome(True, answer)
                return Outcome(False, answer)
            finally:
                writer.close()

        outcome = asyncio.run(drip_after_answer())
    assert outcome.answer.startswith(b"HTTP/1.1 200 ")
    assert outcome.closed, "a body dripped after the answer kept the connection open"


# -- request slots: a client that leaves or never reads gives its slot back --------------------


def test_a_stream_abandoned_before_its_first_token_frees_its_slot_at_once() -> None:
    """A 10 s first-token delay, one slot: the client gives up after half a second; its slot
    must be free well before the token would have come."""
    engine = ObservedEngine(DummySettings(echo=True, first_token_delay=10))
    with BackgroundServer(create_app(engine, max_in_flight=1)) as server:

        async def abandon() -> None:
            async with httpx.AsyncClient(timeout=30) as client:
                body = {"prompt": "a b c", "stream": True}
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.5):
                        async with client.stream("POST", server.url, json=body) as response:
                            await response.aread()

        started = time.monotonic()
        asyncio.run(abandon())
        engine.settings = DummySettings(echo=True)  # from now on the engine answers at once
        statuses = []
        while time.monotonic() - started < 8:  # the abandoned token would come at 10 s
            statuses.append(httpx.post(server.url, json={"prompt": "x"}, timeout=30).status_code)
            if statuses[-1] == 200:
                break
            time.sleep(0.1)
        assert statuses[-1] == 200, f"the slot was still taken ({len(statuses)} answers 503)"
        deadline = time.monotonic() + MARGIN
        while engine.active and time.monotonic() < deadline:
            time.sleep(0.05)
        assert engine.active == 0, "the abandoned generation kept running"


class FloodEngine(DummyEngine):
    """Streams 64 KiB pieces until closed, as fast as they are taken: a client that does not
    read fills every buffer between them at once."""

    def __init__(self) -> None:
        super().__init__()
        self.active = 0

    async def stream(self, request: PromptRequest) -> AsyncGenerator[EngineEvent, None]:
        self.active += 1
        try:
            for _ in range(4000):  # 256 MiB at most
                yield TextChunk("x" * 65536)
                await asyncio.sleep(0)
            yield Finish(FinishReason.LENGTH, Usage())
        finally:
            self.active -= 1


@contextlib.contextmanager
def _stream_nobody_reads(url: str) -> Iterator[socket.socket]:
    host, port = _host_port(url)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((host, port))
    body = b'{"prompt": "p", "stream": true}'
    sock.sendall(
        b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )
    try:
        yield sock  # never read
    finally:
        sock.close()


@pytest.mark.parametrize("limits", ["promptwire serve", "plain uvicorn"])
def test_a_stream_nobody_reads_is_dropped_after_the_send_timeout(limits: str) -> None:
    """One slot, a stream whose client reads nothing: after the send timeout the stream is
    ended, its generation cancelled and the slot free. Both by the connection (``promptwire
    serve``) and by the app alone (as under Modal's server)."""
    engine = FloodEngine()
    app = create_app(engine, max_in_flight=1, send_timeout=1.0)
    options = ConnectionLimits(send_timeout=1.0) if limits == "promptwire serve" else None
    with BackgroundServer(app, limits=options) as server, _stream_nobody_reads(server.url):
        deadline = time.monotonic() + MARGIN
        while not engine.active and time.monotonic() < deadline:
            time.sleep(0.05)
        assert engine.active == 1
        status = 0
        while time.monotonic() < deadline:
            status = httpx.post(server.url, json={"prompt": "p", "max_tokens": 1}).status_code
            if status != 503:
                break
            time.sleep(0.2)
        assert status == 200, "the slot of the stream nobody reads was never given back"
        assert engine.active == 0


# -- the settings -----------------------------------------------------------------------------


def test_the_server_settings_have_safe_defaults_and_bounds(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = PromptwireSettings()
    assert settings.header_timeout == 10 and settings.body_timeout == 30
    assert settings.keep_alive_timeout == 5 and settings.send_timeout == 30
    assert settings.max_connections == 512 and settings.shutdown_grace == 5
    for name, value in [
        ("HEADER_TIMEOUT", "0"),
        ("BODY_TIMEOUT", "nan"),
        ("SEND_TIMEOUT", "-1"),
        ("KEEP_ALIVE_TIMEOUT", "0"),
        ("MAX_CONNECTIONS", "0"),
        ("SHUTDOWN_GRACE", "inf"),
    ]:
        monkeypatch.setenv(f"PROMPTWIRE_{name}", value)
        with pytest.raises(ValidationError):
            PromptwireSettings()
        monkeypatch.delenv(f"PROMPTWIRE_{name}")
