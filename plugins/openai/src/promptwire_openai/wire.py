"""The OpenAI API as a promptwire wire format: requests, replies, stream chunks and errors.

A request with ``messages`` (``ChatPromptwire``) goes to ``<base>/chat/completions`` with the
conversation; one without (``PromptwireLLM``) to ``<base>/completions`` with its prompt. Streams
are ``data:`` chunks ending with ``data: [DONE]``; their finish reason and usage (asked for with
``stream_options``) arrive in chunks of their own and make the stream's end. Replies are read
leniently, as servers differ: text is kept whatever optional field is malformed, and a reasoning
model's ``reasoning_content`` (vLLM, SGLang, llama.cpp; ``reasoning`` in newer vLLM and Ollama)
is kept apart from the answer instead of being dropped. Tool calls (``message.tool_calls``, and
``delta.tool_calls`` pieces in streams) are read as the prompt protocol's (v1.2); ``tools``,
``tool_choice`` and ``response_format`` pass through as they are, and so do the conversation's
tool calls and tool results, which the prompt protocol writes in OpenAI's shape.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import httpx
from promptwire.client.sse import Event
from promptwire.client.wire import (
    NO_EVENTS,
    EventReader,
    MalformedReply,
    ReasoningDelta,
    RemoteStreamError,
    Reply,
    StreamEvent,
    WireFormat,
    parse_json,
)
from promptwire.protocol import (
    FinishReason,
    StreamDelta,
    StreamDone,
    StreamToolCall,
    ToolCall,
    Usage,
)
from pydantic import ValidationError

COMPLETIONS_PATH = "/completions"
CHAT_PATH = "/chat/completions"
DONE = "[DONE]"
#: Where servers put a reasoning model's reasoning, in the order looked at.
REASONING_KEYS = ("reasoning_content", "reasoning")
_FINISH_REASONS = {reason.value: reason for reason in FinishReason}


class OpenAIWire(WireFormat):
    """``/completions`` and ``/chat/completions`` under the endpoint URL (the server's base URL,
    ending in ``/v1``)."""

    names_model = True

    def __init__(self, *, stream_usage: bool = True) -> None:
        self.stream_usage = stream_usage
        self._urls: dict[tuple[httpx.URL, str], httpx.URL] = {}

    def request(
        self, url: httpx.URL, payload: Mapping[str, Any], *, stream: bool
    ) -> tuple[httpx.URL, Mapping[str, Any]]:
        chat = "messages" in payload
        # A chat request also carries its conversation rendered as ``prompt``, for prompt
        # protocol servers; the OpenAI API takes the messages themselves.
        body = {key: value for key, value in payload.items() if not (chat and key == "prompt")}
        if stream:
            body["stream"] = True
            if self.stream_usage:
                body.setdefault("stream_options", {"include_usage": True})
        return self._url(url, CHAT_PATH if chat else COMPLETIONS_PATH), body

    def _url(self, base: httpx.URL, path: str) -> httpx.URL:
        joined = self._urls.get((base, path))
        if joined is None:
            joined = base.copy_with(path=base.path.rstrip("/") + path)
            self._urls[(base, path)] = joined
        return joined

    def reply(self, data: Any) -> Reply:
        choice = _first_choice(data)
        message = choice.get("message")
        reasoning = None
        tool_calls = None
        if isinstance(message, dict):
            text = message.get("content")
            if text is None:  # a reply with nothing but a refusal or tool calls
                text = ""
            reasoning = _reasoning(message)
            tool_calls = _tool_calls(message.get("tool_calls"))
        else:
            text = choice.get("text")
        if not isinstance(text, str):
            raise MalformedReply("the reply's first choice has no 'message.content' or 'text'")
        return Reply.model_construct(
            prompt=text,
            usage=_usage(data.get("usage")),
            finish_reason=_finish_reason(choice.get("finish_reason")),
            model=_text(data.get("model")),
            reasoning=reasoning,
            tool_calls=tool_calls,
        )

    def events(self) -> EventReader:
        return _Chunks()

    def error(self, data: Any) -> tuple[str | None, str] | None:
        return error_detail(data)


class _Chunks(EventReader):
    """One stream's chunks; the finish reason, usage and model are kept until ``[DONE]``."""

    end_event = "'data: [DONE]'"

    def __init__(self) -> None:
        self.finish_reason: FinishReason | None = None
        self.finished = False
        self.usage: Usage | None = None
        self.model: str | None = None
        self.named: set[tuple[int, str]] = set()
        """The calls (index) whose ``id`` and ``name`` have come: sent again on every piece (as
        llama-cpp-python's server does), LangChain joined them (``get_weatherget_weather``)."""

    def read(self, event: Event) -> Sequence[StreamEvent]:
        if event.data == DONE or event.data.strip() == DONE:
            return (self._done(),)
        if event.event not in ("message", "error"):
            return NO_EVENTS
        try:
            chunk = parse_json(event.data)
        except ValueError:
            raise MalformedReply("a chunk of the stream is not JSON") from None
        if not isinstance(chunk, dict):
            raise MalformedReply("a chunk of the stream is not a JSON object")
        if "error" in chunk or event.event == "error":
            kind, message = error_detail(chunk) or (None, "the server reported an error")
            raise RemoteStreamError(kind or "error", message)
        self.model = _text(chunk.get("model")) or self.model
        if (usage := _usage(chunk.get("usage"))) is not None:
            self.usage = usage
        choices = chunk.get("choices")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            return NO_EVENTS  # the usage chunk, or one about another choice
        choice = choices[0]
        if choice.get("finish_reason") is not None:
            self.finished = True
            self.finish_reason = _finish_reason(choice["finish_reason"])
        events: list[StreamEvent] = []
        delta = choice.get("delta")
        if isinstance(delta, dict):
            if reasoning := _reasoning(delta):
                events.append(ReasoningDelta.model_construct(text=reasoning))
            events.extend(_tool_call_pieces(delta.get("tool_calls"), self.named))
            text = delta.get("content")
        else:
            text = choice.get("text")
        if isinstance(text, str) and text:
            events.append(StreamDelta.model_construct(text=text))
        return events

    def end(self) -> StreamDone | None:
        """A server that closes the stream after its finish reason without ``[DONE]`` has still
        finished it; one that closes it before has cut it."""
        return self._done() if self.finished else None

    def _done(self) -> StreamDone:
        return StreamDone.model_construct(
            finish_reason=self.finish_reason, usage=self.usage, model=self.model
        )


