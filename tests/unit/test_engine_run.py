"""``promptwire.testing.run_engine``: an engine run in-process as the server runs it (the request
checked, messages rendered, prepared, generated under stop and max_tokens), no HTTP."""

from __future__ import annotations

from collections.abc import AsyncGenerator

import pytest
from promptwire import FinishReason, PromptRequest, RequestRejected
from promptwire.engine import EngineEvent, RequestUnsupported
from promptwire.testing import arun_engine, run_engine
from promptwire_modal_dummy.engine import DummyEngine
from promptwire_reverse.engine import MAX_PROMPT_WORDS, ReverseEngine
from pydantic import ValidationError


def test_pieces_usage_and_finish_come_from_the_servers_loop() -> None:
    run = run_engine(ReverseEngine(), "one two three")
    assert run.pieces == ["three", " two", " one"]
    assert run.text == "three two one"
    assert run.finish.finish_reason is FinishReason.STOP
    assert (run.finish.usage.prompt_tokens, run.finish.usage.completion_tokens) == (3, 3)
    assert run.tool_calls == []


def test_max_tokens_and_stop_are_applied() -> None:
    cut = run_engine(ReverseEngine(), {"prompt": "one two three", "max_tokens": 2})
    assert (cut.text, cut.finish.finish_reason) == ("three two", FinishReason.LENGTH)
    stopped = run_engine(ReverseEngine(), PromptRequest(prompt="one two three", stop=[" tw"]))
    assert (stopped.text, stopped.finish.finish_reason) == ("three", FinishReason.STOP)


def test_messages_are_rendered_by_the_engines_template() -> None:
    messages = [{"role": "user", "content": "first"}, {"role": "user", "content": "a b"}]
    assert run_engine(ReverseEngine(), {"prompt": "", "messages": messages}).text == "b a"


def test_what_the_server_would_refuse_is_raised() -> None:
    with pytest.raises(ValidationError):
        run_engine(ReverseEngine(), {"prompt": "x", "max_tokens": 0})
    with pytest.raises(RequestRejected):
        run_engine(ReverseEngine(), "w " * (MAX_PROMPT_WORDS + 1))
    tools = [{"type": "function", "function": {"name": "f", "parameters": {}}}]
    messages = [{"role": "user", "content": "call f"}]
    with pytest.raises(RequestUnsupported):
        run_engine(ReverseEngine(), {"prompt": "", "messages": messages, "tools": tools})


async def test_async_tests_await_it() -> None:
    assert (await arun_engine(ReverseEngine(), "a b")).text == "b a"


class YieldsAString(DummyEngine):
    async def stream(self, request: PromptRequest) -> AsyncGenerator[EngineEvent, None]:
        yield "hello"  # type: ignore[misc]


def test_an_event_of_another_type_is_named_not_taken_for_the_finish() -> None:
    """``run_engine`` passed an engine yielding a ``str`` (its ``finish`` was the string) which
    the server then answered with an AttributeError's 500; both now say what was yielded."""
    with pytest.raises(TypeError, match="the engine yielded str 'hello'"):
        run_engine(YieldsAString(), {"prompt": "p"})
