"""The client against real misbehaving servers on loopback, in all four ways of calling it.

Each fault must give its documented typed error, or a correct retry, within the timeout (plus a
generous margin for a loaded machine). The fault server counts requests per URL, which proves
what was retried and, above all, that a request the server may have run was never repeated
unless the caller set ``retry_unsafe``.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from promptwire import PromptwireLLM
from promptwire.client import StaleConnectionError
from promptwire.client._transport.retry import MAX_RETRY_AFTER, RetryPolicy, parse_retry_after
from promptwire.errors import (
    EndpointConnectError,
    EndpointError,
    EndpointTimeoutError,
    HTTPStatusError,
    OverloadedError,
    ProtocolError,
    RateLimitError,
    ServerError,
    StreamError,
)

from tests.reliability.faults import FaultServer
from tests.support.servers import refused_url

TIMEOUT = 1.0
MARGIN = 10.0  # generous: a loaded 2-core CI machine must not fail these
RETRIES = 2
MODES = ("invoke", "ainvoke", "stream", "astream")
STREAMING = ("stream", "astream")


def call(url: str, mode: str, **options: Any) -> str:
    """One prompt through ``PromptwireLLM`` the way ``mode`` says; a fresh LLM every time."""
    settings: dict[str, Any] = {
        "endpoint_url": url,
        "timeout": TIMEOUT,
        "connect_timeout": TIMEOUT,
        "max_retries": RETRIES,
        **options,
    }
    llm = PromptwireLLM(**settings)
    if mode == "invoke":
        try:
            return llm.invoke("hi")
        finally:
            llm.close()
    if mode == "stream":
        try:
            return "".join(llm.stream("hi"))
        finally:
            llm.close()

    async def run() -> str:
        try:
            if mode == "ainvoke":
                return await llm.ainvoke("hi")
            return "".join([piece async for piece in llm.astream("hi")])
        finally:
            await llm.aclose()

    return asyncio.run(run())


def failing(url: str, mode: str, error: type[Exception], **options: Any) -> tuple[Any, float]:
    """Call, expect ``error``; return it and the seconds it took."""
    started = time.monotonic()
    with pytest.raises(error) as caught:
        call(url, mode, **options)
    return caught.value, time.monotonic() - started


# -- faults after which the server may have run the request: never repeated by default --------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    ("name", "query", "error", "fragment"),
    [
        ("reset-mid-body", {}, EndpointConnectError, "broke mid-reply"),
        ("close-mid-body", {}, EndpointConnectError, "broke mid-reply"),
        ("reset-before-reply", {}, EndpointConnectError, "broke mid-reply"),
        ("close-before-reply", {}, EndpointConnectError, "without sending a response"),
        ("status", {"code": 500, "body": "html"}, ServerError, "HTTP 500"),
        ("status", {"code": 502, "body": "html"}, ServerError, "HTTP 502"),
        ("status", {"code": 504, "body": "text"}, ServerError, "HTTP 504"),
        ("not-json", {}, ProtocolError, "not JSON"),
        ("no-prompt", {}, ProtocolError, "no 'prompt' string"),
    ],
)
def test_faults_give_typed_errors_and_are_not_repeated(
    faults: FaultServer,
    mode: str,
    name: str,
    query: dict[str, Any],
    error: type[EndpointError],
    fragment: str,
) -> None:
    url = faults.url(name, **query)
    exc, elapsed = failing(url, mode, error)
    # Says what happened, and where: the URL without its query (a token may ride there).
    assert fragment in str(exc) and url.partition("?")[0] + ")" in str(exc)
    assert faults.count(url) == 1, "a request the server may have run was repeated"
    assert exc.may_have_run
    assert elapsed < TIMEOUT + MARGIN


@pytest.mark.parametrize("mode", MODES)
def test_html_error_pages_show_status_and_a_short_snippet(faults: FaultServer, mode: str) -> None:
    url = faults.url("status", code=502, body="html")
    exc, _ = failing(url, mode, ServerError)
    assert exc.status_code == 502 and exc.error_type is None
    assert "502 Bad Gateway" in str(exc) and len(str(exc)) < 400


@pytest.mark.parametrize("mode", ["invoke", "astream"])
@pytest.mark.parametrize(
    ("name", "query"),
    [
        ("reset-before-reply", {}),
        ("close-mid-body", {}),
        ("status", {"code": 502, "body": "html"}),
        ("status", {"code": 504, "body": "text"}),
        ("hang", {}),
    ],
)
def test_retry_unsafe_repeats_what_may_have_run(
    faults: FaultServer, mode: str, name: str, query: dict[str, Any]
) -> None:
    if mode == "astream" and name == "close-mid-body":
        pytest.skip("a stream whose reply has begun is never repeated (next test)")
    url = faults.url(name, **query)
    _, elapsed = failing(url, mode, EndpointError, retry_unsafe=True)
    assert faults.count(url) == RETRIES + 1
    assert elapsed < (RETRIES + 1) * TIMEOUT + 2 * 8 + MARGIN  # attempts plus capped backoff


@pytest.mark.parametrize("mode", STREAMING)
@pytest.mark.parametrize("name", ["stream-cut", "stream-reset", "close-mid-body"])
def test_a_stream_that_has_begun_is_never_repeated_even_when_unsafe_is_allowed(
    faults: FaultServer, mode: str, name: str
) -> None:
    # Its first pieces may already be in the caller's hands: a repeat would duplicate them.
    url = faults.url(name)
    failing(url, mode, EndpointConnectError, retry_unsafe=True)
    assert faults.count(url) == 1


@pytest.mark.parametrize("mode", ["invoke", "ainvoke"])
@pytest.mark.parametrize(("code", "body"), [(500, "html"), (401, "json"), (422, "json")])
def test_non_transient_errors_are_never_retried_even_when_unsafe_is_allowed(
    faults: FaultServer, mode: str, code: int, body: str
) -> None:
    url = faults.url("status", code=code, body=body)
    exc, _ = failing(url, mode, HTTPStatusError, retry_unsafe=True)
    assert exc.status_code == code
    assert faults.count(url) == 1


# -- faults the server cannot have run: retried, Retry-After honoured ---------------------------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(("code", "error"), [(429, RateLimitError), (503, OverloadedError)])
def test_rate_limited_and_overloaded_are_retried_then_reported(
    faults: FaultServer, mode: str, code: int, error: type[HTTPStatusError]
) -> None:
    url = faults.url("status", code=code, retry_after=0)
    exc, _ = failing(url, mode, error)
    assert faults.count(url) == RETRIES + 1
    assert exc.status_code == code and exc.retry_after == 0.0 and not exc.may_have_run


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("code", [429, 503])
def test_retry_after_is_honoured_then_the_retry_succeeds(
    faults: FaultServer, mode: str, code: int
) -> None:
    url = faults.url("fail-then-ok", n=2, code=code, retry_after=1)
    started = time.monotonic()
    assert call(url, mode) == "ok after 2 failures"
    elapsed = time.monotonic() - started
    assert faults.count(url) == 3
    assert 1.8 <= elapsed < 2 + MARGIN  # two waits of the server's one second


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("retries", [0, 1, 3])
def test_max_retries_bounds_the_attempts(faults: FaultServer, mode: str, retries: int) -> None:
    url = faults.url("status", code=503, retry_after=0)
    failing(url, mode, OverloadedError, max_retries=retries)
    assert faults.count(url) == retries + 1


@pytest.mark.parametrize("mode", MODES)
def test_a_retry_that_succeeds_returns_the_reply(faults: FaultServer, mode: str) -> None:
    url = faults.url("fail-then-ok", n=1, code=503, retry_after=0)
    assert call(url, mode, max_retries=1) == "ok after 1 failures"
    assert faults.count(url) == 2


def test_retry_after_is_capped_and_parsed_in_both_forms() -> None:
    def wait_for(retry_after: float | None, retry: int = 1) -> float:
        exc = OverloadedError("busy", url="u", status_code=503, retry_after=retry_after)
        return RetryPolicy(max_retries=5).wait(retry, exc)

    assert wait_for(3600) == MAX_RETRY_AFTER == 60.0
    assert wait_for(2.5) == 2.5
    # No Retry-After: jittered exponential backoff, 0.5 s doubling per retry, at most 8 s.
    assert 0.5 <= wait_for(None) <= 1.5
    assert 2.0 <= wait_for(None, retry=3) <= 3.0
    assert wait_for(None, retry=30) == 8.0
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after("-3") == 0.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # a date in the past
    assert parse_retry_after("soon") is None


def test_the_retry_budget_counts_failures_not_closed_kept_alive_connections() -> None:
    """Stale connections are retried at once, apart from the budget, up to the pool's size."""
    policy = RetryPolicy(max_retries=1, max_stale=2)
    retries = policy.start()
    stale = StaleConnectionError("u")
    busy = OverloadedError("busy", url="u", status_code=503, retry_after=0)
    assert [retries.wait_after(stale), retries.wait_after(stale)] == [0.0, 0.0]
    assert retries.wait_after(stale) is not None  # the third: a retry from the budget
    assert retries.wait_after(busy) is None  # the budget is spent
    unsafe = ServerError("boom", url="u", status_code=502)
    assert policy.start().wait_after(unsafe) is None  # it may have run
    assert RetryPolicy(1, retry_unsafe=True).start().wait_after(unsafe) is not None


