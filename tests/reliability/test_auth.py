"""Auth and secrets: with a token set, every route but ``/health`` needs it, compared in constant
time; the token never shows in reprs, serialised objects, error messages, tracebacks, server
logs or CLI output, even when a hostile server quotes it back; serving on a non-loopback address
without a token prints a loud warning."""

from __future__ import annotations

import asyncio
import hmac
import string
import time
import traceback
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from langchain_core.load import dumpd, dumps
from promptwire import AuthenticationError, ChatPromptwire, PromptwireLLM
from promptwire.errors import EndpointError
from promptwire.server import _guard as server_guard
from promptwire.settings import PromptwireSettings
from promptwire_modal_dummy.engine import DummyEngine
from promptwire_modal_dummy.settings import DummySettings

from tests.reliability.checks import assert_protocol_answer
from tests.reliability.faults import FaultServer
from tests.reliability.served import promptwire_serve
from tests.support.installed_plugin import run_cli
from tests.support.servers import serve_engine

TOKEN = "pw-SECRET-7c1e55d0a9"
MODAL_KEY = "mk-SECRET-4b2f"
MODAL_SECRET = "ms-SECRET-9e3a"
SECRETS = (TOKEN, MODAL_KEY, MODAL_SECRET)
GOOD = {"Authorization": f"Bearer {TOKEN}"}


def assert_no_secret(text: str) -> None:
    unwrapped = "".join(text.split())  # rich wraps long lines: a token could be split in two
    for secret in SECRETS:
        for seen in (text, unwrapped):
            assert secret not in seen
            assert secret[5:] not in seen  # nor its tail, after a cut


def flat(text: str) -> str:
    return " ".join(text.split())


@pytest.fixture(scope="module")
def guarded() -> Iterator[str]:
    with serve_engine(DummyEngine(DummySettings(echo=True)), api_key=TOKEN) as server:
        yield server.url.rstrip("/")


# -- every route but /health needs the token --------------------------------------------------


@settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"]),
    path=st.sampled_from(
        ["/", "/health", "/health/", "/openapi.json", "/docs", "/redoc", "/nope", "//health"]
    )
    | st.text(string.ascii_lowercase + "/._-", max_size=20).map(lambda p: "/" + p),
)
def test_every_route_but_health_needs_the_token(guarded: str, method: str, path: str) -> None:
    response = httpx.request(method, guarded + path, json={"prompt": "p"}, timeout=30)
    if path == "/health":
        assert response.status_code != 401
        return
    assert response.status_code == 401, (method, path, response.status_code)
    assert response.headers["www-authenticate"] == "Bearer"
    assert_protocol_answer(401, response.headers["content-type"], response.json())
    assert response.json()["error"]["type"] == "unauthorized"


@pytest.mark.parametrize(
    "header",
    [
        "",
        "Bearer",
        f"Bearer  {TOKEN[1:]}",
        f"Bearer {TOKEN[:-1]}",
        f"Bearer {TOKEN}x",
        f"Bearer {TOKEN.upper()}",
        f"Basic {TOKEN}",
        TOKEN,
        f"Bearer{TOKEN}",
        f"Bearer {TOKEN} {TOKEN}",
        "Bearer \u00e9\u00e9",
    ],
)
def test_anything_but_the_token_is_refused(guarded: str, header: str) -> None:
    response = httpx.post(
        guarded + "/", json={"prompt": "p"}, headers={"Authorization": header.encode("utf-8")}
    )
    assert response.status_code == 401
    assert_no_secret(response.text)


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER"])
def test_the_token_is_accepted_with_any_case_of_scheme(guarded: str, scheme: str) -> None:
    headers = {"Authorization": f"{scheme} {TOKEN}"}
    response = httpx.post(guarded + "/", json={"prompt": "in"}, headers=headers)
    assert response.status_code == 200 and response.json()["prompt"] == "in"
    assert httpx.get(guarded + "/openapi.json", headers=headers).status_code == 200


