"""LangChain's standard chat-model integration suite for ``ChatPromptwire``, run against a real
model: SmolLM2-135M-Instruct on the llamacpp backend, with tool calling, tool choice, structured
output and JSON mode declared. A 135M model does not understand the suite's prompts well, but a
forced tool call and a structured output are valid by construction (llama.cpp grammars), which is
what these tests check. Multimodal input stays off (the suite skips it).

Three tests ask for judgement no grammar can give, and fail on this model: ``test_json_mode`` (JSON
mode guarantees a JSON object, which SmolLM2 writes, but the suite then wants the keys it named in
prose), ``test_agent_loop`` (with ``tool_choice`` left to the model, SmolLM2 answers in text
instead of calling the tool) and ``test_unicode_tool_call_integration`` (the forced call is valid,
but SmolLM2, an English model, leaves the Chinese company name out of it).
A model that follows instructions passes them. They are strict: greedy decoding is the same alone
and under load (a KV cache per sequence; tests/realmodel/test_llamacpp_determinism.py), and the
three failed alike in 4 runs of 4 (in one run: the JSON-mode joke came back as
``{"setup": {"punchline_1": ...}}``, the unicode call's argument empty, and the agent loop's reply
text with no tool call), so one that starts passing shows."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from langchain_core.language_models import BaseChatModel
from langchain_tests.integration_tests import ChatModelIntegrationTests
from promptwire import ChatPromptwire

from tests.support.network import LOOPBACK_ONLY
from tests.support.real_model import REAL_MODEL, serve_smollm2
from tests.support.standard_suites import TextEndpointFlags

pytestmark = [*LOOPBACK_ONLY, *REAL_MODEL]


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    # Greedy, so a run is reproducible; a repetition penalty, so that the suite's long JSON
    # replies end instead of looping on one word until max_tokens (a 135M model's habit).
    settings = {
        "PROMPTWIRE_LLAMACPP__TEMPERATURE": "0",
        "PROMPTWIRE_LLAMACPP__REPEAT_PENALTY": "1.2",
    }
    with serve_smollm2(env={**settings, "PROMPTWIRE_LLAMACPP__MAX_TOKENS": "128"}) as served:
        yield served


class TestChatPromptwireOnSmolLM2(TextEndpointFlags, ChatModelIntegrationTests):
    endpoint_url = ""

    @pytest.fixture(autouse=True)
    def _endpoint(self, url: str) -> None:
        self.endpoint_url = url

    @property
    def chat_model_class(self) -> type[BaseChatModel]:
        return ChatPromptwire

    @property
    def chat_model_params(self) -> dict[str, Any]:
        return {"endpoint_url": self.endpoint_url, "timeout": 120, "max_retries": 0}

    @property
    def has_tool_calling(self) -> bool:
        return True

    @property
    def has_tool_choice(self) -> bool:
        return True

    @property
    def has_structured_output(self) -> bool:
        return True

    @property
    def supports_json_mode(self) -> bool:
        return True

    @pytest.mark.xfail(
        strict=True,
        reason="SmolLM2-135M writes a JSON object, not the keys asked in prose (4 runs of 4)",
    )
    def test_json_mode(self, model: BaseChatModel) -> None:
        super().test_json_mode(model)

    @pytest.mark.xfail(
        strict=True,
        reason="SmolLM2-135M's forced call leaves the Chinese name out (4 runs of 4)",
    )
    def test_unicode_tool_call_integration(
        self, model: BaseChatModel, *, tool_choice: str | None = None, force_tool_call: bool = True
    ) -> None:
        super().test_unicode_tool_call_integration(
            model, tool_choice=tool_choice, force_tool_call=force_tool_call
        )

    @pytest.mark.parametrize("model", [{}, {"output_version": "v1"}], indirect=True)
    @pytest.mark.xfail(
        strict=True,
        reason="SmolLM2-135M answers in text, not with the tool call (4 runs of 4)",
    )
    def test_agent_loop(self, model: BaseChatModel) -> None:
        super().test_agent_loop(model)
