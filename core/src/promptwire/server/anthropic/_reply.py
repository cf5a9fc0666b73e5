"""Anthropic's replies: a whole ``message``, and a stream's events (``message_start``, ``ping``,
``content_block_start`` / ``content_block_delta`` / ``content_block_stop`` per block,
``message_delta`` with the stop reason and usage, ``message_stop``; ``error`` when a stream
fails after it began).

``stop_reason``: ``end_turn`` (the model stopped), ``stop_sequence`` (one of the request's,
named in ``stop_sequence``), ``max_tokens``, ``tool_use``. A tool call's ``input`` is its
arguments' JSON object (``{}`` if the model wrote something else, which an engine that
constrains its calls never does). ``usage`` counts ``input_tokens`` and ``output_tokens``; a
stream knows the input's count only at its end, so ``message_start`` says 0 and
``message_delta`` gives both.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

from pydantic_core import to_json
from sse_starlette import ServerSentEvent

from promptwire.engine import Completion, EngineEvent, Finish, TextChunk, ToolCall
from promptwire.protocol import FinishReason, Usage
from promptwire.server._streaming import Event, StreamForm, sse_event
from promptwire.server.anthropic.protocol import AnthropicErrorBody

_STOP_REASONS = {
    FinishReason.LENGTH: "max_tokens",
    FinishReason.TOOL_CALLS: "tool_use",
}


def message_id() -> str:
    return f"msg_{os.urandom(12).hex()}"


def stop_reason(finish_reason: FinishReason, stop_sequence: str | None) -> str:
    if finish_reason is FinishReason.STOP:
        return "end_turn" if stop_sequence is None else "stop_sequence"
    return _STOP_REASONS[finish_reason]


def _usage(usage: Usage) -> dict[str, int]:
    return {"input_tokens": usage.prompt_tokens, "output_tokens": usage.completion_tokens}


def _input(arguments: str) -> dict[str, Any]:
    try:
        value = json.loads(arguments)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _tool_use(call: ToolCall, arguments: dict[str, Any]) -> dict[str, Any]:
    return {"type": "tool_use", "id": call.id, "name": call.name, "input": arguments}


def message(done: Completion, *, model: str, identifier: str) -> dict[str, Any]:
    """A whole reply."""
    content: list[dict[str, Any]] = []
    if done.text:
        content.append({"type": "text", "text": done.text})
    content += [_tool_use(call, _input(call.arguments)) for call in done.tool_calls]
    return {
        "id": identifier,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason(done.finish_reason, done.stop_sequence),
        "stop_sequence": done.stop_sequence,
        "usage": _usage(done.usage),
    }


class MessageEvents(StreamForm):
    """A stream written as Anthropic's events."""

    ping = ServerSentEvent('{"type": "ping"}', event="ping")

    def __init__(self, model: str, identifier: str) -> None:
        super().__init__(model)
        self.identifier = identifier
        self.blocks = 0  # content blocks begun: the next one's index
        self.text_open = False

    @staticmethod
    def _event(kind: str, **fields: Any) -> bytes:
        return sse_event(to_json({"type": kind, **fields}), kind)

    def opening(self) -> Sequence[Event]:
        begun: dict[str, Any] = {
            "id": self.identifier,
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 0, "output_tokens": 0},
        }
        return (self._event("message_start", message=begun), self.ping)

    def event(self, event: EngineEvent) -> Sequence[Event]:
        if isinstance(event, TextChunk):
            if not event.text:
                return ()
            written = []
            if not self.text_open:
                self.text_open = True
                written.append(self._start({"type": "text", "text": ""}))
            delta = {"type": "text_delta", "text": event.text}
            written.append(self._event("content_block_delta", index=self.blocks - 1, delta=delta))
            return written
        if isinstance(event, ToolCall):
            arguments = _input(event.arguments)
            written = self._close_text()
            written.append(self._start(_tool_use(event, {})))
            delta = {"type": "input_json_delta", "partial_json": json.dumps(arguments)}
            written.append(self._event("content_block_delta", index=self.blocks - 1, delta=delta))
            written.append(self._event("content_block_stop", index=self.blocks - 1))
            return written
        return [*self._close_text(), *self._finish(event)]

    def _start(self, block: dict[str, Any]) -> Event:
        self.blocks += 1
        return self._event("content_block_start", index=self.blocks - 1, content_block=block)

    def _close_text(self) -> list[Event]:
        if not self.text_open:
            return []
        self.text_open = False
        return [self._event("content_block_stop", index=self.blocks - 1)]

    def _finish(self, finish: Finish) -> list[Event]:
        delta = {
            "stop_reason": stop_reason(finish.finish_reason, finish.stop_sequence),
            "stop_sequence": finish.stop_sequence,
        }
        return [
            self._event("message_delta", delta=delta, usage=_usage(finish.usage)),
            self._event("message_stop"),
        ]

    def error(
        self, status_code: int, error_type: str, message: str, request_id: str | None
    ) -> ServerSentEvent:
        """A failure after the stream began: Anthropic's ``error`` event, the stream's last."""
        status = 400 if status_code == 422 else status_code  # as ``AnthropicError.from_engine``
        error = AnthropicErrorBody.of(status, message, request_id)
        body = error.model_dump_json(exclude_none=True)
        return ServerSentEvent(body, event="error")
