"""Servers for the tool-calling and structured-output tests: real servers on 127.0.0.1 around the
dummy engine, in tool mode (protocol v1.2 honoured) and without it (v1.2 refused)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from promptwire_modal_dummy.settings import DummySettings

from tests.support.engines import ObservedEngine
from tests.support.servers import serve_engine


@pytest.fixture(scope="module")
def tool_server() -> Iterator[tuple[ObservedEngine, str]]:
    """The dummy engine in tool mode, recording what it is asked."""
    engine = ObservedEngine(DummySettings(tool_mode=True))
    with serve_engine(engine) as server:
        yield engine, server.url


@pytest.fixture(scope="module")
def tool_url(tool_server: tuple[ObservedEngine, str]) -> str:
    return tool_server[1]


@pytest.fixture(scope="module")
def text_only_url() -> Iterator[str]:
    """The default dummy engine: declares no tools and no structured output."""
    with serve_engine(ObservedEngine(DummySettings())) as server:
        yield server.url
