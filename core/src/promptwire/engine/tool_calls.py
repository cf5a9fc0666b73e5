"""Tool calls in a model's own words: which format a model family writes, how to read its calls
out of the generated text, and the JSON Schema a required call is constrained to.

The model is shown its tools by its chat template (``tools``, as Hugging Face templates take
them) and answers in its family's format:

- **Hermes / Qwen** (Qwen 2.5 and 3, Hermes 2 and 3, many fine-tunes): each call is
  ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>``, after any text.
- **Mistral**: ``[TOOL_CALLS]`` then a JSON list of ``{"name", "arguments"}`` (v3 tokenizers),
  or ``[TOOL_CALLS]name[ARGS]{...}`` for each call (newer ones).
- **Llama 3.1 - 3.3** (JSON tool calling): the whole reply is ``{"name": ..., "parameters": {...}}``
  (several separated by ``;``), optionally after ``<|python_tag|>``.

The family is recognised from the template's source; a template that does not render tools at
all gets ``JSON_TOOLS``: the tools are described in a system message (``describe_tools``) and a
call is the bare JSON object. A reply constrained to a call (``tool_choice``
``required`` or a named tool) is that family's JSON alone, without its markers (some of them are
special tokens, which a token filter cannot spell); the reader takes a bare call as a call in every
family, but only one that names an offered tool with an object of arguments, so an ordinary JSON
answer is not mistaken for one.

Pure Python, shared by the engines that read calls out of text (ExLlamaV2, llama.cpp).
"""

from __future__ import annotations

import contextlib
import json
import re
import uuid
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass
from typing import Any

from promptwire.engine import EngineError, EngineEvent, Finish, RequestRejected, TextChunk, ToolCall
from promptwire.engine._schema_refs import embed
from promptwire.protocol import ChatMessage, FinishReason, NamedToolChoice, PromptRequest, ToolSpec

HERMES_OPEN = "<tool_call>"
HERMES_CLOSE = "</tool_call>"
MISTRAL_CALLS = "[TOOL_CALLS]"
MISTRAL_ARGS = "[ARGS]"
PYTHON_TAG = "<|python_tag|>"


@dataclass(frozen=True)
class ToolFormat:
    """How one model family writes tool calls."""

    name: str
    markers: tuple[str, ...]
    """Text that starts the calls of a reply (what follows is read as calls, not shown)."""
    arguments_key: str
    """The key of a call object that holds its arguments."""
    as_list: bool
    """A constrained reply is a list of calls (Mistral) rather than one call object."""
    decode_special_tokens: bool
    """Its markers are special tokens, so the generator must decode them into the text."""

    def call_schema(self, tools: Sequence[ToolSpec]) -> dict[str, Any]:
        """The JSON Schema of a reply that calls one of ``tools`` (in this family's shape), the
        tools' definitions at its root (``promptwire.engine._schema_refs``)."""
        defs: dict[str, Any] = {}
        base = "/items" if self.as_list else ""
        options = [
            {
                "type": "object",
                "properties": {
                    "name": {"type": "string", "enum": [tool.function.name]},
                    self.arguments_key: embed(
                        tool.function.parameters or {"type": "object"},
                        f"{base}{'' if len(tools) == 1 else f'/anyOf/{i}'}/properties/"
                        + self.arguments_key,
                        defs,
                        tool.function.name,
                    ),
                },
                "required": ["name", self.arguments_key],
            }
            for i, tool in enumerate(tools)
        ]
        one = options[0] if len(options) == 1 else {"anyOf": options}
        schema = (
            {"type": "array", "items": one, "minItems": 1, "maxItems": 1} if self.as_list else one
        )
        return {**schema, "$defs": defs} if defs else schema

    def read(self, text: str, tools: Sequence[ToolSpec]) -> tuple[str, list[ToolCall]]:
        """The text of a reply and the calls in it (none: the reply is text)."""
        names = {tool.function.name for tool in tools}
        for marker in self.markers:
            where = text.find(marker)
            if where >= 0:
                calls = self._read_marked(text[where:], names)
                if calls:
                    return text[:where].strip(), calls
        calls = _bare_calls(text.strip().removeprefix(PYTHON_TAG).strip(), names)
        return ("", calls) if calls else (text, [])

    def _read_marked(self, text: str, names: set[str]) -> list[ToolCall]:
        if self.name == "hermes":
            calls: list[ToolCall] = []
            for block in text.split(HERMES_OPEN)[1:]:
                calls += _bare_calls(block.split(HERMES_CLOSE)[0].strip(), names)
            return calls
        if self.name == "mistral":
            body = text.removeprefix(MISTRAL_CALLS)
            if MISTRAL_ARGS in body:  # name[ARGS]{...} for each call
                calls = []
                for part in text.split(MISTRAL_CALLS)[1:]:
                    name, _, arguments = part.partition(MISTRAL_ARGS)
                    calls += _bare_calls(
                        json.dumps({"name": name.strip(), "arguments": _loads(arguments)}), names
                    )
                return calls
            return _bare_calls(body.strip(), names)
        return _bare_calls(text.removeprefix(PYTHON_TAG).strip(), names)


