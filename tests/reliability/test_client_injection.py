"""A client the user passes in keeps its transport; promptwire's guards still hold over it.

Against the misbehaving server on loopback, through the user's ``httpx.Client`` and
``httpx.AsyncClient`` configured as badly as a user might (following redirects itself, no
timeout, a cookie jar with a session in it): credentials still never leave the endpoint's
origin, no cookie is sent, promptwire's deadline and retries apply. And what the user's client
is for: requests go through its forward proxy, and its client certificate opens an endpoint
that demands one (mutual TLS).
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from promptwire import PromptwireLLM
from promptwire.errors import EndpointError, EndpointTimeoutError, ProtocolError
from promptwire.server import create_app
from promptwire_modal_dummy.engine import DummyEngine
from promptwire_modal_dummy.settings import DummySettings

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

    async def run() -> str:
        try:
            if mode == "ainvoke":
                return await llm.ainvoke("hi")
            return "".join([piece async for piece in llm.astream("hi")])
        finally:
            await async_client.aclose()  # in the loop that used it

    if mode in ("invoke", "stream"):
        try:
            return llm.invoke("hi") if mode == "invoke" else "".join(llm.stream("hi"))
        finally:
            sync_client.close()
            asyncio.run(async_client.aclose())  # never used, so no loop owns it
    sync_client.close()
    return asyncio.run(run())


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


# -- mutual TLS -----------------------------------------------------------------------------


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, made by openssl."""
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command")
    here = tmp_path_factory.mktemp("pki")
    _openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=test CA",
        "-keyout", "ca.key", "-out", "ca.pem", cwd=here,
    )  # fmt: skip
    (here / "server.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    for name in ("server", "client"):
        _openssl(
            "req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}",
            "-keyout", f"{name}.key", "-out", f"{name}.csr", cwd=here,
        )  # fmt: skip
        extra = ["-extfile", "server.ext"] if name == "server" else []
        _openssl(
            "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-days", "2", "-out", f"{name}.pem", *extra, cwd=here,
        )  # fmt: skip
    return here


@pytest.fixture(scope="module")
def mtls_url(certificates: Path) -> Iterator[str]:
    """The promptwire app under uvicorn, over TLS, refusing clients without a certificate
    from the test CA."""
    app = create_app(DummyEngine(DummySettings(echo=True)), api_key=SECRET)
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=0,
        log_level="warning",
        ssl_certfile=str(certificates / "server.pem"),
        ssl_keyfile=str(certificates / "server.key"),
        ssl_ca_certs=str(certificates / "ca.pem"),
        ssl_cert_reqs=ssl.CERT_REQUIRED,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the TLS server did not start"
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    yield f"https://127.0.0.1:{port}/"
    server.should_exit = True
    thread.join(timeout=30)


@pytest.mark.parametrize("mode", MODES)
def test_mutual_tls_through_the_users_client(mtls_url: str, certificates: Path, mode: str) -> None:
    def trusting_the_ca() -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(certificates / "ca.pem"))

    with_certificate = trusting_the_ca()
    with_certificate.load_cert_chain(certificates / "client.pem", certificates / "client.key")
    assert call(mtls_url, mode, {"verify": with_certificate}) == "hi"
    with pytest.raises(EndpointError):  # the server refuses a client without a certificate
        call(mtls_url, mode, {"verify": trusting_the_ca()}, max_retries=0)
