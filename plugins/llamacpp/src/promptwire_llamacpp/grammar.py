"""JSON Schemas as llama.cpp grammars (GBNF), for replies that must be valid JSON.

llama-cpp-python ships llama.cpp's converter (``json_schema_to_gbnf``) and its generic JSON
grammar; a grammar in a sequence's sampler chain masks every token that would break it, so a
structured output or a forced tool call is valid by construction, and only an end-of-generation
token may follow a complete value.

A grammar's cost is per token: at every step llama.cpp checks each token of the vocabulary
against each way the grammar can go on from where the reply is (its "stacks": one per
alternative still open), so an enum of 20,000 strings, a fifth of the schema budget, cost 4.9 s
per step (7.6 s on a loaded machine; 49,152 tokens in SmolLM2's vocabulary). The grammar's
alternatives (``|`` branches, rules, ``?``/``*``/``+``) bound how many ways can be open at once,
so a grammar with more than ``MAX_GRAMMAR_ALTERNATIVES`` of them is refused (a 422).

The converter alone is not valid by construction, so it runs subclassed (``_Converter``): JSON
strings hold no raw control character (its ``char`` rule and a pattern's ``.`` and classes took
them), ``const``/``enum`` values and property names are escaped whole (a backslash or a quote in
one made invalid JSON, wrong data or a grammar llama.cpp refused), and an integer's
``minimum``/``maximum``/``exclusiveMinimum``/``exclusiveMaximum`` (a number's, when they are whole)
are digit ranges in the grammar (``grammar_numbers``). What it would still ignore
(``multipleOf``, ``uniqueItems``, ``minProperties`` and ``maxProperties`` a reply could break,
``format``s it does not write, ``not``, ``if``...) is refused before it runs
(``grammar_checks``): a 422 naming the keyword and where it is, never a reply the schema does
not allow.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from promptwire.engine import RequestRejected
from promptwire.engine.constraints import JSON_OBJECT_SCHEMA

from promptwire_llamacpp.grammar_checks import (
    BOUNDS,
    SAFE_CHAR,
    json_safe_pattern,
    refuse_unenforced,
)
from promptwire_llamacpp.grammar_numbers import number_rule

#: The most alternatives a grammar may have (see the module's docstring). JSON's own grammar has
#: 18, a tool call with a few typed arguments about 20-60; an enum counts one per value. At the
#: limit, an enum of 250 strings sharing a long prefix (every alternative open for many steps)
#: costs 0.11 CPU-s more per step (about 0.4 ms per alternative; SmolLM2, measured at load 10).
MAX_GRAMMAR_ALTERNATIVES = 256


def schema_grammar(schema: Mapping[str, Any]) -> str:
    """The GBNF of the values ``schema`` allows; a schema the converter cannot take is a 422."""
    from llama_cpp.llama_grammar import JSON_GBNF

    if dict(schema) == JSON_OBJECT_SCHEMA:  # any JSON object: llama.cpp's own JSON grammar
        return str(JSON_GBNF)
    # The converter takes seconds over a schema far too broad (1.2 s for an enum of 20,000
    # strings): a walk of the schema refuses those first, from what it alone adds up to.
    _refuse_breadth(schema_alternatives(schema))
    try:
        refuse_unenforced(schema)
        converter = _converter()
        resolved = converter.resolve_refs(json.loads(json.dumps(schema)), "stdin")
        converter.visit(resolved, "")
        grammar = str(converter.format_grammar())
    except RequestRejected:
        raise
    except RecursionError:
        raise RequestRejected("the JSON schema is nested too deeply to constrain a reply") from None
    except Exception as exc:  # the converter's own errors: unsupported or contradictory schemas
        raise RequestRejected(
            f"this server cannot constrain a reply to the JSON schema given: {exc}"
        ) from None
    _refuse_breadth(grammar_alternatives(grammar))
    return grammar


def _refuse_breadth(breadth: int) -> None:
    if breadth > MAX_GRAMMAR_ALTERNATIVES:
        raise RequestRejected(
            f"the JSON schema is too broad to constrain a reply: its grammar has {breadth:,} "
            f"alternatives (enum values, anyOf branches, pattern alternatives, optional parts), "
            f"at most {MAX_GRAMMAR_ALTERNATIVES} here, since each is checked against every token "
            "of the vocabulary at every step"
        )


def schema_alternatives(schema: Any) -> int:
    """The alternatives a schema's grammar has at least: its enum values, anyOf and oneOf
    branches, and the ``|`` of its patterns (the grammar adds its own rules to these)."""
    if isinstance(schema, list):
        return sum(schema_alternatives(item) for item in schema)
    if not isinstance(schema, dict):
        return 0
    count = 0
    for keyword, value in schema.items():
        if keyword in ("enum", "anyOf", "oneOf") and isinstance(value, list):
            count += len(value)
        if keyword == "pattern" and isinstance(value, str):
            count += value.count("|")
        elif keyword not in ("enum", "const", "default", "examples"):
            count += schema_alternatives(value)
    return count


def grammar_alternatives(grammar: str) -> int:
    """The rules, ``|`` branches and ``?``/``*``/``+`` of a GBNF grammar (outside its strings,
    character classes and comments): a bound on the ways it can go on at once."""
    count, index, size = 0, 0, len(grammar)
    while index < size:
        char = grammar[index]
        if char in '"[':
            end = "]" if char == "[" else '"'
            index += 1
            while index < size and grammar[index] != end:
                index += 2 if grammar[index] == "\\" else 1
        elif char == "#":
            while index < size and grammar[index] != "\n":
                index += 1
        elif char in "|?*+" or grammar.startswith("::=", index):
            count += 1
        index += 1
    return count


def _literal(text: str) -> str:
    """``text`` as a GBNF string literal: every character llama.cpp reads as itself."""
    out = []
    for char in text:
        if char in '"\\':
            out.append("\\" + char)
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\x{ord(char):02X}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


_CONVERTER: Any = None


def _converter() -> Any:
    """A fresh ``_Converter`` (the class made once, when llama-cpp-python is first needed)."""
    global _CONVERTER
    if _CONVERTER is None:
        _CONVERTER = _converter_class()
    return _CONVERTER(prop_order={}, allow_fetch=False, dotall=False, raw_pattern=False)


def _converter_class() -> Any:
    from llama_cpp import llama_grammar as converter

    json_char = converter.BuiltinRule(
        SAFE_CHAR + r' | "\\" (["\\/bfnrt] | "u" [0-9a-fA-F] [0-9a-fA-F] [0-9a-fA-F] '
        "[0-9a-fA-F])",
        [],
    )
    dots = (converter.DOT, converter.DOTALL)

    class _Converter(converter.SchemaConverter):  # type: ignore[misc]
        """llama.cpp's converter, valid by construction (see the module's docstring)."""

        def _format_literal(self, literal: str) -> str:
            return _literal(literal)

        def _add_rule(self, name: str, rule: str) -> str:
            return str(super()._add_rule(name, SAFE_CHAR if rule in dots else rule))

        def _add_primitive(self, name: str, rule: Any) -> str:
            if name == "char":
                rule = json_char
            return str(super()._add_primitive(name, rule))

        def _visit_pattern(self, pattern: str, name: str) -> str:
            return str(super()._visit_pattern(json_safe_pattern(pattern), name))

        def visit(self, schema: Any, name: str) -> str:
            if (
                isinstance(schema, dict)
                and schema.get("type") in ("integer", "number")
                and any(schema.get(keyword) is not None for keyword in BOUNDS)
            ):
                if schema["type"] == "number":
                    decimal = converter.PRIMITIVE_RULES["decimal-part"]
                    self._add_primitive("decimal-part", decimal)
                reserved = name in converter.RESERVED_NAMES
                rule_name = name + "-" if reserved else name or "root"
                return str(self._add_rule(rule_name, f"({number_rule(schema)}) space"))
            return str(super().visit(schema, name))

    return _Converter
