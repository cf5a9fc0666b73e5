"""What a reply must be constrained to, decided once for every engine that constrains decoding.

An engine with a grammar (llama.cpp) or a format enforcer (ExLlamaV2) constrains a reply to one
JSON schema: a required tool call's, a ``json_schema`` response format's, or any JSON object for
``json_object``. How it enforces the schema is its own; which schema, and which requests it
refuses, is the same for all of them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from promptwire.engine._contract import RequestUnsupported
from promptwire.engine.tool_calls import ToolFormat, forced_tools
from promptwire.protocol import JsonSchemaFormat, PromptRequest

#: A ``json_object`` response format: any JSON object (not any JSON value).
JSON_OBJECT_SCHEMA: Mapping[str, Any] = {"type": "object"}


def refuse_tools_with_json(request: PromptRequest) -> None:
    """One constraint a request: tool calls or a JSON response format, not both."""
    if request.wants_tools() and request.wants_json():
        raise RequestUnsupported(
            "this engine answers either tool calls or a JSON response_format, not both in "
            "one request: send tool_choice 'none' with the response_format, or no "
            "response_format with the tools"
        )


def constraint_schema(request: PromptRequest, fmt: ToolFormat | None) -> Mapping[str, Any] | None:
    """The schema ``request``'s reply must match, or None for free text.

    A request offering tools is free text unless it forces a call (then the call, in the tool
    format ``fmt`` the model writes); otherwise its response format decides.
    """
    if request.wants_tools() and fmt is not None:
        forced = forced_tools(request)
        return fmt.call_schema(forced) if forced else None
    if isinstance(request.response_format, JsonSchemaFormat):
        return request.response_format.json_schema.json_schema
    if request.wants_json():
        return JSON_OBJECT_SCHEMA
    return None


__all__ = ["JSON_OBJECT_SCHEMA", "constraint_schema", "refuse_tools_with_json"]
