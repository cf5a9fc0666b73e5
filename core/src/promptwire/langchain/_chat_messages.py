"""LangChain messages as the protocol's, and replies and stream events back as LangChain's:
what ``ChatPromptwire`` converts, with no model state and no I/O.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    ChatMessage,
    HumanMessage,
    InvalidToolCall,
    SystemMessage,
    ToolCall,
    ToolMessage,
)
from langchain_core.messages.ai import UsageMetadata
from langchain_core.messages.tool import tool_call_chunk
from langchain_core.output_parsers.openai_tools import make_invalid_tool_call, parse_tool_call
from langchain_core.outputs import ChatGenerationChunk
from langchain_core.utils.function_calling import convert_to_openai_tool

from promptwire import protocol
from promptwire.protocol import PromptResponse, StreamToolCall, Usage

#: Where a reasoning model's reasoning goes in a message: LangChain's convention (DeepSeek,
#: Ollama, xAI), which ``content_blocks`` shows as a ``reasoning`` block.
REASONING_KEY = "reasoning_content"

_ROLES: dict[str, protocol.ChatRole] = {
    "system": "system",
    "developer": "system",
    "user": "user",
    "human": "user",
    "assistant": "assistant",
    "ai": "assistant",
}


def to_protocol_messages(messages: Sequence[BaseMessage]) -> list[protocol.ChatMessage]:
    """LangChain messages as the protocol's ``messages`` (text; v1.2: tool calls of assistant
    messages, and ``ToolMessage``s as tool results)."""
    if not messages:
        raise ValueError("ChatPromptwire needs at least one message")
    return [_protocol_message(message) for message in messages]


def _protocol_message(message: BaseMessage) -> protocol.ChatMessage:
    fields: dict[str, Any] = {"role": _role(message), "content": _text(message)}
    if isinstance(message, AIMessage) and (calls := _sent_tool_calls(message)):
        fields["tool_calls"] = calls
    if isinstance(message, ToolMessage):
        fields["tool_call_id"] = message.tool_call_id
    return protocol.ChatMessage.model_validate(fields)


def _sent_tool_calls(message: AIMessage) -> list[dict[str, Any]]:
    """An assistant turn's tool calls as the protocol writes them (arguments as JSON text);
    invalid ones go back as the model wrote them, so the conversation stays what it was."""
    calls: list[dict[str, Any]] = [
        {
            "id": call.get("id") or f"call_{index}",
            "type": "function",
            "function": {"name": call["name"], "arguments": json.dumps(call["args"])},
        }
        for index, call in enumerate(message.tool_calls)
    ]
    for call in message.invalid_tool_calls:
        if call.get("name"):
            calls.append(
                {
                    "id": call.get("id") or f"call_{len(calls)}",
                    "type": "function",
                    "function": {"name": call["name"], "arguments": call.get("args") or ""},
                }
            )
    return calls


def _role(message: BaseMessage) -> protocol.ChatRole:
    if isinstance(message, HumanMessage):
        return "user"
    if isinstance(message, AIMessage):
        return "assistant"
    if isinstance(message, SystemMessage):
        return "system"
    if isinstance(message, ToolMessage):
        return "tool"
    if isinstance(message, ChatMessage) and message.role.lower() in _ROLES:
        return _ROLES[message.role.lower()]
    raise ValueError(
        f"ChatPromptwire sends system, user, assistant and tool messages only, not {message.type!r}"
    )


def _text(message: BaseMessage) -> str:
    if isinstance(message.content, str):
        return message.content
    for block in message.content:
        kind = "text" if isinstance(block, str) else block.get("type")
        if kind != "text" and not isinstance(message, AIMessage):
            raise ValueError(f"ChatPromptwire sends text only, not {kind!r} content blocks")
    return str(message.text)


def protocol_tool_choice(choice: dict[str, Any] | str | bool, names: list[str]) -> Any:
    """LangChain's spellings of ``tool_choice`` as the protocol's."""
    if choice is True or choice in ("any", "required"):
        return "required"
    if choice in ("auto", "none"):
        return choice
    if isinstance(choice, str):
        if choice not in names:
            raise ValueError(f"tool_choice {choice!r} is not one of the bound tools {names}")
        return {"type": "function", "function": {"name": choice}}
    if isinstance(choice, dict):
        return choice
    raise ValueError(
        f"tool_choice must be a tool's name, 'auto', 'none', 'required' or a dict, not {choice!r}"
    )


def response_format_of(schema: dict[str, Any] | type, *, strict: bool | None) -> dict[str, Any]:
    """A schema (pydantic, TypedDict, JSON Schema, or an OpenAI response format already) as
    a ``json_schema`` response format."""
    if isinstance(schema, dict) and schema.get("type") in ("json_schema", "json_object", "text"):
        return schema
    if isinstance(schema, dict) and "name" in schema and "schema" in schema:
        return {"type": "json_schema", "json_schema": schema}
    function = convert_to_openai_tool(schema, strict=strict)["function"]
    spec: dict[str, Any] = {"name": function["name"], "schema": function.get("parameters", {})}
    if function.get("description"):
        spec["description"] = function["description"]
    if strict is not None:
        spec["strict"] = strict
    return {"type": "json_schema", "json_schema": spec}


def read_tool_calls(reply: PromptResponse) -> tuple[list[ToolCall], list[InvalidToolCall]]:
    """A reply's tool calls; one whose arguments are not a JSON object is an invalid call
    (kept with the text the model wrote), not an error."""
    valid: list[ToolCall] = []
    invalid: list[InvalidToolCall] = []
    for call in reply.tool_calls or ():
        raw = {"id": call.id, "function": call.function.model_dump()}
        try:
            parsed = parse_tool_call(raw, return_id=True)
        except Exception as exc:  # OutputParserException, with the reason
            invalid.append(make_invalid_tool_call(raw, str(exc)))
            continue
        if parsed is not None:
            valid.append(parsed)  # type: ignore[arg-type]
    return valid, invalid


def tool_call_piece_chunk(piece: StreamToolCall) -> ChatGenerationChunk:
    chunk = tool_call_chunk(name=piece.name, args=piece.arguments, id=piece.id, index=piece.index)
    return ChatGenerationChunk(message=AIMessageChunk(content="", tool_call_chunks=[chunk]))


def reasoning_chunk(text: str) -> ChatGenerationChunk:
    message = AIMessageChunk(content="", additional_kwargs={REASONING_KEY: text})
    return ChatGenerationChunk(message=message)


def usage_metadata_of(usage: Usage | None) -> UsageMetadata | None:
    if usage is None:
        return None
    return UsageMetadata(
        input_tokens=usage.prompt_tokens,
        output_tokens=usage.completion_tokens,
        total_tokens=usage.total_tokens,
    )


def token_usage(usage: Usage) -> dict[str, int]:
    return {**usage.model_dump(), "total_tokens": usage.total_tokens}
