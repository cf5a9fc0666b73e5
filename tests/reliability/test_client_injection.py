"""A client the user passes in keeps its transport; promptwire's guards still hold over it.

Against the misbehaving server on loopback, through the user's ``httpx.Client`` and
``httpx.AsyncClient`` configured as badly as a user might (following redirects itself, no
timeout, a cookie jar with a session in it, a proxy): credentials still never leave the
endpoint's origin, no cookie is sent, promptwire's deadline and retries apply, and requests go
through the user's proxy.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from promptwire import PromptwireLLM
from promptwire.errors import EndpointTimeoutError, ProtocolError

from tests.reliability.faults import FaultServer, fault_server
from tests.support.network import LOOPBACK_ONLY

pytestmark = LOOPBACK_ONLY

MODES = ("invoke", "ainvoke", "stream", "astream")
SECRET = "tok-injected-7a6b5c"
TIMEOUT = 1.0
MARGIN = 10.0


def call(url: str, mode: str, client_options: dict[str, Any], **options: Any) -> str:
    """One prompt through a ``PromptwireLLM`` given user clients made with ``client_options``."""
    sync_client = httpx.Client(**client_options)
    async_client = httpx.AsyncClient(**client_options)
    llm = PromptwireLLM(
        endpoint_url=url,
        api_key=SECRET,
        modal_key="wk-injected-key",
        modal_secret="ws-injected-secret",
        timeout=TIMEOUT,
        http_client=sync_client,
        http_async_client=async_client,
        **options,
    )
    try:
        if mode == "invoke":
            return llm.invoke("hi")
        if mode == "stream":
            return "".join(llm.stream("hi"))

        async def run() -> str:
            if mode == "ainvoke":
                return await llm.ainvoke("hi")
            return "".join([piece async for piece in llm.astream("hi")])

        return asyncio.run(run())
    finally:
        sync_client.close()
        asyncio.run(async_client.aclose())


@pytest.fixture(scope="module")
def other_origin() -> Iterator[FaultServer]:
    with fault_server() as server:
        yield server


@pytest.mark.parametrize("mode", MODES)
def test_a_redirect_off_origin_carries_no_credentials_whatever_the_client_says(
    faults: FaultServer, other_origin: FaultServer, mode: str
) -> None:
    target = other_origin.url("ok")
    url = faults.url("redirect-to", code=303, to=target)
    users = {"follow_redirects": True, "headers": {"X-Team": "research"}}
    assert call(url, mode, users, max_retries=0) == "ok"
    [received] = other_origin.headers_of(target)
    assert not {"authorization", "modal-key", "modal-secret"} & set(received)
    assert received["x-team"] == "research"
    assert faults.headers_of(url)[0]["authorization"] == f"Bearer {SECRET}"


@pytest.mark.parametrize("mode", MODES)
def test_a_307_off_origin_is_refused_through_the_users_client(
    faults: FaultServer, other_origin: FaultServer, mode: str
) -> None:
    target = other_origin.url("ok")
    with pytest.raises(ProtocolError, match="another origin"):
        call(faults.url("redirect-to", code=307, to=target), mode, {"follow_redirects": True})
    assert other_origin.count(target) == 0


@pytest.mark.parametrize("mode", MODES)
def test_the_users_cookies_are_never_sent(faults: FaultServer, mode: str) -> None:
    url = faults.url("cookie")
    assert call(url, mode, {"cookies": {"session": "users-own"}}) == "no cookie"
    assert call(url, mode, {"cookies": {"session": "users-own"}}) == "no cookie"
    assert all("cookie" not in headers for headers in faults.headers_of(url))


@pytest.mark.parametrize("mode", MODES)
def test_promptwires_deadline_holds_over_a_client_without_timeouts(
    faults: FaultServer, mode: str
) -> None:
    started = time.monotonic()
    with pytest.raises(EndpointTimeoutError):
        call(faults.url("drip"), mode, {"timeout": None}, max_retries=0)
    assert time.monotonic() - started < 2 * TIMEOUT + MARGIN


@pytest.mark.parametrize("mode", MODES)
def test_promptwires_retries_apply(faults: FaultServer, mode: str) -> None:
    url = faults.url("fail-then-ok", n=1, code=503, retry_after=0)
    assert call(url, mode, {}, max_retries=1) == "ok after 1 failures"
    assert faults.count(url) == 2


# -- a forward proxy ----------------------------------------------------------------------------


class ForwardProxy:
    """A plain HTTP forward proxy on loopback: it records each request's target and headers
    and relays it to the server, one request per connection."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, dict[str, str]]] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self.url = ""

    def __enter__(self) -> ForwardProxy:
        self._thread.start()
        started = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._relay, "127.0.0.1", 0), self._loop
        )
        self._server = started.result(timeout=30)
        self.url = f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(timeout=30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=30)
        self._loop.close()

    async def _stop(self) -> None:
        self._server.close()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            head = await reader.readuntil(b"\r\n\r\n")
            request_line, *lines = head.decode("latin-1").split("\r\n")
            method, target, version = request_line.split(" ")
            headers = dict(
                (k.strip().lower(), v.strip())
                for k, _, v in (line.partition(":") for line in lines if line)
            )
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            self.seen.append((target, headers))
            url = httpx.URL(target)  # absolute-form: the proxy's part of the protocol
            upstream_reader, upstream = await asyncio.open_connection(url.host, url.port)
            kept = [line for line in lines if line and not line.lower().startswith("connection:")]
            path = url.raw_path.decode()
            upstream.write(
                f"{method} {path} {version}\r\n".encode()
                + "\r\n".join([*kept, "Connection: close", "", ""]).encode("latin-1")
                + body
            )
            while piece := await upstream_reader.read(65536):
                writer.write(piece)
                await writer.drain()
            upstream.close()
        writer.close()


@pytest.mark.parametrize("mode", MODES)
def test_requests_go_through_the_users_proxy(faults: FaultServer, mode: str) -> None:
    url = faults.url("ok")
    with ForwardProxy() as proxy:
        assert call(url, mode, {"proxy": proxy.url}) == "ok"
    [(target, headers)] = proxy.seen
    assert target == url
    assert headers["authorization"] == f"Bearer {SECRET}"
    assert faults.count(url) == 1
