"""The request models of the OpenAI and Anthropic routes: the parameters they hand the engine
are their own declared fields only, and the keys they refuse are refused whatever else is set,
while the same keys asking for nothing pass (a request that sets none is not looked at)."""

from __future__ import annotations

from typing import Any

import pytest
from promptwire.server._refusals import RefusingRequest
from promptwire.server.anthropic.protocol import MessagesRequest
from promptwire.server.openai.protocol import (
    ChatCompletionRequest,
    CompletionRequest,
    ResponsesRequest,
)

CHAT = {"messages": [{"role": "user", "content": "hi"}]}
MESSAGES = {"max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}


@pytest.mark.parametrize(
    ("model", "body", "expected"),
    [
        # Unknown keys named like another protocol's parameters are extras, never parameters.
        (ResponsesRequest, {"input": "hi", "max_tokens": "x", "stop": 5}, {}),
        (
            ResponsesRequest,
            {"input": "hi", "max_output_tokens": 7, "seed": 3},
            {"max_tokens": 7, "seed": 3},
        ),
        (ChatCompletionRequest, {**CHAT, "max_output_tokens": "x", "stop_sequences": 1}, {}),
        (
            ChatCompletionRequest,
            {**CHAT, "max_tokens": 4, "max_completion_tokens": 6, "stop": "."},
            {"max_tokens": 6, "stop": ["."]},
        ),
        (MessagesRequest, {**MESSAGES, "seed": "x", "stop": "y"}, {"max_tokens": 5}),
        (
            MessagesRequest,
            {**MESSAGES, "temperature": 0.5, "top_k": 3, "stop_sequences": ["."]},
            {"max_tokens": 5, "temperature": 0.5, "top_k": 3, "stop": ["."]},
        ),
    ],
)
def test_generation_params_are_the_declared_fields_set(
    model: type[Any], body: dict[str, Any], expected: dict[str, Any]
) -> None:
    assert model.model_validate(body).generation_params() == expected


@pytest.mark.parametrize(
    ("model", "body", "refused"),
    [
        (ChatCompletionRequest, {**CHAT, "n": 2}, "n"),
        (ChatCompletionRequest, {**CHAT, "logprobs": True}, "logprobs"),
        (ChatCompletionRequest, {**CHAT, "frequency_penalty": 0.5}, "frequency_penalty"),
        (ChatCompletionRequest, {**CHAT, "functions": [{"name": "f"}]}, "functions"),
        (ChatCompletionRequest, {**CHAT, "audio": {}}, "audio"),
        (CompletionRequest, {"prompt": "p", "best_of": 2}, "best_of"),
        (CompletionRequest, {"prompt": ["a", "b"], "stream": True}, "prompt"),
        (ResponsesRequest, {"input": "hi", "previous_response_id": "r"}, "previous_response_id"),
        (ResponsesRequest, {"input": "hi", "background": True}, "background"),
        (MessagesRequest, {**MESSAGES, "thinking": {"type": "enabled"}}, "thinking"),
        (MessagesRequest, {**MESSAGES, "container": "c"}, "container"),
    ],
)
def test_what_cannot_be_served_is_refused(
    model: type[RefusingRequest], body: dict[str, Any], refused: str
) -> None:
    found = model.model_validate(body).unsupported()
    assert found is not None and found[0] == refused


@pytest.mark.parametrize(
    ("model", "body"),
    [
        (ChatCompletionRequest, CHAT),
        (ChatCompletionRequest, {**CHAT, "n": 1, "logprobs": False, "presence_penalty": 0}),
        (ChatCompletionRequest, {**CHAT, "function_call": "none", "modalities": ["text"]}),
        (CompletionRequest, {"prompt": ["a", "b"], "best_of": 1}),
        (ResponsesRequest, {"input": "hi", "background": False, "top_logprobs": 0}),
        (MessagesRequest, {**MESSAGES, "thinking": {"type": "disabled"}, "mcp_servers": []}),
    ],
)
def test_the_same_keys_asking_for_nothing_pass(
    model: type[RefusingRequest], body: dict[str, Any]
) -> None:
    assert model.model_validate(body).unsupported() is None


def test_every_refusable_key_and_parameter_is_a_declared_field() -> None:
    for model in (ChatCompletionRequest, CompletionRequest, ResponsesRequest, MessagesRequest):
        assert set(model.model_fields) >= model.REFUSABLE | model.PARAMETERS, model


@pytest.mark.parametrize("kind", ["REFUSABLE", "PARAMETERS"])
def test_a_model_naming_an_undeclared_field_is_refused_when_made(kind: str) -> None:
    with pytest.raises(TypeError, match=f"Wrong.{kind} names undeclared fields: {{'max_tokens'}}"):
        type(
            "Wrong",
            (RefusingRequest,),
            {"__annotations__": {"seed": "int"}, kind: frozenset({"seed", "max_tokens"})},
        )