def error_detail(data: Any) -> tuple[str | None, str] | None:
    """The type and message of an error body: OpenAI's ``{"error": {"message", "type",
    "code"}}`` (the code, when there is one, names the error more precisely), a bare
    ``{"error": "..."}``, vLLM's older top-level ``{"message", "type"}``, or FastAPI's
    ``{"detail": "..."}``."""
    if not isinstance(data, dict):
        return None
    error = data.get("error", data)
    if isinstance(error, str):
        return None, error
    if not isinstance(error, dict):
        return None
    message = error.get("message", error.get("detail"))
    if message is None:
        return None
    code, kind = error.get("code"), error.get("type")
    named = code if isinstance(code, str) and code else kind
    return (None if named is None else str(named)), str(message)


def _tool_calls(value: Any) -> list[ToolCall] | None:
    """A message's tool calls. Arguments some servers send as an object (Ollama) are kept as
    its JSON text; a call that cannot be read makes the reply malformed, not text."""
    if value is None or value == []:
        return None
    if not isinstance(value, list):
        raise MalformedReply("the reply's 'tool_calls' is not a list")
    calls = []
    for index, call in enumerate(value):
        try:
            function = dict(call["function"])
            if not isinstance(function.get("arguments", ""), str):
                function["arguments"] = json.dumps(function["arguments"])
            calls.append(
                ToolCall.model_validate(
                    {"id": call.get("id") or f"call_{index}", "function": function}
                )
            )
        except (KeyError, TypeError, ValueError, ValidationError):
            raise MalformedReply(f"the reply's tool call {index} is malformed") from None
    return calls


def _tool_call_pieces(value: Any, named: set[tuple[int, str]]) -> list[StreamToolCall]:
    """The tool-call pieces of a stream chunk's delta (OpenAI's ``index``, then ``id`` and
    ``function.name`` on a call's first piece, ``function.arguments`` text to append); an
    ``id`` or ``name`` a call already has (in ``named``, which this adds to) is dropped."""
    if not isinstance(value, list):
        return []
    pieces = []
    for position, piece in enumerate(value):
        if not isinstance(piece, dict):
            raise MalformedReply("a tool call piece of the stream is not an object")
        function = piece["function"] if isinstance(piece.get("function"), dict) else {}
        arguments = function.get("arguments")
        if arguments is not None and not isinstance(arguments, str):
            arguments = json.dumps(arguments)
        index = piece.get("index", position)
        if not isinstance(index, int) or isinstance(index, bool) or index < 0:
            raise MalformedReply("a tool call piece of the stream has no valid index")
        call_id, name = _text(piece.get("id")), _text(function.get("name"))
        if call_id is not None:
            call_id = None if (index, "id") in named else call_id
            named.add((index, "id"))
        if name is not None:
            name = None if (index, "name") in named else name
            named.add((index, "name"))
        pieces.append(
            StreamToolCall.model_construct(
                index=index, id=call_id, name=name, arguments=arguments or ""
            )
        )
    return pieces


def _first_choice(data: Any) -> dict[str, Any]:
    choices = data.get("choices") if isinstance(data, dict) else None
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        found = sorted(data)[:10] if isinstance(data, dict) else type(data).__name__
        raise MalformedReply(f"the reply has no 'choices' (found {found})")
    return choices[0]


def _reasoning(message: Mapping[str, Any]) -> str | None:
    for key in REASONING_KEYS:
        value = message.get(key)
        if isinstance(value, str) and value:
            return value
    return None


def _usage(value: Any) -> Usage | None:
    if not isinstance(value, dict):
        return None
    prompt, completion = value.get("prompt_tokens"), value.get("completion_tokens")
    if not (_count(prompt) and _count(completion)):
        return None
    return Usage(prompt_tokens=prompt, completion_tokens=completion)


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _finish_reason(value: Any) -> FinishReason | None:
    """A reason this client knows; None for another (``content_filter``, a server's own). A
    value that is not a string at all makes the reply malformed."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise MalformedReply("the reply's finish_reason is not a string")
    return _FINISH_REASONS.get(value)


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None
