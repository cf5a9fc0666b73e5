"""LangChain's standard chat-model tests (``langchain-tests``), run as they are.

Unit tests need no server. Integration tests run against real servers on 127.0.0.1 (the dummy
engine, answering ``hello world`` or echoing the conversation). ChatPromptwire has tool calling and
structured output (protocol v1.2): the unit suite checks them (binding tools, building structured
runnables). The integration suite's tool and structured-output tests need a model that understands
their prompts ("call magic_function with 3"), which no backend runs here, so their flags stay off
for it; tests/tools and tests/exllama/test_tools_cpu_tier.py cover the same behaviours against the
dummy engine's tool mode and the ExLlamaV2 engine. It has no multimodal input: the tests for that
are skipped by the suite itself through its capability flags below. Also skipped by the suite's
own checks: the model-override tests (an endpoint serves one model) and ``test_stream_time`` (VCR
cassettes are for remote APIs; these tests hit a live local server).

One standard test is expected to fail, strictly: ``test_serdes`` checks the serialized form
(pinned in ``__snapshots__``, and that half passes) and then loads it with
``allowed_objects="all"``, which admits only the classes in langchain-core's own mapping of known
integrations, so no third-party model can pass it. ChatPromptwire round-trips with
``loads(..., allowed_objects=[ChatPromptwire], valid_namespaces=["promptwire"])``, LangChain's way
for classes outside that mapping (tests/unit/test_llm_object.py). Should langchain-core start
admitting it, the strict xfail fails and this note goes.
"""

from __future__ import annotations

from typing import Any

import pytest
from langchain_core.language_models import BaseChatModel
from langchain_tests.integration_tests import ChatModelIntegrationTests
from langchain_tests.unit_tests import ChatModelUnitTests
from promptwire import ChatPromptwire

from tests.support.network import LOOPBACK_ONLY
from tests.support.standard_suites import TextEndpointFlags

pytestmark = LOOPBACK_ONLY

UNIT_URL = "http://127.0.0.1:9/"  # never contacted by the unit tests


class Capabilities(TextEndpointFlags):
    """What ChatPromptwire can show against these servers, in the suite's own terms (tools and
    structured output are turned on for the unit suite only: see the module's docstring)."""

    @property
    def chat_model_class(self) -> type[BaseChatModel]:
        return ChatPromptwire


class TestChatPromptwireUnit(Capabilities, ChatModelUnitTests):
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

    @property
    def chat_model_params(self) -> dict[str, Any]:
        return {"endpoint_url": UNIT_URL, "model": "dummy"}

    @property
    def init_from_env_params(self) -> tuple[dict[str, str], dict[str, Any], dict[str, Any]]:
        return (
            {
                "PROMPTWIRE_ENDPOINT_URL": UNIT_URL,
                "PROMPTWIRE_API_KEY": "test",
                "PROMPTWIRE_TIMEOUT": "30",
                "PROMPTWIRE_MAX_CONCURRENCY": "4",
            },
            {"model": "dummy"},
            {"endpoint_url": UNIT_URL, "api_key": "test", "timeout": 30.0, "max_concurrency": 4},
        )

    @pytest.mark.xfail(
        strict=True,
        raises=ValueError,
        reason="load(allowed_objects='all') admits only classes in langchain-core's own mapping",
    )
    def test_serdes(self, model: BaseChatModel, snapshot: Any) -> None:
        super().test_serdes(model, snapshot)


class TestChatPromptwireIntegration(Capabilities, ChatModelIntegrationTests):
    """Against the default dummy engine (``hello world``)."""

    endpoint_url = ""

    @pytest.fixture(autouse=True)
    def _endpoint(self, chat_dummy_url: str) -> None:
        self.endpoint_url = chat_dummy_url

    @property
    def chat_model_params(self) -> dict[str, Any]:
        return {"endpoint_url": self.endpoint_url, "timeout": 30, "max_retries": 0}


class TestChatPromptwireEchoIntegration(Capabilities, ChatModelIntegrationTests):
    """Against the echoing dummy engine: every reply is the rendered conversation itself."""

    endpoint_url = ""

    @pytest.fixture(autouse=True)
    def _endpoint(self, chat_echo_url: str) -> None:
        self.endpoint_url = chat_echo_url

    @property
    def chat_model_params(self) -> dict[str, Any]:
        return {"endpoint_url": self.endpoint_url, "timeout": 30, "max_retries": 0}