@pytest.mark.parametrize("mode", MODES)
def test_refused_connection_is_retried_then_reported(mode: str) -> None:
    exc, elapsed = failing(refused_url(), mode, EndpointConnectError, max_retries=1)
    assert "cannot connect" in str(exc) and not exc.may_have_run
    assert elapsed < TIMEOUT + 8 + MARGIN


def _listen_later(server: socket.socket, delay: float, stop: threading.Event) -> threading.Thread:
    """Start answering ``{"prompt": "up"}`` on ``server`` (bound, not listening: connecting is
    refused until then) after ``delay`` seconds."""

    def serve() -> None:
        time.sleep(delay)
        server.listen()
        with server:
            server.settimeout(0.2)
            while not stop.is_set():
                try:
                    conn, _ = server.accept()
                except TimeoutError:
                    continue
                with conn:
                    conn.recv(65536)
                    body = b'{"prompt": "up"}'
                    conn.sendall(
                        b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Type: application/json"
                        b"\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
                    )

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return thread


@pytest.mark.parametrize("mode", ["invoke", "ainvoke"])
def test_a_server_that_comes_up_late_is_reached_by_the_retry(mode: str) -> None:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))  # the port is ours: refused now, answered once it listens
    url = f"http://127.0.0.1:{server.getsockname()[1]}/"
    stop = threading.Event()
    thread = _listen_later(server, 0.2, stop)
    try:
        assert call(url, mode, max_retries=5) == "up"
    finally:
        stop.set()
        thread.join(timeout=10)


