"""Benchmark 11's raw-socket client reads a real server's stream as an SSE client would."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
from promptwire.server import BackgroundServer
from promptwire_modal_dummy.engine import DummyEngine
from promptwire_modal_dummy.settings import DummySettings

from benchmarks.loadgen import stream_data
from tests.support.servers import serve_engine

CHAT = {"model": "dummy", "messages": [{"role": "user", "content": "one two three four five"}]}


async def _data(server: BackgroundServer, path: str, body: dict[str, object]) -> list[bytes]:
    return [data async for data in stream_data(server.port, path, json.dumps(body).encode())]


def test_the_data_fields_of_a_stream_in_order() -> None:
    with serve_engine(DummyEngine(DummySettings(echo=True))) as server:
        whole = httpx.post(server.url + "v1/chat/completions", json=CHAT, timeout=30).json()
        fields = asyncio.run(_data(server, "/v1/chat/completions", {**CHAT, "stream": True}))
    assert fields[-1] == b"[DONE]"
    chunks = [json.loads(field) for field in fields[:-1]]
    text = "".join(chunk["choices"][0]["delta"].get("content") or "" for chunk in chunks)
    assert text == whole["choices"][0]["message"]["content"]
    assert len(chunks) > 3  # one field per event, not one per read


def test_another_status_than_200_is_an_error() -> None:
    refused = pytest.raises(RuntimeError, match=r"answered 4\d\d")
    with serve_engine(DummyEngine()) as server, refused:
        asyncio.run(_data(server, "/v1/chat/completions", {"stream": True}))
