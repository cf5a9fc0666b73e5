"""The protocol models: strict on known keys, open to unknown ones."""

from __future__ import annotations

import pytest
from promptwire.protocol import MAX_STOP_SEQUENCES, PromptRequest, PromptResponse
from pydantic import ValidationError


def test_prompt_plus_extra_args_is_valid() -> None:
    request = PromptRequest.model_validate(
        {"prompt": "Identify yourself, bot!", "extra": "args are allowed"}
    )
    assert request.prompt == "Identify yourself, bot!"
    assert request.model_extra == {"extra": "args are allowed"}
    assert request.known_params() == {}


def test_known_params_keep_only_what_was_set() -> None:
    request = PromptRequest.model_validate(
        {"prompt": "p", "max_tokens": 5, "temperature": 1, "stop": ["\n"], "stream": True}
    )
    assert request.known_params() == {"max_tokens": 5, "temperature": 1.0, "stop": ["\n"]}
    assert request.stream is True


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"prompt": 5},
        {"prompt": None},
        {"prompt": "p", "max_tokens": "5"},
        {"prompt": "p", "max_tokens": 0},
        {"prompt": "p", "max_tokens": 2.5},
        {"prompt": "p", "temperature": -0.1},
        {"prompt": "p", "temperature": "hot"},
        {"prompt": "p", "top_p": 0},
        {"prompt": "p", "top_p": 1.5},
        {"prompt": "p", "top_k": -1},
        {"prompt": "p", "stop": "\n"},
        {"prompt": "p", "stop": [""]},
        {"prompt": "p", "stop": ["x"] * (MAX_STOP_SEQUENCES + 1)},
        {"prompt": "p", "seed": -1},
        {"prompt": "p", "stream": "yes"},
    ],
)
def test_wrong_types_and_ranges_are_rejected(body: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        PromptRequest.model_validate(body)


def test_null_parameters_mean_default() -> None:
    request = PromptRequest.model_validate({"prompt": "p", "max_tokens": None, "stop": None})
    assert request.max_tokens is None and request.known_params() == {}


def test_response_keeps_the_compatible_prompt_key() -> None:
    reply = PromptResponse.model_validate({"prompt": "This is the LLM speaking"})
    assert reply.prompt == "This is the LLM speaking"
    assert reply.usage is None and reply.finish_reason is None


@pytest.mark.parametrize(
    "body",
    [
        {"prompt": "", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4},
        {"prompt": "old", "temperature": 0.5, "vendor_key": {"a": 1}},  # an extra kept
        {"prompt": "p", "stop": ["\n"], "stream": True},
    ],
)
def test_with_prompt_is_model_copy_with_the_prompt_updated(body: dict[str, object]) -> None:
    request = PromptRequest.model_validate(body)
    copied = request.with_prompt("rendered")
    expected = request.model_copy(update={"prompt": "rendered"})
    assert copied == expected and type(copied) is PromptRequest
    assert copied.model_fields_set == expected.model_fields_set
    assert copied.model_extra == expected.model_extra
    assert copied.model_dump_json() == expected.model_dump_json()
    assert request.prompt == body["prompt"] and "prompt" in copied.model_fields_set
    copied.max_tokens = 9  # the original is not changed through its copy
    assert request.max_tokens == body.get("max_tokens")


CONVERSATION = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Sure"}]


@pytest.mark.parametrize(
    "body",
    [
        {"prompt": "p", "continue_final_message": True},  # no messages
        {"prompt": "", "messages": CONVERSATION[:1], "continue_final_message": True},
        {
            "prompt": "",
            "messages": CONVERSATION,
            "continue_final_message": True,
            "response_format": {"type": "json_object"},
        },
    ],
)
def test_continue_final_message_needs_an_assistants_text_and_no_constraint(
    body: dict[str, object],
) -> None:
    with pytest.raises(ValidationError, match="continue_final_message"):
        PromptRequest.model_validate(body)


def test_a_continued_rendering_ends_with_the_final_messages_text() -> None:
    from promptwire.engine import rendered_request
    from promptwire_modal_dummy.engine import DummyEngine

    request = PromptRequest.model_validate(
        {"prompt": "", "messages": CONVERSATION, "continue_final_message": True}
    )
    assert rendered_request(DummyEngine(), request).prompt == "User: Hi\n\nAssistant: Sure"
