"""The whole stack on a real model: SmolLM2-135M-Instruct served by ``promptwire serve --backend
llamacpp``, called through the LangChain models as users call them.

Greedy decoding (temperature 0) makes every reply reproducible, so streams are compared with
whole replies, stops and limits with the unstopped text, and usage with the model's own
tokenizer (llama.cpp's, loaded vocabulary-only in this process).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import AIMessage, HumanMessage
from langchain_core.prompts import PromptTemplate
from promptwire import ChatPromptwire, InvalidRequestError, Modal, PromptwireLLM
from pydantic import BaseModel

from tests.support.network import LOOPBACK_ONLY
from tests.support.real_model import (
    ANSWER,
    COMPLETION_PROMPT,
    QUESTION,
    REAL_MODEL,
    serve_smollm2,
    smollm2_path,
)

pytestmark = [*LOOPBACK_ONLY, *REAL_MODEL]

GREEDY: dict[str, Any] = {"temperature": 0.0, "max_tokens": 24}


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    with serve_smollm2() as served:
        yield served


@pytest.fixture(scope="module")
def vocabulary() -> Any:
    """SmolLM2's tokenizer, as llama.cpp reads it from the GGUF file (no weights loaded)."""
    import llama_cpp

    path = smollm2_path()
    assert path is not None
    return llama_cpp.Llama(str(path), vocab_only=True, verbose=False)


def _tokens(vocabulary: Any, text: str) -> list[int]:
    return list(vocabulary.tokenize(text.encode(), add_bos=False, special=True))


def _chat(url: str, **fields: Any) -> ChatPromptwire:
    return ChatPromptwire(endpoint_url=url, timeout=120, max_retries=0, **{**GREEDY, **fields})


def _llm(url: str, **fields: Any) -> PromptwireLLM:
    return PromptwireLLM(endpoint_url=url, timeout=120, max_retries=0, **{**GREEDY, **fields})


def test_the_chat_model_answers_a_real_question(url: str) -> None:
    reply = _chat(url).invoke([HumanMessage(QUESTION)])
    assert ANSWER in reply.content
    assert reply.response_metadata["finish_reason"] in {"stop", "length"}
    assert reply.usage_metadata is not None and reply.usage_metadata["output_tokens"] > 0


def test_health_says_what_the_model_can_do(url: str) -> None:
    health = httpx.get(url + "health", timeout=30).json()
    assert health["model"] == "SmolLM2-135M-Instruct.Q4_1"
    assert health["capabilities"] == {"tools": True, "structured_output": True}


def test_the_guide_seed_flow_runs_on_the_real_model(url: str) -> None:
    """LangChain's Modal guide, ``prompt | Modal(endpoint_url=...)``: the community class's
    place, real text out."""
    template = "Question: {question}\n\nAnswer: Let's think step by step."
    chain = PromptTemplate.from_template(template) | Modal(endpoint_url=url, **GREEDY)
    answer = chain.invoke({"question": QUESTION})
    assert isinstance(answer, str) and answer.strip()
    assert answer == chain.invoke({"question": QUESTION})  # greedy: the same text again


def test_a_greedy_stream_is_the_greedy_reply_in_pieces(url: str) -> None:
    chat = _chat(url)
    whole = chat.invoke([HumanMessage(QUESTION)])
    pieces = [chunk.content for chunk in chat.stream([HumanMessage(QUESTION)])]
    assert len([p for p in pieces if p]) > 3  # streamed token by token, not in one piece
    assert "".join(str(p) for p in pieces) == whole.content

    llm = _llm(url)
    text = llm.invoke(COMPLETION_PROMPT)
    assert ANSWER in text
    assert "".join(llm.stream(COMPLETION_PROMPT)) == text


async def test_async_stream_fires_a_callback_per_piece(url: str) -> None:
    seen: list[str] = []

    class Collect(BaseCallbackHandler):
        def on_llm_new_token(self, token: str, **kwargs: Any) -> None:
            seen.append(token)

    llm = _llm(url)
    config: Any = {"callbacks": [Collect()]}
    pieces = [piece async for piece in llm.astream(COMPLETION_PROMPT, config=config)]
    text_pieces = [piece for piece in pieces if piece]  # the last chunk carries only the usage
    assert len(text_pieces) > 3 and seen == text_pieces
    assert "".join(pieces) == await llm.ainvoke(COMPLETION_PROMPT)


