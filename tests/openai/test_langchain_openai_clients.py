"""``langchain-openai``'s ``ChatOpenAI`` and ``OpenAI`` and the official SDK pointed at
``promptwire serve`` (a child process, as a user runs it): chains, streams, batches and usage."""

from __future__ import annotations

import asyncio

import openai
from langchain_core.prompts import ChatPromptTemplate, PromptTemplate
from langchain_openai import ChatOpenAI, OpenAI

from tests.openai.conftest import SERVE_TOKEN
from tests.support.network import LOOPBACK_ONLY

pytestmark = LOOPBACK_ONLY


def _chat(url: str, **options: object) -> ChatOpenAI:
    return ChatOpenAI(
        model="dummy", base_url=url + "v1", api_key=SERVE_TOKEN, max_retries=0, **options
    )


def test_the_sdk_against_promptwire_serve(served_hello_url: str) -> None:
    client = openai.OpenAI(base_url=served_hello_url + "v1", api_key=SERVE_TOKEN)
    assert [m.id for m in client.models.list()] == ["dummy"]
    reply = client.chat.completions.create(
        model="dummy", messages=[{"role": "user", "content": "hi"}]
    )
    assert reply.choices[0].message.content == "hello world"
    text = "".join(
        c.choices[0].text for c in client.completions.create(model="dummy", prompt="x", stream=True)
    )
    assert text == "hello world"

    async def concurrently() -> list[str]:
        async with openai.AsyncOpenAI(
            base_url=served_hello_url + "v1", api_key=SERVE_TOKEN
        ) as aclient:
            replies = await asyncio.gather(
                *(aclient.completions.create(model="dummy", prompt=str(i)) for i in range(8))
            )
        return [r.choices[0].text for r in replies]

    assert asyncio.run(concurrently()) == ["hello world"] * 8


def test_chat_openai_in_a_chain(served_echo_url: str) -> None:
    prompt = ChatPromptTemplate.from_messages([("system", "Be {mood}."), ("user", "{question}")])
    chain = prompt | _chat(served_echo_url)
    reply = chain.invoke({"mood": "brief", "question": "Who won?"})
    assert reply.content == "System: Be brief.\n\nUser: Who won?\n\nAssistant:"
    assert reply.usage_metadata is not None and reply.usage_metadata["output_tokens"] == 7
    assert reply.response_metadata["finish_reason"] == "stop"
    assert reply.response_metadata["model_name"] == "dummy"


def test_chat_openai_streams_with_usage_and_stops(served_echo_url: str) -> None:
    chat = _chat(served_echo_url, stream_usage=True)
    chunks = list(chat.stream("one two three"))
    assert "".join(str(c.content) for c in chunks) == "User: one two three\n\nAssistant:"
    usage = [c.usage_metadata for c in chunks if c.usage_metadata]
    assert len(usage) == 1 and usage[0]["output_tokens"] == 5
    assert chat.invoke("one two three", stop=["two"]).content == "User: one "
    cut = _chat(served_echo_url, max_tokens=2).invoke("one two three")
    assert (cut.content, cut.response_metadata["finish_reason"]) == ("User: one ", "length")


async def test_chat_openai_async_batch(served_echo_url: str) -> None:
    chat = _chat(served_echo_url)
    replies = await chat.abatch([f"q{i}" for i in range(6)])
    assert [r.content for r in replies] == [f"User: q{i}\n\nAssistant:" for i in range(6)]
    chunks = [c async for c in chat.astream("a b")]
    assert "".join(str(c.content) for c in chunks) == "User: a b\n\nAssistant:"


def test_the_completions_llm_single_batched_and_streamed(served_echo_url: str) -> None:
    llm = OpenAI(
        model="dummy",
        base_url=served_echo_url + "v1",
        api_key=SERVE_TOKEN,
        max_retries=0,
        max_tokens=256,
    )
    chain = PromptTemplate.from_template("Question: {q}\n\nAnswer:") | llm
    assert chain.invoke({"q": "why?"}) == "Question: why?\n\nAnswer:"
    # OpenAI sends a batch as one request holding a list of prompts.
    result = llm.generate([f"p{i}" for i in range(5)])
    assert [g[0].text for g in result.generations] == [f"p{i}" for i in range(5)]
    assert result.llm_output is not None
    assert result.llm_output["token_usage"]["completion_tokens"] == 5
    assert "".join(llm.stream("x y z")) == "x y z"
    assert llm.invoke("x y z", stop=["y"]) == "x "
