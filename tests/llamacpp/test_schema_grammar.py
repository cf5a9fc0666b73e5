"""A JSON Schema's grammar allows only replies valid against it (or the schema is a 422 first).

llama.cpp's converter (``json_schema_to_gbnf``) let a raw newline into a string, wrote a
``const``'s backslash unescaped, could not take an ``enum`` value with a quote and ignored
integer bounds: SmolLM2 sampled under it wrote JSON that did not parse, or 1945 for an integer
from 5 to 7. Here SmolLM2 samples at temperature 1 under the grammars of such schemas, several
seeds at once, and every reply must parse and be valid against its schema; what the grammar
cannot hold is refused with the keyword and where it is.
"""

from __future__ import annotations

import asyncio
import datetime
import json
from collections.abc import Iterator
from typing import Any, Literal

import pytest
from pydantic import BaseModel, Field

from tests.support.optional import LLAMACPP_PLUGIN_MISSING
from tests.support.real_model import REASON

pytest.importorskip("promptwire_llamacpp", reason=LLAMACPP_PLUGIN_MISSING)
pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed")

import jsonschema_rs
from promptwire.engine import RequestRejected
from promptwire.protocol import PromptRequest
from promptwire.testing import arun_engine
from promptwire_llamacpp.engine import LlamaCppEngine
from promptwire_llamacpp.grammar import grammar_alternatives, schema_grammar
from promptwire_llamacpp.settings import LlamaCppSettings

SEEDS = (1, 2, 3, 4, 5, 6)
#: Questions whose answers SmolLM2 wrote outside the bounds below (1945 for 5 to 7...).
YEAR = "In which year did World War II end?"
LEGS = "How many legs does a cat have?"
HEAT = "What is the temperature in Paris?"
#: An enum that pydantic 1 put under ``allOf`` (the converter wrote ``{}`` for it).
COLOUR = {"C": {"enum": ["red", "green"], "type": "string"}}
#: The real-model tier's marks (``tests.support.real_model``), for the tests that sample.
REAL = [pytest.mark.realmodel, pytest.mark.skipif(REASON is not None, reason=REASON or "")]


def _object(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "properties": {name: schema}, "required": [name]}


# -- the grammar's text (no model) ---------------------------------------------------------------


def test_strings_hold_no_raw_control_character() -> None:
    grammar = schema_grammar(_object("text", {"type": "string"}))
    char = next(line for line in grammar.splitlines() if line.startswith("char ::="))
    assert r'[^"\\\x00-\x1F]' in char


def test_const_and_enum_values_are_escaped_whole() -> None:
    grammar = schema_grammar({"const": "C:\\dir"})
    assert r'root ::= "\"C:\\\\dir\""' in grammar.splitlines()
    grammar = schema_grammar({"enum": ['say "hi"', "a\\b"]})
    assert r'"\"say \\\"hi\\\"\""' in grammar
    assert r'"\"a\\\\b\""' in grammar


def test_integer_bounds_are_digit_ranges() -> None:
    grammar = schema_grammar({"type": "integer", "minimum": 5, "maximum": 7})
    assert "root ::= ([5-7]) space" in grammar.splitlines()
    grammar = schema_grammar({"type": "integer", "minimum": -20, "maximum": -3})
    assert 'root ::= ("-" [3-9] | "-" "1" [0-9] | "-" "2" "0") space' in grammar.splitlines()


def test_a_patterns_classes_and_dot_keep_out_what_json_escapes() -> None:
    grammar = schema_grammar({"type": "string", "pattern": "^[^,]+.[ -~]$"})
    assert r'[^"\\\x00-\x1F,]' in grammar
    assert 'dot ::= [^"\\\\\\x00-\\x1F]' in grammar
    assert "[\\U00000020-\\U00000021\\U00000023-\\U0000005B\\U0000005D-\\U0000007E]" in grammar


