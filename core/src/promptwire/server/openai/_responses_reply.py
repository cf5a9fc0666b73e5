"""The Responses API's replies: the ``response`` object, whole, and the events of a stream
(``response.created``, ``response.output_item.added``, ``response.output_text.delta``,
``response.function_call_arguments.delta``, ..., ``response.completed``), each with its
``sequence_number``.

A reply's ``output`` holds a ``message`` item with the text (``output_text``; the SDKs' own
``output_text`` property joins it) unless the model only called tools, then a ``function_call``
item per call. A reply cut by ``max_output_tokens`` is ``incomplete``. Nothing is stored:
``store`` is always false."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import Any

from pydantic_core import to_json

from promptwire.engine import Completion, EngineEvent, Finish, TextChunk, ToolCall
from promptwire.protocol import FinishReason, Usage
from promptwire.server._streaming import Event, StreamForm, sse_event
from promptwire.server.openai.protocol import ResponsesRequest


def _id(prefix: str) -> str:
    return f"{prefix}_{os.urandom(12).hex()}"


def _usage(usage: Usage) -> dict[str, Any]:
    return {
        "input_tokens": usage.prompt_tokens,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": usage.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": usage.total_tokens,
    }


def _text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def message_item(item_id: str, text: str | None, status: str = "completed") -> dict[str, Any]:
    """The assistant's message; ``text`` None: not begun (no content part yet)."""
    content = [] if text is None else [_text_part(text)]
    return {
        "type": "message",
        "id": item_id,
        "status": status,
        "role": "assistant",
        "content": content,
    }


def message_status(finish_reason: FinishReason | None) -> str:
    """A finished message item's status: cut by ``max_output_tokens``, it is incomplete, as the
    response is."""
    return "incomplete" if finish_reason is FinishReason.LENGTH else "completed"


def call_item(
    item_id: str, call: ToolCall, arguments: str, status: str = "completed"
) -> dict[str, Any]:
    return {
        "type": "function_call",
        "id": item_id,
        "call_id": call.id,
        "name": call.name,
        "arguments": arguments,
        "status": status,
    }


class ResponseWriter:
    """The ``response`` objects of one request: its id, creation time, model and the
    parameters it echoes back."""

    def __init__(self, body: ResponsesRequest, model: str) -> None:
        text = body.text.format if body.text is not None and body.text.format else None
        self.model = model
        self.head = {"id": _id("resp"), "object": "response", "created_at": int(time.time())}
        self.echo = {
            "model": model,
            "background": False,
            "instructions": body.instructions,
            "max_output_tokens": body.max_output_tokens,
            "metadata": body.metadata or {},
            "parallel_tool_calls": body.parallel_tool_calls is not False,
            "previous_response_id": None,
            "reasoning": {"effort": None, "summary": None},
            "store": False,
            "temperature": body.temperature,
            "text": {"format": text or {"type": "text"}},
            "tool_choice": body.tool_choice if body.tool_choice is not None else "auto",
            "tools": body.tools or [],
            "top_p": body.top_p,
            "truncation": "disabled",
            "user": None,
        }

    def response(
        self,
        output: list[dict[str, Any]],
        usage: Usage | None,
        finish_reason: FinishReason | None,
    ) -> dict[str, Any]:
        """The object in progress (``finish_reason`` None) or finished."""
        status = "in_progress"
        incomplete = None
        if finish_reason is FinishReason.LENGTH:
            status, incomplete = "incomplete", {"reason": "max_output_tokens"}
        elif finish_reason is not None:
            status = "completed"
        return {
            **self.head,
            "status": status,
            "error": None,
            "incomplete_details": incomplete,
            "output": output,
            "usage": None if usage is None else _usage(usage),
            **self.echo,
        }

    def whole(self, done: Completion) -> dict[str, Any]:
        output = [call_item(_id("fc"), call, call.arguments) for call in done.tool_calls]
        if done.text or not output:
            status = message_status(done.finish_reason)
            output.insert(0, message_item(_id("msg"), done.text, status))
        return self.response(output, done.usage, done.finish_reason)


