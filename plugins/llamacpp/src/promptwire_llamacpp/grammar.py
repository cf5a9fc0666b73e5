"""JSON Schemas as llama.cpp grammars (GBNF), for replies that must be valid JSON.

llama-cpp-python ships llama.cpp's converter (``json_schema_to_gbnf``) and its generic JSON
grammar; a grammar in a sequence's sampler chain masks every token that would break it, so a
structured output or a forced tool call is valid by construction, and only an end-of-generation
token may follow a complete value.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from promptwire.engine import RequestRejected

#: Any JSON object (``response_format`` ``json_object``): llama.cpp's JSON grammar.
JSON_OBJECT_SCHEMA: Mapping[str, Any] = {"type": "object"}


def schema_grammar(schema: Mapping[str, Any]) -> str:
    """The GBNF of the values ``schema`` allows; a schema the converter cannot take is a 422."""
    from llama_cpp.llama_grammar import JSON_GBNF, json_schema_to_gbnf

    if dict(schema) == JSON_OBJECT_SCHEMA:
        return str(JSON_GBNF)
    try:
        return str(json_schema_to_gbnf(json.dumps(schema)))
    except RecursionError:
        raise RequestRejected("the JSON schema is nested too deeply to constrain a reply") from None
    except Exception as exc:  # the converter's own errors: unsupported or contradictory schemas
        raise RequestRejected(
            f"this server cannot constrain a reply to the JSON schema given: {exc}"
        ) from None
