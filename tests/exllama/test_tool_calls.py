"""Reading tool calls out of a model's text, per family, and holding back streamed text that may
begin one (``promptwire.engine.tool_calls``; pure Python)."""

from __future__ import annotations

import json
from typing import Any

import jsonschema_rs
import pytest
from promptwire.engine.tool_calls import (
    HERMES,
    LLAMA3,
    MISTRAL,
    ToolCallSplitter,
    ToolFormat,
    detect_tool_format,
    forced_tools,
)
from promptwire.protocol import PromptRequest, ToolSpec
from pydantic import BaseModel

TOOLS = [
    ToolSpec.model_validate(
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "parameters": {
                    "type": "object",
                    "properties": {"city": {"type": "string"}},
                    "required": ["city"],
                },
            },
        }
    ),
    ToolSpec.model_validate({"type": "function", "function": {"name": "get_time"}}),
]


def _calls(fmt, text: str) -> tuple[str, list[tuple[str, dict]]]:  # type: ignore[no-untyped-def]
    shown, calls = fmt.read(text, TOOLS)
    return shown, [(c.name, json.loads(c.arguments)) for c in calls]


def test_hermes_calls_after_text_and_several_blocks() -> None:
    text = (
        'Let me check.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n'
        '</tool_call>\n<tool_call>\n{"name": "get_time", "arguments": {}}\n</tool_call>'
    )
    assert _calls(HERMES, text) == (
        "Let me check.",
        [("get_weather", {"city": "Oslo"}), ("get_time", {})],
    )


def test_mistral_list_and_args_forms() -> None:
    listed = '[TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Rome"}}]'
    assert _calls(MISTRAL, listed) == ("", [("get_weather", {"city": "Rome"})])
    newer = '[TOOL_CALLS]get_weather[ARGS]{"city": "Rome"}[TOOL_CALLS]get_time[ARGS]{}'
    assert _calls(MISTRAL, newer) == ("", [("get_weather", {"city": "Rome"}), ("get_time", {})])


def test_llama3_json_with_parameters_python_tag_and_semicolons() -> None:
    one = '<|python_tag|>{"name": "get_weather", "parameters": {"city": "Lima"}}'
    assert _calls(LLAMA3, one) == ("", [("get_weather", {"city": "Lima"})])
    two = (
        '{"name": "get_time", "parameters": {}}; '
        '{"name": "get_weather", "parameters": {"city": "X"}}'
    )
    assert [name for name, _ in _calls(LLAMA3, two)[1]] == ["get_time", "get_weather"]


@pytest.mark.parametrize(
    "text",
    [
        "Just text.",
        '{"name": "delete_everything", "arguments": {}}',  # not an offered tool
        '{"name": "get_weather", "arguments": [1, 2]}',  # arguments not an object
        '{"answer": 42}',  # ordinary JSON
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Os',  # cut short
    ],
)
def test_what_is_not_a_call_of_an_offered_tool_stays_text(text: str) -> None:
    for fmt in (HERMES, MISTRAL, LLAMA3):
        assert fmt.read(text, TOOLS) == (text, [])


def test_arguments_written_as_a_json_string_are_read() -> None:
    text = '{"name": "get_weather", "arguments": "{\\"city\\": \\"Oslo\\"}"}'
    assert _calls(HERMES, text)[1] == [("get_weather", {"city": "Oslo"})]


def test_the_family_is_recognised_from_its_template() -> None:
    assert detect_tool_format("{% if tools %}<tool_call>{% endif %}") is HERMES
    assert detect_tool_format("{% for tool in tools %}[TOOL_CALLS]{% endfor %}") is MISTRAL
    assert detect_tool_format("{%- if tools %}<|python_tag|>{% endif %}") is LLAMA3
    assert detect_tool_format("{% for m in messages %}{{ m.content }}{% endfor %}") is None


def test_call_schemas_accept_exactly_the_calls_of_the_family() -> None:
    hermes = HERMES.call_schema(TOOLS)
    jsonschema_rs.validate(hermes, {"name": "get_weather", "arguments": {"city": "Oslo"}})
    assert not jsonschema_rs.is_valid(hermes, {"name": "get_weather", "arguments": {}})
    assert not jsonschema_rs.is_valid(hermes, {"name": "other", "arguments": {}})
    llama = LLAMA3.call_schema(TOOLS[1:])
    jsonschema_rs.validate(llama, {"name": "get_time", "parameters": {}})
    mistral = MISTRAL.call_schema(TOOLS[:1])
    jsonschema_rs.validate(mistral, [{"name": "get_weather", "arguments": {"city": "Oslo"}}])


def test_forced_tools_follow_tool_choice() -> None:
    base = {"prompt": "", "messages": [{"role": "user", "content": "x"}], "tools": TOOLS}
    assert forced_tools(PromptRequest.model_validate(base)) is None
    required = PromptRequest.model_validate({**base, "tool_choice": "required"})
    assert [t.function.name for t in forced_tools(required) or []] == ["get_weather", "get_time"]
    named = {"type": "function", "function": {"name": "get_time"}}
    named_request = PromptRequest.model_validate({**base, "tool_choice": named})
    assert [t.function.name for t in forced_tools(named_request) or []] == ["get_time"]


def _split(fmt, pieces: list[str], **options: bool) -> tuple[str, str, list[str]]:  # type: ignore[no-untyped-def]
    splitter = ToolCallSplitter(fmt, **options)
    shown = "".join(splitter.feed(piece) for piece in pieces)
    tail, calls = splitter.finish(TOOLS)
    return shown, tail, [call.name for call in calls]