def test_the_token_is_compared_in_constant_time(
    guarded: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    compared: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: Any, b: Any) -> bool:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(server_guard.hmac, "compare_digest", spy)
    for token in (TOKEN, "x" * len(TOKEN), TOKEN[:3]):
        httpx.post(
            guarded + "/", json={"prompt": "p"}, headers={"Authorization": f"Bearer {token}"}
        )
    assert [given for given, _ in compared] == [
        TOKEN.encode(),
        b"x" * len(TOKEN),
        TOKEN[:3].encode(),
    ]


# -- the token never shows --------------------------------------------------------------------


def _llms() -> list[Any]:
    options = {
        "endpoint_url": "http://127.0.0.1:9/",
        "api_key": TOKEN,
        "modal_key": MODAL_KEY,
        "modal_secret": MODAL_SECRET,
    }
    return [PromptwireLLM(**options), ChatPromptwire(**options)]


@pytest.mark.parametrize("index", [0, 1], ids=["PromptwireLLM", "ChatPromptwire"])
def test_the_token_is_absent_from_reprs_and_serialised_forms(index: int) -> None:
    llm = _llms()[index]
    forms = [
        repr(llm),
        str(llm),
        repr(llm.client),
        repr(llm.client.config),
        llm.model_dump_json(),
        str(llm.model_dump()),
        str(llm._identifying_params),
        dumps(llm),
        str(dumpd(llm)),
    ]
    for form in forms:
        assert_no_secret(form)


def test_the_token_is_absent_from_settings_reprs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROMPTWIRE_API_KEY", TOKEN)
    monkeypatch.setenv("PROMPTWIRE_MODAL_SECRET", MODAL_SECRET)
    settings_ = PromptwireSettings()
    assert settings_.api_key is not None and settings_.api_key.get_secret_value() == TOKEN
    assert_no_secret(repr(settings_) + str(settings_.model_dump()) + settings_.model_dump_json())


def _every_text_of(exc: BaseException) -> str:
    """What a user could ever see of an error: str, repr, and the whole chained traceback."""
    return "\n".join(
        [str(exc), repr(exc), "".join(traceback.format_exception(type(exc), exc, None))]
    )


@pytest.mark.parametrize("mode", ["invoke", "ainvoke", "stream", "astream"])
@pytest.mark.parametrize("kind", ["error", "html", "key", "notjson", "event"])
def test_a_server_quoting_the_credentials_back_never_shows_them(
    faults: FaultServer, mode: str, kind: str
) -> None:
    llm = PromptwireLLM(
        endpoint_url=faults.url("echo-auth", **{"as": kind}),
        api_key=TOKEN,
        modal_key=MODAL_KEY,
        modal_secret=MODAL_SECRET,
        timeout=5,
        max_retries=0,
    )
    with pytest.raises(EndpointError) as caught:
        if mode == "invoke":
            llm.invoke("hi")
        elif mode == "stream":
            list(llm.stream("hi"))
        elif mode == "ainvoke":
            asyncio.run(llm.ainvoke("hi"))
        else:

            async def collect() -> None:
                async for _ in llm.astream("hi"):
                    pass

            asyncio.run(collect())
    text = _every_text_of(caught.value)
    assert "**********" in text  # it was there, and was masked
    assert_no_secret(text)


@pytest.mark.parametrize("token", [TOKEN, "wrong-" + TOKEN])
def test_authentication_errors_name_the_problem_not_the_token(guarded: str, token: str) -> None:
    llm = PromptwireLLM(endpoint_url=guarded + "/", api_key=token, max_retries=3)
    if token == TOKEN:
        assert llm.invoke("fine") == "fine"
        return
    with pytest.raises(AuthenticationError) as caught:
        llm.invoke("hi")
    assert caught.value.status_code == 401 and "invalid bearer token" in str(caught.value)
    assert_no_secret(_every_text_of(caught.value))


# -- the server's own output, and the CLI's ----------------------------------------------------


