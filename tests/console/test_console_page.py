"""``GET /console`` in a real browser (Playwright driving the system's chromium), against real
uvicorn servers on 127.0.0.1: the page loads with no console error and no request to another
origin, a prompt streams its reply (the dummy engine, and SmolLM2 on the llama.cpp backend),
Stop cancels the generation on the server, the charts move under load, and the API key is asked
for, sent only as a bearer header and never put in a URL. Every element is found by its
accessible name, as a screen reader finds it."""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from promptwire_modal_dummy.settings import DummySettings

from tests.support.browser import BROWSER, WAIT_MS, Tab
from tests.support.engines import ObservedEngine
from tests.support.real_model import ANSWER, QUESTION, REAL_MODEL, serve_smollm2
from tests.support.servers import serve_engine

pytestmark = BROWSER

#: The dummy's reply: 30 words at 15 a second, so a stream takes about two seconds.
WORDS = [f"word{i}" for i in range(30)]
KEY = "console-browser-key-0123456789"


@pytest.fixture(scope="module")
def dummy() -> Iterator[tuple[ObservedEngine, str]]:
    engine = ObservedEngine(DummySettings(reply=" ".join(WORDS), tokens_per_second=15))
    with serve_engine(engine) as server:
        yield engine, server.url


@pytest.fixture(scope="module")
def endless() -> Iterator[tuple[ObservedEngine, str]]:
    """A reply of 2,000 words at 5 a second: only Stop ends it."""
    reply = " ".join(f"w{i}" for i in range(2000))
    engine = ObservedEngine(DummySettings(reply=reply, tokens_per_second=5))
    with serve_engine(engine) as server:
        yield engine, server.url


@pytest.fixture(scope="module")
def keyed() -> Iterator[str]:
    with serve_engine(ObservedEngine(DummySettings(tool_mode=True)), api_key=KEY) as server:
        yield server.url


@pytest.fixture(scope="module")
def smollm2_url() -> Iterator[str]:
    with serve_smollm2() as url:
        yield url


def _origin(url: str) -> str:
    return url.rstrip("/")


def _open(tab: Tab, url: str) -> Any:
    response = tab.page.goto(url + "console")
    assert response is not None and response.status == 200
    return response


def _reply(tab: Tab) -> Any:
    return tab.page.get_by_role("region", name="Reply")


def _ask(tab: Tab, prompt: str, *, temperature: str | None = None, max_tokens: str = "") -> None:
    page = tab.page
    page.get_by_label("Prompt").fill(prompt)
    if temperature is not None:
        page.get_by_label("Temperature").fill(temperature)
    if max_tokens:
        page.get_by_label("Max tokens").fill(max_tokens)
    page.get_by_role("button", name="Send").click()


def _wait_done(tab: Tab) -> str:
    """The reply's figures line once the reply has ended."""
    stats = tab.page.locator("#reply-stats")
    tab.page.wait_for_function(
        "() => /completion tokens|Error|Stopped/.test("
        "document.getElementById('reply-stats').textContent)",
        timeout=WAIT_MS,
    )
    return str(stats.inner_text())


def test_the_page_loads_with_no_error_and_nothing_from_another_origin(
    tab: Tab, dummy: tuple[ObservedEngine, str]
) -> None:
    _, url = dummy
    response = _open(tab, url)
    policy = response.headers["content-security-policy"]
    assert "default-src 'none'" in policy and "script-src 'self'" in policy
    page = tab.page
    # The page is usable: the model list came from /v1/models, the charts are drawn.
    page.wait_for_function("() => document.getElementById('model').options.length > 0")
    assert page.get_by_label("Model").input_value() == "dummy"
    metrics = page.get_by_role("region", name="Metrics")
    metrics.locator("canvas").first.wait_for()
    assert page.get_by_role("button", name="Send").is_enabled()
    assert page.get_by_label("API key").is_hidden()  # this server has no key
    _ask(tab, "Hello there")
    _wait_done(tab)
    assert "word29" in _reply(tab).inner_text()
    page.wait_for_timeout(1500)  # a few more polls of the stats
    assert tab.console_errors() == []
    assert tab.origins() == {_origin(url)}
    paths = {re.sub(r"^https?://[^/]+", "", request) for request, _ in tab.requests}
    assert {"/console", "/console/console.js", "/console/uPlot.iife.min.js"} <= paths
    assert {"/v1/models", "/v1/chat/completions", "/console/stats", "/health"} <= paths


def test_a_prompt_streams_its_reply_with_its_figures(
    tab: Tab, dummy: tuple[ObservedEngine, str]
) -> None:
    _, url = dummy
    _open(tab, url)
    page = tab.page
    page.get_by_label("System message").fill("Be brief.")
    _ask(tab, "Tell me a story", temperature="0.5", max_tokens="100")
    # Part of the reply shows while the rest is still being generated (Stop still enabled).
    page.wait_for_function(
        "() => { const text = document.getElementById('reply-text').textContent;"
        " return text.includes('word1') && !text.includes('word29')"
        " && !document.getElementById('stop').disabled; }"
    )
    figures = _wait_done(tab)
    reply = _reply(tab).inner_text()
    assert " ".join(WORDS) in reply
    assert re.search(r"time to first token \d+(\.\d+)? s", figures), figures
    assert re.search(r"\d+(\.\d+)? tokens/s", figures), figures
    assert "30 completion tokens" in figures
    assert "finish: stop" in figures
    assert page.get_by_role("button", name="Stop").is_disabled()
    assert tab.console_errors() == []


