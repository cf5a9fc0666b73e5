"""Tool calling and structured output on the CPU tier: the real exllamav2 0.3.2 generator and
sampler, lm-format-enforcer's token enforcer as the sampler's filter, and the tiny model's
stand-in forward pass (``cpu_standin``), which knows nothing of JSON or tools.

So these tests prove the plumbing, not a model: a reply constrained to a schema is valid against
it whatever the model prefers (the stand-in's greedy choice is pseudo-random text), a required
tool call parses into a call of an offered tool with valid arguments, tools reach the prompt
through the model's own chat template (a Hermes/Qwen-style one written here), and an agent loop
runs through all of it. Whether a real model calls the right tool with sensible arguments, or
writes its ``<tool_call>`` blocks unconstrained, needs a real model on a GPU.

The schemas hold no free strings (enums instead) and bound their arrays: constrained decoding
keeps every token valid, but only a model ends a free string when it has said enough (the
stand-in would fill ``max_tokens``), and lm-format-enforcer bounds a free string's ``maxLength``
only roughly (a string one character over was seen here: its free-text shortcut takes whole
tokens). Its JSON may carry up to 12 whitespace characters between tokens, which the stand-in
uses freely: hence the generous ``max_tokens``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import httpx
import jsonschema_rs
import pytest
from langchain.agents import create_agent
from langchain.agents.middleware import ModelRequest, wrap_model_call
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_core.tools import tool
from promptwire import ChatPromptwire
from pydantic import BaseModel, Field

from tests.exllama.cpu_standin import StandIn, cpu_tier
from tests.exllama.scenarios import Served, serve_tiny_model, tiny_settings
from tests.exllama.tiny_model import build_tiny_model

#: A Hermes/Qwen-style template, as Qwen 2.5's renders tools, calls and results (shortened).
HERMES_TEMPLATE = """\
{%- if tools %}<|im_start|>system
You may call functions. Their signatures, within <tools></tools>:
<tools>
{%- for tool in tools %}
{{ tool | tojson }}
{%- endfor %}
</tools>
For each call, write its name and arguments within <tool_call></tool_call>:
<tool_call>
{"name": <function-name>, "arguments": <args-json-object>}
</tool_call><|im_end|>
{% endif %}
{%- for message in messages %}
{%- if message.role == "assistant" and message.tool_calls %}<|im_start|>assistant
{{ message.content }}
{%- for call in message.tool_calls %}
<tool_call>
{"name": "{{ call.function.name }}", "arguments": {{ call.function.arguments | tojson }}}
</tool_call>
{%- endfor %}<|im_end|>
{% elif message.role == "tool" %}<|im_start|>user
<tool_response>
{{ message.content }}
</tool_response><|im_end|>
{% else %}<|im_start|>{{ message.role }}
{{ message.content }}<|im_end|>
{% endif %}
{%- endfor %}
{%- if add_generation_prompt %}<|im_start|>assistant
{% endif %}"""


class Forecast(BaseModel):
    """A weather forecast."""

    city: Literal["Oslo", "Paris", "Rome"]
    unit: Literal["celsius", "fahrenheit"]
    days: int
    windy: bool
    hours: list[int] = Field(max_length=3)


@tool
def get_weather(city: Literal["Oslo", "Paris"], days: int = 1) -> str:
    """The weather forecast for a city."""
    return f"Sunny in {city}"


@tool
def get_time(zone: Literal["UTC", "CET", "PST"]) -> str:
    """The time in a zone."""
    return f"12:00 {zone}"


@pytest.fixture(scope="module")
def tier() -> Iterator[StandIn]:
    with pytest.MonkeyPatch.context() as patch, cpu_tier(patch) as stand_in:
        yield stand_in


@pytest.fixture(scope="module")
def hermes_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    model_dir = build_tiny_model(tmp_path_factory.mktemp("tiny-hermes"))
    (model_dir / "chat_template.jinja").write_text(HERMES_TEMPLATE, encoding="utf-8")
    return model_dir


@pytest.fixture(scope="module")
def served(tier: StandIn, hermes_model: Path) -> Iterator[Served]:
    with serve_tiny_model(tiny_settings(hermes_model)) as served:
        yield served


@pytest.fixture(scope="module")
def plain_served(tier: StandIn, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """The tiny model with its own template, which renders no tools."""
    model_dir = build_tiny_model(tmp_path_factory.mktemp("tiny-plain"))
    with serve_tiny_model(tiny_settings(model_dir)) as served:
        yield served


@pytest.fixture(autouse=True)
def _fresh(tier: StandIn) -> None:
    tier.eos_when = None
    tier.delay = 0.0


def _chat(served: Served, wire: str = "prompt-protocol", **options: Any) -> ChatPromptwire:
    options = {"temperature": 0, "max_tokens": 1800, "timeout": 120, "max_retries": 0, **options}
    if wire == "openai":
        return ChatPromptwire(endpoint_url=served.url + "v1", backend="openai", **options)
    return ChatPromptwire(endpoint_url=served.url, **options)


def test_capabilities_follow_the_model(served: Served, plain_served: Served) -> None:
    """Structured output wherever lm-format-enforcer is installed; tools only where the model's
    template renders them in a format the engine reads."""
    health = httpx.get(served.url + "health").json()
    assert health["capabilities"] == {"tools": True, "structured_output": True}
    plain = httpx.get(plain_served.url + "health").json()
    assert plain["capabilities"] == {"tools": False, "structured_output": True}
    refused = httpx.post(
        plain_served.url,
        json={"prompt": "x", "messages": [{"role": "user", "content": "x"}], "tools": [_spec()]},
    )
    assert refused.status_code == 422 and refused.json()["error"]["type"] == "unsupported"


def _spec() -> dict[str, Any]:
    return {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}


@pytest.mark.parametrize("wire", ["prompt-protocol", "openai"])
def test_structured_output_is_valid_whatever_the_model_prefers(served: Served, wire: str) -> None:
    chat = _chat(served, wire)
    result = chat.with_structured_output(Forecast, include_raw=True).invoke("Forecast, please")
    assert isinstance(result, dict)
    assert result["parsing_error"] is None, result["raw"].content
    assert isinstance(result["parsed"], Forecast)
    # Unconstrained, the same model says something else entirely.
    free = chat.invoke("Forecast, please")
    assert free.content != result["raw"].content


def test_a_json_schema_constrains_a_stream_too(served: Served) -> None:
    schema = {
        "type": "object",
        "properties": {
            "name": {"enum": ["ann", "bob"]},
            "tags": {"type": "array", "items": {"enum": ["a", "b"]}, "maxItems": 4},
            "done": {"type": "boolean"},
        },
        "required": ["name", "tags", "done"],
    }
    body = {
        "prompt": "x",
        "messages": [{"role": "user", "content": "Describe it"}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "t", "schema": schema}},
        "max_tokens": 1800,
        "temperature": 0,
        "stream": True,
    }
    with httpx.stream("POST", served.url, json=body, timeout=120) as reply:
        events = [line for line in reply.iter_lines() if line.startswith("data:")]
    pieces = [json.loads(line[5:]) for line in events]
    text = "".join(p.get("text", "") for p in pieces[:-1])
    assert pieces[-1]["finish_reason"] == "stop"
    jsonschema_rs.validate(schema, json.loads(text))
    any_json = httpx.post(
        served.url,
        json={**body, "stream": False, "response_format": {"type": "json_object"}},
        timeout=120,
    )
    assert isinstance(json.loads(any_json.json()["prompt"]), dict)


@pytest.mark.parametrize("wire", ["prompt-protocol", "openai"])
def test_a_required_tool_call_parses_into_a_call_with_valid_arguments(
    served: Served, wire: str
) -> None:
    chat = _chat(served, wire, max_tokens=1000)  # the tools make a long prompt
    bound = chat.bind_tools([get_weather, get_time], tool_choice="required")
    message = bound.invoke("Anything")
    assert message.response_metadata["finish_reason"] == "tool_calls"
    assert message.content == "" and message.invalid_tool_calls == []
    [call] = message.tool_calls
    chosen = {"get_weather": get_weather, "get_time": get_time}[call["name"]]
    chosen.args_schema.model_validate(call["args"])  # type: ignore[union-attr]
    named = chat.bind_tools([get_weather, get_time], tool_choice="get_time")
    [call] = named.invoke("Anything").tool_calls
    assert call["name"] == "get_time" and call["args"]["zone"] in ("UTC", "CET", "PST")


def test_a_required_call_streams_as_a_tool_call(served: Served) -> None:
    bound = _chat(served, max_tokens=1000).bind_tools([get_time], tool_choice="get_time")
    chunks = list(bound.stream("Anything"))
    assert all(chunk.content == "" for chunk in chunks)  # the call is never shown as text
    total = chunks[0]
    for chunk in chunks[1:]:
        total += chunk
    assert total.tool_calls[0]["name"] == "get_time"  # type: ignore[attr-defined]


def test_tools_and_results_reach_the_prompt_through_the_models_template(
    served: Served,
) -> None:
    """What the engine encoded is the template's rendering: the tools' schemas, the call of the
    assistant turn with its arguments as an object, the result as a tool response."""
    conversation = [
        HumanMessage("Weather in Oslo?"),
        AIMessage("", tool_calls=[{"name": "get_weather", "args": {"city": "Oslo"}, "id": "c1"}]),
        ToolMessage("Rain", tool_call_id="c1"),
    ]
    _chat(served, max_tokens=5).bind_tools([get_weather]).invoke(conversation)
    from_template, ids = served.encoded[-1]
    assert from_template
    runtime = served.runtimes[-1]
    import torch

    prompt = str(runtime.tokenizer.decode(torch.tensor([ids]), decode_special_tokens=True)[0])
    assert '"name": "get_weather"' in prompt and "<tools>" in prompt
    assert '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}' in prompt
    assert "<tool_response>\nRain\n</tool_response>" in prompt
    assert prompt.endswith("<|im_start|>assistant\n")


def test_an_agent_loop_runs_through_the_engine(served: Served) -> None:
    """create_agent, the first turn's call required (the stand-in would not choose one), the
    tool run, its result rendered back to the model, and a text answer to end the loop."""
    ran: list[dict[str, Any]] = []

    @tool
    def lookup(zone: Literal["UTC", "CET"]) -> str:
        """Look the time up."""
        ran.append({"zone": zone})
        return f"noon {zone}"

    @wrap_model_call
    def first_turn_calls(request: ModelRequest, handler: Any) -> Any:
        if not any(isinstance(m, ToolMessage) for m in request.messages):
            request = request.override(tool_choice="required")
        return handler(request)

    agent = create_agent(
        _chat(served, max_tokens=600), tools=[lookup], middleware=[first_turn_calls]
    )
    result = agent.invoke({"messages": [HumanMessage("What time is it?")]})
    kinds = [type(m).__name__ for m in result["messages"]]
    assert kinds == ["HumanMessage", "AIMessage", "ToolMessage", "AIMessage"]
    assert ran == [result["messages"][1].tool_calls[0]["args"]]
    assert result["messages"][2].content in ("noon UTC", "noon CET")
    assert result["messages"][3].tool_calls == []


def test_tools_with_a_json_response_format_are_refused(served: Served) -> None:
    body = {
        "prompt": "x",
        "messages": [{"role": "user", "content": "x"}],
        "tools": [_spec()],
        "response_format": {"type": "json_object"},
    }
    reply = httpx.post(served.url, json=body, timeout=60)
    assert reply.status_code == 422
    assert "not both" in reply.json()["error"]["message"]
