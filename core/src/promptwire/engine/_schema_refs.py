"""Put one JSON Schema inside another without breaking its ``$ref``s.

A tool's parameters (LangChain's ``bind_tools`` over nested pydantic models writes them so) hold
their sub-schemas in ``$defs`` and point at them with ``#/$defs/Name``: pointers from the
parameters' own root. Nested in a constrained call's schema (under ``arguments``, once per tool),
those pointers would name nothing. ``embed`` moves the definitions to the outer schema's
``$defs``, renamed where two tools use one name for different things, and rewrites every local
``$ref`` to where its target now is. Both consumers then find them: llama.cpp's grammar converter
follows a pointer from the root, and lm-format-enforcer (ExLlamaV2) looks a ``$ref``'s last part
up in the root's ``$defs``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

DEFINITIONS = ("$defs", "definitions")
#: Keys whose values are data, not schemas: a ``{"$ref": ...}`` inside them is left alone.
DATA_KEYS = frozenset({"enum", "const", "default", "examples"})
_INTO_DEFINITIONS = re.compile(r"#/(\$defs|definitions)/([^/]+)(/.*)?\Z", re.DOTALL)


def embed(schema: Mapping[str, Any], at: str, defs: dict[str, Any], tag: str) -> dict[str, Any]:
    """``schema`` to be placed at JSON pointer ``at`` of an outer schema whose root ``$defs``
    is ``defs`` (filled here); ``tag`` prefixes a definition's name that ``defs`` already holds
    (two tools' ``Address`` may differ)."""
    renamed: dict[tuple[str, str], str] = {}
    own = {k: v for k, v in schema.items() if k not in DEFINITIONS}
    found = [
        (key, name, body)
        for key in DEFINITIONS
        if isinstance(schema.get(key), Mapping)
        for name, body in schema[key].items()
    ]
    for key, name, _ in found:
        new = name
        while new in defs:
            new = f"{tag}.{new}"
        defs[new] = None  # taken; its body is set once the names are known
        renamed[(key, name)] = new

    def move(ref: str) -> str:
        if not ref.startswith("#"):
            return ref  # not local: nothing of it moved
        match = _INTO_DEFINITIONS.match(ref)
        if match and (match[1], _unescape(match[2])) in renamed:
            return f"#/$defs/{_escape(renamed[(match[1], _unescape(match[2]))])}{match[3] or ''}"
        return "#" + at + ref[1:]

    for key, name, body in found:
        defs[renamed[(key, name)]] = _rewrite(body, move)
    moved: dict[str, Any] = _rewrite(own, move)
    return moved


def _rewrite(node: Any, move: Callable[[str], str]) -> Any:
    if isinstance(node, Mapping):
        return {
            key: (
                move(value)
                if key == "$ref" and isinstance(value, str)
                else value
                if key in DATA_KEYS
                else _rewrite(value, move)
            )
            for key, value in node.items()
        }
    if isinstance(node, list):
        return [_rewrite(item, move) for item in node]
    return node


def _unescape(part: str) -> str:
    return part.replace("~1", "/").replace("~0", "~")


def _escape(part: str) -> str:
    return part.replace("~", "~0").replace("/", "~1")
