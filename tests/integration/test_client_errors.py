"""Bad replies and dead endpoints become clear, typed errors within the timeout."""

from __future__ import annotations

import asyncio
import pickle
import time
from collections.abc import Iterator

import pytest
from promptwire import (
    AllEndpointsFailedError,
    EndpointConnectError,
    EndpointTimeoutError,
    InvalidRequestError,
    PromptwireLLM,
    ProtocolError,
    RateLimitError,
    ServerError,
)
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import (
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
)
from starlette.routing import Route

from tests.support.servers import refused_url, serve_asgi

TIMEOUT = 1.5
calls: dict[str, int] = {}


async def html_500(request: Request) -> Response:
    return HTMLResponse("<html><body><h1>Internal Server Error</h1></body></html>", 500)


async def no_prompt(request: Request) -> Response:
    return JSONResponse({"text": "hello world"})


async def not_json(request: Request) -> Response:
    return PlainTextResponse("hello world")


async def hang(request: Request) -> Response:
    await asyncio.sleep(30)
    return JSONResponse({"prompt": "too late"})


async def modal_303(request: Request) -> Response:
    # Modal answers a request that runs past 150 s with a 303 to a result URL to GET.
    return RedirectResponse("/result", status_code=303)


async def result(request: Request) -> Response:
    calls["result_method"] = calls.get("result_method", 0) + (request.method == "GET")
    return JSONResponse({"prompt": "the long answer"})


async def rate_limited(request: Request) -> Response:
    calls["rate_limited"] = calls.get("rate_limited", 0) + 1
    wait = request.query_params["wait"]
    return JSONResponse({"error": {"message": "slow down"}}, 429, {"Retry-After": wait})


async def validation(request: Request) -> Response:
    return JSONResponse({"error": {"type": "invalid_request", "message": "max_tokens: bad"}}, 422)


@pytest.fixture(scope="module")
def misbehaving() -> Iterator[str]:
    app = Starlette(
        routes=[
            Route("/html500", html_500, methods=["POST"]),
            Route("/no-prompt", no_prompt, methods=["POST"]),
            Route("/not-json", not_json, methods=["POST"]),
            Route("/hang", hang, methods=["POST"]),
            Route("/modal-303", modal_303, methods=["POST"]),
            Route("/result", result, methods=["GET"]),
            Route("/422", validation, methods=["POST"]),
            Route("/429", rate_limited, methods=["POST"]),
        ]
    )
    with serve_asgi(app) as server:
        yield server.url


def _llm(url: str) -> PromptwireLLM:
    return PromptwireLLM(endpoint_url=url, timeout=TIMEOUT, max_retries=0)


@pytest.mark.parametrize(
    ("path", "error", "fragment"),
    [
        ("html500", ServerError, "HTTP 500"),
        ("no-prompt", ProtocolError, "no 'prompt' string"),
        ("not-json", ProtocolError, "not JSON"),
        ("422", InvalidRequestError, "max_tokens: bad"),
    ],
)
@pytest.mark.parametrize("mode", ["sync", "async"])
def test_bad_replies_raise_typed_errors(
    misbehaving: str, path: str, error: type[Exception], fragment: str, mode: str
) -> None:
    llm = _llm(misbehaving + path)
    with pytest.raises(error, match=fragment) as caught:
        if mode == "sync":
            llm.invoke("hi")
        else:
            asyncio.run(llm.ainvoke("hi"))
    assert misbehaving + path in str(caught.value)  # the error names the endpoint


def test_html_500_names_status_and_shows_a_short_snippet(misbehaving: str) -> None:
    with pytest.raises(ServerError) as caught:
        _llm(misbehaving + "html500").invoke("hi")
    assert caught.value.status_code == 500
    assert "Internal Server Error" in str(caught.value)


@pytest.mark.parametrize("mode", ["sync", "async", "stream"])
def test_a_hang_times_out_within_the_timeout(misbehaving: str, mode: str) -> None:
    llm = _llm(misbehaving + "hang")
    started = time.monotonic()
    with pytest.raises(EndpointTimeoutError):
        if mode == "sync":
            llm.invoke("hi")
        elif mode == "async":
            asyncio.run(llm.ainvoke("hi"))
        else:
            list(llm.stream("hi"))
    assert time.monotonic() - started < TIMEOUT + 10  # generous: the machine may be loaded


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_refused_connection(mode: str) -> None:
    llm = _llm(refused_url())
    with pytest.raises(EndpointConnectError, match="cannot connect"):
        if mode == "sync":
            llm.invoke("hi")
        else:
            asyncio.run(llm.ainvoke("hi"))


def test_an_error_shows_the_url_without_its_query_and_pickles_whole() -> None:
    """A token may ride in the query: no message shows it. A process pool sends a worker's
    error back pickled: it arrives as the same class with the same fields."""
    llm = _llm(refused_url() + "?token=query-secret-9d2")
    with pytest.raises(EndpointConnectError) as caught:
        llm.invoke("hi")
    error = caught.value
    assert "query-secret-9d2" not in str(error) and "query-secret-9d2" not in error.url
    again = pickle.loads(pickle.dumps(error))
    assert type(again) is EndpointConnectError and str(again) == str(error)
    assert (again.url, again.transient, again.request_id) == (
        error.url,
        error.transient,
        error.request_id,
    )


def test_errors_with_fields_of_their_own_pickle_whole() -> None:
    limited = RateLimitError("slow down", url="http://x/", status_code=429, retry_after=3.0)
    limited.request_id, limited.body = "req-1", '{"error": "slow down"}'
    again = pickle.loads(pickle.dumps(limited))
    assert type(again) is RateLimitError and str(again) == str(limited)
    assert (again.status_code, again.retry_after, again.body) == (429, 3.0, limited.body)
    failed = AllEndpointsFailedError({"http://a/": "down"}, may_have_run=False)
    assert pickle.loads(pickle.dumps(failed)).failures == {"http://a/": "down"}


@pytest.mark.parametrize(("wait", "tries"), [("0", 2), ("30", 1)])
def test_a_retry_waits_for_retry_after_only_within_the_timeout(
    misbehaving: str, wait: str, tries: int
) -> None:
    """Retry-After: 30 with a timeout of 1.5 s raises at once (it held the call for 30 s)."""
    calls["rate_limited"] = 0
    url = f"{misbehaving}429?wait={wait}"
    llm = PromptwireLLM(endpoint_url=url, timeout=TIMEOUT, max_retries=1)
    started = time.monotonic()
    with pytest.raises(RateLimitError) as caught:
        llm.invoke("hi")
    assert caught.value.retry_after == float(wait) and calls["rate_limited"] == tries
    assert time.monotonic() - started < TIMEOUT + 10  # generous: the machine may be loaded


def test_modal_303_is_followed_with_get(misbehaving: str) -> None:
    assert _llm(misbehaving + "modal-303").invoke("hi") == "the long answer"
    assert asyncio.run(_llm(misbehaving + "modal-303").ainvoke("hi")) == "the long answer"
    assert calls["result_method"] == 2


@pytest.mark.parametrize(
    ("error_type", "transient"),
    [("shutting_down", True), ("overloaded", True), ("not_ready", True), ("server_error", False)],
)
def test_a_stream_error_is_transient_as_its_503_would_be(error_type: str, transient: bool) -> None:
    """A stream cut by the server's shutdown said ``transient=False`` where the same shutdown
    answered to a whole request (a 503) said True: a retry keyed on it gave up."""
    from promptwire.errors import StreamError

    error = StreamError("the server is shutting down", url="http://x/", error_type=error_type)
    assert error.transient is transient and error.may_have_run