def test_batches_run_concurrently_and_answer_each_prompt(url: str) -> None:
    germany = COMPLETION_PROMPT.replace("France", "Germany")
    questions = [COMPLETION_PROMPT, germany, COMPLETION_PROMPT]
    llm = _llm(url)
    answers = llm.batch(questions)
    assert answers[0] == answers[2] == llm.invoke(COMPLETION_PROMPT)  # batched or alone: same
    assert answers[0] != answers[1]
    assert answers == asyncio.run(llm.abatch(questions))


def test_a_batch_answers_every_prompt_but_the_one_the_model_refuses(url: str) -> None:
    """With ``return_exceptions``, a prompt past the 2,048-token context is its own 422 and the
    others are answered (LangChain's LLM batch returned the one error for every prompt)."""
    too_long = "word " * 3000
    prompts = [COMPLETION_PROMPT, too_long, COMPLETION_PROMPT]
    llm = _llm(url)
    expected = llm.invoke(COMPLETION_PROMPT)
    for results in [
        llm.batch(prompts, return_exceptions=True),
        asyncio.run(llm.abatch(prompts, return_exceptions=True)),
    ]:
        assert results[0] == results[2] == expected
        refused = results[1]
        assert isinstance(refused, InvalidRequestError), refused
        assert "context" in str(refused) and refused.request_id


def test_max_tokens_cuts_real_tokens(url: str, vocabulary: Any) -> None:
    chat = _chat(url, max_tokens=5)
    reply = chat.invoke([HumanMessage(QUESTION)])
    assert reply.response_metadata["finish_reason"] == "length"
    assert reply.usage_metadata is not None and reply.usage_metadata["output_tokens"] == 5
    assert len(_tokens(vocabulary, str(reply.content))) == 5
    longer = _chat(url).invoke([HumanMessage(QUESTION)])
    assert str(longer.content).startswith(str(reply.content))


def test_a_stop_string_ends_the_real_text_before_it(url: str) -> None:
    full = str(_chat(url).invoke([HumanMessage(QUESTION)]).content)
    assert ANSWER in full
    cut = _chat(url, stop=[ANSWER]).invoke([HumanMessage(QUESTION)])
    assert cut.content == full[: full.index(ANSWER)]
    assert cut.response_metadata["finish_reason"] == "stop"
    streamed = "".join(str(c.content) for c in _chat(url, stop=[ANSWER]).stream(QUESTION))
    assert streamed == cut.content


def test_usage_counts_match_the_tokenizer(url: str, vocabulary: Any) -> None:
    reply = httpx.post(url, json={"prompt": COMPLETION_PROMPT, **GREEDY}, timeout=120).json()
    assert reply["prompt"].strip()
    prompt = COMPLETION_PROMPT.encode()
    prompt_tokens = list(vocabulary.tokenize(prompt, add_bos=True, special=True))
    assert reply["usage"]["prompt_tokens"] == len(prompt_tokens)
    completion = len(_tokens(vocabulary, reply["prompt"]))
    # A reply that ended on its end-of-sequence token counts exactly its text's tokens.
    if reply["finish_reason"] == "stop":
        assert reply["usage"]["completion_tokens"] == completion
    else:
        assert reply["usage"]["completion_tokens"] == GREEDY["max_tokens"] == completion


def test_text_streams_without_splitting_characters(url: str) -> None:
    """Accented and multi-byte characters span several tokens; no piece may hold half of one
    (a broken character would arrive as U+FFFD)."""
    prompt = "Translate to French: the summer is beautiful."
    chat = _chat(url, max_tokens=40)
    pieces = [str(c.content) for c in chat.stream([HumanMessage(prompt)])]
    text = "".join(pieces)
    assert "\ufffd" not in text
    assert text == chat.invoke([HumanMessage(prompt)]).content


class City(BaseModel):
    name: str
    country: str
    population: int


def test_structured_output_is_valid_against_its_schema(url: str) -> None:
    chat = _chat(url, max_tokens=80).with_structured_output(City, method="json_schema")
    city = chat.invoke(f"{QUESTION} Answer as JSON.")
    assert isinstance(city, City)
    assert city.name.strip()


def test_json_mode_answers_a_json_object(url: str) -> None:
    chat = _chat(url, max_tokens=60).with_structured_output(method="json_mode")
    value = chat.invoke("Describe Paris as a JSON object.")
    assert isinstance(value, dict)


