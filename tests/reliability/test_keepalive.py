"""Kept-alive connections that the server drops: a failure the server cannot have run is not shown.

A server may close an idle kept-alive connection at any moment (its keep-alive timeout, or, as
uvicorn did after an unhandled exception, right after a reply without ``Connection: close``). A
request the client sends on it at that moment gets no reply at all. On a reused connection that
failure before any byte of a reply is the server's close, not the request's fault: the client
sends the request again at once on a new connection (as Go's net/http does). On a new connection
the same failure may be the server dying while it ran the request, and is not repeated unless
``retry_unsafe`` is set (tests/reliability/test_client_faults.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import struct
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from promptwire import PromptwireLLM
from promptwire.errors import EndpointConnectError

from tests.support.network import LOOPBACK_ONLY
from tests.support.servers import refused_url

pytestmark = LOOPBACK_ONLY

MODES = ("invoke", "ainvoke", "stream", "astream")


class DroppingServer:
    """HTTP/1.1 with keep-alive; every connection's second request is read and then dropped
    without a reply, by a FIN (``close``) or an RST (``reset``)."""

    def __init__(self, how: str, *, serve_only_first: bool = False) -> None:
        self.how = how
        self.serve_only_first = serve_only_first
        self.requests = 0
        self.connections = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        self.url = ""

    def __enter__(self) -> DroppingServer:
        self._thread.start()
        started = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._serve, "127.0.0.1", 0), self._loop
        )
        self._server = started.result(timeout=30)
        self.url = f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}/"
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(timeout=30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=30)
        self._loop.close()

    async def _stop(self) -> None:
        assert self._server is not None
        self._server.close()
        others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in others:
            task.cancel()
        await asyncio.gather(*others, return_exceptions=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            for served in range(2):
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
                length = next(
                    int(line.split(b":", 1)[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
                await reader.readexactly(length)
                self.requests += 1
                if served == 1 or (self.serve_only_first and self.requests > 1):
                    self._drop(writer)
                    return
                body = json.dumps({"prompt": "ok", "finish_reason": "stop"}).encode()
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    + f"Content-Length: {len(body)}\r\n\r\n".encode()
                    + body
                )
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, TimeoutError, asyncio.CancelledError):
            pass
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    def _drop(self, writer: asyncio.StreamWriter) -> None:
        if self.how == "reset":
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()
        else:
            writer.close()


@contextlib.contextmanager
def dropping(how: str, **options: Any) -> Iterator[DroppingServer]:
    with DroppingServer(how, **options) as server:
        yield server


def call_twice(llm: PromptwireLLM, mode: str) -> list[str]:
    if mode == "invoke":
        return [llm.invoke("hi") for _ in range(2)]
    if mode == "stream":
        return ["".join(llm.stream("hi")) for _ in range(2)]

    async def run() -> list[str]:
        if mode == "ainvoke":
            return [await llm.ainvoke("hi") for _ in range(2)]
        return ["".join([p async for p in llm.astream("hi")]) for _ in range(2)]

    return asyncio.run(run())


@pytest.mark.parametrize("how", ["close", "reset"])
@pytest.mark.parametrize("mode", MODES)
def test_a_dropped_kept_alive_connection_is_not_a_failure(how: str, mode: str) -> None:
    with dropping(how) as server:
        llm = PromptwireLLM(endpoint_url=server.url, timeout=10)
        assert call_twice(llm, mode) == ["ok", "ok"]
        # The second request went out on the kept-alive connection, was dropped, and was sent
        # once more on a new one.
        assert (server.requests, server.connections) == (3, 2)


@pytest.mark.parametrize("how", ["close", "reset"])
def test_even_with_retries_off(how: str) -> None:
    with dropping(how) as server:
        llm = PromptwireLLM(endpoint_url=server.url, timeout=10, max_retries=0)
        assert call_twice(llm, "invoke") == ["ok", "ok"]
        assert server.requests == 3


def test_the_new_connection_is_tried_once_and_its_failure_is_shown() -> None:
    """A server that serves only its very first request: the reused connection's drop is
    retried once, on a new connection; that one's drop may be a crash mid-run, so it is shown
    (with retries off) instead of being repeated."""
    with dropping("close", serve_only_first=True) as server:
        llm = PromptwireLLM(endpoint_url=server.url, timeout=10, max_retries=0)
        assert llm.invoke("first") == "ok"
        with pytest.raises(EndpointConnectError):
            llm.invoke("second")
        assert (server.requests, server.connections) == (3, 2)


class UntracedTransport(httpx.HTTPTransport):
    """A real transport that reports no trace events, as aiohttp's or an in-process app's."""

    sent = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.sent += 1
        request.extensions = {k: v for k, v in request.extensions.items() if k != "trace"}
        return super().handle_request(request)


def test_without_trace_events_a_drop_is_never_taken_for_a_stale_connection() -> None:
    """Whether a connection was reused is known only from the transport's trace events; a
    transport that sends none gets the safe reading: the request may have run, so it is shown
    (with retries off), not sent again."""
    with dropping("close") as server, httpx.Client(transport=UntracedTransport()) as users:
        llm = PromptwireLLM(endpoint_url=server.url, timeout=10, max_retries=0, http_client=users)
        assert llm.invoke("first") == "ok"
        with pytest.raises(EndpointConnectError, match=r"broke mid-reply|without sending"):
            llm.invoke("second")
        assert (server.requests, server.connections) == (2, 1)


def test_without_trace_events_a_connection_error_is_not_taken_for_one_before_sending() -> None:
    """httpx-aiohttp reports a server hanging up on a sent request as ``ConnectTimeout``: with
    a transport that does not trace its connections, connection errors are not retried as if
    nothing had been sent, unless ``retry_unsafe`` allows it."""
    transport = UntracedTransport()
    with httpx.Client(transport=transport) as users:
        llm = PromptwireLLM(endpoint_url=refused_url(), max_retries=2, http_client=users)
        with pytest.raises(EndpointConnectError, match="cannot connect") as caught:
            llm.invoke("x")
        assert caught.value.may_have_run and transport.sent == 1
        llm = PromptwireLLM(
            endpoint_url=refused_url(), max_retries=1, retry_unsafe=True, http_client=users
        )
        with pytest.raises(EndpointConnectError):
            llm.invoke("x")
        assert transport.sent == 3