@pytest.mark.parametrize(
    ("schema", "keyword", "where"),
    [
        (_object("n", {"type": "integer", "multipleOf": 5}), "multipleOf", "/properties/n"),
        (_object("x", {"type": "number", "maximum": 2.5}), "maximum", "/properties/x"),
        ({"type": "array", "items": {"type": "integer"}, "uniqueItems": True}, "uniqueItems", ""),
        ({"type": "object", "maxProperties": 2}, "maxProperties", ""),
        (_object("mail", {"type": "string", "format": "email"}), "format", "/properties/mail"),
        (_object("s", {"type": "string", "pattern": '^"a"$'}), "pattern", "/properties/s"),
        ({"not": {"type": "string"}}, "not", ""),
        ({"type": "integer", "minimum": 9, "maximum": 3}, "minimum", ""),
        ({"type": ["integer", "null"], "minimum": 3}, "minimum", ""),
        ({"type": "array", "minItems": 2}, "minItems", ""),
        (
            _object("c", {"allOf": [{"$ref": "#/$defs/C"}]}) | {"$defs": COLOUR},
            "allOf",
            "/properties/c",
        ),
    ],
)
def test_what_the_grammar_cannot_hold_is_refused_naming_it(
    schema: dict[str, Any], keyword: str, where: str
) -> None:
    with pytest.raises(RequestRejected) as refused:
        schema_grammar(schema)
    assert f"`{keyword}` (at {where}/{keyword})" in str(refused.value)


class Size(BaseModel):
    name: str = Field(min_length=1, max_length=20)
    count: int = Field(ge=1, le=7)
    ratio: float = Field(ge=0, le=1)
    colour: Literal["red", "green", 'say "hi"']
    tags: list[str] = Field(min_length=1, max_length=3)
    code: str = Field(pattern=r"^[A-Z][a-z]{2}[^,]$")
    when: datetime.datetime
    note: str | None = None
    floor: int | None = Field(default=None, gt=-5, lt=50)


SIZE = Size.model_json_schema()


#: Schemas whose grammars use every new rule (pydantic's with bounds, quotes in an enum, a
#: ``$ref``, number bounds, bounds past 16 digits, patterns' classes and ``.``, formats).
PARSED = [
    SIZE,
    {"type": "object", "properties": {"s": {"$ref": "#/$defs/S"}}, "$defs": {"S": SIZE}},
    {"type": "number", "exclusiveMinimum": -1000000, "maximum": 3},
    {"type": "integer", "minimum": -1e20},
    {"type": "integer", "maximum": 1e20, "minimum": 123456789012345678},
    {"type": "string", "pattern": "^[\\x00-\\x7F]{2}.[\\n0-9]?$"},
    {"type": "string", "pattern": "^[^\\x00-\\U0010FFFF]$"},
    {"type": "array", "items": {"type": "integer"}, "maxItems": 1, "uniqueItems": True},
    {"type": "string", "format": "date-time"},
]  # fmt: skip


@REAL[0]
@REAL[1]
def test_the_grammars_parse_in_llama_cpp(engine: LlamaCppEngine) -> None:
    for schema in PARSED:
        request = {
            "prompt": "Answer.",
            "messages": [{"role": "user", "content": "Answer."}],
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "a", "schema": schema},
            },
        }
        engine.prepare(PromptRequest.model_validate(request))  # RequestRejected: it did not parse


def test_many_bounds_stay_within_the_breadth_limit() -> None:
    grammar = schema_grammar(
        {
            "type": "object",
            "properties": {
                f"n{index}": {"type": "integer", "minimum": -12345, "maximum": 987654}
                for index in range(12)
            },
            "required": [f"n{index}" for index in range(12)],
        }
    )
    assert grammar_alternatives(grammar) > 200  # each range counts its alternatives
    with pytest.raises(RequestRejected, match="too broad"):
        schema_grammar(
            {
                "type": "object",
                "properties": {
                    f"n{index}": {"type": "integer", "minimum": -12345, "maximum": 987654}
                    for index in range(20)
                },
            }
        )


# -- SmolLM2 sampling under the grammars ----------------------------------------------------------


