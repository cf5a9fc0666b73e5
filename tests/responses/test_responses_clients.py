"""Clients that speak the Responses API, on promptwire's ``/v1/responses``: langchain-openai's
``ChatOpenAI(use_responses_api=True)`` (invoke, stream, tools, structured output) and an OpenAI
Agents SDK agent with one function tool (run and streamed), against the dummy engine on a real
uvicorn server."""

from __future__ import annotations

from collections.abc import Iterator

import openai
import pytest
from agents import Agent, OpenAIResponsesModel, Runner, function_tool, set_tracing_disabled
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_openai import ChatOpenAI
from promptwire_modal_dummy.settings import DummySettings

from tests.support.client_tools import Person, get_weather
from tests.support.engines import ObservedEngine
from tests.support.network import LOOPBACK_ONLY
from tests.support.servers import serve_engine

pytestmark = LOOPBACK_ONLY

TOKEN = "responses-clients-token-0d4e"


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[ObservedEngine, str]]:
    engine = ObservedEngine(DummySettings(tool_mode=True))
    with serve_engine(engine, api_key=TOKEN) as server:
        yield engine, server.url


def _chat(url: str) -> ChatOpenAI:
    return ChatOpenAI(
        model="dummy",
        base_url=url + "v1",
        api_key=TOKEN,  # type: ignore[arg-type]
        use_responses_api=True,
        max_retries=0,
    )


def test_chat_openai_invokes_and_streams(served: tuple[ObservedEngine, str]) -> None:
    chat = _chat(served[1])
    reply = chat.invoke("Hello")
    assert reply.text == "hello world"
    assert reply.usage_metadata is not None and reply.usage_metadata["output_tokens"] == 2
    assert "".join(piece.text for piece in chat.stream("Hello")) == "hello world"


def test_chat_openai_tool_calls_and_their_results(served: tuple[ObservedEngine, str]) -> None:
    chat = _chat(served[1]).bind_tools([get_weather])
    question = HumanMessage("What is the weather in Paris?")
    called = chat.invoke([question])
    assert isinstance(called, AIMessage) and called.tool_calls
    call = called.tool_calls[0]
    assert call["name"] == "get_weather" and isinstance(call["args"]["city"], str)
    result = ToolMessage(get_weather(**call["args"]), tool_call_id=call["id"])
    assert chat.invoke([question, called, result]).text == result.content


def test_chat_openai_structured_output(served: tuple[ObservedEngine, str]) -> None:
    engine, url = served
    person = _chat(url).with_structured_output(Person).invoke("Describe someone")
    assert isinstance(person, Person)
    sent = engine.requests[-1].response_format
    assert sent is not None and sent.type == "json_schema"  # text.format, not a tool


@function_tool
def weather(city: str) -> str:
    """The weather in a city."""
    return f"sunny in {city}"


def _agent(url: str) -> Agent:
    set_tracing_disabled(True)  # traces would go to OpenAI's servers
    client = openai.AsyncOpenAI(base_url=url + "v1", api_key=TOKEN, max_retries=0)
    return Agent(
        name="weather",
        instructions="Answer with the weather tool.",
        tools=[weather],
        model=OpenAIResponsesModel(model="dummy", openai_client=client),
    )


async def test_an_agent_calls_its_tool_and_answers(served: tuple[ObservedEngine, str]) -> None:
    engine, url = served
    result = await Runner.run(_agent(url), "What is the weather in Paris?")
    # The dummy calls the tool, then answers with its result.
    assert str(result.final_output).startswith("sunny in ")
    sent = engine.requests[-1].messages
    assert sent is not None and [m.role for m in sent] == ["system", "user", "assistant", "tool"]


async def test_an_agent_streamed(served: tuple[ObservedEngine, str]) -> None:
    run = Runner.run_streamed(_agent(served[1]), "What is the weather in Paris?")
    kinds = {event.type async for event in run.stream_events()}
    assert "raw_response_event" in kinds
    assert str(run.final_output).startswith("sunny in ")
