"""The real model (SmolLM2 on the llamacpp backend) through Anthropic's Messages API and
OpenAI's Responses API: the official ``anthropic`` and ``openai`` SDKs (whole and streamed,
equal under greedy decoding), ``ChatAnthropic(base_url=...)``, ``ChatOpenAI(use_responses_api=
True)``, a forced tool call (valid by construction: the engine's grammar), structured output
valid against its schema, and an OpenAI Agents SDK agent with one function tool."""

from __future__ import annotations

import json
from collections.abc import Iterator

import anthropic
import openai
import pytest
from agents import (
    Agent,
    ModelSettings,
    OpenAIResponsesModel,
    Runner,
    function_tool,
    set_tracing_disabled,
)
from langchain_anthropic import ChatAnthropic
from langchain_openai import ChatOpenAI
from pydantic import BaseModel

from tests.support.network import LOOPBACK_ONLY
from tests.support.real_model import ANSWER, QUESTION, REAL_MODEL, serve_smollm2

pytestmark = [*LOOPBACK_ONLY, *REAL_MODEL]

MODEL = "SmolLM2-135M-Instruct.Q4_1"
WEATHER_SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string", "maxLength": 20}},
    "required": ["city"],
    "additionalProperties": False,
}


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    with serve_smollm2(env={"PROMPTWIRE_LLAMACPP__TEMPERATURE": "0"}) as served:
        yield served


def test_the_anthropic_sdk_whole_and_streamed(url: str) -> None:
    client = anthropic.Anthropic(base_url=url, api_key="unused", max_retries=0)
    messages: list[anthropic.types.MessageParam] = [{"role": "user", "content": QUESTION}]
    reply = client.messages.create(model=MODEL, max_tokens=24, messages=messages)
    text = reply.content[0].text  # type: ignore[union-attr]
    assert ANSWER in text and reply.model == MODEL
    assert reply.stop_reason in ("end_turn", "max_tokens") and reply.usage.output_tokens > 0
    with client.messages.stream(model=MODEL, max_tokens=24, messages=messages) as stream:
        assert "".join(stream.text_stream) == text
    cut = client.messages.create(
        model=MODEL, max_tokens=24, messages=messages, stop_sequences=[ANSWER]
    )
    assert (cut.stop_reason, cut.stop_sequence) == ("stop_sequence", ANSWER)


def test_an_anthropic_prefill_is_continued(url: str) -> None:
    """A final assistant message is where the reply starts (Anthropic's prefill), not a turn
    before a new one: the template's rendering cut after its text."""
    client = anthropic.Anthropic(base_url=url, api_key="unused", max_retries=0)
    messages: list[anthropic.types.MessageParam] = [
        {"role": "user", "content": QUESTION},
        {"role": "assistant", "content": "The capital of France is"},
    ]
    reply = client.messages.create(model=MODEL, max_tokens=8, messages=messages)
    text = reply.content[0].text  # type: ignore[union-attr]
    assert text.startswith(" Paris"), text
    counted = client.messages.count_tokens(model=MODEL, messages=messages)
    assert counted.input_tokens == reply.usage.input_tokens


def test_count_tokens_is_smollm2s_own_count_of_the_rendered_conversation(url: str) -> None:
    """The model's tokenizer counts what its chat template renders: the input tokens its answer
    reports, with a system prompt and with tools (which the template renders too)."""
    client = anthropic.Anthropic(base_url=url, api_key="unused", max_retries=0)
    messages: list[anthropic.types.MessageParam] = [{"role": "user", "content": QUESTION}]
    tools: list[anthropic.types.ToolParam] = [
        {"name": "get_weather", "description": "Weather", "input_schema": WEATHER_SCHEMA}
    ]
    for extra in ({}, {"system": "Answer in one word."}, {"tools": tools}):
        counted = client.messages.count_tokens(model=MODEL, messages=messages, **extra)  # type: ignore[arg-type]
        reply = client.messages.create(model=MODEL, max_tokens=4, messages=messages, **extra)  # type: ignore[arg-type]
        assert counted.input_tokens == reply.usage.input_tokens > 10, extra


