"""A JSON value valid against a JSON Schema, made without a model: the dummy engine's answer to
``response_format`` and its tools' arguments.

Deterministic and small on purpose (the same schema always gives the same value, so chains and
agents are reproducible): it takes the first choice wherever a schema offers several (``enum``,
``anyOf``, ``oneOf``, a list of types), fills every property (required or not, so a caller sees
its whole shape) and the fewest array items allowed, and honours the keywords that decide whether
a value is valid for the schemas tools and pydantic models produce: ``type``, ``properties``,
``required``, ``items``/``prefixItems``, ``minItems``, ``enum``, ``const``, ``anyOf``/``oneOf``/
``allOf``, local ``$ref``s (``#/$defs/...``, ``#/definitions/...``), string ``minLength``/
``maxLength``/``format`` and numeric bounds. (Libraries that generate instances, such as
hypothesis-jsonschema and jsf, are random by design and would put hypothesis or faker into every
dummy server, Modal's included.) A schema it cannot satisfy raises ``ValueError``, and so does
one whose value would be larger than ``MAX_VALUES`` values or ``MAX_CHARS`` characters of text
(a recursive schema filled to its depth, a ``minItems`` of items with ``minItems`` of their own):
the server's schema budget (``promptwire.server.schema_budget``) bounds the schema, this the value.
"""

from __future__ import annotations

import math
from typing import Any

#: A string value for each ``format`` a schema may ask for.
FORMAT_EXAMPLES = {
    "date": "2024-01-01",
    "date-time": "2024-01-01T00:00:00Z",
    "time": "00:00:00Z",
    "email": "user@example.com",
    "uri": "https://example.com/",
    "url": "https://example.com/",
    "uuid": "00000000-0000-4000-8000-000000000000",
    "ipv4": "127.0.0.1",
    "ipv6": "::1",
    "hostname": "example.com",
}
MAX_DEPTH = 32
MAX_VALUES = 100_000
MAX_CHARS = 1 << 20


def instance(schema: Any, *, text: str = "hello world") -> Any:
    """A value valid against ``schema``; strings say ``text`` where the schema lets them."""
    return _Generator(schema, text).value(schema, 0)


class _Generator:
    def __init__(self, root: Any, text: str) -> None:
        self.root = root
        self.text = text
        self.values_left = MAX_VALUES
        self.chars_left = MAX_CHARS

    def value(self, schema: Any, depth: int) -> Any:
        if depth > MAX_DEPTH:
            raise ValueError("the schema nests too deeply (or refers to itself without an end)")
        self.values_left -= 1
        if self.values_left < 0:
            raise ValueError(f"a value for this schema would hold more than {MAX_VALUES} values")
        if schema is True or schema is None or schema == {}:
            return self.text
        if not isinstance(schema, dict):
            raise ValueError(f"not a JSON Schema: {schema!r}")
        if "$ref" in schema:
            return self.value(self._resolve(schema["$ref"]), depth + 1)
        if "const" in schema:
            return schema["const"]
        if schema.get("enum"):
            return schema["enum"][0]
        for keyword in ("anyOf", "oneOf"):
            if choices := schema.get(keyword):
                return self.value(_prefer_not_null(choices), depth + 1)
        if all_of := schema.get("allOf"):
            merged: dict[str, Any] = {k: v for k, v in schema.items() if k != "allOf"}
            for part in all_of:
                part = self._resolve(part["$ref"]) if "$ref" in part else part
                merged = _merge(merged, part)
            return self.value(merged, depth + 1)
        kind = schema.get("type")
        if isinstance(kind, list):
            kind = next((k for k in kind if k != "null"), kind[0] if kind else None)
        if kind is None:
            kind = "object" if "properties" in schema else "array" if "items" in schema else None
        if kind == "object":
            return self._object(schema, depth)
        if kind == "array":
            return self._array(schema, depth)
        if kind == "string":
            return self._string(schema)
        if kind in ("integer", "number"):
            return _number(schema, integer=kind == "integer")
        if kind == "boolean":
            return True
        if kind == "null":
            return None
        return self.text

    def _object(self, schema: dict[str, Any], depth: int) -> dict[str, Any]:
        properties = schema.get("properties") or {}
        result = {name: self.value(sub, depth + 1) for name, sub in properties.items()}
        extra = schema.get("additionalProperties")
        for name in schema.get("required") or ():
            if name not in result:
                result[name] = self.value(extra if isinstance(extra, dict) else {}, depth + 1)
        return result

    def _array(self, schema: dict[str, Any], depth: int) -> list[Any]:
        prefix = [self.value(sub, depth + 1) for sub in schema.get("prefixItems") or ()]
        wanted = max(int(schema.get("minItems", 1)), len(prefix))
        if "maxItems" in schema:
            wanted = min(wanted, int(schema["maxItems"]))
        items = schema.get("items", {})
        while len(prefix) < wanted:
            prefix.append(self.value(items if items is not False else {}, depth + 1))
        return prefix[:wanted] if len(prefix) > wanted else prefix

    def _string(self, schema: dict[str, Any]) -> str:
        text = FORMAT_EXAMPLES.get(schema.get("format", ""), self.text)
        low, high = int(schema.get("minLength", 0)), schema.get("maxLength")
        if low > MAX_CHARS:
            raise ValueError(f"minLength {low} is more than {MAX_CHARS} characters")
        if len(text) < low:
            text = (text * (low // max(1, len(text)) + 1))[: max(low, 1)]
        if high is not None:
            text = text[: int(high)]
        self.chars_left -= len(text)
        if self.chars_left < 0:
            raise ValueError(f"a value for this schema would hold more than {MAX_CHARS} characters")
        return text

    def _resolve(self, ref: Any) -> Any:
        if not isinstance(ref, str) or not ref.startswith("#"):
            raise ValueError(f"only local $refs are supported, not {ref!r}")
        target = self.root
        for part in ref.lstrip("#").strip("/").split("/") if ref != "#" else ():
            part = part.replace("~1", "/").replace("~0", "~")
            if not isinstance(target, dict) or part not in target:
                raise ValueError(f"the $ref {ref!r} points nowhere")
            target = target[part]
        return target


def _prefer_not_null(choices: list[Any]) -> Any:
    for choice in choices:
        if not (isinstance(choice, dict) and choice.get("type") == "null"):
            return choice
    return choices[0]


def _merge(left: dict[str, Any], right: dict[str, Any]) -> dict[str, Any]:
    merged = {**left, **right}
    if "properties" in left or "properties" in right:
        merged["properties"] = {**left.get("properties", {}), **right.get("properties", {})}
    if "required" in left or "required" in right:
        merged["required"] = [*left.get("required", []), *right.get("required", [])]
    return merged


def _number(schema: dict[str, Any], *, integer: bool) -> int | float:
    low = schema.get("minimum")
    if "exclusiveMinimum" in schema and not isinstance(schema["exclusiveMinimum"], bool):
        low = schema["exclusiveMinimum"] + (1 if integer else 0.5)
    high = schema.get("maximum")
    if "exclusiveMaximum" in schema and not isinstance(schema["exclusiveMaximum"], bool):
        high = schema["exclusiveMaximum"] - (1 if integer else 0.5)
    value: float = 1 if low is None else low
    if high is not None and value > high:
        value = high
    if integer:
        value = math.ceil(value) if low is not None else int(value)
        if (step := schema.get("multipleOf")) and isinstance(step, int) and step > 0:
            value = math.ceil(value / step) * step
        return int(value)
    return float(value)
