"""A Responses API request as the engine's: ``instructions`` and ``input`` (a string, or items:
messages, function calls, their outputs) as the prompt protocol's conversation, function
``tools`` and ``tool_choice`` as its tools, ``text.format`` as its response format.

The items become Chat Completions messages first, checked by the same code as
``/v1/chat/completions``' (``chat_messages``): a ``function_call`` item joins the assistant
message before it (a turn's text and its calls are one message there), a
``function_call_output`` is a ``tool`` message. ``reasoning`` items are skipped (no engine here
reasons in a separate channel); items that need state or tools this server has not
(``item_reference``, ``web_search_call``, ...) are refused with a 400 naming them.
"""

from __future__ import annotations

from typing import Any

from promptwire.protocol import PromptRequest
from promptwire.server._request_body import Loc, flat_place
from promptwire.server.openai._errors import OpenAIError
from promptwire.server.openai._translate import chat_messages, conversation_request
from promptwire.server.openai.protocol import ResponsesRequest

#: The text parts of a message's or a function output's content.
_TEXT_PARTS = frozenset({"input_text", "output_text", "text"})
_SKIPPED_ITEMS = frozenset({"reasoning"})


def responses_request(body: ResponsesRequest) -> PromptRequest:
    """The prompt protocol's request for ``body``, its prompt not yet rendered."""
    # The prompt protocol's message fields, and each one's place in the request (for errors).
    messages: list[dict[str, Any]] = []
    where: list[str] = []
    if body.instructions:
        messages.append({"role": "system", "content": body.instructions})
        where.append("instructions")
    if isinstance(body.input, str):
        messages.append({"role": "user", "content": body.input})
        where.append("input")
    else:  # the items as Chat Completions messages first
        items: list[dict[str, Any]] = []
        places: list[str] = []
        for index, item in enumerate(body.input):
            _add_item(items, places, item, f"input.{index}")
        messages += chat_messages(items, places)
        where += places
    if not messages:
        raise OpenAIError(400, "input holds no message", param="input", code="invalid_request")
    fields: dict[str, Any] = {**body.generation_params(), "prompt": "", "messages": messages}
    if body.tools is not None:
        fields["tools"] = [_tool(tool, f"tools.{index}") for index, tool in enumerate(body.tools)]
    if body.tool_choice is not None:
        fields["tool_choice"] = _tool_choice(body.tool_choice)
    if body.text is not None and body.text.format is not None:
        fields["response_format"] = _response_format(body.text.format)
    try:
        return conversation_request(fields, where, _named)
    except OpenAIError as exc:
        if exc.param in ("response_format", "text"):  # a capability's refusal, or a problem in it
            exc.param = "text.format"
        raise


def _named(loc: Loc) -> Loc:
    return flat_place(loc, ("text", "format"), "parameters")


def _add_item(messages: list[dict[str, Any]], where: list[str], item: Any, param: str) -> None:
    if not isinstance(item, dict):
        raise OpenAIError(400, f"{param} must be an object", param=param, code="invalid_request")
    kind = item.get("type", "message")
    if kind == "message":
        messages.append({"role": item.get("role"), "content": _content(item.get("content"), param)})
        where.append(param)
    elif kind == "function_call":
        call = {
            "id": item.get("call_id"),
            "type": "function",
            "function": {"name": item.get("name"), "arguments": item.get("arguments")},
        }
        last = messages[-1] if messages else None
        if last is not None and last["role"] == "assistant":
            last["tool_calls"] = [*last.get("tool_calls", ()), call]
        else:
            messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
            where.append(param)
    elif kind == "function_call_output":
        output = item.get("output")
        content = output if isinstance(output, str) else _content(output, f"{param}.output")
        messages.append({"role": "tool", "tool_call_id": item.get("call_id"), "content": content})
        where.append(param)
    elif not (isinstance(kind, str) and kind in _SKIPPED_ITEMS):
        raise OpenAIError(
            400,
            f"{param}: items of type {str(kind)[:40]!r} are not supported by this server "
            "(messages, function_call and function_call_output are)",
            param=f"{param}.type",
            code="unsupported_parameter",
        )


def _content(content: Any, param: str) -> Any:
    """A Responses message's content as Chat Completions' (text parts), which ``chat_messages``
    checks; a part that is not text (an image, a file) is left for it to refuse by name."""
    if not isinstance(content, list):
        return content
    parts = []
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        if isinstance(kind, str) and kind in _TEXT_PARTS:
            parts.append({"type": "text", "text": part.get("text")})
        elif kind == "refusal":
            parts.append({"type": "text", "text": part.get("refusal")})
        else:
            parts.append(part)
    return parts


def _tool(tool: Any, param: str) -> Any:
    """A function tool as the prompt protocol's (OpenAI Chat's shape); other tools refused."""
    if not isinstance(tool, dict) or tool.get("type") != "function":
        kind = tool.get("type") if isinstance(tool, dict) else None
        raise OpenAIError(
            400,
            f"{param}: only function tools are supported by this server, not {str(kind)[:40]!r}",
            param=param,
            code="unsupported_parameter",
        )
    function = {key: tool[key] for key in ("name", "description", "strict") if key in tool}
    if tool.get("parameters") is not None:
        function["parameters"] = tool["parameters"]
    return {"type": "function", "function": function}


def _tool_choice(choice: Any) -> Any:
    """``auto``, ``none``, ``required`` or ``{"type": "function", "name": ...}``."""
    if isinstance(choice, dict):
        if choice.get("type") != "function":
            raise OpenAIError(
                400,
                "tool_choice: only 'auto', 'none', 'required' and a function "
                '({"type": "function", "name": ...}) are supported by this server',
                param="tool_choice",
                code="unsupported_parameter",
            )
        return {"type": "function", "function": {"name": choice.get("name")}}
    return choice


def _response_format(form: dict[str, Any]) -> Any:
    """``text.format`` as Chat Completions' ``response_format``: ``json_schema``'s name,
    schema, description and strict move under ``json_schema``."""
    if form.get("type") != "json_schema":
        return form
    spec = {key: form[key] for key in ("name", "schema", "description", "strict") if key in form}
    return {"type": "json_schema", "json_schema": spec}
