"""LangChain's standard chat-model integration suite for ``ChatPromptwire``, run against a real
model: SmolLM2-135M-Instruct on the llamacpp backend, with tool calling, tool choice, structured
output and JSON mode declared. A 135M model does not understand the suite's prompts well, but a
forced tool call and a structured output are valid by construction (llama.cpp grammars), which is
what these tests check. Multimodal input stays off (the suite skips it)."""

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
    settings = {"PROMPTWIRE_LLAMACPP__TEMPERATURE": "0", "PROMPTWIRE_LLAMACPP__REPEAT_PENALTY": "1.2"}
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
