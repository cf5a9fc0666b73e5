"""What a JSON Schema in a request may cost an engine: ``response_format`` and tools' parameters.

Every engine turns a request's schemas into work of its own: the dummy makes a value for them,
ExLlamaV2's lm-format-enforcer a parser, llama.cpp a GBNF grammar. Each follows ``$ref``s and
honours lengths and counts, so a 2 KB schema whose ``$ref``s fan out 8 ways over 11 levels
expands to billions of nodes, and ``minLength: 1e8`` asks for 100 MB of grammar or text: either
pins a CPU or fills memory for as long as it takes. The server refuses such a schema before any
engine sees it (``check_request_schemas``, a 422 ``invalid_request``); an engine that derives a
schema of its own checks it with ``check_schema``.

The bounds, for all of one request's schemas together:

- the cost: every JSON value of the schema after its ``$ref``s are expanded (a ``$ref`` to a
  schema already being expanded on the way down, recursion, counts once), plus every length or
  count it asks for (``minLength``, ``maxItems``, ...: the repetitions a grammar holds), at most
  ``MAX_SCHEMA_COST``;
- nesting, ``$ref``s followed, at most ``MAX_SCHEMA_DEPTH`` levels;
- each length or count a non-negative integer of at most ``MAX_SCHEMA_COUNT``; each numeric bound
  (``minimum``, ``multipleOf``, ...) a finite number a float can hold;
- the keywords engines read have their shapes (``properties`` an object, ``anyOf`` a list of
  schemas, ``required`` a list of strings, ``$ref`` a local pointer that resolves), so that no
  engine fails on them with an ``AttributeError`` (a 500).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from promptwire.engine import RequestRejected
from promptwire.protocol import JsonSchemaFormat, PromptRequest

MAX_SCHEMA_COST = 100_000
MAX_SCHEMA_DEPTH = 64
MAX_SCHEMA_COUNT = 10_000

#: Lengths and counts: each is the number of repetitions an engine must honour.
_COUNT_KEYWORDS = frozenset(
    {
        "minLength",
        "maxLength",
        "minItems",
        "maxItems",
        "minProperties",
        "maxProperties",
        "minContains",
        "maxContains",
    }
)
_NUMBER_KEYWORDS = frozenset(
    {"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf"}
)
_SCHEMA_MAPS = frozenset(
    {"properties", "patternProperties", "$defs", "definitions", "dependentSchemas"}
)
_SCHEMA_LISTS = frozenset({"anyOf", "oneOf", "allOf", "prefixItems"})
_SCHEMA_VALUES = frozenset(
    {
        "not",
        "additionalProperties",
        "unevaluatedProperties",
        "unevaluatedItems",
        "additionalItems",
        "contains",
        "propertyNames",
        "if",
        "then",
        "else",
    }
)


class SchemaError(ValueError):
    """A schema refused: malformed where engines read it, or more work than it may cost."""


class SchemaBudget:
    """What is left of one request's allowance (``MAX_SCHEMA_COST``), shared by its schemas."""

    def __init__(self, cost: int = MAX_SCHEMA_COST) -> None:
        self.left = cost

    def spend(self, amount: int) -> None:
        self.left -= amount
        if self.left < 0:
            raise SchemaError(
                "the schema is too large once its $refs are expanded (more than "
                f"{MAX_SCHEMA_COST:,} values and repetitions in one request)"
            )


def check_schema(schema: Any, budget: SchemaBudget | None = None) -> None:
    """Refuse (``SchemaError``) a schema that is malformed where engines read it or that costs
    more than ``budget`` allows (a fresh ``MAX_SCHEMA_COST`` when None). Stops as soon as the
    budget is spent, so the check itself costs at most that much."""
    _Walk(schema, budget or SchemaBudget()).schema(schema, 0, ())


def check_request_schemas(request: PromptRequest) -> None:
    """Refuse (``RequestRejected``, 422) a request whose tools' parameters and response format
    together cost more than a request may, or are malformed; before any engine prepares it."""
    if not request.tools and request.response_format is None:
        return  # no schema (a plain prompt): nothing to check
    budget = SchemaBudget()
    found: list[tuple[str, Any]] = [
        (f"tools[{index}].function.parameters", tool.function.parameters)
        for index, tool in enumerate(request.tools or ())
    ]
    if isinstance(request.response_format, JsonSchemaFormat):
        schema = request.response_format.json_schema.json_schema
        found.append(("response_format.json_schema.schema", schema))
    for where, schema in found:
        try:
            check_schema(schema, budget)
        except SchemaError as exc:
            raise RequestRejected(f"{where}: {exc}") from None