HERMES = ToolFormat("hermes", (HERMES_OPEN,), "arguments", False, False)
MISTRAL = ToolFormat("mistral", (MISTRAL_CALLS,), "arguments", True, True)
LLAMA3 = ToolFormat("llama3_json", (PYTHON_TAG,), "parameters", False, True)
#: For a model whose template does not render tools: calls are bare JSON objects.
JSON_TOOLS = ToolFormat("json", (), "arguments", False, False)


def describe_tools(messages: Sequence[ChatMessage], tools: Sequence[ToolSpec]) -> list[ChatMessage]:
    """``messages`` with the tools described in the system message (one is added first when
    there is none), for a template that cannot render them itself (``JSON_TOOLS``)."""
    listing = "\n".join(
        json.dumps(
            {
                "name": tool.function.name,
                "description": tool.function.description or "",
                "parameters": tool.function.parameters or {"type": "object"},
            }
        )
        for tool in tools
    )
    note = (
        "You can call these tools:\n"
        f"{listing}\n"
        'To call a tool, answer only with a JSON object: {"name": <tool name>, '
        '"arguments": <an object of its arguments>}.'
    )
    if messages and messages[0].role == "system":
        first = messages[0]
        head = first.model_copy(update={"content": f"{first.content}\n\n{note}"})
        return [head, *messages[1:]]
    return [ChatMessage(role="system", content=note), *messages]


def detect_tool_format(template_source: str) -> ToolFormat | None:
    """The family's tool-call format, from its chat template's text; None for a template that
    does not render tools (the model was not trained to call them)."""
    if "tools" not in template_source:
        return None
    if HERMES_OPEN in template_source:
        return HERMES
    if MISTRAL_CALLS in template_source:
        return MISTRAL
    if PYTHON_TAG in template_source or '"parameters"' in template_source:
        return LLAMA3
    return None


def forced_tools(request: PromptRequest) -> list[ToolSpec] | None:
    """The tools a reply must call one of (``tool_choice`` ``required`` or named), else None."""
    choice = request.tool_choice
    if not request.tools or choice in (None, "auto", "none"):
        return None
    if isinstance(choice, NamedToolChoice):
        return [t for t in request.tools if t.function.name == choice.function.name]
    return list(request.tools)


class ToolCallSplitter:
    """Streamed text of a reply that may call tools: passes text on while it cannot be the start
    of a call, and keeps the rest (from a marker on, or the whole reply when it opens like a bare
    call) to read the calls from at the end."""

    def __init__(self, fmt: ToolFormat, *, hold_all: bool = False) -> None:
        self.fmt = fmt
        self.held = ""
        self.calling = hold_all
        self.started = hold_all

    def feed(self, text: str) -> str:
        """What of ``text`` can be shown now."""
        self.held += text
        if self.calling:
            return ""
        if not self.started:
            head = self.held.lstrip()
            if not head:
                return ""
            if head[0] in "{[" or any(
                head.startswith(m) or m.startswith(head) for m in self.fmt.markers
            ):
                if any(head.startswith(m) for m in self.fmt.markers) or head[0] in "{[":
                    self.calling = True
                return ""
            self.started = True
        for marker in self.fmt.markers:
            if (where := self.held.find(marker)) >= 0:
                shown, self.held = self.held[:where], self.held[where:]
                self.calling = True
                return shown
        keep = _longest_marker_prefix(self.held, self.fmt.markers)
        shown, self.held = self.held[: len(self.held) - keep], self.held[len(self.held) - keep :]
        return shown

    def finish(self, tools: Sequence[ToolSpec]) -> tuple[str, list[ToolCall]]:
        """The text still held (to show) and the calls read from it."""
        text, calls = self.fmt.read(self.held, tools)
        return (text if calls else self.held), calls


