"""PromptwireLLM against a real server: the whole LangChain LLM contract."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from langchain_core.callbacks import AsyncCallbackHandler, BaseCallbackHandler
from langchain_core.prompts import PromptTemplate
from promptwire import PromptwireLLM

from tests.support.engines import ObservedEngine


class TokenRecorder(BaseCallbackHandler):
    def __init__(self) -> None:
        self.tokens: list[tuple[float, str]] = []

    def on_llm_new_token(self, token: str, **kwargs: Any) -> None:
        self.tokens.append((time.monotonic(), token))


class AsyncTokenRecorder(AsyncCallbackHandler):
    def __init__(self) -> None:
        self.tokens: list[str] = []

    async def on_llm_new_token(self, token: str, **kwargs: Any) -> None:
        self.tokens.append(token)


def test_invoke_and_ainvoke(dummy_url: str) -> None:
    llm = PromptwireLLM(endpoint_url=dummy_url)
    assert llm.invoke("Identify yourself, bot!") == "hello world"
    assert asyncio.run(llm.ainvoke("Identify yourself, bot!")) == "hello world"


def test_chain_with_the_guide_template(dummy_url: str) -> None:
    chain = PromptTemplate.from_template(
        "Question: {question}\n\nAnswer: Let's think step by step."
    ) | (PromptwireLLM(endpoint_url=dummy_url))
    assert chain.invoke({"question": "Who won?"}) == "hello world"


def test_model_kwargs_and_call_kwargs_are_sent(observed: tuple[ObservedEngine, str]) -> None:
    engine, url = observed
    llm = PromptwireLLM(endpoint_url=url, model_kwargs={"temperature": 0.5, "custom": "kept"})
    llm.invoke("a b c", max_tokens=2, top_k=3)
    request = engine.requests[-1]
    assert request.known_params() == {"temperature": 0.5, "max_tokens": 2, "top_k": 3}
    assert request.model_extra == {"custom": "kept"}


def test_stop_is_sent_and_applied(observed: tuple[ObservedEngine, str]) -> None:
    engine, url = observed
    llm = PromptwireLLM(endpoint_url=url)
    assert llm.invoke("one two STOP three", stop=["STOP"]) == "one two "
    assert engine.requests[-1].stop == ["STOP"]
    assert "".join(llm.stream("one two STOP three", stop=["STOP"])) == "one two "


def test_usage_and_finish_reason_reach_generation_info(
    observed: tuple[ObservedEngine, str],
) -> None:
    _, url = observed
    result = PromptwireLLM(endpoint_url=url).generate(["a b c", "d e"], max_tokens=2)
    infos = [g[0].generation_info for g in result.generations]
    assert [i["finish_reason"] for i in infos] == ["length", "stop"]
    assert infos[0]["usage"] == {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
    assert result.llm_output == {
        "token_usage": {"prompt_tokens": 5, "completion_tokens": 4, "total_tokens": 9},
        "model_name": "dummy",
    }


def test_stream_yields_pieces_as_the_server_makes_them(slow: tuple[ObservedEngine, str]) -> None:
    _, url = slow
    recorder = TokenRecorder()
    llm = PromptwireLLM(endpoint_url=url)
    arrivals = []
    for piece in llm.stream("w1 w2 w3 w4 w5 w6", config={"callbacks": [recorder]}):
        if piece:
            arrivals.append((time.monotonic(), piece))
    assert "".join(p for _, p in arrivals) == "w1 w2 w3 w4 w5 w6"
    assert len(arrivals) == 6
    # Pieces were spread over the generation (about 0.25 s at 20 words/s), not delivered at once.
    assert arrivals[-1][0] - arrivals[0][0] > 0.1
    assert [t for _, t in recorder.tokens] == [p for _, p in arrivals]


def test_astream_fires_async_callbacks(slow: tuple[ObservedEngine, str]) -> None:
    _, url = slow
    recorder = AsyncTokenRecorder()

    async def run() -> list[str]:
        llm = PromptwireLLM(endpoint_url=url)
        return [p async for p in llm.astream("x y z", config={"callbacks": [recorder]}) if p]

    pieces = asyncio.run(run())
    assert pieces == ["x ", "y ", "z"] == recorder.tokens


def test_streaming_flag_makes_invoke_stream_through_callbacks(
    observed: tuple[ObservedEngine, str],
) -> None:
    engine, url = observed
    recorder = TokenRecorder()
    llm = PromptwireLLM(endpoint_url=url, streaming=True)
    assert llm.invoke("a b", config={"callbacks": [recorder]}) == "a b"
    assert engine.requests[-1].stream is True
    assert [t for _, t in recorder.tokens] == ["a ", "b"]


def test_abatch_runs_prompts_concurrently(slow: tuple[ObservedEngine, str]) -> None:
    engine, url = slow
    engine.peak = 0
    llm = PromptwireLLM(endpoint_url=url, max_concurrency=8)
    prompts = [f"prompt {i}" for i in range(24)]
    replies = asyncio.run(llm.abatch(prompts))
    assert replies == prompts  # echo: every prompt got its own reply, in order
    assert 4 <= engine.peak <= 8  # bounded by max_concurrency, and truly concurrent


def test_batch_runs_prompts_concurrently(slow: tuple[ObservedEngine, str]) -> None:
    engine, url = slow
    engine.peak = 0
    llm = PromptwireLLM(endpoint_url=url, max_concurrency=6)
    prompts = [f"p{i}" for i in range(12)]
    assert llm.batch(prompts) == prompts
    assert 3 <= engine.peak <= 6


def test_abatch_honours_the_configs_max_concurrency(slow: tuple[ObservedEngine, str]) -> None:
    engine, url = slow
    engine.peak = 0
    llm = PromptwireLLM(endpoint_url=url, max_concurrency=2)
    prompts = [f"q{i}" for i in range(12)]
    replies = asyncio.run(llm.abatch(prompts, config={"max_concurrency": 6}))
    assert replies == prompts
    assert 3 <= engine.peak <= 6  # the config's limit, not the model's 2 nor LangChain's waves


def test_one_client_is_made_under_concurrent_first_use() -> None:
    from concurrent.futures import ThreadPoolExecutor

    llm = PromptwireLLM(endpoint_url="http://127.0.0.1:9/")
    with ThreadPoolExecutor(16) as pool:
        clients = list(pool.map(lambda _: llm.client, range(64)))
        pools = list(pool.map(lambda _: llm.client.sync_client, range(64)))
    assert len({id(c) for c in clients}) == 1
    assert len({id(p) for p in pools}) == 1
    llm.close()


def test_generation_fields_are_sent_and_a_call_beats_them(
    observed: tuple[ObservedEngine, str],
) -> None:
    engine, url = observed
    fields = {"max_tokens": 50, "temperature": 0.2, "top_p": 0.9, "top_k": 3, "seed": 7}
    llm = PromptwireLLM(endpoint_url=url, stop=["STOP"], model_kwargs={"custom": 1}, **fields)
    assert llm.invoke("one STOP two") == "one "
    request = engine.requests[-1]
    assert request.known_params() == {**fields, "stop": ["STOP"]}
    assert request.model_extra == {"custom": 1}
    llm.invoke("x", temperature=0.7, stop=["Y"])
    assert engine.requests[-1].temperature == 0.7 and engine.requests[-1].stop == ["Y"]
