"""The errors the app's shared layers answer (auth's 401, an unknown path's 404, a method's 405,
the body's 415) take the shape of the protocol whose path the request was for, also when the
app is served under a root path (mounted in another app, uvicorn's ``--root-path``), where the
request's path starts with it."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from promptwire.server import create_app
from promptwire.server._app_route import route_path
from promptwire_modal_dummy.engine import DummyEngine

TOKEN = "sk-shape-test"
OPENAI_KEYS = {"message", "type", "param", "code", "request_id"}


def _answers(root: str, calls: list[tuple[str, str, dict[str, str]]]) -> list[httpx.Response]:
    app = create_app(DummyEngine(), api_key=TOKEN)

    async def run() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app, root_path=root)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            return [
                await client.request(method, root + path, headers=headers, content=b"{}")
                for method, path, headers in calls
            ]

    return asyncio.run(run())


def _shape(answer: httpx.Response) -> str:
    body: dict[str, Any] = answer.json()
    if body.get("type") == "error" and set(body["error"]) == {"type", "message"}:
        return "anthropic"
    if set(body["error"]) == OPENAI_KEYS:
        return "openai"
    assert set(body["error"]) <= {"type", "message", "request_id"}, body
    return "prompt"


@pytest.mark.parametrize("root", ["", "/api", "/a/b"])
def test_each_protocols_path_answers_the_shared_errors_in_its_shape(root: str) -> None:
    key = {"x-api-key": TOKEN}
    answers = _answers(
        root,
        [
            ("POST", "/v1/chat/completions", {}),
            ("POST", "/v1/messages", {}),
            ("POST", "/v1/messages/count_tokens", {}),
            ("POST", "/", {}),
            ("POST", "/v1/embeddings", key),
            ("GET", "/v1/messages", key),
            ("POST", "/v1/messages", key),  # not declared JSON: 415
            ("POST", "/nowhere", key),
        ],
    )
    found = [(answer.status_code, _shape(answer)) for answer in answers]
    assert found == [
        (401, "openai"),
        (401, "anthropic"),
        (401, "anthropic"),
        (401, "prompt"),
        (404, "openai"),
        (405, "anthropic"),
        (415, "anthropic"),
        (404, "prompt"),
    ]
    assert all(TOKEN not in answer.text for answer in answers)


def test_a_compressed_body_is_a_415_that_says_so() -> None:
    """Read as it came, it was "not valid JSON", which sent its client looking elsewhere."""
    gzipped = {"x-api-key": TOKEN, "content-type": "application/json", "content-encoding": "gzip"}
    answers = _answers("", [("POST", "/", gzipped), ("POST", "/v1/messages", gzipped)])
    assert [(answer.status_code, _shape(answer)) for answer in answers] == [
        (415, "prompt"),
        (415, "anthropic"),
    ]
    assert all("Content-Encoding 'gzip'" in answer.json()["error"]["message"] for answer in answers)


def test_the_open_paths_are_open_under_a_root_path() -> None:
    (health,) = _answers("/api", [("GET", "/health", {})])
    assert health.status_code != 401, health.text  # 503 here: the engine is not started


@pytest.mark.parametrize(
    ("path", "root", "seen"),
    [
        ("/v1/models", "", "/v1/models"),
        ("/api/v1/models", "/api", "/v1/models"),
        ("/api", "/api", ""),
        ("/apiv1/models", "/api", "/apiv1/models"),  # not under the root path
        ("/v1/models", "/api", "/v1/models"),
    ],
)
def test_route_path_takes_off_the_root_path_as_starlette_does(
    path: str, root: str, seen: str
) -> None:
    from starlette._utils import get_route_path

    scope = {"type": "http", "path": path, "root_path": root}
    assert route_path(scope) == seen == get_route_path(scope)


def test_the_metrics_name_the_routes_under_a_root_path() -> None:
    key = {"x-api-key": TOKEN}
    *_, metrics = _answers("/api", [("POST", "/v1/chat/completions", {}), ("GET", "/metrics", key)])
    assert metrics.status_code == 200
    counted = [line for line in metrics.text.splitlines() if "promptwire_requests_total{" in line]
    assert any('route="/v1/chat/completions"' in line for line in counted), counted
    assert not any('route="other"' in line for line in counted), counted