@pytest.fixture(scope="module")
def engine() -> Iterator[LlamaCppEngine]:
    settings = LlamaCppSettings(parallel=len(SEEDS), context_size=1536, threads=1)
    engine = LlamaCppEngine(settings)
    engine.load()
    yield engine
    engine.unload()


def _sample(engine: LlamaCppEngine, body: dict[str, Any]) -> list[Any]:
    """``body`` (a chat request) at temperature 1, once a seed, all at once."""

    async def every_seed() -> list[Any]:
        requests = [{"prompt": "", "temperature": 1.0, "seed": seed, **body} for seed in SEEDS]
        return list(await asyncio.gather(*(arun_engine(engine, r) for r in requests)))

    return asyncio.run(every_seed())


def _structured(engine: LlamaCppEngine, question: str, schema: dict[str, Any]) -> list[Any]:
    body = {
        "messages": [{"role": "user", "content": question}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "a", "schema": schema}},
        "max_tokens": 96,
    }
    replies = []
    for run in _sample(engine, body):
        assert run.finish.finish_reason == "stop", run.text
        value = json.loads(run.text)  # no raw control character, every escape right
        jsonschema_rs.validate(schema, value)
        replies.append(value)
    return replies


@REAL[0]
@REAL[1]
def test_a_string_the_model_breaks_into_lines_is_valid_json(engine: LlamaCppEngine) -> None:
    """Half these seeds wrote a raw newline in the string under the converter's grammar."""
    schema = _object("lines", {"type": "string", "maxLength": 60})
    _structured(engine, "Write a poem of four short lines about the sea.", schema)


@REAL[0]
@REAL[1]
@pytest.mark.parametrize(
    ("question", "schema"),
    [
        (YEAR, {"type": "integer", "minimum": 5, "maximum": 7}),
        (YEAR, _object("n", {"type": "integer", "minimum": 5, "maximum": 7})),
        (LEGS, _object("t", {"type": "integer", "minimum": -20, "maximum": -3})),
        (LEGS, {"type": "integer", "minimum": 10}),
        (YEAR, _object("year", {"type": "integer", "exclusiveMaximum": 100})),
        (HEAT, _object("c", {"type": "number", "minimum": -5, "exclusiveMaximum": 3})),
    ],
)
def test_every_sampled_integer_is_within_its_bounds(
    engine: LlamaCppEngine, question: str, schema: dict[str, Any]
) -> None:
    _structured(engine, question, schema)


@REAL[0]
@REAL[1]
@pytest.mark.parametrize(
    "properties",
    [
        {"path": {"const": "C:\\dir"}, "mode": {"enum": ["a\\b", "a\\n"]}},
        {"mode": {"enum": ['say "hi"', "bye"]}, 'odd "name\\"': {"const": '"\\"'}},
    ],
    ids=["backslashes", "quotes"],
)
def test_a_forced_call_with_backslashes_and_quotes_in_its_values(
    engine: LlamaCppEngine, properties: dict[str, Any]
) -> None:
    parameters = {"type": "object", "properties": properties, "required": list(properties)}
    tool = {
        "type": "function",
        "function": {"name": "open", "description": "Open a folder.", "parameters": parameters},
    }
    body = {
        "messages": [{"role": "user", "content": "Open my folder."}],
        "tools": [tool],
        "tool_choice": "required",
        "max_tokens": 64,
    }
    for run in _sample(engine, body):
        assert [call.name for call in run.tool_calls] == ["open"], run.text
        arguments = json.loads(run.tool_calls[0].arguments)
        jsonschema_rs.validate(parameters, arguments)  # the values exactly, not "\b" for "\\b"


@REAL[0]
@REAL[1]
def test_a_keyword_the_grammar_cannot_hold_is_refused_before_sampling(
    engine: LlamaCppEngine,
) -> None:
    schema = _object("n", {"type": "integer", "multipleOf": 3})
    with pytest.raises(RequestRejected, match=r"`multipleOf` \(at /properties/n/multipleOf\)"):
        _structured(engine, "Pick a number.", schema)
