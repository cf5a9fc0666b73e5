"""Anthropic's Messages request as the engine's: ``system`` as a system message, each message's
blocks as the prompt protocol's messages, ``tools`` and ``tool_choice`` as its tools.

- ``text`` blocks are joined into the message's text;
- an assistant's ``tool_use`` blocks are its tool calls (``input`` as their JSON arguments);
- a user's ``tool_result`` blocks are ``tool`` messages answering those calls, before the text
  the same user message holds;
- ``thinking`` blocks of earlier turns are skipped; other blocks (images, documents, server
  tools' results) are refused with a 400 naming them.

``output_config.format`` (structured outputs, ``json_schema``) is the response format.
``tool_choice``: ``auto`` is ``auto``, ``any`` is ``required``, ``tool`` names the one tool,
``none`` is ``none``. Only custom tools (a name, a description, an ``input_schema``) are
served: server tools (``web_search_...``, ``bash_...``) are refused.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import ValidationError

from promptwire.protocol import PromptRequest
from promptwire.server._request_body import (
    Loc,
    flat_place,
    message_problem,
    validation_problems,
)
from promptwire.server.anthropic._errors import AnthropicError
from promptwire.server.anthropic.protocol import MessagesRequest

_SKIPPED_BLOCKS = frozenset({"thinking", "redacted_thinking"})
_CHOICES = {"auto": "auto", "any": "required", "none": "none"}


def messages_request(body: MessagesRequest) -> PromptRequest:
    """The prompt protocol's request for ``body``, its prompt not yet rendered, checked in one
    pass; a 400 names the message at fault by its place in ``body``."""
    messages: list[dict[str, Any]] = []
    where: list[str] = []
    if body.system:
        system = body.system if isinstance(body.system, str) else _text(body.system, "system")
        messages.append({"role": "system", "content": system})
        where.append("system")
    for index, message in enumerate(body.messages):
        _add_message(messages, where, message, f"messages.{index}")
    fields: dict[str, Any] = {**body.generation_params(), "prompt": "", "messages": messages}
    if _prefilled(messages, where):
        fields["continue_final_message"] = True
    if body.tools is not None:
        fields["tools"] = [_tool(tool, f"tools.{index}") for index, tool in enumerate(body.tools)]
    if body.tool_choice is not None:
        fields["tool_choice"] = _tool_choice(body.tool_choice)
    if body.output_config is not None and body.output_config.get("format") is not None:
        fields["response_format"] = _response_format(body.output_config["format"])
    try:
        return PromptRequest.model_validate(fields)
    except ValidationError as exc:
        if (fault := message_problem(exc)) is not None:
            raise AnthropicError(400, f"{where[fault.index]}: {fault.problems}") from None
        raise AnthropicError(400, validation_problems(exc, _named)[1]) from None


def _named(loc: Loc) -> Loc:
    return flat_place(loc, ("output_config", "format"), "input_schema")


def _prefilled(messages: list[dict[str, Any]], where: list[str]) -> bool:
    """Whether the reply continues a final assistant message (Anthropic's prefill), as its
    API does: an empty one is dropped (the reply starts a turn, as without it), one ending in
    whitespace refused."""
    final = messages[-1]
    if final["role"] != "assistant" or final.get("tool_calls"):
        return False
    if not final["content"]:
        del messages[-1], where[-1]
        return False
    if final["content"] != final["content"].rstrip():
        raise AnthropicError(
            400, f"{where[-1]}: final assistant content cannot end with whitespace"
        )
    return True


def _add_message(
    messages: list[dict[str, Any]], where: list[str], message: Any, param: str
) -> None:
    """``message`` as the prompt protocol's messages (fields, checked with the whole request):
    a user's tool results come first, as ``tool`` messages, then its text."""
    if not isinstance(message, dict) or message.get("role") not in ("user", "assistant"):
        raise AnthropicError(
            400, f"{param}: a message is an object whose role is user or assistant"
        )
    role, content = message["role"], message.get("content")
    if isinstance(content, str):
        messages.append({"role": role, "content": content})
        where.append(param)
        return
    if not isinstance(content, list):
        raise AnthropicError(400, f"{param}.content must be a string or a list of blocks")
    pieces: list[str] = []
    calls: list[dict[str, Any]] = []
    results = 0
    for index, block in enumerate(content):
        place = f"{param}.content.{index}"
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text":
            pieces.append(_string(block.get("text"), f"{place}.text"))
        elif kind == "tool_use" and role == "assistant":
            if not isinstance(arguments := block.get("input", {}), dict):
                raise AnthropicError(400, f"{place}.input must be an object")
            arguments = json.dumps(arguments, ensure_ascii=False)
            function = {"name": block.get("name"), "arguments": arguments}
            calls.append({"id": block.get("id"), "type": "function", "function": function})
        elif kind == "tool_result" and role == "user":
            result = block.get("content", "")
            text = result if isinstance(result, str) else _text(result, f"{place}.content")
            messages.append(
                {"role": "tool", "tool_call_id": block.get("tool_use_id"), "content": text}
            )
            where.append(place)
            results += 1
        elif not (isinstance(kind, str) and kind in _SKIPPED_BLOCKS):
            raise AnthropicError(
                400,
                f"{place}: {str(kind)[:40]!r} blocks are not supported in {role} messages by "
                "this server (text, and tool_use from the assistant, tool_result from the user)",
            )
    if role == "assistant":
        messages.append({"role": role, "content": "".join(pieces), "tool_calls": calls or None})
        where.append(param)
    elif pieces or not results:
        messages.append({"role": role, "content": "".join(pieces)})
        where.append(param)


def _text(blocks: Any, param: str) -> str:
    """The text of a list of text blocks (``system``, a tool result's content)."""
    if not isinstance(blocks, list):
        raise AnthropicError(400, f"{param} must be a string or a list of text blocks")
    pieces = []
    for index, block in enumerate(blocks):
        if not (isinstance(block, dict) and block.get("type") == "text"):
            raise AnthropicError(
                400, f"{param}.{index}: only text blocks are supported here by this server"
            )
        pieces.append(_string(block.get("text"), f"{param}.{index}.text"))
    return "\n\n".join(pieces) if param == "system" else "".join(pieces)


def _string(value: Any, param: str) -> str:
    if not isinstance(value, str):
        raise AnthropicError(400, f"{param} must be a string")
    return value


def _tool(tool: Any, param: str) -> dict[str, Any]:
    """A custom tool as the prompt protocol's (OpenAI's shape)."""
    if not isinstance(tool, dict) or tool.get("type", "custom") not in ("custom", None):
        kind = tool.get("type") if isinstance(tool, dict) else None
        raise AnthropicError(
            400,
            f"{param}: only custom tools (name, description, input_schema) are supported by "
            f"this server, not {str(kind)[:40]!r}",
        )
    function = {key: tool[key] for key in ("name", "description") if key in tool}
    if "input_schema" in tool:
        function["parameters"] = tool["input_schema"]
    return {"type": "function", "function": function}


def _tool_choice(choice: dict[str, Any]) -> Any:
    kind = choice.get("type")
    if kind == "tool":
        return {"type": "function", "function": {"name": choice.get("name")}}
    if isinstance(kind, str) and kind in _CHOICES:
        return _CHOICES[kind]
    raise AnthropicError(400, "tool_choice.type must be auto, any, tool or none")


def _response_format(form: Any) -> dict[str, Any]:
    """``output_config.format`` (structured outputs) as the prompt protocol's response format."""
    if not (isinstance(form, dict) and form.get("type") == "json_schema"):
        raise AnthropicError(400, "output_config.format: only json_schema formats are supported")
    spec = {"name": "output", "schema": form.get("schema")}
    return {"type": "json_schema", "json_schema": spec}
