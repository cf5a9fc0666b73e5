"""What a JSON Schema may ask that its llama.cpp grammar enforces (``promptwire_llamacpp.grammar``).

llama.cpp's converter ignores what it has no rule for (``multipleOf``, ``uniqueItems``, property
counts a reply could break, ``format``s it does not write, ``not``, ``if``...): a schema asking
for any of these is refused before it runs, a 422 naming the keyword and where it is, never a
reply the schema does not allow. Here too: the integer bounds a digit range can follow
(``bounds``), and a pattern's classes kept from what a JSON string cannot hold raw
(``json_safe_pattern``).
"""

from __future__ import annotations

import math
from typing import Any

from promptwire.engine import RequestRejected

#: Keywords that only describe (or that the server's budget already bounded): never refused.
_ANNOTATIONS = frozenset(
    {
        "title", "description", "default", "examples", "$comment", "$schema", "$id", "$anchor",
        "$defs", "definitions", "deprecated", "readOnly", "writeOnly", "discriminator",
        "contentMediaType", "contentEncoding", "strict",
    }
)  # fmt: skip
#: Keywords the converter has no rule for: a reply could break any of them.
_IGNORED = {
    "not": "a reply the grammar allows may match it",
    "if": "its conditions are not followed",
    "then": "its conditions are not followed",
    "else": "its conditions are not followed",
    "contains": "the items it asks for are not written",
    "minContains": "the items it asks for are not written",
    "maxContains": "the items it asks for are not written",
    "patternProperties": "property names are not matched against it",
    "propertyNames": "property names are not checked against it",
    "dependentRequired": "properties are not made required by others",
    "dependentSchemas": "properties are not made to depend on others",
    "dependencies": "properties are not made to depend on others",
}
#: The ``format``s the converter writes exactly (of a string without ``pattern`` or lengths).
_FORMATS = frozenset({"date", "time", "date-time", "uuid", *(f"uuid{n}" for n in range(1, 6))})
BOUNDS = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")
#: Beside these the converter reads nothing else of a schema (``type`` only beside a value).
_CHOICES = ("$ref", "anyOf", "oneOf", "const", "enum")


class _Unenforced(Exception):
    """A keyword the grammar would not enforce: (keyword, why)."""


def _pointer(path: tuple[str, ...]) -> str:
    return "/" + "/".join(part.replace("~", "~0").replace("/", "~1") for part in path)


def refuse_unenforced(schema: Any, path: tuple[str, ...] = (), root: Any = None) -> None:
    """A 422 for the first keyword of ``schema`` that its grammar would not enforce."""
    root = schema if root is None else root
    if isinstance(schema, list):
        for index, item in enumerate(schema):
            refuse_unenforced(item, (*path, str(index)), root)
        return
    if not isinstance(schema, dict):
        return
    try:
        _check_node(schema, root)
    except _Unenforced as exc:
        keyword, why = exc.args
        where = _pointer((*path, keyword))
        raise RequestRejected(
            f"this server cannot constrain a reply to the JSON schema given: `{keyword}` "
            f"(at {where}) is not enforced by its grammar: {why}; remove it or describe it "
            "in the prompt"
        ) from None
    for keyword in ("properties", "$defs", "definitions"):
        if isinstance(children := schema.get(keyword), dict):
            for key, child in children.items():
                refuse_unenforced(child, (*path, keyword, key), root)
    for keyword in ("items", "prefixItems", "anyOf", "oneOf", "allOf", "additionalProperties"):
        if keyword in schema:
            refuse_unenforced(schema[keyword], (*path, keyword), root)


def _check_node(schema: dict[str, Any], root: Any) -> None:
    for keyword, why in _IGNORED.items():
        if keyword in schema:
            raise _Unenforced(keyword, why)
    for keyword in ("unevaluatedProperties", "unevaluatedItems"):
        if keyword in schema and schema[keyword] is not False:
            raise _Unenforced(keyword, "only `false` is enforced (as no other property or item)")
    kind = schema.get("type")
    choice = next((keyword for keyword in _CHOICES if keyword in schema), None)
    if isinstance(kind, list) and choice is None:
        choice = "type"
    if choice is not None:
        allowed = (
            _ANNOTATIONS | set(_CHOICES) | ({"type"} if choice in ("const", "enum") else set())
        )
        for keyword in schema:
            if keyword not in allowed and keyword != choice:
                raise _Unenforced(
                    keyword, f"the grammar follows only `{choice}` beside it, not `{keyword}`"
                )
    if "allOf" in schema:
        _check_all_of(schema, root)
    if schema.get("multipleOf") is not None and not (
        kind == "integer" and schema["multipleOf"] == 1
    ):
        raise _Unenforced("multipleOf", "a grammar cannot write only multiples of a number")
    if schema.get("uniqueItems") is True and not (
        isinstance(schema.get("maxItems"), int) and schema["maxItems"] <= 1
    ):
        raise _Unenforced("uniqueItems", "a grammar cannot keep the items of an array apart")
    if "items" in schema and "prefixItems" in schema:
        raise _Unenforced("prefixItems", "the grammar follows only `items` beside it")
    if "items" not in schema and "prefixItems" not in schema and kind in (None, "array"):
        for keyword in ("minItems", "maxItems"):
            if schema.get(keyword) or (keyword == "maxItems" and keyword in schema):
                raise _Unenforced(keyword, "an array without `items` is any array")
    if isinstance(schema.get("prefixItems"), list):
        size = len(schema["prefixItems"])
        if not schema.get("minItems", 0) <= size <= schema.get("maxItems", size):
            raise _Unenforced("prefixItems", f"the grammar writes exactly its {size} items")
    _check_object(schema)
    if kind in ("integer", "number"):
        bounds(schema)  # refuses what cannot be a digit range
    if kind in (None, "string"):
        _check_string(schema)