class _Walk:
    def __init__(self, root: Any, budget: SchemaBudget) -> None:
        self.root = root
        self.budget = budget

    def schema(self, schema: Any, depth: int, expanding: tuple[str, ...]) -> None:
        self._enter(depth)
        if isinstance(schema, bool):
            return
        if not isinstance(schema, dict):
            raise SchemaError(f"a schema must be an object or a boolean, not {_kind(schema)}")
        for keyword, value in schema.items():
            if keyword == "$ref":
                self._ref(value, depth, expanding)
            elif keyword in _COUNT_KEYWORDS:
                self.budget.spend(_count(keyword, value))
            elif keyword in _NUMBER_KEYWORDS:
                _number(keyword, value)
            elif keyword in _SCHEMA_MAPS:
                if not isinstance(value, dict):
                    raise SchemaError(f"{keyword} must be an object, not {_kind(value)}")
                self._schemas(value.values(), depth, expanding)
            elif keyword in _SCHEMA_LISTS:
                if not isinstance(value, list):
                    raise SchemaError(f"{keyword} must be a list of schemas, not {_kind(value)}")
                self._schemas(value, depth, expanding)
            elif keyword == "items" and isinstance(value, list):  # draft 4's tuples
                self._schemas(value, depth, expanding)
            elif keyword == "items" or keyword in _SCHEMA_VALUES:
                self.schema(value, depth + 1, expanding)
            elif keyword == "required":
                if not (isinstance(value, list) and all(isinstance(n, str) for n in value)):
                    raise SchemaError("required must be a list of property names")
                self.budget.spend(len(value))
            elif keyword in ("enum", "type") and not isinstance(value, (list, str)):
                raise SchemaError(f"{keyword} must be a list, not {_kind(value)}")
            else:
                self._data(value, depth + 1)

    def _schemas(self, schemas: Iterable[Any], depth: int, expanding: tuple[str, ...]) -> None:
        for schema in schemas:
            self.schema(schema, depth + 1, expanding)

    def _ref(self, ref: Any, depth: int, expanding: tuple[str, ...]) -> None:
        if not isinstance(ref, str) or not ref.startswith("#"):
            raise SchemaError(f"only local $refs (#/...) are supported, not {_shown(ref)}")
        if ref in expanding:  # recursion: a grammar refers back to its rule
            return
        target = self.root
        for part in ref[1:].split("/")[1:] if ref != "#" else ():
            part = part.replace("~1", "/").replace("~0", "~")
            if isinstance(target, dict) and part in target:
                target = target[part]
            elif isinstance(target, list) and part.isdigit() and int(part) < len(target):
                target = target[int(part)]
            else:
                raise SchemaError(f"the $ref {_shown(ref)} points nowhere")
        self.schema(target, depth + 1, (*expanding, ref))

    def _data(self, value: Any, depth: int) -> None:
        """A value that is not a schema (``const``, ``enum``, ``default``, ...): its size."""
        self._enter(depth)
        if isinstance(value, dict):
            for item in value.values():
                self._data(item, depth + 1)
        elif isinstance(value, list):
            for item in value:
                self._data(item, depth + 1)

    def _enter(self, depth: int) -> None:
        if depth > MAX_SCHEMA_DEPTH:
            raise SchemaError(
                f"the schema nests more than {MAX_SCHEMA_DEPTH} levels deep, $refs followed"
            )
        self.budget.spend(1)


def _count(keyword: str, value: Any) -> int:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise SchemaError(f"{keyword} must be a non-negative integer, not {_shown(value)}")
    if value > MAX_SCHEMA_COUNT:
        raise SchemaError(
            f"{keyword} is {_shown(value)}: at most {MAX_SCHEMA_COUNT:,} can be honoured"
        )
    return value


def _number(keyword: str, value: Any) -> None:
    if isinstance(value, bool) and keyword.startswith("exclusive"):  # draft 4's flags
        return
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise SchemaError(f"{keyword} must be a number, not {_kind(value)}")
    try:
        finite = math.isfinite(float(value))
    except OverflowError:
        finite = False
    if not finite:
        raise SchemaError(f"{keyword} must be a finite number a float can hold")
    if keyword == "multipleOf" and value <= 0:
        raise SchemaError("multipleOf must be greater than 0")


def _kind(value: Any) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}
    return names.get(type(value), "null" if value is None else "a number")


def _shown(value: Any) -> str:
    """A value quoted in an error, cut short (a client may send anything)."""
    text = repr(value) if not isinstance(value, int) or value.bit_length() < 64 else "too large"
    return text if len(text) <= 60 else text[:57] + "..."


__all__ = [
    "MAX_SCHEMA_COST",
    "MAX_SCHEMA_COUNT",
    "MAX_SCHEMA_DEPTH",
    "SchemaBudget",
    "SchemaError",
    "check_request_schemas",
    "check_schema",
]