async def calls_from_stream(
    events: AsyncGenerator[EngineEvent, None], fmt: ToolFormat, request: PromptRequest
) -> AsyncGenerator[EngineEvent, None]:
    """An engine's generation for a request that offers tools, as its ``stream`` yields it:
    text that could begin a call is held back, and the calls are read from it at the end (for a
    required call, the whole reply is one); the finish reason is ``tool_calls`` when it called.
    Closing this closes ``events``, so the engine cancels its generation at once."""
    tools = request.tools or []
    forced = forced_tools(request) is not None
    splitter = ToolCallSplitter(fmt, hold_all=forced)
    async with contextlib.aclosing(events):
        async for event in events:
            if isinstance(event, TextChunk):
                if text := splitter.feed(event.text):
                    yield TextChunk(text, tokens=event.tokens)
                continue
            if not isinstance(event, Finish):
                yield event
                continue
            text, calls = splitter.finish(tools)
            if forced and not calls:  # never free text in place of a call (§ 5.5)
                raise _no_forced_call(event, request)
            if text:
                yield TextChunk(text, tokens=0)
            for call in calls:
                yield call
            if calls:
                yield Finish(FinishReason.TOOL_CALLS, event.usage)
            else:
                yield event


def _no_forced_call(finish: Finish, request: PromptRequest) -> EngineError:
    """The error of a reply that had to call a tool and holds no call: cut by ``max_tokens``
    before the call was whole (the request's limit: raise it), else a model that did not call."""
    if finish.finish_reason is FinishReason.LENGTH:
        return RequestRejected(
            f"the reply reached max_tokens ({finish.usage.completion_tokens}) before the tool "
            "call it had to make was complete; raise max_tokens"
        )
    return EngineError("the model's reply is not a call of the tool it had to call")


def read_tool_calls(
    events: AsyncGenerator[EngineEvent, None], fmt: ToolFormat | None, request: PromptRequest
) -> AsyncGenerator[EngineEvent, None]:
    """``events`` with the calls read from them (``calls_from_stream``) when ``request`` offers
    tools in a format ``fmt`` the model writes; ``events`` itself otherwise."""
    if fmt is None or not reads_tool_calls(fmt, request):
        return events
    return calls_from_stream(events, fmt, request)


def reads_tool_calls(fmt: ToolFormat | None, request: PromptRequest) -> bool:
    """``read_tool_calls`` reads calls from ``request``'s events (it offers tools in ``fmt``)."""
    return fmt is not None and request.wants_tools() and bool(request.tools)


def _longest_marker_prefix(text: str, markers: Sequence[str]) -> int:
    longest = 0
    for marker in markers:
        for size in range(min(len(marker) - 1, len(text)), 0, -1):
            if text.endswith(marker[:size]):
                longest = max(longest, size)
                break
    return longest


_SEPARATOR = re.compile(r"\s*;\s*")


def _bare_calls(text: str, names: set[str]) -> list[ToolCall]:
    """Calls written as JSON: one object, a list of them, or objects separated by ``;``."""
    if not text:
        return []
    value = _loads(text)
    if value is None and ";" in text:
        parts = [_loads(part) for part in _SEPARATOR.split(text) if part]
        value = parts if all(part is not None for part in parts) else None
    items = value if isinstance(value, list) else [value]
    calls = []
    for item in items:
        if not isinstance(item, dict) or item.get("name") not in names:
            return []
        arguments = item.get("arguments", item.get("parameters", {}))
        if isinstance(arguments, str):  # some models write the arguments as a JSON string
            arguments = _loads(arguments) if _loads(arguments) is not None else arguments
        if not isinstance(arguments, dict):
            return []
        call_id = item.get("id") if isinstance(item.get("id"), str) else None
        call_id = call_id or f"call_{uuid.uuid4().hex[:24]}"
        calls.append(ToolCall(call_id, item["name"], json.dumps(arguments)))
    return calls


def _loads(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None


__all__ = [
    "HERMES",
    "JSON_TOOLS",
    "LLAMA3",
    "MISTRAL",
    "ToolCallSplitter",
    "ToolFormat",
    "calls_from_stream",
    "describe_tools",
    "detect_tool_format",
    "forced_tools",
    "read_tool_calls",
    "reads_tool_calls",
]