def test_a_forced_tool_call_is_a_valid_call(url: str) -> None:
    def get_weather(city: str, unit: str) -> str:
        """The weather in a city, in celsius or fahrenheit."""
        return "sunny"

    chat = _chat(url, max_tokens=60).bind_tools([get_weather], tool_choice="get_weather")
    reply = chat.invoke("What is the weather in Paris?")
    assert isinstance(reply, AIMessage)
    assert len(reply.tool_calls) == 1
    call = reply.tool_calls[0]
    assert call["name"] == "get_weather"
    assert set(call["args"]) == {"city", "unit"}
    assert all(isinstance(value, str) for value in call["args"].values())
    assert reply.response_metadata["finish_reason"] == "tool_calls"


class Street(BaseModel):
    name: str
    number: int


class Address(BaseModel):
    street: Street
    city: str


class SaveAddress(BaseModel):
    """Save someone's address."""

    person: str
    address: Address


def test_a_forced_call_of_a_tool_with_nested_models_is_valid(url: str) -> None:
    """The openai SDK's ``pydantic_function_tool`` keeps nested models in ``$defs`` with
    ``$ref``s (LangChain's ``bind_tools`` inlines them), which the call's grammar must follow:
    nested under ``arguments`` they pointed at nothing and the request was refused."""
    client = openai.OpenAI(base_url=url + "v1", api_key="unused", max_retries=0)
    tool = openai.pydantic_function_tool(SaveAddress)
    assert "$defs" in json.dumps(tool)
    reply = client.chat.completions.create(
        model="SmolLM2-135M-Instruct.Q4_1",
        messages=[{"role": "user", "content": "Ada lives at 1 Main Street, Oslo. Save it."}],
        tools=[tool],
        tool_choice={"type": "function", "function": {"name": "SaveAddress"}},
        max_tokens=120,
        temperature=0,
    )
    (call,) = reply.choices[0].message.tool_calls or []
    assert call.type == "function" and call.function.name == "SaveAddress"
    saved = SaveAddress.model_validate_json(call.function.arguments)  # the grammar made it valid
    assert isinstance(saved.address.street.number, int)


def test_the_wire_reply_of_a_tool_call_is_openai_shaped(url: str) -> None:
    tool = {
        "type": "function",
        "function": {
            "name": "lookup",
            "description": "Look a word up.",
            "parameters": {
                "type": "object",
                "properties": {"word": {"type": "string"}},
                "required": ["word"],
            },
        },
    }
    body = {
        "prompt": "",
        "messages": [{"role": "user", "content": "Look up the word 'capital'."}],
        "tools": [tool],
        "tool_choice": "required",
        "temperature": 0,
        "max_tokens": 40,
    }
    reply = httpx.post(url, json=body, timeout=120).json()
    assert reply["finish_reason"] == "tool_calls"
    (call,) = reply["tool_calls"]
    assert call["function"]["name"] == "lookup"
    assert isinstance(json.loads(call["function"]["arguments"])["word"], str)


def test_a_forced_tool_call_cut_by_max_tokens_is_an_error_not_text(url: str) -> None:
    """A reply that had to call a tool and reached ``max_tokens`` first held no whole call: it
    used to come back as its text (the call's unfinished JSON), and structured output as None
    without an error. It is a 422."""
    tool = {
        "type": "function",
        "function": {
            "name": "lookup",
            "parameters": {
                "type": "object",
                "properties": {"word": {"type": "string"}},
                "required": ["word"],
            },
        },
    }
    body = {
        "prompt": "",
        "messages": [{"role": "user", "content": "Look up the word 'capital'."}],
        "tools": [tool],
        "tool_choice": "required",
        "temperature": 0,
        "max_tokens": 6,
    }
    whole = httpx.post(url, json=body, timeout=120)
    assert whole.status_code == 422, whole.text
    assert "before the tool call it had to make was complete" in whole.json()["error"]["message"]
    # Streamed, nothing was sent before it: a refusal that keeps its status, as a whole reply.
    streamed = httpx.post(url, json={**body, "stream": True}, timeout=120)
    assert streamed.status_code == 422 and "raise max_tokens" in streamed.text, streamed.text
    chat = _chat(url, max_tokens=6).with_structured_output(Street, method="function_calling")
    with pytest.raises(InvalidRequestError, match="raise max_tokens"):
        chat.invoke("Make up a street.")
