"""The protocol app on a real uvicorn server: replies, streams, health, auth, bad input."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import AsyncGenerator, Iterator

import httpx
import pytest
from httpx_sse import connect_sse
from promptwire import PromptwireLLM, ServerError
from promptwire.engine import EngineEvent, TextChunk
from promptwire.protocol import PromptRequest
from promptwire_modal_dummy.engine import DummyEngine
from promptwire_modal_dummy.settings import DummySettings

from tests.support.engines import ObservedEngine
from tests.support.servers import serve_engine

TOKEN = "server-token-1b2c"


def _error(response: httpx.Response) -> dict[str, str]:
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"type", "message", "request_id"}
    # The request's id, as its X-Request-ID header says it; the rest is what a test compares.
    assert body["error"].pop("request_id") == response.headers["x-request-id"]
    return body["error"]


def test_the_guide_request_gets_hello_world(dummy_url: str) -> None:
    response = httpx.post(
        dummy_url, json={"prompt": "Identify yourself, bot!", "extra": "args are allowed"}
    )
    assert response.status_code == 200
    body = response.json()
    assert body["prompt"] == "hello world"
    assert body["finish_reason"] == "stop"
    assert body["usage"] == {"prompt_tokens": 3, "completion_tokens": 2}
    assert body["model"] == "dummy"


def test_max_tokens_cuts_with_finish_reason_length(dummy_url: str) -> None:
    body = httpx.post(dummy_url, json={"prompt": "p", "max_tokens": 1}).json()
    assert (body["prompt"], body["finish_reason"]) == ("hello ", "length")


def test_streaming_sends_word_events_then_done(dummy_url: str) -> None:
    with (
        httpx.Client() as client,
        connect_sse(client, "POST", dummy_url, json={"prompt": "p", "stream": True}) as source,
    ):
        assert source.response.headers["content-type"].startswith("text/event-stream")
        events = [(e.event, json.loads(e.data)) for e in source.iter_sse()]
    assert events[:-1] == [("delta", {"text": "hello "}), ("delta", {"text": "world"})]
    assert events[-1][0] == "done" and events[-1][1]["finish_reason"] == "stop"


def test_health_is_ready(dummy_url: str) -> None:
    response = httpx.get(dummy_url + "health")
    assert response.status_code == 200
    assert response.json()["status"] == "ok"


@pytest.mark.parametrize(
    ("content", "status", "fragment"),
    [
        (b"{not json", 422, "not valid JSON"),
        (b"[1, 2]", 422, "JSON object"),
        (b'{"no_prompt": 1}', 422, "prompt"),
        (b'{"prompt": 42}', 422, "prompt"),
        (b'{"prompt": "p", "max_tokens": "many"}', 422, "max_tokens"),
        (b'{"prompt": "p", "temperature": -3}', 422, "temperature"),
        (b'{"prompt": "p", "stop": "x"}', 422, "stop"),
        (b"", 422, "JSON"),
    ],
)
def test_bad_requests_get_422_json_and_the_server_stays_up(
    dummy_url: str, content: bytes, status: int, fragment: str
) -> None:
    response = httpx.post(dummy_url, content=content, headers={"content-type": "application/json"})
    assert response.status_code == status
    error = _error(response)
    assert error["type"] == "invalid_request" and fragment in error["message"]
    assert httpx.post(dummy_url, json={"prompt": "still up?"}).json()["prompt"] == "hello world"


def test_oversized_body_is_413(dummy_url: str) -> None:
    response = httpx.post(dummy_url, json={"prompt": "x" * (2 << 20)})
    assert response.status_code == 413
    assert _error(response)["type"] == "request_too_large"


def test_unknown_route_and_method_are_json_errors(dummy_url: str) -> None:
    assert _error(httpx.get(dummy_url + "nope"))["type"] == "not_found"
    response = httpx.get(dummy_url)
    assert response.status_code == 405
    assert _error(response)["type"] == "method_not_allowed"


@pytest.mark.parametrize("key", ["abc ", " ", "abc\n", "ключ"], ids=repr)
def test_a_key_no_client_can_send_is_refused_when_the_app_is_made(key: str) -> None:
    """Every client refuses such a key and the guard compares a stripped header: the server
    used to start with it and answer every client 401."""
    from promptwire import ConfigurationError
    from promptwire.server import create_app

    with pytest.raises(ConfigurationError, match="PROMPTWIRE_API_KEY") as caught:
        create_app(DummyEngine(DummySettings()), api_key=key)
    assert key.strip() not in str(caught.value) or not key.strip()


@pytest.fixture(scope="module")
def guarded_url() -> Iterator[str]:
    with serve_engine(DummyEngine(DummySettings()), api_key=TOKEN) as server:
        yield server.url


def test_auth_required_except_health(guarded_url: str) -> None:
    missing = httpx.post(guarded_url, json={"prompt": "p"})
    assert missing.status_code == 401 and _error(missing)["type"] == "unauthorized"
    wrong = httpx.post(guarded_url, json={"prompt": "p"}, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401 and TOKEN not in wrong.text
    assert httpx.get(guarded_url + "health").status_code == 200
    assert httpx.get(guarded_url + "openapi.json").status_code == 401
    ok = httpx.post(guarded_url, json={"prompt": "p"}, headers={"Authorization": f"Bearer {TOKEN}"})
    assert ok.status_code == 200 and ok.json()["prompt"] == "hello world"


def test_over_capacity_is_503_with_retry_after() -> None:
    busy = ObservedEngine(DummySettings(first_token_delay=2.0))
    with serve_engine(busy, max_in_flight=1) as server, httpx.Client(timeout=60) as client:
        first = threading.Thread(
            target=client.post, args=(server.url,), kwargs={"json": {"prompt": "a"}}
        )
        first.start()
        try:
            deadline = time.monotonic() + 30
            while busy.active == 0:  # until the first request holds the only slot
                assert time.monotonic() < deadline, "the first request never reached the engine"
                time.sleep(0.01)
            response = client.post(server.url, json={"prompt": "b"})
            assert response.status_code == 503
            assert _error(response)["type"] == "overloaded"
            assert int(response.headers["retry-after"]) >= 1
        finally:
            first.join()
        assert client.post(server.url, json={"prompt": "c"}).status_code == 200


class BrokenEngine(DummyEngine):
    """Raises an unexpected exception (not an ``EngineError``) for every request."""

    async def stream(self, request: PromptRequest) -> AsyncGenerator[EngineEvent, None]:
        raise RuntimeError("engine bug: /secret/path/in/traceback")
        yield  # pragma: no cover (makes this an async generator)


@pytest.mark.parametrize("stream", [False, True])
def test_an_engine_bug_is_a_500_on_a_connection_that_stays_usable(
    stream: bool, caplog: pytest.LogCaptureFixture
) -> None:
    connections = 0

    def count(event: str, info: object) -> None:
        nonlocal connections
        connections += event == "connection.connect_tcp.started"

    with serve_engine(BrokenEngine()) as server, httpx.Client() as client:
        for _ in range(5):
            response = client.post(
                server.url, json={"prompt": "x", "stream": stream}, extensions={"trace": count}
            )
            assert response.status_code == 500
            assert _error(response) == {"type": "server_error", "message": "internal server error"}
            assert "secret" not in response.text
        assert client.post(server.url + "health").status_code == 405  # and serves other routes
    # Every request on one kept-alive connection: the server did not drop it after a 500.
    assert connections == 1
    logged = [r for r in caplog.records if r.getMessage() == "unexpected server error"]
    assert len(logged) == 5  # once per failure, not once more by uvicorn


def test_the_client_sees_the_servers_500s_not_broken_connections() -> None:
    with serve_engine(BrokenEngine()) as server:
        llm = PromptwireLLM(endpoint_url=server.url, max_retries=0)
        for _ in range(5):
            with pytest.raises(ServerError, match="internal server error"):
                llm.invoke("x")


class NegativeCounts(DummyEngine):
    """An engine that counts its chunks as -1 token each (a backend's bug)."""

    async def stream(self, request: PromptRequest) -> AsyncGenerator[EngineEvent, None]:
        for word in ("a ", "b ", "c "):
            yield TextChunk(word, tokens=-1)


def test_an_engines_negative_token_counts_are_an_error_not_usage() -> None:
    """Usage is non-negative (§ 1.2): a reply of -3 tokens was answered as such, and the token
    counters of /metrics went down."""
    with serve_engine(NegativeCounts()) as server:
        answer = httpx.post(server.url, json={"prompt": "p"})
        assert answer.status_code == 500 and _error(answer)["type"] == "server_error"
        metrics = httpx.get(server.url + "metrics").text
    counted = [
        line
        for line in metrics.splitlines()
        if line.startswith("promptwire_") and "_tokens" in line
    ]
    assert not [line for line in counted if line.split()[-1].startswith("-")], counted