@pytest.mark.parametrize(
    "backend", ["dummy", pytest.param("smollm2", marks=[*REAL_MODEL, pytest.mark.timeout(400)])]
)
def test_a_prompt_streams_a_reply_on_each_backend(
    tab: Tab, backend: str, request: pytest.FixtureRequest
) -> None:
    if backend == "smollm2":
        url = request.getfixturevalue("smollm2_url")
        prompt, expected = QUESTION, ANSWER
    else:
        url = request.getfixturevalue("dummy")[1]
        prompt, expected = "Anything", WORDS[-1]
    _open(tab, url)
    tab.page.wait_for_function("() => document.getElementById('model').options.length > 0")
    _ask(tab, prompt, temperature="0", max_tokens="32")
    figures = _wait_done(tab)
    assert expected in _reply(tab).inner_text(), figures
    assert "completion tokens" in figures
    assert tab.console_errors() == []
    if backend == "smollm2":
        # The engine's own gauges are charted: the llama.cpp backend's sequences.
        engine = tab.page.locator("#now-engine")
        tab.page.wait_for_function(
            "() => /sequences_active/.test(document.getElementById('now-engine')?.textContent)"
        )
        assert "sequences_waiting" in engine.inner_text()


def test_stop_cancels_the_generation_on_the_server(
    tab: Tab, endless: tuple[ObservedEngine, str]
) -> None:
    engine, url = endless
    _open(tab, url)
    page = tab.page
    _ask(tab, "Go on forever")
    page.wait_for_function("() => document.getElementById('reply-text').textContent.includes('w2')")
    assert engine.active == 1
    page.get_by_role("button", name="Stop").click()
    figures = _wait_done(tab)
    assert figures.startswith("Stopped"), figures
    deadline = time.monotonic() + 30
    while engine.active and time.monotonic() < deadline:
        time.sleep(0.1)
    assert engine.active == 0  # the server stopped generating, 2,000 words early
    shown = _reply(tab).inner_text()
    assert "w1999" not in shown
    # The server counted it as a client that left.
    stats = httpx.get(url + "console/stats", timeout=30).json()
    assert stats["errors"].get("client_disconnected") == 1
    assert stats["in_flight"] == 0
    assert page.get_by_role("button", name="Send").is_enabled()