def test_a_forced_anthropic_tool_call_is_valid(url: str) -> None:
    client = anthropic.Anthropic(base_url=url, api_key="unused", max_retries=0)
    reply = client.messages.create(
        model=MODEL,
        max_tokens=60,
        messages=[{"role": "user", "content": "What is the weather in Paris?"}],
        tools=[{"name": "get_weather", "description": "Weather", "input_schema": WEATHER_SCHEMA}],
        tool_choice={"type": "tool", "name": "get_weather"},
    )
    assert reply.stop_reason == "tool_use"
    call = reply.content[-1]
    assert call.type == "tool_use" and call.name == "get_weather"
    assert isinstance(call.input, dict) and isinstance(call.input["city"], str)


def test_input_tokens_is_smollm2s_own_count_of_the_rendered_input(url: str) -> None:
    client = openai.OpenAI(base_url=url + "v1", api_key="unused", max_retries=0)
    for extra in ({}, {"instructions": "Answer in one word."}):
        counted = client.responses.input_tokens.count(model=MODEL, input=QUESTION, **extra)  # type: ignore[arg-type]
        reply = client.responses.create(
            model=MODEL,
            input=QUESTION,
            max_output_tokens=16,
            **extra,  # type: ignore[arg-type]
        )
        assert reply.usage is not None
        assert counted.input_tokens == reply.usage.input_tokens > 10, extra


def test_the_openai_sdk_responses_whole_and_streamed(url: str) -> None:
    client = openai.OpenAI(base_url=url + "v1", api_key="unused", max_retries=0)
    reply = client.responses.create(model=MODEL, input=QUESTION, max_output_tokens=24)
    assert ANSWER in reply.output_text and reply.usage is not None
    stream = client.responses.create(model=MODEL, input=QUESTION, max_output_tokens=24, stream=True)
    deltas = [e.delta for e in stream if e.type == "response.output_text.delta"]
    assert "".join(deltas) == reply.output_text


def test_a_forced_responses_function_call_and_structured_output_are_valid(url: str) -> None:
    client = openai.OpenAI(base_url=url + "v1", api_key="unused", max_retries=0)
    called = client.responses.create(
        model=MODEL,
        input="What is the weather in Paris?",
        max_output_tokens=60,
        tools=[
            {
                "type": "function",
                "name": "get_weather",
                "parameters": WEATHER_SCHEMA,
                "strict": True,
            }
        ],
        tool_choice={"type": "function", "name": "get_weather"},
    )
    (call,) = called.output
    assert call.type == "function_call" and call.name == "get_weather"
    assert isinstance(json.loads(call.arguments)["city"], str)

    class City(BaseModel):
        name: str
        country: str

    parsed = client.responses.parse(
        model=MODEL, input=QUESTION, text_format=City, max_output_tokens=80
    )
    assert isinstance(parsed.output_parsed, City)


def test_langchain_chat_models_reach_the_real_model(url: str) -> None:
    claude_like = ChatAnthropic(  # type: ignore[call-arg]
        model=MODEL, base_url=url, api_key="unused", max_tokens=24, max_retries=0
    )
    assert ANSWER in claude_like.invoke(QUESTION).text
    responses = ChatOpenAI(
        model=MODEL,
        base_url=url + "v1",
        api_key="unused",  # type: ignore[arg-type]
        use_responses_api=True,
        max_tokens=24,  # type: ignore[call-arg]
        max_retries=0,
    )
    assert ANSWER in responses.invoke(QUESTION).text


@function_tool
def get_weather(city: str) -> str:
    """The weather in a city."""
    return f"sunny in {city}"


async def test_an_agents_sdk_agent_calls_its_function_tool(url: str) -> None:
    set_tracing_disabled(True)  # traces would go to OpenAI's servers
    client = openai.AsyncOpenAI(base_url=url + "v1", api_key="unused", max_retries=0)
    agent = Agent(
        name="weather",
        instructions="Use the weather tool.",
        tools=[get_weather],
        model=OpenAIResponsesModel(model=MODEL, openai_client=client),
        model_settings=ModelSettings(tool_choice="required", max_tokens=60),
        tool_use_behavior="stop_on_first_tool",  # the tool's output is the answer
    )
    result = await Runner.run(agent, "What is the weather in Paris?")
    assert str(result.final_output).startswith("sunny in ")
