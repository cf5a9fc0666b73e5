"""OpenAI's replies: whole completions, and the ``data:`` chunks of a stream ending with
``data: [DONE]``."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import Any

from pydantic_core import to_json
from sse_starlette import ServerSentEvent
from starlette.responses import Response

from promptwire.engine import (
    Completion,
    EngineEvent,
    TextChunk,
    ToolCall,
)
from promptwire.protocol import (
    Usage,
)
from promptwire.server._streaming import Event, StreamForm, sse_event
from promptwire.server.openai._errors import OpenAIError
from promptwire.server.openai.protocol import (
    OpenAIErrorBody,
    OpenAIErrorDetail,
    error_type_for,
)

DONE = b"[DONE]"


class Chunks(StreamForm):
    """A stream written as OpenAI's chunks: the role first (chat), the echoed prompt if asked,
    the text, the finish reason, the usage if asked, then ``[DONE]``."""

    def __init__(self, writer: Writer, include_usage: bool, echo: list[str] | None) -> None:
        super().__init__(writer.model)
        self.writer = writer
        self.include_usage = include_usage
        self.echo = echo

    def opening(self) -> Sequence[Event]:
        opening = []
        if self.writer.chat:
            opening.append(sse_event(self.writer.role_chunk()))
        if self.echo:
            opening.append(sse_event(self.writer.text_chunk(self.echo[0])))
        return opening

    def event(self, event: EngineEvent) -> Sequence[Event]:
        if isinstance(event, TextChunk):
            return (sse_event(self.writer.text_chunk(event.text)),) if event.text else ()
        if isinstance(event, ToolCall):
            self.calls += 1
            return (sse_event(self.writer.tool_call_chunk(self.calls - 1, event)),)
        written = [sse_event(self.writer.finish_chunk(event.finish_reason))]
        if self.include_usage:
            written.append(sse_event(self.writer.usage_chunk(event.usage)))
        written.append(sse_event(DONE))
        return written

    def error(
        self, status_code: int, error_type: str, message: str, request_id: str | None
    ) -> ServerSentEvent:
        status = 400 if status_code == 422 else status_code
        error = OpenAIError(status, message, code=str(error_type))
        return ServerSentEvent(_error_data(error, request_id))


def _error_data(error: OpenAIError, request_id: str | None) -> str:
    """A failure after the stream began: a ``data:`` line holding an ``error`` object, which
    OpenAI's SDK raises as an ``APIError``; no ``[DONE]`` follows."""
    detail = OpenAIErrorDetail(
        message=error.message,
        type=error_type_for(error.status_code),
        param=error.param,
        code=error.code,
        request_id=request_id,
    )
    return OpenAIErrorBody(error=detail).model_dump_json()


# -- replies -----------------------------------------------------------------------------------


def reply_json(data: dict[str, Any]) -> Response:
    return Response(_dumps(data), media_type="application/json")


def _dumps(data: dict[str, Any]) -> bytes:
    return to_json(data)  # pydantic's encoder: a third of json.dumps' time here


def _usage(usage: Usage) -> dict[str, int]:
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
    }


def _tool_call(call: ToolCall) -> dict[str, Any]:
    return {"id": call.id, "function": {"name": call.name, "arguments": call.arguments}}


class Writer:
    """The replies and chunks of one request, all with its id, creation time and model."""

    def __init__(self, id_prefix: str, kind: str, model: str) -> None:
        self.chat = kind == "chat.completion"
        self.model = model
        self.head = {
            "id": f"{id_prefix}-{os.urandom(12).hex()}",
            "object": kind,
            "created": int(time.time()),
            "model": model,
        }
        self.chunk_kind = f"{kind}.chunk" if self.chat else kind

    def completion(self, done: Sequence[Completion], echo: list[str] | None) -> dict[str, Any]:
        choices = [
            {
                "index": index,
                "text": (echo[index] if echo else "") + completion.text,
                "logprobs": None,
                "finish_reason": str(completion.finish_reason),
            }
            for index, completion in enumerate(done)
        ]
        if len(done) == 1:
            usage = _usage(done[0].usage)
        else:
            prompt = sum(c.usage.prompt_tokens for c in done)
            completion = sum(c.usage.completion_tokens for c in done)
            usage = {
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "total_tokens": prompt + completion,
            }
        return {**self.head, "choices": choices, "usage": usage}

    def chat_completion(self, done: Completion) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": done.text}
        if done.tool_calls:
            message["content"] = done.text or None  # as OpenAI answers a turn of calls only
            message["tool_calls"] = [
                _tool_call(call) | {"type": "function"} for call in done.tool_calls
            ]
        choice = {
            "index": 0,
            "message": message,
            "logprobs": None,
            "finish_reason": str(done.finish_reason),
        }
        return {**self.head, "choices": [choice], "usage": _usage(done.usage)}

    def _chunk(self, choice: dict[str, Any]) -> bytes:
        return self._json({"choices": [{"index": 0, **choice}]})

    def _json(self, fields: dict[str, Any]) -> bytes:
        return _dumps({**self.head, "object": self.chunk_kind, **fields})

    def role_chunk(self) -> bytes:
        delta = {"role": "assistant", "content": ""}
        return self._chunk({"delta": delta, "logprobs": None, "finish_reason": None})

    def text_chunk(self, text: str) -> bytes:
        if self.chat:
            return self._chunk(
                {"delta": {"content": text}, "logprobs": None, "finish_reason": None}
            )
        return self._chunk({"text": text, "logprobs": None, "finish_reason": None})

    def tool_call_chunk(self, index: int, call: ToolCall) -> bytes:
        delta = {"tool_calls": [{"index": index, **_tool_call(call), "type": "function"}]}
        return self._chunk({"delta": delta, "logprobs": None, "finish_reason": None})

    def finish_chunk(self, reason: Any) -> bytes:
        if self.chat:
            return self._chunk({"delta": {}, "logprobs": None, "finish_reason": str(reason)})
        return self._chunk({"text": "", "logprobs": None, "finish_reason": str(reason)})

    def usage_chunk(self, usage: Usage) -> bytes:
        return self._json({"choices": [], "usage": _usage(usage)})
