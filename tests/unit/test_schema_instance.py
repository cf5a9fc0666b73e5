"""The dummy engine's JSON Schema instances: valid against the schemas tools and pydantic models
produce, deterministic, and a clear error for a schema it cannot satisfy."""

from __future__ import annotations

import datetime
import enum
import uuid
from typing import Any, Literal, TypedDict

import jsonschema_rs
import pytest
from langchain_core.utils.function_calling import convert_to_openai_tool
from promptwire_modal_dummy.schema_instance import instance
from pydantic import BaseModel, Field


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Address(BaseModel):
    street: str = Field(min_length=20)
    zip: str = Field(max_length=3)


class Person(BaseModel):
    name: str
    age: int = Field(gt=17, le=130)
    height: float = Field(ge=1.2, lt=2.5)
    nickname: str | None = None
    color: Color
    kind: Literal["a", "b"]
    tags: list[str] = Field(min_length=2, max_length=3)
    homes: list[Address]
    pair: tuple[int, str]
    born: datetime.date
    id: uuid.UUID
    scores: dict[str, int]
    step: int = Field(multiple_of=5, ge=7)


class Movie(TypedDict):
    title: str
    year: int


@pytest.mark.parametrize(
    "schema",
    [
        Person.model_json_schema(),
        convert_to_openai_tool(Person)["function"]["parameters"],
        convert_to_openai_tool(Movie)["function"]["parameters"],
        {"type": ["null", "integer"], "minimum": 3},
        {"oneOf": [{"type": "null"}, {"type": "array", "items": {"const": 7}, "minItems": 3}]},
        {
            "allOf": [
                {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]},
                {"properties": {"b": {"type": "boolean"}}, "required": ["b"]},
            ]
        },
        {"type": "object", "required": ["x"], "additionalProperties": {"type": "number"}},
        {"type": "string", "format": "date-time"},
        True,
        {},
    ],
)
def test_instances_are_valid(schema: Any) -> None:
    value = instance(schema)
    jsonschema_rs.validate(schema, value)
    assert instance(schema) == value  # deterministic
    if schema is not True and schema.get("title") == "Person":
        Person.model_validate(value)


def test_strings_say_the_given_text() -> None:
    assert instance({"type": "object", "properties": {"s": {"type": "string"}}}, text="hi") == {
        "s": "hi"
    }


@pytest.mark.parametrize(
    ("schema", "said"),
    [
        ({"$ref": "https://example.com/schema"}, "only local"),
        ({"$ref": "#/$defs/Missing"}, "points nowhere"),
        ({"$defs": {"A": {"$ref": "#/$defs/A"}}, "$ref": "#/$defs/A"}, "nests too deeply"),
        ([1, 2], "not a JSON Schema"),
    ],
)
def test_schemas_it_cannot_satisfy_are_a_value_error(schema: Any, said: str) -> None:
    with pytest.raises(ValueError, match=said):
        instance(schema)
