"""The OpenAI routes under the server's guarantees against slow, absent and hostile clients and
on shutdown (tests/reliability tests them on the prompt route): the routes share that code, and
these tests check it is wired in, with the answers in OpenAI's shape."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import httpx
import openai
import pytest
from promptwire.server import BackgroundServer, create_app
from promptwire_modal_dummy.engine import DummyEngine
from promptwire_modal_dummy.settings import DummySettings

from tests.reliability.served import promptwire_serve
from tests.support.engines import ObservedEngine, RefusingEngine
from tests.support.network import LOOPBACK_ONLY

pytestmark = LOOPBACK_ONLY

MARGIN = 15.0
CHAT = {"model": "dummy", "messages": [{"role": "user", "content": "a b c"}]}


def _openai_error(response: httpx.Response) -> dict[str, Any]:
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code", "request_id"}, error
    return dict(error)


def test_a_body_must_be_declared_json_and_be_strict_json() -> None:
    with BackgroundServer(create_app(DummyEngine())) as server:
        url = server.url + "v1/chat/completions"
        plain = httpx.post(url, content=json.dumps(CHAT), headers={"Content-Type": "text/plain"})
        assert plain.status_code == 415
        assert _openai_error(plain)["code"] == "unsupported_media_type"

        nan = httpx.post(
            url,
            content=b'{"model": "dummy", "messages": [], "temperature": NaN}',
            headers={"Content-Type": "application/json"},
        )
        assert nan.status_code == 400 and _openai_error(nan)["code"] == "invalid_json"

        # Longer than Python converts: on the /v1 routes, whose replies echo fields of the
        # request, refused as it is read (the prompt route reads it as infinity, which every
        # field it knows refuses, and ignores it elsewhere).
        huge = "9" * 5000
        body = '{"model": "dummy", "prompt": "x", "max_tokens": ' + huge + "}"
        too_long = httpx.post(
            server.url + "v1/completions",
            content=body,
            headers={"Content-Type": "application/json"},
        )
        assert too_long.status_code == 400
        assert "an integer of 5000 digits" in _openai_error(too_long)["message"]

        with_bom = httpx.post(
            url,
            content=b"\xef\xbb\xbf" + json.dumps(CHAT).encode(),
            headers={"Content-Type": "application/json"},
        )
        assert with_bom.status_code == 200, with_bom.text


def test_a_body_that_does_not_arrive_in_time_gets_a_408_in_openais_shape() -> None:
    with BackgroundServer(create_app(DummyEngine(), body_timeout=1.0)) as server:
        host, port = httpx.URL(server.url).host, httpx.URL(server.url).port
        assert port is not None

        async def slow_body() -> bytes:
            reader, writer = await asyncio.open_connection(host, port)
            try:
                writer.write(
                    b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                    b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n"
                    b'{"prompt": '
                )
                await writer.drain()
                async with asyncio.timeout(1.0 + MARGIN):
                    return await reader.read()  # to the end: the server closes the connection
            finally:
                writer.close()

        started = time.monotonic()
        answer = asyncio.run(slow_body())
        waited = time.monotonic() - started
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408 "), head
    assert b"connection: close" in head.lower()
    error = json.loads(body)["error"]
    assert error["code"] == "request_timeout" and error["type"] == "invalid_request_error"
    assert 0.9 < waited < 1.0 + MARGIN


def test_a_stream_abandoned_before_its_first_token_frees_its_slot_at_once() -> None:
    """One slot, a 10 s first token: the SDK's client gives up after half a second; the slot
    must be free, and the generation gone, well before the token would have come."""
    engine = ObservedEngine(DummySettings(echo=True, first_token_delay=10))
    with BackgroundServer(create_app(engine, max_in_flight=1)) as server:
        client = openai.OpenAI(base_url=server.url + "v1", api_key="-", max_retries=0)
        started = time.monotonic()
        with pytest.raises(openai.APITimeoutError):
            client.with_options(timeout=0.5).chat.completions.create(**CHAT, stream=True)
        engine.settings = DummySettings(echo=True)  # from now on the engine answers at once
        while True:
            try:
                reply = client.chat.completions.create(**CHAT)
                break
            except openai.APIStatusError as exc:  # 503 while the slot is taken
                assert exc.status_code == 503
            assert time.monotonic() - started < 8, "the abandoned stream kept its slot"
            time.sleep(0.1)
        assert reply.choices[0].message.content == "User: a b c\n\nAssistant:"  # the echo
        deadline = time.monotonic() + MARGIN
        while engine.active and time.monotonic() < deadline:
            time.sleep(0.05)
        assert engine.active == 0, "the abandoned generation kept running"


# -- a list of prompts: all answered, or none left generating ------------------------------------

SLOW_PROMPT = " ".join(f"w{i}" for i in range(60))
"""Echoed at 20 words a second: three seconds of generation."""


def test_prompts_admitted_beside_one_refused_stop_generating_with_the_refusal() -> None:
    """20 prompts, room for 5: the sixth is refused (503, as a full queue) and the five already
    generating are cancelled before the answer goes out. Before, ``asyncio.gather`` left them
    generating for seconds, and the next client got a 503 for work nobody would read."""
    engine = RefusingEngine(DummySettings(echo=True, tokens_per_second=20), capacity=5)
    with BackgroundServer(create_app(engine)) as server:
        url = server.url + "v1/completions"
        started = time.monotonic()
        refused = httpx.post(url, json={"prompt": [SLOW_PROMPT] * 20}, timeout=MARGIN)
        assert refused.status_code == 503, refused.text
        assert _openai_error(refused)["code"] == "overloaded"
        assert time.monotonic() - started < 2.5, "the refusal waited for the others"
        assert engine.peak == 5 and engine.active == 0, "admitted prompts kept generating"
        # The next client finds the room free.
        again = httpx.post(url, json={"prompt": ["a b"] * 5}, timeout=MARGIN)
        assert again.status_code == 200, again.text
        assert [choice["text"] for choice in again.json()["choices"]] == ["a b"] * 5


def test_a_client_leaving_a_list_of_prompts_leaves_nothing_generating() -> None:
    engine = ObservedEngine(DummySettings(echo=True, tokens_per_second=20))
    with BackgroundServer(create_app(engine)) as server:
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(
                server.url + "v1/completions", json={"prompt": [SLOW_PROMPT] * 20}, timeout=0.5
            )
        assert engine.peak == 20
        deadline = time.monotonic() + MARGIN
        while engine.active and time.monotonic() < deadline:
            time.sleep(0.02)
        assert engine.active == 0, "the abandoned prompts kept generating"
        assert time.monotonic() - deadline + MARGIN < 2.5, "they ran to their end"


def test_sigterm_gives_openai_streams_the_grace_period_then_an_error_chunk() -> None:
    """As on the prompt route: a stream goes on for the grace period, then ends with an error
    chunk (``shutting_down``, no ``[DONE]``); a whole reply still running gets a 503 in OpenAI's
    shape; a short stream finishes normally."""
    grace = 2.0
    env = {
        "PROMPTWIRE_SHUTDOWN_GRACE": str(grace),
        "PROMPTWIRE_MODAL_DUMMY__ECHO": "true",
        "PROMPTWIRE_MODAL_DUMMY__TOKENS_PER_SECOND": "5",
    }
    with promptwire_serve("--log-level", "warning", env=env) as served:
        base = served.url + "v1"

        async def stream(client: httpx.AsyncClient, words: int, log: list[Any]) -> None:
            body = {"model": "dummy", "prompt": " ".join(["w"] * words), "stream": True}
            async with client.stream("POST", base + "/completions", json=body) as response:
                assert response.status_code == 200
                async for line in response.aiter_lines():
                    if line.startswith("data: "):
                        data = line.removeprefix("data: ")
                        chunk = data if data == "[DONE]" else json.loads(data)
                        log.append((time.monotonic(), chunk))

        async def scenario() -> tuple[float, list[Any], list[Any], httpx.Response]:
            long: list[Any] = []
            short: list[Any] = []
            async with httpx.AsyncClient(timeout=60) as client:
                tasks = [
                    asyncio.create_task(stream(client, 200, long)),
                    asyncio.create_task(stream(client, 6, short)),
                ]
                long_chat = {
                    "model": "dummy",
                    "messages": [{"role": "user", "content": " ".join(["w"] * 200)}],
                }
                whole = asyncio.create_task(client.post(base + "/chat/completions", json=long_chat))
                deadline = time.monotonic() + MARGIN
                while not long or not short:
                    assert time.monotonic() < deadline
                    await asyncio.sleep(0.05)
                await asyncio.sleep(0.3)
                signalled = time.monotonic()
                served.process.terminate()  # SIGTERM
                await asyncio.gather(*tasks)
                return signalled, long, short, await whole

        signalled, long, short, whole = asyncio.run(scenario())
        served.process.wait(timeout=grace + MARGIN)

    after = [data for at, data in long if at > signalled]
    assert len(after) > 1, "the stream was cut without its grace period"
    assert all("choices" in data for data in after[:-1])
    assert after[-1]["error"]["code"] == "shutting_down", long[-3:]
    assert short[-1][1] == "[DONE]"  # finished within the grace period
    assert whole.status_code == 503, whole.text
    assert _openai_error(whole)["code"] == "shutting_down"
    assert whole.headers["retry-after"] == "1"