@pytest.fixture
def full_backlog() -> Iterator[str]:
    """A port whose accept queue is full: SYNs are dropped, so connecting times out."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    port = server.getsockname()[1]
    fillers = []
    for _ in range(8):
        filler = socket.socket()
        filler.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            filler.connect(("127.0.0.1", port))
        fillers.append(filler)
    time.sleep(0.1)
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        for filler in fillers:
            filler.close()
        server.close()


@pytest.mark.parametrize("mode", ["invoke", "ainvoke"])
def test_a_connect_timeout_is_safe_to_retry(full_backlog: str, mode: str) -> None:
    exc, elapsed = failing(full_backlog, mode, EndpointTimeoutError, connect_timeout=0.3)
    assert not exc.may_have_run and exc.transient
    assert elapsed >= 3 * 0.3 * 0.9  # three attempts were made
    assert elapsed < 3 * 0.3 + 2 * 8 + MARGIN


# -- nothing hangs past the timeout ----------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", ["hang", "drip"])
def test_a_hang_or_a_slow_drip_times_out(faults: FaultServer, mode: str, name: str) -> None:
    url = faults.url(name)
    _, elapsed = failing(url, mode, EndpointTimeoutError)
    assert faults.count(url) == 1  # a read timeout is not repeated: the server may be working
    assert elapsed < 2 * TIMEOUT + MARGIN


@pytest.mark.parametrize("mode", ["ainvoke", "astream"])
def test_async_calls_bound_even_a_dripped_status_line(faults: FaultServer, mode: str) -> None:
    # The sync client cannot: httpx's read timeout restarts with each byte of the headers (see
    # RELIABILITY.md); the async one bounds the whole reply with asyncio.timeout.
    _, elapsed = failing(faults.url("drip-head"), mode, EndpointTimeoutError)
    assert elapsed < TIMEOUT + MARGIN


@pytest.mark.parametrize("mode", STREAMING)
@pytest.mark.parametrize("name", ["stream-hang", "stream-pings", "stream-drip"])
def test_a_stalled_stream_times_out_between_events(
    faults: FaultServer, mode: str, name: str
) -> None:
    # Keep-alive pings and a dripped event keep bytes flowing but bring no event: still a stall.
    _, elapsed = failing(faults.url(name), mode, EndpointTimeoutError)
    assert elapsed < 2 * TIMEOUT + MARGIN


# -- redirects, broken streams ---------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_a_chain_of_303s_is_followed_with_get(faults: FaultServer, mode: str) -> None:
    url = faults.url("redirect", left=3)
    assert call(url, mode) == "result via GET"
    assert faults.methods_of(url) == ["POST", "GET", "GET", "GET"]


@pytest.mark.parametrize("mode", MODES)
def test_endless_redirects_end_in_a_protocol_error(faults: FaultServer, mode: str) -> None:
    url = faults.url("redirect")
    exc, _ = failing(url, mode, ProtocolError)
    assert "too many redirects" in str(exc)
    assert faults.count(url) == 21  # httpx's limit of 20 redirects, and no retry on top


@pytest.mark.parametrize("mode", STREAMING)
@pytest.mark.parametrize(
    ("name", "error", "fragment"),
    [
        ("stream-cut", EndpointConnectError, "incomplete chunked read"),
        ("stream-reset", EndpointConnectError, "broke mid-reply"),
        ("stream-cut-eof", ProtocolError, "ended before its 'done' event"),
        ("stream-error", StreamError, "the GPU fell over"),
        ("stream-garbage", ProtocolError, "malformed 'delta' event"),
    ],
)
def test_a_broken_stream_raises_instead_of_returning_part_of_the_text(
    faults: FaultServer, mode: str, name: str, error: type[EndpointError], fragment: str
) -> None:
    url = faults.url(name)
    exc, _ = failing(url, mode, error)
    assert fragment in str(exc)
    assert faults.count(url) == 1


@pytest.mark.parametrize("mode", ["invoke", "ainvoke"])
def test_a_stream_answered_to_a_whole_request_is_a_protocol_error(
    faults: FaultServer, mode: str
) -> None:
    exc, _ = failing(faults.url("stream-ok"), mode, ProtocolError)
    assert "not JSON" in str(exc)


@pytest.mark.parametrize("mode", STREAMING)
def test_a_good_stream_from_the_raw_server_is_read_whole(faults: FaultServer, mode: str) -> None:
    assert call(faults.url("stream-ok"), mode) == "hello world"


# -- no state between calls ---------------------------------------------------------------------


def test_cookies_set_by_the_server_are_never_sent_back(
    faults: FaultServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nor are replies even read for cookies: httpx's own way costs a tenth of a local call."""
    read: list[httpx.Response] = []
    monkeypatch.setattr(httpx.Cookies, "extract_cookies", lambda _, reply: read.append(reply))
    url = faults.url("cookie")
    llm = PromptwireLLM(endpoint_url=url, max_retries=0)
    try:
        assert [llm.invoke("hi"), llm.invoke("hi"), "".join(llm.stream("hi"))] == ["no cookie"] * 3
    finally:
        llm.close()

    async def twice() -> list[str]:
        try:
            return [await llm.ainvoke("hi"), "".join([p async for p in llm.astream("hi")])]
        finally:
            await llm.aclose()

    assert asyncio.run(twice()) == ["no cookie"] * 2
    assert faults.count(url) == 5
    assert read == []
