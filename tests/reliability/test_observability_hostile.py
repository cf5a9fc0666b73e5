"""What held when round three attacked metrics and request ids, kept so: 2,000 distinct paths,
model names and header values add no metric series; ``/metrics`` needs the token; a hostile
``X-Request-Id`` is neither reflected nor written into the log."""

from __future__ import annotations

import logging

import httpx
import pytest
from promptwire_modal_dummy.engine import DummyEngine

from tests.support.network import LOOPBACK_ONLY
from tests.support.servers import serve_engine

pytestmark = LOOPBACK_ONLY

TOKEN = "obs-token-7c1e9a"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
DISTINCT = 2_000


def _series(client: httpx.Client, url: str) -> set[str]:
    """The names and labels of every sample on ``/metrics`` (not their values)."""
    text = client.get(url + "metrics", headers=AUTH).text
    return {
        line.rsplit(" ", 1)[0]
        for line in text.splitlines()
        if line and not line.startswith("#") and "_created" not in line
    }


def _round(client: httpx.Client, url: str, index: int) -> None:
    tag = f"x{index}"
    headers = {**AUTH, "X-Request-Id": f"id-{tag}", "User-Agent": f"agent-{tag}"}
    assert client.get(url + f"no/such/{tag}", headers=headers).status_code == 404
    chat = {"model": f"model-{tag}", "messages": [{"role": "user", "content": "hi"}]}
    assert client.post(url + "v1/chat/completions", json=chat, headers=headers).status_code == 404
    assert client.get(url + f"v1/models/model-{tag}", headers=headers).status_code == 404
    assert client.post(url, json={"prompt": tag}, headers=headers).status_code == 200


def test_distinct_paths_models_and_headers_add_no_metric_series() -> None:
    with serve_engine(DummyEngine(), api_key=TOKEN) as server, httpx.Client(timeout=30) as client:
        for index in range(10):
            _round(client, server.url, index)
        _series(client, server.url)  # /metrics is a route too: scraped once, it has its series
        before = _series(client, server.url)
        for index in range(10, DISTINCT):
            _round(client, server.url, index)
        after = _series(client, server.url)
    assert after == before, sorted(after - before)[:10]


def test_metrics_need_the_token() -> None:
    with serve_engine(DummyEngine(), api_key=TOKEN) as server:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
            refused = httpx.get(server.url + "metrics", headers=headers)
            assert refused.status_code == 401
            assert "promptwire_" not in refused.text


HOSTILE_IDS = [
    "id with space",
    'quote"d=1 status=200',
    "x" * 5000,
    "<script>alert(1)</script>",
    "${jndi:ldap://example.com/a}",
]


@pytest.mark.parametrize("given", HOSTILE_IDS, ids=lambda given: given[:20])
def test_a_hostile_request_id_is_neither_reflected_nor_logged(
    given: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with serve_engine(DummyEngine()) as server:
        response = httpx.post(server.url, json={"prompt": "p"}, headers={"X-Request-Id": given})
        broken = httpx.post(server.url, content=b"{", headers={"X-Request-Id": given})
    for answer in (response, broken):
        assert given not in answer.text and given not in str(answer.headers)
        assert answer.headers["x-request-id"] != given
    assert given not in caplog.text
