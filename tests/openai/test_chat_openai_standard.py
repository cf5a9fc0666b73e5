"""LangChain's standard chat-model integration tests for ``langchain-openai``'s ``ChatOpenAI``,
run as they are against ``promptwire serve``: a client nobody here wrote, on promptwire's OpenAI
routes. ChatOpenAI is declared as what the server supports (no tools, structured output or
multimodal input, one model per endpoint), so the suite itself skips the rest.

The async tests share one event loop: ChatOpenAI keeps one cached async connection pool per base
URL for the whole process, and a kept-alive connection opened in one loop fails in the next
(``RuntimeError: Event loop is closed``). promptwire's own models keep pools per loop
(tests/integration/test_event_loops.py); ChatOpenAI's are its own business here."""

from __future__ import annotations

from typing import Any

import pytest
from langchain_core.language_models import BaseChatModel
from langchain_openai import ChatOpenAI
from langchain_tests.integration_tests import ChatModelIntegrationTests

from tests.openai.conftest import SERVE_TOKEN
from tests.support.network import LOOPBACK_ONLY
from tests.support.standard_suites import TextEndpointFlags

pytestmark = [
    *LOOPBACK_ONLY,
    pytest.mark.asyncio(loop_scope="session"),
    # The mark reaches the suite's sync tests too, where it does nothing.
    pytest.mark.filterwarnings(
        "ignore:The test <Function .* is marked with '@pytest.mark.asyncio'"
    ),
]


class _OnPromptwire(TextEndpointFlags, ChatModelIntegrationTests):
    base_url = ""

    @property
    def chat_model_class(self) -> type[BaseChatModel]:
        return ChatOpenAI

    @property
    def chat_model_params(self) -> dict[str, Any]:
        return {
            "model": "dummy",
            "base_url": self.base_url + "v1",
            "api_key": SERVE_TOKEN,
            "timeout": 30,
            "max_retries": 0,
            # ChatOpenAI asks for usage in streams (stream_options) only from OpenAI itself
            # unless told to; promptwire sends it as OpenAI does.
            "stream_usage": True,
        }


class TestChatOpenAIOnPromptwireServe(_OnPromptwire):
    """Against ``promptwire serve`` answering ``hello world``."""

    @pytest.fixture(autouse=True)
    def _server(self, served_hello_url: str) -> None:
        self.base_url = served_hello_url


class TestChatOpenAIOnPromptwireServeEcho(_OnPromptwire):
    """Against ``promptwire serve`` echoing the rendered conversation."""

    @pytest.fixture(autouse=True)
    def _server(self, served_echo_url: str) -> None:
        self.base_url = served_echo_url
