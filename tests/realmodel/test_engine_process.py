"""The llama.cpp engine on SmolLM2 in a process of its own (``ProcessEngine``, the default of
``promptwire serve --backend llamacpp``): the same greedy reply as in-process, and a server that
recovers when the engine's process is killed in the middle of a stream."""

from __future__ import annotations

import json
import os
import signal
import time
from typing import Any

import httpx
import pytest
from promptwire.engine.process import ProcessEngine, RestartPolicy

from tests.support.optional import LLAMACPP_PLUGIN_MISSING
from tests.support.real_model import QUESTION, REAL_MODEL, serve_smollm2
from tests.support.servers import serve_engine

pytest.importorskip("promptwire_llamacpp", reason=LLAMACPP_PLUGIN_MISSING)

from promptwire_llamacpp.engine import LlamaCppEngine
from promptwire_llamacpp.plugin import _create_engine
from promptwire_llamacpp.settings import LlamaCppSettings

pytestmark = REAL_MODEL

SETTINGS = LlamaCppSettings(parallel=2, context_size=512, threads=1, temperature=0.0)
#: Greedy by the request itself: ``serve_smollm2`` serves with the backend's default temperature
#: (0.8), under which the reply after a restart once came back without "Paris" (a CI run).
CHAT = {"messages": [{"role": "user", "content": QUESTION}], "max_tokens": 24, "temperature": 0}


def _greedy(url: str) -> tuple[str, str, Any, Any]:
    reply = httpx.post(url + "v1/chat/completions", json=CHAT, timeout=120).json()
    prompt = httpx.post(url, json={"prompt": "The sky is", "max_tokens": 16}, timeout=120).json()
    stopped = httpx.post(url, json={**CHAT, "prompt": "", "stop": ["Paris"]}, timeout=120).json()
    health = httpx.get(url + "health").json()
    cut = (stopped["prompt"], stopped["finish_reason"])
    return reply["choices"][0]["message"]["content"], prompt["prompt"], cut, health


def test_a_greedy_reply_through_the_engine_process_equals_the_in_process_one() -> None:
    with serve_engine(LlamaCppEngine(SETTINGS)) as server:
        alone = _greedy(server.url)
    with serve_engine(ProcessEngine(_create_engine, SETTINGS)) as server:
        # The replies (a stop sequence applied in the engine's process), /health's model and
        # capabilities.
        assert _greedy(server.url) == alone
    assert "Paris" in alone[0]
    assert alone[2] == (alone[0].split("Paris")[0], "stop")
    assert alone[3]["capabilities"] == {"tools": True, "structured_output": True}


def test_a_killed_engine_process_fails_its_stream_and_the_server_recovers() -> None:
    engine = ProcessEngine(_create_engine, SETTINGS, restart=RestartPolicy(first_delay=0.1))
    with serve_engine(engine) as server:
        url = server.url
        pid = engine.pid
        assert pid is not None
        events: list[tuple[str, Any]] = []
        story = [{"role": "user", "content": "Write a long story about a dragon."}]
        body = {"prompt": "", "messages": story, "max_tokens": 400, "stream": True}
        with httpx.stream("POST", url, json=body, timeout=120) as response:
            name = ""
            for line in response.iter_lines():
                if line.startswith("event: "):
                    name = line[7:]
                elif line.startswith("data: "):
                    events.append((name, json.loads(line[6:])))
                    if len(events) == 3:
                        os.kill(pid, signal.SIGKILL)
        assert events[0][0] == "delta"
        assert events[-1][0] == "error"
        assert "the engine process died (SIGKILL)" in events[-1][1]["error"]["message"]
        deadline = time.monotonic() + 120
        while httpx.get(url + "health").status_code != 200:
            assert time.monotonic() < deadline, "the engine did not come back"
            time.sleep(0.2)
        assert engine.pid != pid
        again = httpx.post(url + "v1/chat/completions", json=CHAT, timeout=120).json()
        assert "Paris" in again["choices"][0]["message"]["content"]


def test_a_schema_that_aborts_llama_cpp_does_not_take_the_server_down() -> None:
    """Issue 28's 22-byte schema (no token can produce U+0000: llama.cpp aborted the process
    1 s into the reply). Whether llama.cpp still aborts on it or it is refused or answered, the
    server survives: at worst that request gets a 500 naming the signal, and the next one is
    served by a new engine process."""
    schema = {"type": "string", "pattern": "^[\\x00]$"}
    body = {
        "prompt": "",
        "messages": [{"role": "user", "content": "Say something"}],
        "temperature": 0,
        "max_tokens": 16,
        "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}},
    }
    with serve_smollm2() as url:
        response = httpx.post(url, json=body, timeout=120)
        if response.status_code >= 500:
            message = response.json()["error"]["message"]
            assert message.startswith("the engine process died (SIGABRT)"), message
        deadline = time.monotonic() + 120
        while httpx.get(url + "health").status_code != 200:
            assert time.monotonic() < deadline, "the engine did not come back"
            time.sleep(0.2)
        again = httpx.post(url + "v1/chat/completions", json=CHAT, timeout=120).json()
        assert "Paris" in again["choices"][0]["message"]["content"]
