"""Both LangChain models cut at ``stop`` themselves, for servers that do not, and then report the
finish reason ``stop``: one guard (``promptwire.langchain._stop_guard``) for whole replies and
streams. The completion model's streams used to keep the server's finish reason after cutting."""

from __future__ import annotations

import json

import httpx
import pytest
from langchain_core.messages import AIMessageChunk
from promptwire import ChatPromptwire, PromptwireLLM
from promptwire.langchain._stop_guard import StopGuard

URL = "http://127.0.0.1:9/"


def test_a_whole_reply_is_cut_and_finishes_with_stop() -> None:
    assert StopGuard(["END"]).whole("one END two", "length") == ("one ", "stop")
    assert StopGuard(["END"]).whole("one two", "length") == ("one two", "length")
    assert StopGuard(None).whole("one END", "stop") == ("one END", "stop")


def test_a_stream_holds_what_could_begin_a_stop_and_finishes_with_stop() -> None:
    guard = StopGuard(["END"])
    assert guard.feed("one E") == "one "
    assert guard.feed("N") == ""
    assert guard.feed("D two") == ""
    assert guard.finish("length") == ("", "stop")
    unfinished = StopGuard(["END"])
    assert unfinished.feed("one EN") == "one "
    assert unfinished.finish("length") == ("EN", "length")


def _ignoring_stop(request: httpx.Request) -> httpx.Response:
    """A server that ignores ``stop``: it streams all of its text and says it hit max_tokens."""
    body = json.loads(request.content)
    assert body["stop"] == ["END"]
    events = "".join(
        f"event: delta\ndata: {json.dumps({'text': piece})}\n\n" for piece in ["one E", "ND two"]
    )
    done = {"finish_reason": "length", "usage": {"prompt_tokens": 1, "completion_tokens": 3}}
    events += f"event: done\ndata: {json.dumps(done)}\n\n"
    stream = httpx.ByteStream(events.encode())  # read as the wire would be, not preloaded
    return httpx.Response(200, stream=stream, headers={"content-type": "text/event-stream"})


@pytest.fixture
def http_client() -> httpx.Client:
    return httpx.Client(transport=httpx.MockTransport(_ignoring_stop))


def test_the_completion_models_stream_is_cut_and_finishes_with_stop(
    http_client: httpx.Client,
) -> None:
    llm = PromptwireLLM(endpoint_url=URL, http_client=http_client)
    chunks = list(llm._stream("x", stop=["END"]))
    assert "".join(chunk.text for chunk in chunks) == "one "
    assert chunks[-1].generation_info is not None
    assert chunks[-1].generation_info["finish_reason"] == "stop"


def test_the_chat_models_stream_is_cut_and_finishes_with_stop(http_client: httpx.Client) -> None:
    chat = ChatPromptwire(endpoint_url=URL, http_client=http_client)
    chunks = list(chat.stream("x", stop=["END"]))
    assert "".join(str(chunk.content) for chunk in chunks) == "one "
    last = chunks[-1]
    assert isinstance(last, AIMessageChunk)
    assert last.response_metadata["finish_reason"] == "stop"
