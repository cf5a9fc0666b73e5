"""One log line per request, and the request id end to end: the client's ``X-Request-ID`` (or
the server's own) comes back as a header, in error bodies and stream error events, and in the
log line; the prompt and the token are never logged unless the operator opts in."""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import AsyncGenerator

import httpx
import pytest
from promptwire import PromptwireLLM
from promptwire.engine import EngineError, EngineEvent, TextChunk
from promptwire.errors import AuthenticationError, EndpointTimeoutError, StreamError
from promptwire.protocol import PromptRequest
from promptwire.server.observability import Observability
from promptwire_modal_dummy.engine import DummyEngine
from promptwire_modal_dummy.settings import DummySettings

from tests.reliability.served import promptwire_serve
from tests.support.servers import serve_engine

TOKEN = "log-token-c0ffee"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
PROMPT = "my private prompt text"
GENERATED_ID = re.compile(r"[0-9a-f]{24}")
#: What promptwire's client sends: a UUID4, the form every server accepts.
CLIENT_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")


def lines(caplog: pytest.LogCaptureFixture, level: int = logging.INFO) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "promptwire.requests" and r.levelno >= level
    ]


def wait_for_lines(caplog: pytest.LogCaptureFixture, count: int) -> list[str]:
    """The line is written once the answer is out, a moment after the client has it."""
    deadline = time.monotonic() + 10
    while len(lines(caplog)) < count:
        assert time.monotonic() < deadline, lines(caplog)
        time.sleep(0.01)
    return lines(caplog)


def fields(line: str) -> dict[str, str]:
    assert line.startswith("request "), line
    return dict(part.split("=", 1) for part in line.removeprefix("request ").split(" "))


def test_the_request_id_goes_end_to_end(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="promptwire.requests")
    with serve_engine(DummyEngine(DummySettings(echo=True)), api_key=TOKEN) as server:
        ok = httpx.post(
            server.url, json={"prompt": PROMPT}, headers={**AUTH, "X-Request-ID": "trace-42"}
        )
        assert ok.status_code == 200 and ok.headers["x-request-id"] == "trace-42"
        bad = httpx.post(
            server.url, json={"max_tokens": "x"}, headers={**AUTH, "X-Request-ID": "err:7"}
        )
        assert bad.status_code == 422 and bad.headers["x-request-id"] == "err:7"
        assert bad.json()["error"]["request_id"] == "err:7"
        mine = httpx.post(server.url, json={"prompt": PROMPT}, headers=AUTH)
        generated = mine.headers["x-request-id"]
        assert GENERATED_ID.fullmatch(generated)
        logged = wait_for_lines(caplog, 3)
    first, second, third = (fields(line) for line in logged)
    assert first == {
        "request_id": "trace-42",
        "method": "POST",
        "route": "/",
        "status": "200",
        "prompt_tokens": "4",
        "completion_tokens": "4",
        "ttft_s": first["ttft_s"],
        "duration_s": first["duration_s"],
        "finish_reason": "stop",
    }
    assert 0 <= float(first["ttft_s"]) <= float(first["duration_s"])
    assert second["request_id"] == "err:7" and second["status"] == "422"
    assert second["error"] == "invalid_request" and "prompt_tokens" not in second
    assert third["request_id"] == generated
    for line in logged:
        assert PROMPT not in line and TOKEN not in line


class FailingMidStream(DummyEngine):
    async def stream(self, request: PromptRequest) -> AsyncGenerator[EngineEvent, None]:
        yield TextChunk("partial ")
        raise EngineError("the GPU fell over")


def test_a_stream_error_event_carries_the_request_id(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="promptwire.requests")
    with serve_engine(FailingMidStream()) as server:
        response = httpx.post(
            server.url, json={"prompt": "p", "stream": True}, headers={"X-Request-ID": "s-1"}
        )
        assert response.headers["x-request-id"] == "s-1"
        data = [line for line in response.text.splitlines() if line.startswith("data:")]
        error = json.loads(data[-1].removeprefix("data:"))["error"]
        assert error == {
            "type": "server_error",
            "message": "the GPU fell over",
            "request_id": "s-1",
        }
        (line,) = wait_for_lines(caplog, 1)
    logged = fields(line)
    assert logged["status"] == "200" and logged["error"] == "server_error"
    assert logged["stream"] == "true" and "finish_reason" not in logged


