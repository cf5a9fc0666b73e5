"""Servers for the chat-model tests: real ``promptwire serve`` equivalents on 127.0.0.1, one per
session (LangChain's standard suite builds a fresh model for every test)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from promptwire_modal_dummy.engine import DummyEngine
from promptwire_modal_dummy.settings import DummySettings

from tests.support.servers import serve_engine


@pytest.fixture(scope="session")
def chat_dummy_url() -> Iterator[str]:
    """The default dummy engine: answers ``hello world`` to any conversation."""
    with serve_engine(DummyEngine(DummySettings())) as server:
        yield server.url


@pytest.fixture(scope="session")
def chat_echo_url() -> Iterator[str]:
    """The echoing dummy engine: answers with the conversation rendered by the plain template."""
    with serve_engine(DummyEngine(DummySettings(echo=True))) as server:
        yield server.url