def _load(url: str, seconds: float, stop: threading.Event) -> None:
    """Requests from four threads for ``seconds`` or until ``stop``."""

    def one() -> None:
        with httpx.Client(timeout=60) as client:
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline and not stop.is_set():
                client.post(url, json={"prompt": "load"})

    threads = [threading.Thread(target=one) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def test_the_charts_move_under_load(tab: Tab, dummy: tuple[ObservedEngine, str]) -> None:
    _, url = dummy
    _open(tab, url)
    page = tab.page
    metrics = page.get_by_role("region", name="Metrics")
    metrics.locator("canvas").first.wait_for()
    samples = page.locator("#chart-tokens")
    page.wait_for_function(
        "() => Number(document.getElementById('chart-tokens')?.dataset.samples) >= 2"
    )
    before = int(samples.get_attribute("data-samples") or 0)
    stop = threading.Event()
    loader = threading.Thread(target=_load, args=(url, 60.0, stop))
    loader.start()
    try:
        # Each dummy request streams 30 words at 15/s: tokens flow and requests are in flight.
        page.wait_for_function(
            "() => /[1-9]/.test(document.getElementById('now-tokens')?.textContent)"
        )
        page.wait_for_function(
            "() => /^[1-9]\\d* in flight/.test(document.getElementById('now-load')?.textContent)"
        )
        page.wait_for_function(
            "() => /p50 \\d/.test(document.getElementById('now-latency')?.textContent)"
        )
    finally:
        stop.set()
        loader.join()
    assert int(samples.get_attribute("data-samples") or 0) > before
    assert re.search(r"p50 \d", str(page.locator("#now-ttft").inner_text()))
    for title in ("Tokens generated per second", "Requests in flight and waiting"):
        assert metrics.get_by_text(title).is_visible()
    assert tab.console_errors() == []


def test_the_key_is_asked_for_and_never_lands_in_a_url(tab: Tab, keyed: str) -> None:
    page = tab.page
    _open(tab, keyed)  # the shell comes without the key
    key_field = page.get_by_label("API key")
    key_field.wait_for()
    assert key_field.get_attribute("type") == "password"
    key_field.fill("not-the-key")
    page.get_by_role("button", name="Use key").click()
    page.get_by_text("The server refused this key.").wait_for()
    page.get_by_label("API key").fill(KEY)
    page.get_by_role("button", name="Use key").click()
    page.wait_for_function("() => document.getElementById('model').options.length > 0")
    assert page.get_by_label("API key").is_hidden()
    _ask(tab, "Hello")
    _wait_done(tab)
    assert "hello world" in _reply(tab).inner_text()
    page.wait_for_function(
        "() => Number(document.getElementById('chart-tokens')?.dataset.samples) >= 2"
    )
    # Sent as a bearer header on the data calls, and nowhere else.
    sent = [(url, headers.get("authorization")) for url, headers in tab.requests]
    bearer = f"Bearer {KEY}"
    assert any(url.endswith("/v1/chat/completions") and auth == bearer for url, auth in sent)
    assert any(url.endswith("/console/stats") and auth == bearer for url, auth in sent)
    for url, auth in sent:
        assert KEY not in url and "?" not in url, url
        if url.endswith(("/console", ".js", ".css")):
            assert auth is None, url  # the shell is fetched without it
    assert KEY not in page.url
    assert page.evaluate("() => window.localStorage.length") == 0
    assert page.evaluate("() => Object.values(window.sessionStorage)") == [KEY]
    assert KEY not in (page.evaluate("() => document.cookie") or "")
    assert KEY not in page.content()
    # Kept for the tab: a reload keeps it; another tab (a new browsing context) is asked again.
    page.reload()
    page.wait_for_function("() => document.getElementById('model').options.length > 0")
    assert page.get_by_label("API key").is_hidden()
    other = tab.context.browser.new_context()
    try:
        fresh = other.new_page()
        fresh.set_default_timeout(WAIT_MS)
        fresh.goto(keyed + "console")
        fresh.get_by_label("API key").wait_for()
    finally:
        other.close()
    # Forgotten on request: gone from the tab, and asked for again.
    page.get_by_role("button", name="Forget the key").click()
    page.get_by_label("API key").wait_for()
    assert page.evaluate("() => window.sessionStorage.length") == 0
    # The only console errors are the browser's notes of the refused (401) calls.
    for text in tab.console_errors():
        assert "401" in text, text
    assert tab.origins() == {_origin(keyed)}


def test_tools_and_json_schema_show_where_the_backend_has_them(tab: Tab, keyed: str) -> None:
    page = tab.page
    _open(tab, keyed)
    page.get_by_label("API key").fill(KEY)
    page.get_by_role("button", name="Use key").click()
    page.wait_for_function("() => document.getElementById('model').options.length > 0")
    tools = page.get_by_label("Tools")
    tools.wait_for()
    tools.fill(
        '[{"type": "function", "function": {"name": "get_weather", "parameters": '
        '{"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]'
    )
    _ask(tab, "What is the weather in Paris? Use get_weather.")
    figures = _wait_done(tab)
    calls = page.get_by_label("Tool calls")
    assert '"name": "get_weather"' in calls.inner_text(), figures
    assert '"city"' in calls.inner_text()
    assert "finish: tool_calls" in figures
    tools.fill("")
    page.get_by_label("JSON schema").fill(
        '{"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}'
    )
    _ask(tab, "Answer in JSON")
    _wait_done(tab)
    assert "answer" in json.loads(page.locator("#reply-text").inner_text())


def test_without_the_capabilities_the_boxes_are_not_shown(
    tab: Tab, dummy: tuple[ObservedEngine, str]
) -> None:
    _open(tab, dummy[1])
    page = tab.page
    page.wait_for_function("() => document.getElementById('model').options.length > 0")
    page.wait_for_function("() => /Ready/.test(document.getElementById('server-line').textContent)")
    assert page.get_by_label("Tools").is_hidden()
    assert page.get_by_label("JSON schema").is_hidden()


def _hidden(page: Any, hidden: bool) -> None:
    """As the browser says when the tab goes to the background (or comes back)."""
    page.evaluate(
        "hidden => { Object.defineProperty(document, 'hidden', {configurable: true,"
        " get: () => hidden}); document.dispatchEvent(new Event('visibilitychange')); }",
        hidden,
    )


def test_a_hidden_page_stops_asking_for_the_stats(
    tab: Tab, dummy: tuple[ObservedEngine, str]
) -> None:
    _open(tab, dummy[1])
    page = tab.page
    page.wait_for_function(
        "() => Number(document.getElementById('chart-tokens')?.dataset.samples) >= 2"
    )

    def asked() -> int:
        return sum(1 for url, _ in tab.requests if url.endswith("/console/stats"))

    _hidden(page, True)
    page.wait_for_timeout(2500)  # a poll already under way ends
    before = asked()
    page.wait_for_timeout(4000)
    assert asked() == before  # nothing while nobody looks
    _hidden(page, False)
    deadline = time.monotonic() + 30
    while asked() == before and time.monotonic() < deadline:
        page.wait_for_timeout(200)
    assert asked() > before  # and again once it is visible
