"""A stream whose engine is slow to say anything (a long prompt, a wait for a slot): after
``PING_SECONDS`` it is answered anyway, with the protocol's opening events and pings, so a
proxy's idle timeout does not cut it; an error after that is the stream's error event."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Iterator

import httpx
import pytest
from promptwire.engine import Engine, EngineError, EngineEvent, Finish, TextChunk
from promptwire.protocol import FinishReason, PromptRequest, Usage
from promptwire.server import _streaming

from tests.support.network import LOOPBACK_ONLY
from tests.support.servers import serve_engine

pytestmark = LOOPBACK_ONLY

FIRST_EVENT_AFTER = 2.0
HELLO = [{"role": "user", "content": "Hi"}]


class SlowToStart(Engine):
    """Says its first word after ``FIRST_EVENT_AFTER`` seconds, or fails then (when the prompt
    says "fail")."""

    model_name = "slow"

    async def stream(self, request: PromptRequest) -> AsyncGenerator[EngineEvent, None]:
        await asyncio.sleep(FIRST_EVENT_AFTER)
        if "fail" in request.prompt:
            raise EngineError("the GPU fell over")
        yield TextChunk("hello", tokens=1)
        yield Finish(FinishReason.STOP, Usage(prompt_tokens=1, completion_tokens=1))


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(_streaming, "PING_SECONDS", 0.3)  # the server runs in this process
        with serve_engine(SlowToStart()) as server:
            yield server.url


def _timed_lines(url: str, body: dict[str, object]) -> tuple[float, list[tuple[float, str]]]:
    """When the answer's head came, and each line of its body with when it came."""
    started = time.monotonic()
    with httpx.stream("POST", url, json=body, timeout=30) as response:
        assert response.status_code == 200
        head = time.monotonic() - started
        lines = [(time.monotonic() - started, line) for line in response.iter_lines() if line]
    return head, lines


def test_an_anthropic_stream_opens_before_the_first_token(url: str) -> None:
    body = {"model": "m", "max_tokens": 5, "messages": HELLO, "stream": True}
    head, lines = _timed_lines(url + "v1/messages", body)
    assert head < FIRST_EVENT_AFTER - 0.5
    opened = next(at for at, line in lines if line == "event: message_start")
    text = next(at for at, line in lines if '"text_delta"' in line)
    assert opened < FIRST_EVENT_AFTER - 0.5 <= text
    assert lines[-1][1].startswith("data:") and "message_stop" in lines[-1][1]


def test_the_prompt_routes_stream_pings_until_the_first_token(url: str) -> None:
    head, lines = _timed_lines(url, {"prompt": "hi", "stream": True})
    assert head < FIRST_EVENT_AFTER - 0.5
    assert any(line.startswith(":") for at, line in lines if at < FIRST_EVENT_AFTER)  # pings
    assert [line for _, line in lines if line.startswith("event:")] == [
        "event: delta",
        "event: done",
    ]


def test_an_error_after_the_answer_began_is_the_streams_error_event(url: str) -> None:
    body = {"messages": [{"role": "user", "content": "fail"}], "stream": True}
    head, lines = _timed_lines(url + "v1/chat/completions", body)
    assert head < FIRST_EVENT_AFTER - 0.5
    assert any("the GPU fell over" in line for _, line in lines)


def test_a_client_that_leaves_before_the_first_token_ends_the_generation(url: str) -> None:
    with httpx.stream("POST", url, json={"prompt": "hi", "stream": True}, timeout=30) as response:
        assert response.status_code == 200  # answered, the engine still silent
    idle = 'promptwire_requests_in_flight{route="/"} 0.0'
    deadline = time.monotonic() + FIRST_EVENT_AFTER / 2  # before the engine would have spoken
    while idle not in httpx.get(url + "metrics").text and time.monotonic() < deadline:
        time.sleep(0.05)
    assert idle in httpx.get(url + "metrics").text