def _check_all_of(schema: dict[str, Any], root: Any) -> None:
    """The converter writes an ``allOf`` as one object with its parts' properties (a part an
    object with ``properties``, a ``$ref`` to one, or an ``anyOf`` of those): nothing else."""
    why = "the grammar joins only objects' properties with it"
    if schema.get("type", "object") != "object" or "properties" in schema:
        raise _Unenforced("allOf", why)
    for part in schema["allOf"]:
        for one in part.get("anyOf", [part]) if isinstance(part, dict) else [part]:
            target = _resolve(one.get("$ref"), root) if isinstance(one, dict) else None
            target = one if target is None else target
            if not isinstance(target, dict) or "properties" not in target:
                raise _Unenforced("allOf", why)
            if target.get("type", "object") != "object":
                raise _Unenforced("allOf", why)


def _resolve(ref: Any, root: Any) -> Any:
    """The schema a local ``$ref`` points to in ``root`` (None: none, or not local)."""
    if not isinstance(ref, str) or not ref.startswith("#/"):
        return None
    target = root
    for part in ref[2:].split("/"):
        key = part.replace("~1", "/").replace("~0", "~")
        if isinstance(target, dict) and key in target:
            target = target[key]
        elif isinstance(target, list) and key.isdigit() and int(key) < len(target):
            target = target[int(key)]
        else:
            return None
    return target


def _check_object(schema: dict[str, Any]) -> None:
    """``required`` names and property counts, as the converter writes an object."""
    if schema.get("type") not in (None, "object"):
        return
    properties = schema.get("properties")
    extra = schema.get("additionalProperties")
    counts = [keyword for keyword in ("minProperties", "maxProperties") if keyword in schema]
    if "allOf" in schema:  # every property of its parts is written (but those of an anyOf)
        if counts:
            raise _Unenforced(counts[0], "the properties of `allOf`'s parts are not counted")
        return
    if not isinstance(properties, dict):
        if "properties" in schema or ("additionalProperties" in schema and extra is not True):
            properties = {}
        else:  # any object: as few or as many properties as the model writes
            for keyword in (*counts, "required"):
                if schema.get(keyword):
                    raise _Unenforced(keyword, "an object without `properties` is any object")
            return
    required = schema.get("required") or []
    if missing := [name for name in required if name not in properties]:
        raise _Unenforced("required", f"{missing[0]!r} is not one of the `properties`")
    fewest = len(set(required))
    most = None if extra is True or isinstance(extra, dict) else len(properties)
    if (low := schema.get("minProperties")) is not None and low > fewest:
        raise _Unenforced("minProperties", f"only {fewest} of the properties are `required`")
    if (high := schema.get("maxProperties")) is not None and (most is None or high < most):
        raise _Unenforced("maxProperties", "a reply may write more properties than that")


def _check_string(schema: dict[str, Any]) -> None:
    form, pattern = schema.get("format"), schema.get("pattern")
    lengths = [keyword for keyword in ("minLength", "maxLength") if keyword in schema]
    if pattern is not None and lengths:
        raise _Unenforced(lengths[0], "the grammar follows only `pattern` beside it")
    if form is not None:
        if form not in _FORMATS:
            raise _Unenforced("format", f"the grammar writes no {form!r} strings")
        if pattern is not None or lengths:
            raise _Unenforced("format", "the grammar follows `pattern` and lengths, not it")
    if isinstance(pattern, str):
        try:
            json_safe_pattern(pattern)
        except _Unenforced as exc:
            raise _Unenforced("pattern", exc.args[0]) from None


