"""langchain-anthropic's ``ChatAnthropic(base_url=...)`` on promptwire's ``/v1/messages``: invoke,
stream, usage, tool calls and structured output (a forced tool call), against the dummy engine on
a real uvicorn server."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from langchain_anthropic import ChatAnthropic
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from promptwire_modal_dummy.settings import DummySettings

from tests.support.client_tools import Person, get_weather
from tests.support.engines import ObservedEngine
from tests.support.network import LOOPBACK_ONLY
from tests.support.servers import serve_engine

pytestmark = LOOPBACK_ONLY

TOKEN = "chat-anthropic-token-62aa"


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    with serve_engine(ObservedEngine(DummySettings(tool_mode=True)), api_key=TOKEN) as server:
        yield server.url


def _chat(url: str) -> ChatAnthropic:
    return ChatAnthropic(  # type: ignore[call-arg]
        model="claude-anything", base_url=url, api_key=TOKEN, max_tokens=64, max_retries=0
    )


def test_invoke_and_stream(url: str) -> None:
    chat = _chat(url)
    reply = chat.invoke("Hello")
    assert reply.content == "hello world"
    assert reply.usage_metadata is not None and reply.usage_metadata["output_tokens"] == 2
    assert reply.response_metadata["stop_reason"] == "end_turn"
    assert "".join(piece.text for piece in chat.stream("Hello")) == "hello world"


async def test_ainvoke(url: str) -> None:
    assert (await _chat(url).ainvoke("Hello")).content == "hello world"


def test_tool_calls_and_their_results(url: str) -> None:
    chat = _chat(url).bind_tools([get_weather])
    question = HumanMessage("What is the weather in Paris?")
    called = chat.invoke([question])
    assert isinstance(called, AIMessage) and called.tool_calls
    call = called.tool_calls[0]
    assert call["name"] == "get_weather" and isinstance(call["args"]["city"], str)
    result = ToolMessage(get_weather(**call["args"]), tool_call_id=call["id"])
    answered = chat.invoke([question, called, result])
    assert answered.content == result.content


def test_counting_tokens_asks_the_server(url: str) -> None:
    """``get_num_tokens_from_messages`` calls ``/v1/messages/count_tokens``: the engine's count
    of the rendered conversation, the input tokens the answer reports."""
    messages = [HumanMessage("What is the weather in Paris?")]
    counted = _chat(url).get_num_tokens_from_messages(messages)
    answered = _chat(url).invoke(messages)
    assert answered.usage_metadata is not None
    assert counted == answered.usage_metadata["input_tokens"] > 0


def test_structured_output(url: str) -> None:
    person = _chat(url).with_structured_output(Person).invoke("Describe someone")
    assert isinstance(person, Person)
