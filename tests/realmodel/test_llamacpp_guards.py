"""No request can kill the llama.cpp backend or stall it: ``promptwire serve --backend llamacpp``
on SmolLM2, sent what once aborted the process or held every stream for seconds a step.

- A schema whose grammar no token can continue (a character SmolLM2 has no token for, U+0000; a
  character class that matches nothing): llama.cpp's grammar aborts the process (SIGABRT,
  ``llama-grammar.cpp`` "fatal error") when greedy sampling then picks end-of-text. Now the
  request ends with a 422 naming the cause, and a request beside it completes.
- An enum of 20,000 strings (a fifth of the schema budget) cost seconds per step for every
  sequence: now a 422 before anything runs, while an enum within the limit is served.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.support.network import LOOPBACK_ONLY
from tests.support.optional import LLAMACPP_PLUGIN_MISSING
from tests.support.real_model import ANSWER, COMPLETION_PROMPT, REAL_MODEL, serve_smollm2

pytest.importorskip("promptwire_llamacpp", reason=LLAMACPP_PLUGIN_MISSING)

from promptwire_llamacpp.grammar import MAX_GRAMMAR_ALTERNATIVES

pytestmark = [*LOOPBACK_ONLY, *REAL_MODEL]

NUL_PATTERN = "^[\\x00]$"
NOTHING_PATTERN = "^[^\\x00-\\U0010FFFF]$"


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    with serve_smollm2(env={"PROMPTWIRE_LLAMACPP__TEMPERATURE": "0"}) as served:
        yield served


def _schema_request(schema: dict[str, Any]) -> dict[str, Any]:
    return {
        "prompt": "",
        "messages": [{"role": "user", "content": "Answer in JSON."}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}},
        "max_tokens": 16,
    }


def _tool_request(pattern: str) -> dict[str, Any]:
    tool = {
        "type": "function",
        "function": {
            "name": "save",
            "description": "Save a code.",
            "parameters": {
                "type": "object",
                "properties": {"code": {"type": "string", "pattern": pattern}},
                "required": ["code"],
            },
        },
    }
    return {
        "model": "SmolLM2-135M-Instruct.Q4_1",
        "messages": [{"role": "user", "content": "Save the code."}],
        "tools": [tool],
        "tool_choice": "required",
        "max_tokens": 40,
        "temperature": 0,
    }


async def _beside(url: str, path: str, body: dict[str, Any]) -> tuple[httpx.Response, str]:
    """``body`` sent to ``path`` while a greedy plain request is being generated beside it."""
    async with httpx.AsyncClient(timeout=120) as client:
        plain = {"prompt": COMPLETION_PROMPT, "max_tokens": 24, "temperature": 0}
        normal = asyncio.create_task(client.post(url, json=plain))
        await asyncio.sleep(0.05)
        refused = await client.post(url + path, json=body)
        completed = await normal
        assert completed.status_code == 200, completed.text
        return refused, completed.json()["prompt"]


def _assert_alive(url: str) -> None:
    assert httpx.get(url + "health", timeout=30).status_code == 200
    reply = httpx.post(url, json={"prompt": COMPLETION_PROMPT, "max_tokens": 12}, timeout=120)
    assert reply.status_code == 200 and ANSWER in reply.json()["prompt"]


@pytest.mark.parametrize("pattern", [NUL_PATTERN, NOTHING_PATTERN])
def test_a_pattern_no_token_can_write_is_a_422_not_an_abort(url: str, pattern: str) -> None:
    body = _schema_request({"type": "string", "pattern": pattern})
    refused, beside = asyncio.run(_beside(url, "", body))
    assert refused.status_code == 422, refused.text
    assert "no token can continue the grammar" in refused.text
    assert ANSWER in beside
    _assert_alive(url)


def test_a_sampled_dead_end_is_a_422_too(url: str) -> None:
    """Sampling (temperature above 0) picks from all-masked logits as greedy does."""
    body = _schema_request({"type": "string", "pattern": NUL_PATTERN})
    reply = httpx.post(url, json={**body, "temperature": 0.8, "seed": 7}, timeout=120)
    assert reply.status_code == 422, reply.text
    assert "no token can continue the grammar" in reply.text
    _assert_alive(url)


def test_a_streamed_dead_end_ends_the_stream_with_an_error_event(url: str) -> None:
    body = {**_schema_request({"type": "string", "pattern": NUL_PATTERN}), "stream": True}
    with httpx.stream("POST", url, json=body, timeout=120) as reply:
        text = "".join(reply.iter_text())
    assert "no token can continue the grammar" in text
    _assert_alive(url)


def test_a_required_tool_call_no_token_can_write_is_refused(url: str) -> None:
    refused, beside = asyncio.run(_beside(url, "v1/chat/completions", _tool_request(NUL_PATTERN)))
    assert refused.status_code in (422, 400), refused.text
    assert "no token can continue the grammar" in refused.text
    assert ANSWER in beside
    _assert_alive(url)


def test_an_enum_too_broad_for_the_grammar_is_refused_at_once(url: str) -> None:
    values = [f"value number {index:05d}" for index in range(20_000)]
    started = time.monotonic()
    reply = httpx.post(url, json=_schema_request({"enum": values}), timeout=120)
    assert reply.status_code == 422, reply.text
    assert "too broad" in reply.json()["error"]["message"]
    assert time.monotonic() - started < 10  # it never reached a sampling step (4.9 s each)


def test_an_enum_within_the_limit_is_served(url: str) -> None:
    values = [f"value number {index:03d}" for index in range(MAX_GRAMMAR_ALTERNATIVES - 10)]
    body = _schema_request({"enum": values}) | {"max_tokens": 12}
    reply = httpx.post(url, json=body, timeout=120)
    assert reply.status_code == 200, reply.text
    answer = reply.json()
    if answer["finish_reason"] == "stop":
        assert json.loads(answer["prompt"]) in values
    else:  # the limit came first: the text so far begins one of the values
        assert any(f'"{value}"'.startswith(answer["prompt"]) for value in values)
