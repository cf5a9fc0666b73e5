"""The stream events written without sse-starlette's object (``sse_event``, ``delta_event``)
are byte for byte what sse-starlette writes for the same event: an SSE client reads them
alike."""

from __future__ import annotations

import pytest
from promptwire.server._streaming import delta_event, sse_event
from pydantic_core import to_json
from sse_starlette import ServerSentEvent

DATA = [
    to_json({"type": "response.output_text.delta", "delta": "héllo 世界 🙂"}),
    to_json({"text": "line one\nline two\r\n", "quote": '"'}),  # escaped: still one line
    b"[DONE]",
    b"",
    b"two\nlines",  # not JSON: split into two data lines, as sse-starlette does
    b"carriage\rreturn",
]


@pytest.mark.parametrize("data", DATA)
@pytest.mark.parametrize("event", [None, "message_delta", "response.completed", "bad\r\nname"])
def test_sse_event_is_what_sse_starlette_writes(data: bytes, event: str | None) -> None:
    assert sse_event(data, event) == ServerSentEvent(data.decode(), event=event).encode()


@pytest.mark.parametrize("text", ["", "a", "héllo\n世界", '"quoted"'])
def test_delta_event_is_what_sse_starlette_writes(text: str) -> None:
    expected = ServerSentEvent(to_json({"text": text}).decode(), event="delta").encode()
    assert delta_event(text) == expected
