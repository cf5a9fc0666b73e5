"""The batching engine behind the real protocol app on uvicorn, called with httpx and through
``PromptwireLLM`` with ``PROMPTWIRE_BACKEND=modal_exllama``."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from typing import NamedTuple

import httpx
import openai
import pytest
from httpx_sse import connect_sse
from promptwire import PromptwireLLM
from promptwire.errors import ServerError, StreamError
from promptwire_modal_exllama.engine import BatchingEngine

from tests.exllama.fakes import DEFAULT_REPLY, FakeRuntime, fake_engine
from tests.support.servers import serve_engine
from tests.support.waiting import wait_until

WHOLE_REPLY = "".join(" " + word for word in DEFAULT_REPLY)


class Served(NamedTuple):
    engine: BatchingEngine
    runtime: FakeRuntime
    url: str


@pytest.fixture()
def served() -> Iterator[Served]:
    runtime = FakeRuntime()
    engine = fake_engine(runtime, model_name="tiny-exl2")
    with serve_engine(engine) as server:
        yield Served(engine, runtime, server.url)
    runtime.gate.set()


def _llm(url: str, monkeypatch: pytest.MonkeyPatch, **kwargs: object) -> PromptwireLLM:
    monkeypatch.setenv("PROMPTWIRE_BACKEND", "modal_exllama")
    monkeypatch.setenv("PROMPTWIRE_ENDPOINT_URL", url)
    return PromptwireLLM(timeout=60, **kwargs)  # type: ignore[arg-type]


def test_a_whole_reply_follows_the_protocol(
    served: Served,
) -> None:
    _, _, url = served
    response = httpx.post(url, json={"prompt": "a b", "extra": "ignored"}, timeout=30)
    assert response.status_code == 200
    assert response.json() == {
        "prompt": WHOLE_REPLY,
        "usage": {"prompt_tokens": 3, "completion_tokens": len(DEFAULT_REPLY) + 1},
        "finish_reason": "stop",
        "model": "tiny-exl2",
    }
    health = httpx.get(url + "health", timeout=30)
    assert health.status_code == 200 and health.json()["model"] == "tiny-exl2"


def test_streaming_sends_each_piece_then_done(
    served: Served,
) -> None:
    _, _, url = served
    with (
        httpx.Client(timeout=30) as client,
        connect_sse(client, "POST", url, json={"prompt": "p", "stream": True}) as source,
    ):
        events = [(e.event, json.loads(e.data)) for e in source.iter_sse()]
    assert [data["text"] for event, data in events if event == "delta"] == [
        " " + word for word in DEFAULT_REPLY
    ]
    assert events[-1][0] == "done" and events[-1][1]["finish_reason"] == "stop"


def test_the_langchain_llm_needs_only_the_backend_and_the_url(
    served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, runtime, url = served
    monkeypatch.setenv("PROMPTWIRE_MODAL_EXLLAMA__REQUEST_PARAMS", '{"top_k": 40}')
    llm = _llm(url, monkeypatch)
    assert llm.invoke("hello there") == WHOLE_REPLY
    assert "".join(llm.stream("hello there")) == WHOLE_REPLY
    assert llm.invoke("hello", stop=["fox"]) == " the quick brown "
    assert all(job.params.top_k == 40 for job in runtime.generator.enqueued)
    llm.close()


def test_sixteen_concurrent_langchain_prompts_are_batched(
    served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, runtime, url = served
    llm = _llm(url, monkeypatch, max_concurrency=16, model_kwargs={"max_tokens": 4})
    runtime.gate.clear()
    answers: list[str] = []
    worker = threading.Thread(
        target=lambda: answers.extend(llm.batch([f"prompt {i}" for i in range(16)]))
    )
    worker.start()
    wait_until(lambda: len(runtime.generator.enqueued) == 16)
    runtime.gate.set()
    worker.join(timeout=60)
    assert answers == [" the quick brown fox"] * 16
    assert runtime.generator.max_batch == 16
    llm.close()


def test_a_prompt_longer_than_the_context_gets_422_before_the_gpu(
    served: Served,
) -> None:
    _, runtime, url = served
    response = httpx.post(url, json={"prompt": "word " * 100}, timeout=30)
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["type"] == "invalid_request"
    assert "101 tokens" in error["message"]
    too_much = httpx.post(url, json={"prompt": "word", "max_tokens": 1000}, timeout=30)
    assert too_much.status_code == 422
    assert runtime.generator.enqueued == []


def test_a_client_that_leaves_a_stream_cancels_its_job(
    served: Served,
) -> None:
    engine, runtime, url = served
    runtime.reply = ["word"] * 1000
    runtime.step_delay = 0.02
    with (
        httpx.Client(timeout=30) as client,
        connect_sse(
            client, "POST", url, json={"prompt": "p", "stream": True, "max_tokens": 60}
        ) as source,
    ):
        first = next(source.iter_sse())
        assert first.event == "delta"
    loop = engine.loop
    assert loop is not None
    wait_until(lambda: runtime.generator.cancelled != [])
    wait_until(lambda: loop.generator_jobs == 0 and loop.in_flight == 0)


def test_a_client_that_leaves_a_whole_reply_cancels_its_job(
    served: Served,
) -> None:
    _, runtime, url = served
    runtime.gate.clear()
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(url, json={"prompt": "p"}, timeout=httpx.Timeout(30, read=0.5))
    wait_until(lambda: runtime.generator.cancelled != [])
    assert runtime.generator.num_remaining_jobs() == 0
    runtime.gate.set()


def test_a_generator_failure_is_a_500_and_the_next_request_works(
    served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, runtime, url = served
    runtime.fail_iterations = 1
    response = httpx.post(url, json={"prompt": "p"}, timeout=30)
    assert response.status_code == 500
    assert response.json()["error"]["type"] == "server_error"
    assert httpx.post(url, json={"prompt": "p"}, timeout=30).json()["prompt"] == WHOLE_REPLY

    llm = _llm(url, monkeypatch, max_retries=0)
    runtime.fail_iterations = 1
    with pytest.raises(ServerError):
        llm.invoke("p")
    assert llm.invoke("p") == WHOLE_REPLY
    llm.close()


def test_a_failure_mid_stream_is_an_error_event(
    served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, runtime, url = served
    runtime.reply = ["word"] * 1000
    llm = _llm(url, monkeypatch, max_retries=0)
    pieces: list[str] = []
    with pytest.raises(StreamError) as failed:
        for piece in llm.stream("p", max_tokens=50):
            pieces.append(piece)
            if len(pieces) == 3:
                runtime.fail_iterations = 1
    assert failed.value.error_type == "server_error"
    assert pieces[:3] == [" word"] * 3
    llm.close()


def test_the_openai_routes_batch_sixteen_concurrent_sdk_calls(served: Served) -> None:
    """OpenAI's async SDK on the engine's OpenAI routes: its requests join one batch."""
    _, runtime, url = served
    runtime.gate.clear()

    async def sixteen() -> list[str]:
        async with openai.AsyncOpenAI(base_url=url + "v1", api_key="x", max_retries=0) as client:
            calls = [
                client.chat.completions.create(
                    model="tiny-exl2",
                    messages=[{"role": "user", "content": f"p {i}"}],
                    max_tokens=4,
                )
                for i in range(16)
            ]
            tasks = [asyncio.ensure_future(call) for call in calls]
            await asyncio.to_thread(wait_until, lambda: len(runtime.generator.enqueued) == 16)
            runtime.gate.set()
            replies = await asyncio.gather(*tasks)
        return [reply.choices[0].message.content or "" for reply in replies]

    assert asyncio.run(sixteen()) == [" the quick brown fox"] * 16
    assert runtime.generator.max_batch == 16


def test_leaving_an_openai_stream_cancels_its_job(served: Served) -> None:
    engine, runtime, url = served
    runtime.reply = ["word"] * 1000
    runtime.step_delay = 0.02
    client = openai.OpenAI(base_url=url + "v1", api_key="x", max_retries=0)
    stream = client.completions.create(model="tiny-exl2", prompt="p", max_tokens=60, stream=True)
    assert next(iter(stream)).choices[0].text
    stream.close()
    loop = engine.loop
    assert loop is not None
    wait_until(lambda: runtime.generator.cancelled != [])
    wait_until(lambda: loop.generator_jobs == 0 and loop.in_flight == 0)