#: Each conversation route's streamed request, and where its error event holds the request id.
V1_STREAMS = {
    "/v1/chat/completions": (
        {"model": "dummy", "messages": [{"role": "user", "content": "p"}], "stream": True},
        lambda event: event["error"]["request_id"],
    ),
    "/v1/completions": (
        {"model": "dummy", "prompt": "p", "stream": True},
        lambda event: event["error"]["request_id"],
    ),
    "/v1/messages": (
        {
            "model": "dummy",
            "max_tokens": 16,
            "messages": [{"role": "user", "content": "p"}],
            "stream": True,
        },
        lambda event: event["request_id"],
    ),
    "/v1/responses": ({"model": "dummy", "input": "p", "stream": True}, lambda e: e["request_id"]),
}


@pytest.mark.parametrize("path", list(V1_STREAMS))
def test_a_v1_stream_error_is_counted_as_such_and_carries_the_request_id(
    path: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The engine failing mid-stream on an OpenAI or Anthropic route is logged and counted as
    the error it is, with the request id in its event; it used to be ``client_disconnected``,
    the event without an id."""
    caplog.set_level(logging.INFO, logger="promptwire.requests")
    body, request_id_of = V1_STREAMS[path]
    with serve_engine(FailingMidStream()) as server:
        response = httpx.post(
            server.url.rstrip("/") + path, json=body, headers={"X-Request-ID": "s-2"}
        )
        data = [line for line in response.text.splitlines() if line.startswith("data:")]
        assert request_id_of(json.loads(data[-1].removeprefix("data:"))) == "s-2"
        (line,) = wait_for_lines(caplog, 1)
        metrics = httpx.get(server.url + "metrics").text
    logged = fields(line)
    assert logged["error"] == "server_error" and logged["stream"] == "true", logged
    assert f'error_type="server_error",route="{path}"' in metrics
    assert "client_disconnected" not in metrics


@pytest.mark.parametrize(
    "given", ["has space", "x" * 129, "new\tline", "ünïcode", 'quote"d', ""], ids=repr
)
def test_an_unusable_request_id_is_replaced(given: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="promptwire.requests")
    with serve_engine(DummyEngine()) as server:
        response = httpx.post(
            server.url, json={"prompt": "p"}, headers={"X-Request-ID": given.encode()}
        )
        (line,) = wait_for_lines(caplog, 1)
    assert GENERATED_ID.fullmatch(response.headers["x-request-id"])
    assert fields(line)["request_id"] == response.headers["x-request-id"]


def test_prompts_are_logged_only_when_the_operator_opts_in(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="promptwire.requests")
    forged = f"{PROMPT}\nrequest request_id=forged status=200"
    opted_in = Observability(log_prompts=True)
    with serve_engine(DummyEngine(), observability=opted_in) as server:
        assert httpx.post(server.url, json={"prompt": forged}).status_code == 200
        (line,) = wait_for_lines(caplog, 1)
    assert "\n" not in line  # the prompt cannot forge a line, nor a field
    assert line.endswith(" prompt=" + json.dumps(forged))


def test_json_lines_and_quiet_probes(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="promptwire.requests")
    with serve_engine(DummyEngine(), observability=Observability(log_format="json")) as server:
        assert httpx.get(server.url + "health").status_code == 200
        assert httpx.get(server.url + "metrics").status_code == 200
        # The console's figures, which an open page asks for every second.
        assert httpx.get(server.url + "console/stats").status_code == 200
        assert httpx.post(server.url, json={"prompt": "a b"}).status_code == 200
        (line,) = wait_for_lines(caplog, 1)
    record = json.loads(line)
    assert record["event"] == "request" and record["route"] == "/" and record["status"] == 200
    assert record["completion_tokens"] == 2 and record["finish_reason"] == "stop"
    assert isinstance(record["duration_s"], float)
    probes = [json.loads(m) for m in lines(caplog, logging.DEBUG) if m not in lines(caplog)]
    assert [p["route"] for p in probes] == ["/health", "/metrics", "/console/stats"]  # at DEBUG


def test_serve_writes_the_request_log_not_uvicorns_access_log() -> None:
    env = {"PROMPTWIRE_LOG_FORMAT": "json"}
    with promptwire_serve("--log-level", "info", env=env) as served:
        reply = httpx.post(served.url, json={"prompt": "hi"}, headers={"X-Request-ID": "cli-1"})
        assert reply.status_code == 200
        deadline = time.monotonic() + 10
        while '"request_id": "cli-1"' not in served.output():
            assert time.monotonic() < deadline, served.output()
            time.sleep(0.05)
        output = served.output()
    (line,) = [line for line in output.splitlines() if "cli-1" in line]
    assert json.loads(line)["status"] == 200
    assert "HTTP/1.1" not in output  # uvicorn's access line ("POST / HTTP/1.1" 200) is off


def test_serve_at_warning_logs_no_requests() -> None:
    with promptwire_serve("--log-level", "warning") as served:
        assert httpx.post(served.url, json={"prompt": "hi"}).status_code == 200
        time.sleep(0.3)
        assert "request_id" not in served.output()


def _logged_ids(caplog: pytest.LogCaptureFixture, count: int) -> dict[str, dict[str, str]]:
    return {fields(line)["request_id"]: fields(line) for line in wait_for_lines(caplog, count)}


def test_the_client_names_each_request_and_its_errors_name_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The client sends an X-Request-ID of its own; the server's log line has it, and an error
    the client raises quotes it: the user and the operator talk about the same request."""
    caplog.set_level(logging.INFO, logger="promptwire.requests")
    with serve_engine(DummyEngine(DummySettings(echo=True)), api_key=TOKEN) as server:
        good = PromptwireLLM(endpoint_url=server.url, api_key=TOKEN, max_retries=0)
        assert good.invoke("a b") == "a b"
        wrong = PromptwireLLM(endpoint_url=server.url, api_key="not-the-token", max_retries=0)
        with pytest.raises(AuthenticationError) as refused:
            wrong.invoke("a b")
        logged = _logged_ids(caplog, 2)
    request_id = refused.value.request_id
    assert request_id is not None and CLIENT_ID.fullmatch(request_id)
    assert f"[request {request_id}]" in str(refused.value)
    assert logged[request_id]["status"] == "401"
    (ok,) = [line for rid, line in logged.items() if rid != request_id]
    assert CLIENT_ID.fullmatch(ok["request_id"]) and ok["status"] == "200"


def test_a_stream_error_names_the_stream(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="promptwire.requests")
    with serve_engine(FailingMidStream()) as server:
        llm = PromptwireLLM(endpoint_url=server.url, max_retries=0)
        with pytest.raises(StreamError) as failed:
            list(llm.stream("p"))
        (line,) = wait_for_lines(caplog, 1)
    assert failed.value.request_id == fields(line)["request_id"]
    assert fields(line)["error"] == "server_error"


async def test_a_request_that_timed_out_can_still_be_found(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """No answer came, yet the error names the request, and the server logged it under that id
    (as a client that left)."""
    caplog.set_level(logging.INFO, logger="promptwire.requests")
    with serve_engine(DummyEngine(DummySettings(first_token_delay=30))) as server:
        llm = PromptwireLLM(endpoint_url=server.url, timeout=0.5, max_retries=0)
        with pytest.raises(EndpointTimeoutError) as late:
            await llm.ainvoke("p")
        request_id = late.value.request_id
        assert request_id is not None
        logged = _logged_ids(caplog, 1)
    assert logged[request_id]["error"] == "client_disconnected"
