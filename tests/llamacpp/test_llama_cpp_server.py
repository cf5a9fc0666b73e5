"""The ``openai`` backend against an OpenAI-compatible server this project did not write:
llama-cpp-python's server (llama.cpp, built from source on install) serving a tiny random-weight
GGUF model that the test writes itself (``tiny_gguf.py``: greedy decoding writes the alphabet on
from the prompt's last letter, so every reply here is known exactly).

The models are configured as a user would: ``PROMPTWIRE_BACKEND=openai``, the server's base URL,
its API key and the model name in the environment, nothing passed in code.

The server runs from the workspace's environment, where ``uv sync --all-packages`` installs
llama-cpp-python with the llamacpp backend (the same build of llama.cpp). Without it every test
here skips with the reason. Marked ``llamacpp``: ``uv run pytest -m llamacpp`` runs this tier alone.
llama-cpp-python's server has no reasoning models' ``reasoning_content``; that path is tested
against scripted servers in tests/openai/test_openai_backend.py.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage
from promptwire import ChatPromptwire, PromptwireLLM
from promptwire.errors import AuthenticationError, InvalidRequestError

from tests.support.network import LOOPBACK_ONLY, free_port

HERE = Path(__file__).resolve().parent
MODEL = "tiny-llama"
API_KEY = "llama-cpp-key-5e1d"
CONTEXT = 512
START_TIMEOUT = 120.0


def _tier_python() -> str | None:
    """This interpreter, when it can run llama-cpp-python's server and write the model."""
    needed = ("llama_cpp", "starlette_context", "gguf")
    return sys.executable if all(importlib.util.find_spec(n) for n in needed) else None


PYTHON = _tier_python()

