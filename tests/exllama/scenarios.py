"""The scenarios the real ExLlamaV2 engine must pass, run twice: on a GPU with the real model
(``test_gpu_engine``) and on the CPU tier, exllamav2 with a stand-in forward pass
(``test_exllama_cpu_tier``).

A module runs them by subclassing ``EngineScenarios`` (and ``ConformanceScenarios``) and providing
the fixtures ``tiny_model`` (the model directory, ``tiny_model.build_tiny_model``) and ``served``
(the engine behind a real server, built with ``serve_tiny_model``).
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

import httpx
import openai
import pytest
from httpx_sse import connect_sse
from langchain_core.messages import HumanMessage, SystemMessage
from langchain_openai import ChatOpenAI
from promptwire import ChatPromptwire, PromptwireLLM
from promptwire.protocol import ChatMessage, PromptRequest
from promptwire.testing import EndpointConformanceTests
from promptwire_modal_exllama.engine import BatchingEngine
from promptwire_modal_exllama.generation import DynamicGenerator, EncodedPrompt
from promptwire_modal_exllama.runtime import ExllamaRuntime, create_engine
from promptwire_modal_exllama.settings import ExllamaSettings

from tests.exllama.tiny_model import BOS_ID, MAX_POSITIONS
from tests.support.network import LOOPBACK_ONLY
from tests.support.servers import serve_engine
from tests.support.waiting import wait_until


class RecordingGenerator:
    """The real dynamic generator, with the most jobs it ever ran at once recorded. ``hold``
    keeps new jobs waiting until the test has queued them all."""

    def __init__(self, inner: Any, hold: threading.Event) -> None:
        self.inner = inner
        self.hold = hold
        self.max_active = 0

    def enqueue(self, job: Any) -> Any:
        return self.inner.enqueue(job)

    def cancel(self, job: Any) -> Any:
        return self.inner.cancel(job)

    def num_remaining_jobs(self) -> int:
        return int(self.inner.num_remaining_jobs())

    def iterate(self) -> list[dict[str, Any]]:
        if not self.hold.wait(timeout=0.01):
            return []
        results: list[dict[str, Any]] = self.inner.iterate()
        self.max_active = max(self.max_active, len(self.inner.active_jobs))
        return results

    def __getattr__(self, name: str) -> Any:
        """The rest (its job lists and page table, which the engine's metrics count) as the
        real generator has it."""
        return getattr(self.inner, name)


class Served(NamedTuple):
    engine: BatchingEngine
    url: str
    generators: list[RecordingGenerator]
    hold: threading.Event
    encoded: list[tuple[bool, list[int]]]
    """Every prompt the runtime encoded: whether a chat template wrote it, and its token ids."""
    runtimes: list[ExllamaRuntime]


@contextmanager
def serve_tiny_model(settings: ExllamaSettings) -> Iterator[Served]:
    """The engine over ``settings`` behind a real server, its generators and encodings recorded."""
    generators: list[RecordingGenerator] = []
    encoded: list[tuple[bool, list[int]]] = []
    runtimes: list[ExllamaRuntime] = []
    hold = threading.Event()
    hold.set()

    def load(settings: ExllamaSettings) -> ExllamaRuntime:
        runtime = ExllamaRuntime(settings)
        new_generator = runtime.new_generator

        def recording() -> DynamicGenerator:
            generators.append(RecordingGenerator(new_generator(), hold))
            return generators[-1]

        encode = runtime.encode

        def recording_encode(prompt: str, *, from_template: bool = False) -> EncodedPrompt:
            result = encode(prompt, from_template=from_template)
            encoded.append((from_template, [int(i) for i in result.tokens[0].tolist()]))
            return result

        runtime.new_generator = recording  # type: ignore[method-assign]
        runtime.encode = recording_encode  # type: ignore[method-assign]
        runtimes.append(runtime)
        return runtime

    engine = BatchingEngine(settings, load)
    with serve_engine(engine) as server:
        yield Served(engine, server.url, generators, hold, encoded, runtimes)


def tiny_settings(model_dir: Path, **overrides: Any) -> ExllamaSettings:
    return ExllamaSettings(
        **{"model_dir": model_dir, "cache_size": 16384, "model_name": "tiny-llama", **overrides}
    )


class EngineScenarios:
    """Whole replies, streaming, batching, stops, context limits, cancellation, quantized caches
    and the chat template, through HTTP and LangChain."""

    def test_the_engine_factory_loads_the_model(self, tiny_model: Path) -> None:
        engine = create_engine(ExllamaSettings(model_dir=tiny_model, cache_size=4096))
        asyncio.run(engine.start())
        try:
            assert engine.ready
            assert engine.model_name == tiny_model.name
            assert engine.max_seq_len == MAX_POSITIONS
        finally:
            asyncio.run(engine.stop())

    def test_a_whole_reply_over_http(self, served: Served) -> None:
        response = httpx.post(
            served.url,
            json={"prompt": "The quick brown fox", "max_tokens": 12, "temperature": 0},
            timeout=120,
        )
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["prompt"]
        assert body["model"] == "tiny-llama"
        assert body["finish_reason"] == "length"
        assert body["usage"]["completion_tokens"] == 12
        assert body["usage"]["prompt_tokens"] >= 2  # BOS plus the prompt

    def test_streaming_gives_the_same_greedy_text(self, served: Served) -> None:
        request = {"prompt": "Pack my box", "max_tokens": 16, "temperature": 0}
        whole = httpx.post(served.url, json=request, timeout=120).json()["prompt"]
        with (
            httpx.Client(timeout=120) as client,
            connect_sse(client, "POST", served.url, json={**request, "stream": True}) as source,
        ):
            events = [(e.event, json.loads(e.data)) for e in source.iter_sse()]
        assert "".join(data["text"] for event, data in events if event == "delta") == whole
        assert events[-1][0] == "done" and events[-1][1]["usage"]["completion_tokens"] == 16

    def test_the_langchain_llm_with_three_settings(
        self, served: Served, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("PROMPTWIRE_BACKEND", "modal_exllama")
        monkeypatch.setenv("PROMPTWIRE_ENDPOINT_URL", served.url)
        llm = PromptwireLLM(model_kwargs={"max_tokens": 10, "temperature": 0}, timeout=120)
        whole = llm.invoke("Sphinx of black quartz")
        assert whole and "".join(llm.stream("Sphinx of black quartz")) == whole
        llm.close()

    def test_sixteen_concurrent_requests_are_batched(
        self, served: Served, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("PROMPTWIRE_ENDPOINT_URL", served.url)
        llm = PromptwireLLM(
            model_kwargs={"max_tokens": 24, "temperature": 0}, max_concurrency=16, timeout=120
        )
        generator = served.generators[-1]
        generator.max_active = 0
        served.hold.clear()
        answers: list[str] = []
        worker = threading.Thread(
            target=lambda: answers.extend(llm.batch([f"How vexingly {i}" for i in range(16)]))
        )
        worker.start()
        try:
            wait_until(lambda: generator.num_remaining_jobs() == 16, timeout=60)
        finally:
            served.hold.set()
        worker.join(timeout=120)
        assert len(answers) == 16 and all(answers)
        # Unpaged (no usable flash-attn) the generator runs one sequence at a time.
        assert generator.max_active == (16 if served.runtimes[-1].paged else 1)
        llm.close()

    def test_stop_strings_end_the_reply_before_them(self, served: Served) -> None:
        request = {"prompt": "A prompt endpoint", "max_tokens": 40, "temperature": 0}
        whole = httpx.post(served.url, json=request, timeout=120).json()["prompt"]
        middle = len(whole) // 2
        stop = whole[middle : middle + 3]
        assert stop.strip(), whole
        cut = httpx.post(served.url, json={**request, "stop": [stop]}, timeout=120).json()
        assert cut["prompt"] == whole[: whole.index(stop)]
        assert cut["finish_reason"] == "stop"

    def test_a_prompt_longer_than_the_context_is_refused_before_the_gpu(
        self, served: Served
    ) -> None:
        generator = served.generators[-1]
        response = httpx.post(served.url, json={"prompt": "jump " * 3000}, timeout=120)
        assert response.status_code == 422
        assert "2048" in response.json()["error"]["message"]
        assert generator.num_remaining_jobs() == 0

    def test_a_client_that_leaves_frees_its_job(self, served: Served) -> None:
        loop = served.engine.loop
        assert loop is not None
        with (
            httpx.Client(timeout=120) as client,
            connect_sse(
                client,
                "POST",
                served.url,
                json={"prompt": "The lazy dog", "max_tokens": 1500, "stream": True},
            ) as source,
        ):
            events = source.iter_sse()
            assert next(events).event == "delta"
            assert next(events).event == "delta"
        wait_until(lambda: loop.in_flight == 0 and served.generators[-1].num_remaining_jobs() == 0)
        # Its cache pages are free again: a request that needs them runs.
        after = httpx.post(served.url, json={"prompt": "again", "max_tokens": 4}, timeout=120)
        assert after.status_code == 200

    @pytest.mark.parametrize("cache_mode", ["Q4", "Q6", "Q8"])
    def test_quantized_caches_generate(self, tiny_model: Path, cache_mode: str) -> None:
        engine = create_engine(
            ExllamaSettings(model_dir=tiny_model, cache_size=4096, cache_mode=cache_mode)
        )

        async def run() -> str:
            await engine.start()
            try:
                completion = await engine.complete(PromptRequest(prompt="Pack my", max_tokens=6))
                return completion.text
            finally:
                await engine.stop()

        assert asyncio.run(run())

    def test_chat_promptwire_gets_the_models_chat_template(self, served: Served) -> None:
        template = served.engine.chat_template
        assert template is not None and template.source == "tokenizer_config.json"
        rendered = served.engine.render_chat(
            [
                ChatMessage(role="system", content="Be brief."),
                ChatMessage(role="user", content="The quick brown fox"),
            ]
        )
        assert rendered == "<s>[system] Be brief.</s>\n[user] The quick brown fox</s>\n[assistant] "

        chat = ChatPromptwire(endpoint_url=served.url, max_tokens=10, temperature=0, timeout=120)
        conversation = [SystemMessage("Be brief."), HumanMessage("The quick brown fox")]
        reply = chat.invoke(conversation)
        assert isinstance(reply.content, str) and reply.content
        from_template, ids = served.encoded[-1]
        assert from_template
        assert ids[0] == BOS_ID and ids.count(BOS_ID) == 1  # the template's BOS, and no other
        assert reply.usage_metadata is not None
        assert reply.usage_metadata["input_tokens"] == len(ids)
        assert "".join(str(chunk.content) for chunk in chat.stream(conversation)) == reply.content
        chat.close()

        # The rendering sent as a raw prompt (it starts with BOS, so none is added): the same
        # tokens, so the same greedy reply.
        raw = httpx.post(
            served.url, json={"prompt": rendered, "max_tokens": 10, "temperature": 0}, timeout=120
        )
        assert served.encoded[-1] == (False, ids)
        assert raw.json()["prompt"] == reply.content

    def test_the_openai_api_through_the_official_clients(self, served: Served) -> None:
        """The same engine through its OpenAI routes: OpenAI's SDK and ChatOpenAI get the
        greedy text of the prompt route, conversations rendered by the model's template."""
        request = {"prompt": "Pack my box", "max_tokens": 12, "temperature": 0}
        native = httpx.post(served.url, json=request, timeout=120).json()
        client = openai.OpenAI(base_url=served.url + "v1", api_key="unused", timeout=120)
        completion = client.completions.create(model="tiny-llama", **request)
        assert completion.choices[0].text == native["prompt"]
        assert completion.choices[0].finish_reason == "length"
        assert completion.usage is not None and completion.usage.completion_tokens == 12
        streamed = client.completions.create(model="tiny-llama", stream=True, **request)
        assert "".join(chunk.choices[0].text for chunk in streamed) == native["prompt"]

        chat = ChatOpenAI(
            model="tiny-llama",
            base_url=served.url + "v1",
            api_key="unused",
            max_tokens=8,
            temperature=0,
            timeout=120,
        )
        reply = chat.invoke([SystemMessage("Be brief."), HumanMessage("The quick brown fox")])
        assert isinstance(reply.content, str) and reply.content
        from_template, ids = served.encoded[-1]
        assert from_template and ids[0] == BOS_ID and ids.count(BOS_ID) == 1
        assert reply.usage_metadata is not None and reply.usage_metadata["output_tokens"] <= 8


class ConformanceScenarios(EndpointConformanceTests):
    """promptwire's conformance kit against the real engine serving the tiny model."""

    pytestmark = LOOPBACK_ONLY
    prompt = "The quick brown fox"
    max_tokens = 8

    @pytest.fixture(scope="class")
    @classmethod
    def endpoint_url(cls, served: Served) -> str:
        return served.url