@pytest.mark.parametrize("how", ["env", "option"])
@pytest.mark.parametrize("level", ["info", "debug", "trace"])
def test_the_server_never_prints_its_token(how: str, level: str) -> None:
    env = {"PROMPTWIRE_API_KEY": TOKEN} if how == "env" else {}
    args = ["--api-key", TOKEN] if how == "option" else []
    with promptwire_serve("--log-level", level, *args, env=env) as served:
        url = served.url
        assert httpx.post(url, json={"prompt": "p"}, headers=GOOD).status_code == 200
        stream = httpx.post(url, json={"prompt": "p", "stream": True}, headers=GOOD)
        assert stream.status_code == 200
        for header in (f"Bearer wrong-{TOKEN}", f"Basic {TOKEN}", TOKEN):
            assert httpx.post(url, json={}, headers={"Authorization": header}).status_code == 401
        bad = {**GOOD, "Content-Type": "application/json"}
        assert httpx.post(url, content=b"{bad", headers=bad).status_code == 422
        # A request's log line is written once its answer is out: wait for the last one.
        deadline = time.monotonic() + 30
        while (output := served.output()).count("request request_id=") < 6:
            if time.monotonic() > deadline:
                break
            time.sleep(0.05)
    assert "bearer token required" in flat(output)
    # The request log was on, for every request: there was something to leak.
    assert output.count("request request_id=") >= 6 and "route=/ status=401" in output
    assert_no_secret(output)


def test_the_cli_never_prints_the_token(guarded: str, faults: FaultServer) -> None:
    runs = [
        run_cli("invoke", "hello there", "--url", guarded + "/", "--api-key", TOKEN),
        run_cli(
            "invoke",
            "streamed",
            "--stream",
            env={"PROMPTWIRE_ENDPOINT_URL": guarded + "/", "PROMPTWIRE_API_KEY": TOKEN},
        ),
        run_cli("invoke", "hi", "--url", guarded + "/", "--api-key", "wrong-" + TOKEN),
        run_cli("invoke", "hi", "--url", faults.url("echo-auth", **{"as": "html"})),
        run_cli("invoke", "hi", env={"PROMPTWIRE_API_KEY": TOKEN, "PROMPTWIRE_ENDPOINT_URL": ""}),
        run_cli("backends", env={"PROMPTWIRE_API_KEY": TOKEN}),
        run_cli("serve", "--help", env={"PROMPTWIRE_API_KEY": TOKEN}),
    ]
    assert runs[0].returncode == 0 and runs[0].stdout.strip() == "hello there"
    assert runs[1].returncode == 0 and runs[1].stdout.strip() == "streamed"
    assert runs[2].returncode == 1 and "invalid bearer token" in runs[2].stderr
    assert "Traceback" not in runs[2].stderr
    for run in runs:
        assert_no_secret(run.stdout + run.stderr)


def test_the_cli_masks_a_token_quoted_back_by_a_hostile_server(faults: FaultServer) -> None:
    result = run_cli(
        "invoke", "hi", "--url", faults.url("echo-auth", **{"as": "html"}), "--api-key", TOKEN
    )
    assert result.returncode == 1 and "**********" in result.stderr
    assert_no_secret(result.stdout + result.stderr)


# -- a public address without a token: a loud warning ----------------------------------------


@pytest.mark.parametrize(
    ("host", "token", "warned"),
    [
        ("0.0.0.0", None, True),
        ("0.0.0.0", "", True),
        ("0.0.0.0", TOKEN, False),
        ("127.0.0.1", None, False),
        ("localhost", None, False),
    ],
)
def test_serving_beyond_loopback_without_a_token_warns(
    host: str, token: str | None, warned: bool
) -> None:
    env = {} if token is None else {"PROMPTWIRE_API_KEY": token}
    with promptwire_serve("--log-level", "warning", host=host, env=env) as served:
        assert httpx.get(served.url + "health").status_code == 200
        output = served.output()
    assert ("WARNING: serving on" in flat(output)) is warned, output
    if warned:
        assert "no API key" in flat(output) and "PROMPTWIRE_API_KEY" in output
    assert_no_secret(output)