def test_text_streams_through_and_a_call_after_it_is_held() -> None:
    pieces = [
        "Sure",
        ", one",
        " moment.\n<tool",
        '_call>\n{"name": "get_time", ',
        '"arguments": {}}',
    ]
    assert _split(HERMES, pieces) == ("Sure, one moment.\n", "", ["get_time"])


def test_a_reply_that_opens_like_a_call_is_held_to_the_end() -> None:
    pieces = ['{"name": ', '"get_time", "parameters": {}}']
    assert _split(LLAMA3, pieces) == ("", "", ["get_time"])
    # ... and given back as text when it was not one.
    assert _split(LLAMA3, ['{"answer"', ": 1}"]) == ("", '{"answer": 1}', [])


def test_a_partial_marker_is_held_until_it_is_not_one() -> None:
    assert _split(HERMES, ["a <to", "ol", "box> b"]) == ("a <toolbox> b", "", [])
    assert _split(HERMES, ["<t", "able>"]) == ("<table>", "", [])


def test_a_required_call_holds_everything() -> None:
    assert _split(HERMES, ['{"name": "get_time",', ' "arguments": {}}'], hold_all=True) == (
        "",
        "",
        ["get_time"],
    )


class Street(BaseModel):
    name: str
    number: int


class HomeAddress(BaseModel):
    street: Street
    city: str


class Person(BaseModel):
    """Nested models: pydantic (and LangChain's bind_tools) write ``$defs`` and ``$ref``s."""

    name: str
    home: HomeAddress
    friends: list[Person] = []


class OfficeAddress(BaseModel):
    floor: int


class Company(BaseModel):
    name: str
    office: OfficeAddress


def _tool(name: str, parameters: dict[str, Any]) -> ToolSpec:
    return ToolSpec.model_validate(
        {"type": "function", "function": {"name": name, "parameters": parameters}}
    )


def _nested_tools() -> list[ToolSpec]:
    """Two tools that both name a definition ``Address``, differently, and a recursive one."""
    person = Person.model_json_schema()
    company = Company.model_json_schema()
    company["$defs"]["HomeAddress"] = company["$defs"].pop("OfficeAddress")  # same name, other body
    company["properties"]["office"] = {"$ref": "#/$defs/HomeAddress"}
    return [_tool("add_person", person), _tool("add_company", company)]


PERSON_CALL = {
    "name": "Ada",
    "home": {"street": {"name": "Main", "number": 1}, "city": "Oslo"},
    "friends": [{"name": "Bob", "home": {"street": {"name": "Side", "number": 2}, "city": "Rome"}}],
}


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        own = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return own + [r for key, value in node.items() if key != "$ref" for r in _refs(value)]
    return [r for item in node for r in _refs(item)] if isinstance(node, list) else []


@pytest.mark.parametrize("fmt", [HERMES, MISTRAL, LLAMA3], ids=lambda f: f.name)
def test_call_schemas_keep_the_tools_refs_working(fmt: ToolFormat) -> None:
    """A tool's ``#/$defs/...`` pointed at nothing once nested under ``arguments``: each
    engine's constraint refused the schema (lm-format-enforcer: "No definitions found")."""
    tools = _nested_tools()
    schema = fmt.call_schema(tools)
    arguments = fmt.arguments_key
    person = {"name": "add_person", arguments: PERSON_CALL}
    company = {"name": "add_company", arguments: {"name": "ECorp", "office": {"floor": 3}}}
    wrap = (lambda call: [call]) if fmt.as_list else (lambda call: call)
    for call in (person, company):
        jsonschema_rs.validate(schema, wrap(call))
    wrong_company = {"name": "add_company", arguments: {"name": "E", "office": {"city": "x"}}}
    assert not jsonschema_rs.is_valid(schema, wrap(wrong_company))  # its own HomeAddress
    deep_wrong = {**PERSON_CALL, "friends": [{"name": "B", "home": {"street": {}, "city": "R"}}]}
    assert not jsonschema_rs.is_valid(schema, wrap({"name": "add_person", arguments: deep_wrong}))
    for ref in _refs(schema):  # lm-format-enforcer looks up a ref's last part in the root's $defs
        assert ref.startswith("#/$defs/") and ref.split("/")[-1] in schema["$defs"]


def test_other_local_refs_point_where_the_parameters_now_are() -> None:
    recursive = {
        "type": "object",
        "properties": {
            "a": {"type": "integer"},
            "b": {"$ref": "#/properties/a"},
            "c": {"$ref": "#"},
        },
        "enum_like": {"enum": [{"$ref": "data, not a pointer"}]},
    }
    schema = HERMES.call_schema([_tool("f", recursive)])
    arguments = schema["properties"]["arguments"]
    assert arguments["properties"]["b"] == {"$ref": "#/properties/arguments/properties/a"}
    assert arguments["properties"]["c"] == {"$ref": "#/properties/arguments"}
    assert arguments["enum_like"] == recursive["enum_like"]
    assert "$defs" not in schema
    jsonschema_rs.validate(schema, {"name": "f", "arguments": {"a": 1, "b": 2, "c": {"a": 3}}})
    assert not jsonschema_rs.is_valid(schema, {"name": "f", "arguments": {"b": "x"}})


def test_lm_format_enforcer_follows_the_refs_of_a_nested_call() -> None:
    """ExLlamaV2's constraint (lm-format-enforcer's own parser, character by character)."""
    from lmformatenforcer import JsonSchemaParser

    parser: Any = JsonSchemaParser(HERMES.call_schema(_nested_tools()))
    for char in json.dumps({"name": "add_person", "arguments": PERSON_CALL}):
        assert char in parser.get_allowed_characters(), char
        parser = parser.add_character(char)
    assert parser.can_end()
