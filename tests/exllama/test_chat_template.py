"""The model's chat template: read from the model directory, rendered as ``transformers`` does,
and applied by the ExLlamaV2 engine to protocol v1.1 ``messages`` (through the real HTTP server,
with the fake generator of ``fakes``)."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, NamedTuple

import httpx
import pytest
from httpx_sse import connect_sse
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage
from promptwire import ChatPromptwire
from promptwire.engine import EngineNotReady, RequestRejected
from promptwire.errors import InvalidRequestError
from promptwire.protocol import ChatMessage, PromptRequest
from promptwire.protocol.chat_template import render_plain
from promptwire.testing import EndpointConformanceTests
from promptwire_modal_exllama.chat_template import (
    ChatTemplate,
    ChatTemplateError,
    load_chat_template,
)
from promptwire_modal_exllama.engine import BatchingEngine

from tests.exllama.fakes import DEFAULT_REPLY, FakeRuntime, fake_engine
from tests.support.network import LOOPBACK_ONLY
from tests.support.servers import serve_engine

WHOLE_REPLY = "".join(" " + word for word in DEFAULT_REPLY)
BOS = "<|begin_of_text|>"
ALTERNATION_ERROR = "Conversation roles must alternate user/assistant/user/assistant/..."

# The shape of Llama 3's template (system turn split off, header/eot markup, the assistant's
# header as the generation prompt), with the role check Llama 2 and Mistral templates make.
LLAMA3_TEMPLATE = (
    "{{- bos_token }}\n"
    "{%- if messages[0]['role'] == 'system' %}\n"
    "    {%- set system_message = messages[0]['content'] | trim %}\n"
    "    {%- set messages = messages[1:] %}\n"
    "{%- else %}\n"
    '    {%- set system_message = "" %}\n'
    "{%- endif %}\n"
    "{%- if system_message %}\n"
    '    {{- "<|start_header_id|>system<|end_header_id|>\\n\\n" }}\n'
    '    {{- system_message + "<|eot_id|>" }}\n'
    "{%- endif %}\n"
    "{%- for message in messages %}\n"
    "    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}\n"
    f"        {{{{- raise_exception('{ALTERNATION_ERROR}') }}}}\n"
    "    {%- endif %}\n"
    "    {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' }}\n"
    "    {{- message['content'] | trim + '<|eot_id|>' }}\n"
    "{%- endfor %}\n"
    "{%- if add_generation_prompt %}\n"
    "    {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}\n"
    "{%- endif %}\n"
)

CONVERSATION = [
    ChatMessage(role="system", content="You are terse."),
    ChatMessage(role="user", content="Hello"),
    ChatMessage(role="assistant", content="Hi."),
    ChatMessage(role="user", content="Name a colour"),
]
RENDERED = (
    BOS
    + "<|start_header_id|>system<|end_header_id|>\n\nYou are terse.<|eot_id|>"
    + "<|start_header_id|>user<|end_header_id|>\n\nHello<|eot_id|>"
    + "<|start_header_id|>assistant<|end_header_id|>\n\nHi.<|eot_id|>"
    + "<|start_header_id|>user<|end_header_id|>\n\nName a colour<|eot_id|>"
    + "<|start_header_id|>assistant<|end_header_id|>\n\n"
)
WIRE_CONVERSATION = [message.model_dump() for message in CONVERSATION]


def _token(content: str) -> dict[str, Any]:
    """A special token the way recent ``tokenizer_config.json`` files write it."""
    return {"__type": "AddedToken", "content": content, "lstrip": False, "normalized": False}


def write_model_dir(
    path: Path, chat_template: Any = LLAMA3_TEMPLATE, *, jinja_file: str | None = None
) -> Path:
    config: dict[str, Any] = {
        "bos_token": _token(BOS),
        "eos_token": "<|eot_id|>",
        "add_bos_token": True,
        "model_max_length": 131072,
        "tokenizer_class": "PreTrainedTokenizerFast",
    }
    if chat_template is not None:
        config["chat_template"] = chat_template
    (path / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    if jinja_file is not None:
        (path / "chat_template.jinja").write_text(jinja_file, encoding="utf-8")
    return path


def _template(path: Path, **kwargs: Any) -> ChatTemplate:
    template = load_chat_template(write_model_dir(path, **kwargs))
    assert template is not None
    return template


# -- reading and rendering ---------------------------------------------------------------------


def test_a_llama3_template_renders_the_conversation(tmp_path: Path) -> None:
    template = _template(tmp_path)
    assert template.source == "tokenizer_config.json"
    assert template.bos_token == BOS  # read from the {"content": ...} form
    assert template.special_tokens["eos_token"] == "<|eot_id|>"
    assert template.render(CONVERSATION) == RENDERED


def test_the_generation_prompt_opens_the_assistant_turn(tmp_path: Path) -> None:
    rendered = _template(tmp_path).render([ChatMessage(role="user", content="Hi")])
    assert rendered == (
        BOS + "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    )


def test_the_default_of_a_list_of_named_templates_is_used(tmp_path: Path) -> None:
    named = [
        {"name": "tool_use", "template": "TOOLS {{ messages | length }}"},
        {"name": "default", "template": LLAMA3_TEMPLATE},
        {"name": "rag", "template": "RAG"},
    ]
    assert _template(tmp_path, chat_template=named).render(CONVERSATION) == RENDERED


def test_named_templates_without_a_default_are_not_used(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    named = [{"name": "tool_use", "template": "TOOLS"}]
    with caplog.at_level(logging.WARNING):
        assert load_chat_template(write_model_dir(tmp_path, chat_template=named)) is None
    assert "tool_use" in caplog.text and "default" in caplog.text


def test_a_chat_template_jinja_file_wins_over_the_tokenizer_config(tmp_path: Path) -> None:
    template = _template(tmp_path, chat_template="OLD", jinja_file=LLAMA3_TEMPLATE)
    assert template.source == "chat_template.jinja"
    assert template.render(CONVERSATION) == RENDERED


def test_a_chat_template_jinja_file_alone_is_enough(tmp_path: Path) -> None:
    (tmp_path / "chat_template.jinja").write_text(
        "{% for m in messages %}[{{ m.role }}] {{ m.content }}\n{% endfor %}[assistant]"
    )
    template = load_chat_template(tmp_path)
    assert template is not None and template.bos_token is None
    assert template.render(CONVERSATION[1:2]) == "[user] Hello\n[assistant]"


@pytest.mark.parametrize("chat_template", [None, "", []])
def test_no_template_means_none(tmp_path: Path, chat_template: Any) -> None:
    assert load_chat_template(write_model_dir(tmp_path, chat_template=chat_template)) is None
    assert load_chat_template(tmp_path / "missing") is None
    assert load_chat_template(None) is None


def test_a_template_that_refuses_the_conversation_is_rejected_with_its_message(
    tmp_path: Path,
) -> None:
    template = _template(tmp_path)
    with pytest.raises(RequestRejected, match="roles must alternate") as refused:
        template.render(
            [ChatMessage(role="user", content="a"), ChatMessage(role="user", content="b")]
        )
    assert refused.value.status_code == 422
    assert ALTERNATION_ERROR in refused.value.message


def test_a_template_that_fails_on_the_conversation_is_rejected(tmp_path: Path) -> None:
    template = _template(tmp_path, chat_template="{{ messages[0]['content'] + 1 }}")
    with pytest.raises(RequestRejected, match="TypeError"):
        template.render(CONVERSATION)


def test_the_sandbox_keeps_the_conversation_immutable(tmp_path: Path) -> None:
    template = _template(tmp_path, chat_template="{% set _ = messages.append(1) %}x")
    with pytest.raises(RequestRejected, match="unsafe"):
        template.render(CONVERSATION)


def test_transformers_extras_are_available(tmp_path: Path) -> None:
    text = (
        "{{ strftime_now('%Y') }}|{{ messages[0] | tojson }}|"
        "{% for m in messages %}{% if loop.index > 2 %}{% break %}{% endif %}{{ m.role }},"
        "{% endfor %}|{% generation %}kept{% endgeneration %}"
    )
    rendered = _template(tmp_path, chat_template=text).render(CONVERSATION)
    year = rendered.split("|")[0]
    assert year in {str(datetime.now().year - 1), str(datetime.now().year)}
    assert rendered[len(year) :] == (
        '|{"role": "system", "content": "You are terse."}|system,user,|kept'
    )


def test_tojson_does_not_escape_html(tmp_path: Path) -> None:
    template = _template(tmp_path, chat_template="{{ messages[0].content | tojson }}")
    assert template.render([ChatMessage(role="user", content="<b>é</b>")]) == '"<b>é</b>"'


def test_trim_and_lstrip_blocks_are_on(tmp_path: Path) -> None:
    text = (
        "{% for m in messages %}\n    {% if true %}\n{{ m.content }}\n    {% endif %}\n{% endfor %}"
    )
    assert _template(tmp_path, chat_template=text).render(CONVERSATION[:2]) == (
        "You are terse.\nHello\n"
    )


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"tokenizer_config.json": "{not json"}, "cannot read"),
        ({"tokenizer_config.json": "[1]"}, "not a JSON object"),
        ({"tokenizer_config.json": json.dumps({"chat_template": "{% if %}"})}, "not valid Jinja"),
        ({"chat_template.jinja": "{% for m in messages %}"}, "chat_template.jinja"),
    ],
    ids=["bad-json", "not-object", "bad-jinja", "bad-jinja-file"],
)
def test_a_broken_template_fails_loudly(
    tmp_path: Path, files: dict[str, str], message: str
) -> None:
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    with pytest.raises(ChatTemplateError, match=message):
        load_chat_template(tmp_path)


# -- the engine --------------------------------------------------------------------------------


def _request(**fields: Any) -> PromptRequest:
    return PromptRequest.model_validate({"prompt": "plain prompt", **fields})


def test_the_engine_renders_with_the_models_template_and_adds_no_bos(tmp_path: Path) -> None:
    runtime = FakeRuntime(max_seq_len=256)
    engine = fake_engine(runtime, model_dir=write_model_dir(tmp_path))

    async def run() -> None:
        await engine.start()
        try:
            assert engine.chat_template is not None
            rendered = engine.render_chat(CONVERSATION)
            assert rendered == RENDERED and rendered.count(BOS) == 1
            chat = _request(messages=WIRE_CONVERSATION).model_copy(update={"prompt": rendered})
            completion = await engine.complete(chat)
            assert runtime.encoded[-1] == (RENDERED, True)
            # No BOS added: the template's own is the only one (one "token" per word here).
            assert completion.usage.prompt_tokens == len(RENDERED.split())
            # A raw prompt, even to a model with a template, still gets its BOS.
            await engine.complete(_request(prompt="a b"))
            assert runtime.encoded[-1] == ("a b", False)
        finally:
            await engine.stop()

    asyncio.run(run())


def test_without_a_template_the_engine_falls_back_to_the_plain_one(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    runtime = FakeRuntime(max_seq_len=256)
    engine = fake_engine(runtime, model_dir=write_model_dir(tmp_path, chat_template=None))

    async def run() -> None:
        await engine.start()
        try:
            assert engine.chat_template is None
            rendered = engine.render_chat(CONVERSATION)
            assert rendered == render_plain(CONVERSATION)
            await engine.complete(_request(messages=WIRE_CONVERSATION, prompt=rendered))
            assert runtime.encoded[-1] == (rendered, False)  # encoded as any raw prompt
        finally:
            await engine.stop()

    with caplog.at_level(logging.INFO, logger="promptwire_modal_exllama"):
        asyncio.run(run())
    assert "plain template" in caplog.text


def test_the_template_in_use_is_logged_once_at_start(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    engine = fake_engine(model_dir=write_model_dir(tmp_path, jinja_file=LLAMA3_TEMPLATE))

    async def run() -> None:
        await engine.start()
        await engine.start()  # a second start is a no-op
        engine.render_chat(CONVERSATION)
        await engine.stop()

    with caplog.at_level(logging.INFO, logger="promptwire_modal_exllama"):
        asyncio.run(run())
    lines = [r.getMessage() for r in caplog.records if "chat template" in r.getMessage()]
    assert lines == ["chat template: the model's, from chat_template.jinja"]


def test_a_broken_template_stops_the_engine_from_starting(tmp_path: Path) -> None:
    runtime = FakeRuntime()
    engine = fake_engine(runtime, model_dir=write_model_dir(tmp_path, chat_template="{% if %}"))
    with pytest.raises(ChatTemplateError):
        asyncio.run(engine.start())
    assert not engine.ready and not runtime.generators  # the model was never loaded


def test_render_chat_before_the_model_is_loaded_is_not_ready(tmp_path: Path) -> None:
    engine = fake_engine(model_dir=write_model_dir(tmp_path))
    with pytest.raises(EngineNotReady):
        engine.render_chat(CONVERSATION)


# -- over HTTP ---------------------------------------------------------------------------------


class Served(NamedTuple):
    engine: BatchingEngine
    runtime: FakeRuntime
    url: str


def _serve(model_dir: Path) -> Iterator[Served]:
    runtime = FakeRuntime(max_seq_len=256)
    engine = fake_engine(runtime, model_dir=model_dir, model_name="tiny-instruct")
    with serve_engine(engine) as server:
        yield Served(engine, runtime, server.url)
    runtime.gate.set()


@pytest.fixture()
def served(tmp_path: Path) -> Iterator[Served]:
    yield from _serve(write_model_dir(tmp_path))


@pytest.fixture()
def served_plain(tmp_path: Path) -> Iterator[Served]:
    yield from _serve(write_model_dir(tmp_path, chat_template=None))


def test_messages_over_http_are_rendered_by_the_models_template(served: Served) -> None:
    body = {"prompt": "IGNORED", "messages": WIRE_CONVERSATION, "max_tokens": 50}
    response = httpx.post(served.url, json=body, timeout=30)
    assert response.status_code == 200, response.text
    assert response.json()["prompt"] == WHOLE_REPLY
    assert served.runtime.encoded[-1] == (RENDERED, True)
    health = httpx.get(served.url + "health", timeout=30).json()
    assert health["protocol"] == "1.2"
    # No tools in this template, no constrained decoding in the fake runtime.
    assert health["capabilities"] == {"tools": False, "structured_output": False}


def test_a_template_refusal_is_a_422_with_its_message(served: Served) -> None:
    messages = [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]
    response = httpx.post(served.url, json={"prompt": "p", "messages": messages}, timeout=30)
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["type"] == "invalid_request"
    assert ALTERNATION_ERROR in error["message"]
    assert "Traceback" not in response.text
    # Refused before anything reached the generator, and a stream gets a status, not a stream.
    with (
        httpx.Client(timeout=30) as client,
        client.stream(
            "POST", served.url, json={"prompt": "p", "messages": messages, "stream": True}
        ) as streamed,
    ):
        streamed.read()
    assert streamed.status_code == 422 and ALTERNATION_ERROR in streamed.text
    assert served.runtime.generator.enqueued == []


def test_chat_promptwire_talks_to_the_models_template(served: Served) -> None:
    chat = ChatPromptwire(endpoint_url=served.url, timeout=30, max_retries=0)
    conversation = [
        SystemMessage("You are terse."),
        HumanMessage("Hello"),
        AIMessage("Hi."),
        HumanMessage("Name a colour"),
    ]
    reply = chat.invoke(conversation)
    assert reply.content == WHOLE_REPLY
    assert served.runtime.encoded[-1] == (RENDERED, True)
    streamed = "".join(str(chunk.content) for chunk in chat.stream(conversation))
    assert streamed == WHOLE_REPLY and served.runtime.encoded[-1] == (RENDERED, True)
    with pytest.raises(InvalidRequestError, match="roles must alternate"):
        chat.invoke([HumanMessage("a"), HumanMessage("b")])
    chat.close()


def test_streamed_messages_are_rendered_too(served: Served) -> None:
    body = {"prompt": "p", "messages": WIRE_CONVERSATION, "stream": True}
    with (
        httpx.Client(timeout=30) as client,
        connect_sse(client, "POST", served.url, json=body) as source,
    ):
        events = [(e.event, json.loads(e.data)) for e in source.iter_sse()]
    assert "".join(data["text"] for event, data in events if event == "delta") == WHOLE_REPLY
    assert served.runtime.encoded[-1] == (RENDERED, True)


def test_a_model_without_a_template_gets_the_plain_one_over_http(served_plain: Served) -> None:
    chat = ChatPromptwire(endpoint_url=served_plain.url, timeout=30, max_retries=0)
    assert chat.invoke([HumanMessage("a"), HumanMessage("b")]).content == WHOLE_REPLY
    plain = "User: a\n\nUser: b\n\nAssistant:"
    assert served_plain.runtime.encoded[-1] == (plain, False)
    chat.close()


class TestConformanceWithAModelTemplate(EndpointConformanceTests):
    """The conformance kit, v1.1 checks included, against the engine with a model template."""

    pytestmark = LOOPBACK_ONLY
    deterministic = True
    counts_words = True

    @pytest.fixture(scope="class")
    @classmethod
    def endpoint_url(cls, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
        for served in _serve(write_model_dir(tmp_path_factory.mktemp("instruct"))):
            assert served.engine.chat_template is not None
            yield served.url
