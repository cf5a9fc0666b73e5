"""The console's routes in-process: the shell served without the key and with a strict
Content-Security-Policy, every data call behind the key, the off switch, the stats it charts, and
the vendored chart library still the file npm shipped. The page itself, in a real browser, is
tested in ``tests/console``."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import AsyncIterator, Sequence
from html.parser import HTMLParser
from importlib import resources
from pathlib import Path
from typing import Any

import httpx
import pytest
from promptwire.engine import EngineMetric
from promptwire.server import app_from_settings, create_app
from promptwire.server.console import CONSOLE_PATH, CONTENT_SECURITY_POLICY, SHELL_PATHS
from promptwire.server.console._routes import SHELL_FILES
from promptwire.server.observability import Observability
from promptwire.settings import OBSERVABILITY_FIELDS, PromptwireSettings
from promptwire_modal_dummy.engine import DummyEngine
from promptwire_modal_dummy.settings import DummySettings

STATIC = Path(str(resources.files("promptwire.server.console").joinpath("static")))
VENDOR = STATIC / "vendor" / "uplot"
KEY = "console-test-key"


class GaugedEngine(DummyEngine):
    """The dummy engine with figures of its own, as the llama.cpp engine reports them."""

    def metrics(self) -> Sequence[EngineMetric]:
        return [
            EngineMetric("sequences_active", 2, "Requests decoding."),
            EngineMetric("prefix_cache_tokens", 40, "Prompt tokens reused.", kind="counter"),
            EngineMetric("slot_state", 1, "By slot.", labels={"slot": "0"}),
        ]


async def _client(app: Any) -> AsyncIterator[httpx.AsyncClient]:
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            yield client


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async for client in _client(create_app(GaugedEngine())):
        yield client


@pytest.fixture
async def keyed() -> AsyncIterator[httpx.AsyncClient]:
    async for client in _client(create_app(DummyEngine(), api_key=KEY)):
        yield client


async def test_the_page_is_served_with_a_strict_content_security_policy(
    client: httpx.AsyncClient,
) -> None:
    page = await client.get(CONSOLE_PATH)
    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    policy = page.headers["content-security-policy"]
    assert policy == CONTENT_SECURITY_POLICY
    directives = dict(d.strip().split(" ", 1) for d in policy.split(";"))
    assert directives["default-src"] == "'none'"
    for name in ("script-src", "style-src", "connect-src"):
        assert directives[name] == "'self'", name  # no inline code, no other origin
    assert directives["frame-ancestors"] == "'none'"
    assert directives["form-action"] == "'none'"
    assert page.headers["x-content-type-options"] == "nosniff"
    assert page.headers["referrer-policy"] == "no-referrer"
    assert page.headers["x-frame-options"] == "DENY"


async def test_every_shell_file_is_served_with_its_type_and_an_etag(
    client: httpx.AsyncClient,
) -> None:
    for path, (name, media_type) in SHELL_FILES.items():
        answer = await client.get(path)
        assert answer.status_code == 200, path
        assert answer.headers["content-type"] == media_type
        assert answer.content == (STATIC / name).read_bytes()
        assert answer.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
        again = await client.get(path, headers={"if-none-match": answer.headers["etag"]})
        assert again.status_code == 304
        assert again.content == b""


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.inline: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "script" and not found.get("src"):
            self.inline.append("an inline <script>")
        if tag == "style":
            self.inline.append("a <style> element")
        for name, value in attrs:
            if name == "style" or name.startswith("on"):
                self.inline.append(f"{tag} {name}={value!r}")
        for name in ("src", "href"):
            if found.get(name):
                self.urls.append(str(found[name]))


def test_the_page_has_no_inline_code_and_loads_only_its_own_files() -> None:
    page = _Page()
    page.feed((STATIC / "index.html").read_text())
    assert page.inline == []  # the policy would block them
    for url in page.urls:
        if url == "data:,":  # the empty icon: no favicon request at all
            continue
        assert "//" not in url and not url.startswith("/"), url  # relative: this origin
        assert "/" + url in SHELL_PATHS, url


def test_the_script_keeps_the_key_out_of_urls_and_local_storage() -> None:
    script = (STATIC / "console.js").read_text()
    assert "localStorage" not in script
    assert "sessionStorage" in script
    assert re.search(r"\binnerHTML\b|\beval\(|new Function", script) is None
    assert "http://" not in script and "https://" not in script  # same origin only
    assert '"Authorization"' in script  # the key goes as a header; no query string is built
    assert "?" + "key" not in script and "URLSearchParams" not in script


async def test_with_a_key_only_the_shell_is_served_without_it(keyed: httpx.AsyncClient) -> None:
    for path in SHELL_PATHS:
        assert (await keyed.get(path)).status_code == 200, path
    for path in ("/console/stats", "/v1/models"):
        refused = await keyed.get(path)
        assert refused.status_code == 401, path
        assert "error" in refused.json()
        wrong = await keyed.get(path, headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        allowed = await keyed.get(path, headers={"Authorization": f"Bearer {KEY}"})
        assert allowed.status_code == 200
    # A key in the URL is not a key.
    assert (await keyed.get(f"/console/stats?api_key={KEY}")).status_code == 401
    chat = {"messages": [{"role": "user", "content": "hi"}]}
    assert (await keyed.post("/v1/chat/completions", json=chat)).status_code == 401


async def test_the_off_switch_leaves_every_console_path_out() -> None:
    async for client in _client(create_app(DummyEngine(), console=False)):
        for path in (*SHELL_PATHS, "/console/stats"):
            assert (await client.get(path)).status_code == 404, path
        assert (await client.get("/health")).status_code == 200
    async for client in _client(create_app(DummyEngine(), console=False, api_key=KEY)):
        # No longer open: refused without the key, and not found with it.
        assert (await client.get(CONSOLE_PATH)).status_code == 401
        with_key = {"Authorization": f"Bearer {KEY}"}
        assert (await client.get(CONSOLE_PATH, headers=with_key)).status_code == 404


async def test_promptwire_console_false_in_the_environment_turns_it_off(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PROMPTWIRE_CONSOLE", "false")
    settings = PromptwireSettings()
    assert settings.console is False
    async for client in _client(app_from_settings(DummyEngine(), settings)):
        assert (await client.get(CONSOLE_PATH)).status_code == 404
    monkeypatch.delenv("PROMPTWIRE_CONSOLE")
    async for client in _client(app_from_settings(DummyEngine(), PromptwireSettings())):
        assert (await client.get(CONSOLE_PATH)).status_code == 200


def test_modal_containers_get_the_setting_from_the_deploying_machine() -> None:
    assert "console" in OBSERVABILITY_FIELDS


async def test_the_stats_count_generations_not_the_watcher(client: httpx.AsyncClient) -> None:
    first = (await client.get("/console/stats")).json()
    assert first["metrics"] is True
    assert first["requests"] == 0
    assert first["model"] == "dummy"
    assert first["ready"] is True
    for _ in range(3):
        assert (await client.post("/", json={"prompt": "x", "max_tokens": 2})).status_code == 200
    chat = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    assert (await client.post("/v1/chat/completions", json=chat)).status_code == 200
    assert (await client.post("/", json={"prompt": 5})).status_code == 422
    for path in ("/health", "/metrics", "/v1/models", CONSOLE_PATH):
        await client.get(path)
    stats = (await client.get("/console/stats")).json()
    assert stats["requests"] == 5  # the generation routes only: not /health, /metrics, ...
    assert stats["errors"] == {"invalid_request": 1}
    assert stats["in_flight"] == 0
    assert stats["waiting"] == 0
    assert stats["completion_tokens"] == 3 * 2 + 2  # "hello world" cut at 2 tokens
    assert stats["prompt_tokens"] > 0
    bounds = stats["latency_bounds"]
    assert len(stats["duration"]) == len(stats["first_token"]) == len(bounds) + 1
    assert sum(stats["duration"]) == 5
    assert sum(stats["first_token"]) == 4
    assert stats["time"] > first["time"]
    assert stats["engine"] == [
        {"name": "sequences_active", "kind": "gauge", "value": 2.0, "help": "Requests decoding."},
        {
            "name": "prefix_cache_tokens",
            "kind": "counter",
            "value": 40.0,
            "help": "Prompt tokens reused.",
        },
        {"name": "slot_state{slot=0}", "kind": "gauge", "value": 1.0, "help": "By slot."},
    ]
    answer = await client.get("/console/stats")
    assert answer.headers["cache-control"] == "no-store"
    assert answer.json()["requests"] == 5  # polling does not count itself


async def test_the_stats_without_metrics_give_the_engine_figures_only() -> None:
    app = create_app(GaugedEngine(), observability=Observability(metrics=False))
    async for client in _client(app):
        stats = (await client.get("/console/stats")).json()
        assert stats["metrics"] is False
        assert "requests" not in stats
        assert stats["engine"][0]["name"] == "sequences_active"


async def test_an_engine_whose_figures_fail_costs_only_those() -> None:
    class Failing(DummyEngine):
        def metrics(self) -> Sequence[EngineMetric]:
            raise RuntimeError("boom")

    async for client in _client(create_app(Failing(DummySettings()))):
        answer = await client.get("/console/stats")
        assert answer.status_code == 200
        assert answer.json()["engine"] == []


def test_the_vendored_chart_library_is_the_file_npm_shipped() -> None:
    record = json.loads((VENDOR / "vendored.json").read_text())
    assert record["package"] == "uplot"
    assert record["license"] == "MIT"
    assert record["tarball_integrity"].startswith("sha512-")
    assert set(record["files"]) == {"uPlot.iife.min.js", "uPlot.min.css", "LICENSE"}
    for name, entry in record["files"].items():
        digest = hashlib.sha512((VENDOR / name).read_bytes()).digest()
        assert entry["integrity"] == "sha512-" + base64.b64encode(digest).decode(), name
    notice = (VENDOR / "README.md").read_text()
    assert f"uplot@{record['version']}" in notice
    assert record["tarball_integrity"] in notice
    assert "MIT License" in (VENDOR / "LICENSE").read_text()
    # The page loads the version recorded, and nothing else from outside this package.
    assert "/console/uPlot.iife.min.js" in SHELL_PATHS