pytestmark = [
    *LOOPBACK_ONLY,
    pytest.mark.llamacpp,
    pytest.mark.skipif(
        PYTHON is None,
        reason="llama-cpp-python is not installed (uv sync --all-packages compiles it)",
    ),
]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """llama-cpp-python's server on the tiny model; yields its base URL (ending in /v1)."""
    assert PYTHON is not None
    directory = tmp_path_factory.mktemp("llama-cpp")
    model = directory / "tiny.gguf"
    subprocess.run([PYTHON, str(HERE / "tiny_gguf.py"), str(model)], check=True, timeout=120)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROMPTWIRE_")}
    command = [PYTHON, "-m", "llama_cpp.server", "--model", str(model)]
    options = {
        "model_alias": MODEL,
        "host": "127.0.0.1",
        "port": port,
        "n_ctx": CONTEXT,
        "n_threads": 1,
        "n_threads_batch": 1,
        "api_key": API_KEY,
        # Its default stops a stream when another request arrives; promptwire's batches are
        # concurrent, so requests wait for each other instead (the server runs one at a time).
        "interrupt_requests": "false",
        "verbose": "false",
    }
    for name, value in options.items():
        command += [f"--{name}", str(value)]
    # A file, not a pipe: a pipe nobody reads would block the server once it filled.
    log = directory / "server.log"
    with log.open("w") as output:
        process = subprocess.Popen(command, env=env, stdout=output, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                if httpx.get(base + "/models", headers=_auth(), timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the llama.cpp server did not start: {log.read_text()[-3000:]}")
            time.sleep(0.2)
        yield base
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {API_KEY}"}


@pytest.fixture()
def openai_backend(server: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("PROMPTWIRE_BACKEND", "openai")
    monkeypatch.setenv("PROMPTWIRE_ENDPOINT_URL", server)
    monkeypatch.setenv("PROMPTWIRE_API_KEY", API_KEY)
    monkeypatch.setenv("PROMPTWIRE_OPENAI__MODEL", MODEL)
    monkeypatch.setenv("PROMPTWIRE_TIMEOUT", "60")
    return server


class Tokens(BaseCallbackHandler):
    def __init__(self) -> None:
        self.tokens: list[str] = []

    def on_llm_new_token(self, token: str, **kwargs: Any) -> None:
        self.tokens.append(token)


def test_the_server_is_llama_cpps_and_the_model_follows_the_alphabet(server: str) -> None:
    listed = httpx.get(server + "/models", headers=_auth(), timeout=10).json()
    assert [model["id"] for model in listed["data"]] == [MODEL]
    assert listed["data"][0]["owned_by"] == "me"  # llama-cpp-python's own answer, not ours
    answer = httpx.post(
        server + "/completions",
        json={"prompt": "abc", "max_tokens": 5, "temperature": 0},
        headers=_auth(),
        timeout=30,
    ).json()
    assert answer["choices"][0]["text"] == "defgh"


def test_the_llm_whole_and_streamed(openai_backend: str) -> None:
    llm = PromptwireLLM(max_tokens=6, temperature=0, seed=1)
    result = llm.generate(["hello world"])
    generation = result.generations[0][0]
    assert generation.text == "efghij"
    info = generation.generation_info or {}
    assert info["finish_reason"] == "length"
    # BOS, the space marker, 11 characters (the model's tokens are bytes): the server's count.
    assert info["usage"] == {"prompt_tokens": 13, "completion_tokens": 6, "total_tokens": 19}
    assert info["model"] == MODEL
    assert result.llm_output is not None
    assert result.llm_output["token_usage"]["completion_tokens"] == 6

    tokens = Tokens()
    streamed = list(llm.stream("hello world", config={"callbacks": [tokens]}))
    assert "".join(streamed) == "efghij"
    assert "".join(tokens.tokens) == "efghij" and len(tokens.tokens) >= 6  # one per token
    llm.close()


def test_stops_reach_the_server(openai_backend: str) -> None:
    llm = PromptwireLLM(max_tokens=8, temperature=0)
    assert llm.invoke("hello world", stop=["h"]) == "efg"
    assert llm.invoke("hello world", stop=["xyz", "ghi"]) == "ef"
    assert "".join(llm.stream("hello world", stop=["i"])) == "efgh"
    result = llm.generate(["xyz"], stop=["c"])
    assert result.generations[0][0].text == "ab"
    assert (result.generations[0][0].generation_info or {})["finish_reason"] == "stop"
    llm.close()


def test_the_chat_model_rendered_by_the_servers_template(openai_backend: str) -> None:
    chat = ChatPromptwire(max_tokens=5, temperature=0)
    alone = chat.invoke([HumanMessage("hello world")])
    conversation = [SystemMessage("say hello"), HumanMessage("hello world")]
    reply = chat.invoke(conversation)
    # The server rendered the messages with the model's template (contents joined by
    # newlines), so the reply goes on from the last message's last letter.
    assert reply.content == alone.content == "efghi"
    assert reply.usage_metadata is not None and alone.usage_metadata is not None
    assert reply.usage_metadata["output_tokens"] == 5
    # The system message reached the server: a token per character of "say hello" at least.
    assert reply.usage_metadata["input_tokens"] >= alone.usage_metadata["input_tokens"] + 9
    assert reply.response_metadata["finish_reason"] == "length"
    history = [HumanMessage("abc"), AIMessage("def"), HumanMessage("xyz")]
    assert chat.invoke(history, stop=["d"]).content == "abc"

    tokens = Tokens()
    chunks = list(chat.stream(conversation, config={"callbacks": [tokens]}))
    assert "".join(str(chunk.content) for chunk in chunks) == "efghi"
    assert "".join(tokens.tokens) == "efghi"
    chat.close()


def test_batches_sync_and_async(openai_backend: str) -> None:
    llm = PromptwireLLM(max_tokens=3, temperature=0, max_concurrency=4)
    prompts = ["abc", "xyz", "hello world", "the quick brown fox"]
    expected = ["def", "abc", "efg", "yza"]
    assert llm.batch(prompts) == expected
    result = llm.generate(prompts)
    assert [generations[0].text for generations in result.generations] == expected
    chat = ChatPromptwire(max_tokens=3, temperature=0)
    replies = chat.batch([[HumanMessage(prompt)] for prompt in prompts])
    assert [reply.content for reply in replies] == expected
    llm.close()
    chat.close()


async def test_async_calls(openai_backend: str) -> None:
    llm = PromptwireLLM(max_tokens=3, temperature=0, max_concurrency=4)
    prompts = ["abc", "xyz", "hello world", "the quick brown fox"]
    assert await llm.abatch(prompts) == ["def", "abc", "efg", "yza"]
    assert await llm.ainvoke("klm") == "nop"
    assert "".join([piece async for piece in llm.astream("klm")]) == "nop"
    chat = ChatPromptwire(max_tokens=3, temperature=0)
    streamed = [str(chunk.content) async for chunk in chat.astream("hello")]
    assert "".join(streamed) == "pqr"
    assert (await chat.ainvoke("hello")).content == "pqr"
    await llm.aclose()
    await chat.aclose()


def test_its_errors_are_typed_name_the_url_and_keep_the_key_out(
    openai_backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    too_long = " ".join(["hello"] * CONTEXT)
    with pytest.raises(InvalidRequestError) as caught:
        PromptwireLLM(max_tokens=4).invoke(too_long)
    assert caught.value.status_code == 400
    assert openai_backend in str(caught.value)
    assert "context length" in str(caught.value)  # llama-cpp-python's message

    wrong = "not-the-key-0b7c"
    monkeypatch.setenv("PROMPTWIRE_API_KEY", wrong)
    with pytest.raises(AuthenticationError) as refused:
        ChatPromptwire(max_retries=0).invoke("abc")
    assert refused.value.status_code == 401
    assert "Invalid API key" in str(refused.value)  # llama-cpp-python's FastAPI detail
    assert wrong not in str(refused.value) and wrong not in repr(refused.value)