class ResponseEvents(StreamForm):
    """A stream written as the Responses API's events."""

    def __init__(self, writer: ResponseWriter) -> None:
        super().__init__(writer.model)
        self.writer = writer
        self.sequence = 0
        self.output: list[dict[str, Any]] = []
        self.message: tuple[str, list[str]] | None = None  # the open message: id, text so far

    def _event(self, kind: str, **fields: Any) -> bytes:
        data = to_json({"type": kind, "sequence_number": self.sequence, **fields})
        self.sequence += 1
        return sse_event(data, kind)

    def opening(self) -> Sequence[Event]:
        begun = self.writer.response([], None, None)
        return (
            self._event("response.created", response=begun),
            self._event("response.in_progress", response=begun),
        )

    def event(self, event: EngineEvent) -> Sequence[Event]:
        if isinstance(event, TextChunk):
            if not event.text:
                return ()
            written = [] if self.message is not None else self._open_message()
            assert self.message is not None
            self.message[1].append(event.text)
            written.append(
                self._event(
                    "response.output_text.delta",
                    item_id=self.message[0],
                    output_index=len(self.output),
                    content_index=0,
                    delta=event.text,
                    logprobs=[],
                )
            )
            return written
        if isinstance(event, ToolCall):
            return [*self._close_message(), *self._call(event)]
        return self._finish(event)

    def _open_message(self) -> list[Event]:
        item_id = _id("msg")
        self.message = (item_id, [])
        where = {"output_index": len(self.output)}
        return [
            self._event(
                "response.output_item.added",
                item=message_item(item_id, None, "in_progress"),
                **where,
            ),
            self._event(
                "response.content_part.added",
                item_id=item_id,
                content_index=0,
                part=_text_part(""),
                **where,
            ),
        ]

    def _close_message(self, status: str = "completed") -> list[Event]:
        if self.message is None:
            return []
        item_id, pieces = self.message
        self.message = None
        text = "".join(pieces)
        where = {"item_id": item_id, "output_index": len(self.output), "content_index": 0}
        item = message_item(item_id, text, status)
        written: list[Event] = [
            self._event("response.output_text.done", text=text, logprobs=[], **where),
            self._event("response.content_part.done", part=_text_part(text), **where),
            self._event("response.output_item.done", output_index=len(self.output), item=item),
        ]
        self.output.append(item)
        return written

    def _call(self, call: ToolCall) -> list[Event]:
        item_id = _id("fc")
        index = len(self.output)
        item = call_item(item_id, call, call.arguments)
        self.output.append(item)
        where = {"item_id": item_id, "output_index": index}
        return [
            self._event(
                "response.output_item.added",
                output_index=index,
                item=call_item(item_id, call, "", "in_progress"),
            ),
            self._event("response.function_call_arguments.delta", delta=call.arguments, **where),
            self._event(
                "response.function_call_arguments.done",
                arguments=call.arguments,
                name=call.name,
                **where,
            ),
            self._event("response.output_item.done", output_index=index, item=item),
        ]

    def _finish(self, finish: Finish) -> list[Event]:
        written: list[Event] = [] if self.output or self.message else self._open_message()
        written += self._close_message(message_status(finish.finish_reason))
        done = self.writer.response(self.output, finish.usage, finish.finish_reason)
        kind = "response.incomplete" if done["status"] == "incomplete" else "response.completed"
        written.append(self._event(kind, response=done))
        return written

    def error(
        self, status_code: int, error_type: str, message: str, request_id: str | None
    ) -> Event:
        """A failure after the stream began: the ``error`` event, the stream's last (with the
        request's id, for the user to quote; OpenAI's SDK ignores the extra field)."""
        fields = {"code": str(error_type), "message": message, "param": None}
        return self._event("error", **fields, request_id=request_id)