def bounds(schema: dict[str, Any]) -> tuple[int | None, int | None, int | None, int | None]:
    """The lowest and highest integers ``schema`` allows (None: no bound), and its tightest
    lower and upper bounds themselves (whole: a number's must be); ``_Unenforced`` else."""
    integer = schema.get("type") == "integer"
    low: int | None = None
    high: int | None = None
    lowest: int | None = None
    highest: int | None = None
    for keyword in BOUNDS:
        value = schema.get(keyword)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _Unenforced(keyword, "it is not a number")
        if not math.isfinite(value):
            raise _Unenforced(keyword, "it is not a finite number")
        if not integer and value != math.floor(value):
            raise _Unenforced(keyword, "only whole-number bounds of a `number` are enforced")
        exclusive = keyword.startswith("exclusive")
        if keyword.endswith("inimum"):
            bound = math.floor(value) + 1 if exclusive else math.ceil(value)
            low = bound if low is None else max(low, bound)
            whole = math.floor(value)
            lowest = whole if lowest is None else max(lowest, whole)
        else:
            bound = math.ceil(value) - 1 if exclusive else math.floor(value)
            high = bound if high is None else min(high, bound)
            whole = math.ceil(value)
            highest = whole if highest is None else min(highest, whole)
    if low is not None and high is not None and low > high:
        keyword = next(keyword for keyword in BOUNDS if keyword in schema)
        raise _Unenforced(keyword, "no integer lies between the bounds")
    return low, high, lowest, highest


# -- patterns: no raw quote, backslash or control character inside a JSON string ----------------

#: What a JSON string cannot hold unescaped: the control characters, the quote, the backslash.
_UNSAFE = ((0x00, 0x1F), (0x22, 0x22), (0x5C, 0x5C))
#: The characters a JSON string may hold as they are (a pattern's ``.``).
SAFE_CHAR = r'[^"\\\x00-\x1F]'
_GBNF_ESCAPES = {"t": 0x09, "r": 0x0D, "n": 0x0A, "\\": 0x5C, '"': 0x22, "[": 0x5B, "]": 0x5D}
_HEX_DIGITS = {"x": 2, "u": 4, "U": 8}


def _escaped(text: str, index: int) -> tuple[int | None, int]:
    """The character a GBNF escape at ``text[index]`` (a backslash) stands for (None: one
    llama.cpp does not know), and where it ends."""
    letter = text[index + 1 : index + 2]
    if letter in _HEX_DIGITS:
        digits = text[index + 2 : index + 2 + _HEX_DIGITS[letter]]
        try:
            return int(digits, 16), index + 2 + len(digits)
        except ValueError:
            return None, index + 2
    return _GBNF_ESCAPES.get(letter), index + 2


def json_safe_pattern(pattern: str) -> str:
    """``pattern`` with its ``[...]`` classes kept from the characters a JSON string cannot
    hold as they are (an empty class matches nothing); ``_Unenforced`` for a literal one."""
    out: list[str] = []
    index, size = 0, len(pattern)
    while index < size:
        char = pattern[index]
        if char == "\\":
            code, end = _escaped(pattern, index)
            if code is not None and _unsafe(code, code):
                raise _Unenforced(
                    "its literal quotes, backslashes and control characters are not written "
                    "escaped in a JSON string"
                )
            out.append(pattern[index:end])
            index = end
        elif char == '"':
            raise _Unenforced("its literal quotes are not written escaped in a JSON string")
        elif char == "[":
            end = index + 1
            while end < size and pattern[end] != "]":
                end += 2 if pattern[end] == "\\" else 1
            out.append(_safe_class(pattern[index : end + 1]))
            index = end + 1
        else:
            out.append(char)
            index += 1
    return "".join(out)


def _unsafe(first: int, last: int) -> bool:
    return any(first <= high and low <= last for low, high in _UNSAFE)


def _safe_class(text: str) -> str:
    """A ``[...]`` class without what a JSON string cannot hold raw (as GBNF reads it)."""
    if text.startswith("[^"):
        return '[^"\\\\\\x00-\\x1F' + text[2:]
    ranges: list[tuple[int, int]] = []
    index, size = 1, len(text) - 1
    while index < size:
        first, index = _class_char(text, index)
        last = first
        if index + 1 < size and text[index] == "-":
            last, index = _class_char(text, index + 1)
        if first is None or last is None:
            return text  # an escape llama.cpp cannot read: its parser refuses the grammar
        ranges.append((first, last))
    if not any(_unsafe(first, last) for first, last in ranges):
        return text
    kept: list[tuple[int, int]] = []
    for first, last in ranges:
        for low, high in _UNSAFE:
            if first <= high and low <= last:
                if first < low:
                    kept.append((first, low - 1))
                first = max(first, high + 1)
        if first <= last:
            kept.append((first, last))
    if not kept:
        return "[^\\x00-\\U0010FFFF]"  # matches nothing: no token can continue the grammar
    return "[" + "".join(f"{_hex(a)}-{_hex(b)}" for a, b in kept) + "]"


def _class_char(text: str, index: int) -> tuple[int | None, int]:
    if text[index] == "\\":
        return _escaped(text, index)
    return ord(text[index]), index + 1


def _hex(code: int) -> str:
    return f"\\U{code:08X}"
