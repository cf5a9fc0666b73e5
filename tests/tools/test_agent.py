"""An agent end to end, as a LangChain user runs one: ``langchain.agents.create_agent`` (what
LangChain 1.x recommends; LangGraph's prebuilt ReAct agent is its predecessor) over
``ChatPromptwire``, against ``promptwire serve`` in a child process with the dummy backend's
tool mode, through the prompt protocol and through the ``openai`` backend."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from langchain.agents import create_agent
from langchain.agents.structured_output import ToolStrategy
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_core.tools import tool
from promptwire import ChatPromptwire
from pydantic import BaseModel

from tests.support.cli_server import promptwire_serve
from tests.support.network import LOOPBACK_ONLY

pytestmark = LOOPBACK_ONLY

TOKEN = "agent-test-token-3f1e"
CALLS: list[dict[str, object]] = []


@tool
def get_weather(city: str, days: int = 1) -> str:
    """The weather forecast for a city, for the next few days."""
    CALLS.append({"city": city, "days": days})
    return f"Sunny in {city} for {days} day(s)"


@tool
def get_time(zone: str) -> str:
    """The time now in a time zone."""
    return f"12:00 in {zone}"


class Report(BaseModel):
    """What the agent found."""

    city: str
    summary: str


@pytest.fixture(scope="module")
def served_tools_url() -> Iterator[str]:
    env = {"PROMPTWIRE_API_KEY": TOKEN, "PROMPTWIRE_MODAL_DUMMY__TOOL_MODE": "true"}
    with promptwire_serve(env=env) as url:
        yield url


@pytest.fixture(params=["prompt-protocol", "openai"])
def chat(request: pytest.FixtureRequest, served_tools_url: str) -> ChatPromptwire:
    if request.param == "openai":
        return ChatPromptwire(
            endpoint_url=served_tools_url + "v1", backend="openai", api_key=TOKEN, timeout=30
        )
    return ChatPromptwire(endpoint_url=served_tools_url, api_key=TOKEN, timeout=30)


def test_an_agent_calls_a_tool_and_answers_with_its_result(chat: ChatPromptwire) -> None:
    CALLS.clear()
    agent = create_agent(chat, tools=[get_time, get_weather], system_prompt="Use the tools.")
    result = agent.invoke({"messages": [HumanMessage("What is the weather in Paris?")]})
    messages = result["messages"]
    assert [type(m).__name__ for m in messages] == [
        "HumanMessage",
        "AIMessage",
        "ToolMessage",
        "AIMessage",
    ]
    call = messages[1].tool_calls[0]
    assert call["name"] == "get_weather"  # the tool the question mentions
    assert [call["args"] | {"days": call["args"].get("days", 1)}] == CALLS  # it really ran
    assert isinstance(messages[2], ToolMessage) and messages[2].tool_call_id == call["id"]
    assert isinstance(messages[3], AIMessage)
    assert messages[3].content == messages[2].content  # the result made it back to the model
    assert messages[3].tool_calls == []


async def test_an_agent_streams_its_steps(chat: ChatPromptwire) -> None:
    agent = create_agent(chat, tools=[get_weather])
    steps = [
        step
        async for step in agent.astream(
            {"messages": [HumanMessage("Weather in Rome?")]}, stream_mode="updates"
        )
    ]
    assert [next(iter(step)) for step in steps] == ["model", "tools", "model"]


def test_an_agent_answers_a_structured_response(chat: ChatPromptwire) -> None:
    agent = create_agent(chat, tools=[get_weather], response_format=ToolStrategy(Report))
    result = agent.invoke({"messages": [HumanMessage("Weather in Oslo? Report it.")]})
    assert isinstance(result["structured_response"], Report)
    names = [c["name"] for m in result["messages"] for c in getattr(m, "tool_calls", [])]
    assert names == ["get_weather", "Report"]


def test_structured_output_through_the_served_endpoint(chat: ChatPromptwire) -> None:
    for method in ("json_schema", "function_calling"):
        report = chat.with_structured_output(Report, method=method).invoke("Report on Paris")  # type: ignore[arg-type]
        assert isinstance(report, Report)
