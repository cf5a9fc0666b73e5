"""The real model through the other doors users come in by: the OpenAI API (the official
``openai`` SDK and langchain-openai's ``ChatOpenAI`` on promptwire's ``/v1`` routes) and the
conformance kit a backend author runs against an endpoint."""

from __future__ import annotations

from collections.abc import Iterator

import openai
import pytest
from langchain_openai import ChatOpenAI
from promptwire.testing import EndpointConformanceTests

from tests.support.network import LOOPBACK_ONLY
from tests.support.real_model import (
    ANSWER,
    COMPLETION_PROMPT,
    QUESTION,
    REAL_MODEL,
    serve_smollm2,
)

pytestmark = [*LOOPBACK_ONLY, *REAL_MODEL]

MODEL = "SmolLM2-135M-Instruct.Q4_1"


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    # Greedy by default, so the kit can hold the endpoint to the same text every time.
    with serve_smollm2(env={"PROMPTWIRE_LLAMACPP__TEMPERATURE": "0"}) as served:
        yield served


def test_the_openai_sdk_chats_and_streams(url: str) -> None:
    client = openai.OpenAI(base_url=url + "v1", api_key="unused", max_retries=0)
    assert [m.id for m in client.models.list()] == [MODEL]
    messages: list[openai.types.chat.ChatCompletionMessageParam] = [
        {"role": "user", "content": QUESTION}
    ]
    reply = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=24)
    text = reply.choices[0].message.content or ""
    assert ANSWER in text
    assert reply.usage is not None and reply.usage.completion_tokens > 0
    stream = client.chat.completions.create(
        model=MODEL, messages=messages, max_tokens=24, stream=True
    )
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == text
    completion = client.completions.create(model=MODEL, prompt=COMPLETION_PROMPT, max_tokens=8)
    assert ANSWER in completion.choices[0].text


def test_chat_openai_reaches_the_real_model(url: str) -> None:
    chat = ChatOpenAI(
        model=MODEL, base_url=url + "v1", api_key="unused", max_tokens=24, max_retries=0
    )
    reply = chat.invoke(QUESTION)
    assert ANSWER in str(reply.content)
    assert "".join(str(c.content) for c in chat.stream(QUESTION)) == reply.content


class TestSmolLM2Conformance(EndpointConformanceTests):
    """The kit, unchanged, on the real engine."""

    deterministic = True

    @pytest.fixture
    def endpoint_url(self, url: str) -> str:
        return url
