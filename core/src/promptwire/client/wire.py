"""Wire formats: what a request and its reply look like, apart from how they travel.

``EndpointClient`` owns the transport: pooled connections, timeouts, retries, redirects and their
credential guard, bounded reading and typed errors. A ``WireFormat`` owns the meaning of the
bytes: where a request goes and its JSON body, and how a whole reply, the events of a stream and
an error body read. The prompt endpoint protocol (``PROMPT_PROTOCOL``) is the default; a
backend's client adapter may choose another (the ``openai`` plugin speaks the OpenAI API), and
the LangChain models work the same over either.

A wire format raises ``MalformedReply`` for a reply that breaks it and ``RemoteStreamError`` for
an error reported inside a stream; the client turns them into ``ProtocolError`` and
``StreamError``, naming the URL and keeping secrets out.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any

import httpx
from pydantic import BaseModel, ValidationError

from promptwire.client.sse import Event
from promptwire.protocol import (
    EVENT_DELTA,
    EVENT_DONE,
    EVENT_ERROR,
    EVENT_TOOL_CALL,
    PromptResponse,
    StreamDelta,
    StreamDone,
    StreamToolCall,
    ToolCall,
)

#: Python refuses to convert an integer of more digits than this (``sys.int_info``).
_INT_DIGITS = 4300


def parse_json(text: str | bytes) -> Any:
    """JSON as the protocol means it: ``NaN``/``Infinity`` are not JSON, an integer too long for
    Python's ``int`` is kept as its digits (only an unknown key can hold one, and unknown keys are
    ignored), and nesting too deep to parse is malformed. Every failure is a ``ValueError``."""
    try:
        return json.loads(text, parse_constant=_not_json, parse_int=_integer)
    except RecursionError:
        raise ValueError("nested too deeply") from None


def _not_json(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _integer(digits: str) -> int | str:
    return int(digits) if len(digits.lstrip("-")) <= _INT_DIGITS else digits


class MalformedReply(ValueError):
    """A reply, or an event of a stream, that does not follow the wire format."""


class RemoteStreamError(Exception):
    """The server reported an error inside a stream that had begun."""

    def __init__(self, error_type: str, message: str) -> None:
        super().__init__(f"{error_type}: {message}")
        self.error_type = error_type
        self.message = message


class ReasoningDelta(BaseModel):
    """The next piece of a reasoning model's reasoning (kept apart from the answer's text)."""

    text: str


class Reply(PromptResponse):
    """A whole reply with what some wire formats carry beside the text."""

    reasoning: str | None = None
    """A reasoning model's reasoning (``reasoning_content`` in the OpenAI API of vLLM, SGLang
    and llama.cpp)."""


StreamEvent = StreamDelta | ReasoningDelta | StreamToolCall | StreamDone
NO_EVENTS: tuple[StreamEvent, ...] = ()


class EventReader(ABC):
    """Reads the events of one stream, in order."""

    #: What ends a stream, as errors about a stream cut short name it.
    end_event = "'done' event"

    @abstractmethod
    def read(self, event: Event) -> Sequence[StreamEvent]:
        """What ``event`` carries: none (a ping, an unknown event), pieces, or the end
        (``StreamDone``, which nothing follows)."""

    def end(self) -> StreamDone | None:
        """The stream's end, when the connection closed without one (None: it was cut)."""
        return None


class WireFormat(ABC):
    """How requests and replies of one kind of endpoint look."""

    #: A chat request refused for its ``messages`` may be sent again as ``prompt`` alone
    #: (the prompt protocol's v1.1 client with a v1 server).
    conversation_fallback = False
    #: Requests name the model (``ChatPromptwire(model=...)`` is sent as ``model``).
    names_model = False

    @abstractmethod
    def request(
        self, url: httpx.URL, payload: Mapping[str, Any], *, stream: bool
    ) -> tuple[httpx.URL, Mapping[str, Any]]:
        """Where to send ``payload`` (the prompt protocol's request: ``prompt``, maybe
        ``messages``, generation parameters, anything else the caller added) and its body."""

    @abstractmethod
    def reply(self, data: Any) -> PromptResponse:
        """A whole reply, from its decoded JSON."""

    @abstractmethod
    def events(self) -> EventReader:
        """A reader for one stream's events."""

    def error(self, data: Any) -> tuple[str | None, str] | None:
        """The error type and message of a non-2xx body's decoded JSON, if it has them."""
        try:
            detail = data["error"]
            return str(detail["type"]), str(detail["message"])
        except (KeyError, TypeError):
            return None


class PromptProtocol(WireFormat):
    """The prompt endpoint protocol (docs/PROTOCOL.md): ``POST <endpoint_url>``, replies under
    ``prompt``, ``delta``/``done``/``error`` events."""

    conversation_fallback = True

    def request(
        self, url: httpx.URL, payload: Mapping[str, Any], *, stream: bool
    ) -> tuple[httpx.URL, Mapping[str, Any]]:
        return url, ({**payload, "stream": True} if stream else payload)

    def reply(self, data: Any) -> PromptResponse:
        if not isinstance(data, dict) or not isinstance(data.get("prompt"), str):
            found = sorted(data)[:10] if isinstance(data, dict) else type(data).__name__
            raise MalformedReply(f"the reply has no 'prompt' string (found {found})")
        try:
            return PromptResponse.model_validate(data)
        except ValidationError:
            pass
        # Keep the text even when optional fields are malformed; but tool calls (v1.2) are the
        # answer itself, and a reply whose calls cannot be read is broken, not text.
        calls = data.get("tool_calls")
        try:
            tool_calls = None if calls is None else [ToolCall.model_validate(c) for c in calls]
        except (ValidationError, TypeError):
            raise MalformedReply("the reply's 'tool_calls' are malformed") from None
        return PromptResponse(prompt=data["prompt"], tool_calls=tool_calls)

    def events(self) -> EventReader:
        return _PromptEvents()


class _PromptEvents(EventReader):
    def read(self, event: Event) -> Sequence[StreamEvent]:
        name = event.event
        if name not in (EVENT_DELTA, EVENT_DONE, EVENT_ERROR, EVENT_TOOL_CALL):
            return NO_EVENTS  # pings and unknown events are skipped
        try:
            data = parse_json(event.data)
            if name == EVENT_DELTA:
                return (StreamDelta.model_validate(data),)
            if name == EVENT_TOOL_CALL:
                return (StreamToolCall.model_validate(data),)
            if name == EVENT_DONE:
                return (StreamDone.model_validate(data),)
            error = data["error"]
            error_type, message = str(error["type"]), str(error["message"])
        except (ValueError, KeyError, TypeError, ValidationError):
            raise MalformedReply(f"malformed {name!r} event") from None
        raise RemoteStreamError(error_type, message)


#: The default wire format.
PROMPT_PROTOCOL = PromptProtocol()


__all__ = [
    "NO_EVENTS",
    "PROMPT_PROTOCOL",
    "EventReader",
    "MalformedReply",
    "PromptProtocol",
    "ReasoningDelta",
    "RemoteStreamError",
    "Reply",
    "StreamEvent",
    "WireFormat",
    "parse_json",
]
