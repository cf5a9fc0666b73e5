"""The served dummies the protocol route tests share (OpenAI, Responses, Anthropic Messages):
module-scoped fixtures behind the requesting module's own ``TOKEN`` (``tests/conftest.py``
offers them to every module), and a stream that holds a server's one slot."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest
from promptwire_modal_dummy.settings import DummySettings

from tests.support.engines import ObservedEngine
from tests.support.servers import serve_engine

Served = tuple[ObservedEngine, str]


@contextmanager
def _served(
    request: pytest.FixtureRequest, settings: DummySettings, **limits: int
) -> Iterator[Served]:
    engine = ObservedEngine(settings)
    with serve_engine(engine, api_key=request.module.TOKEN, **limits) as server:
        yield engine, server.url


@pytest.fixture(scope="module")
def echo(request: pytest.FixtureRequest) -> Iterator[Served]:
    """An echoing dummy engine behind the module's ``TOKEN``, at most 4 requests in flight."""
    with _served(request, DummySettings(echo=True), max_in_flight=4) as served:
        yield served


@pytest.fixture(scope="module")
def tools(request: pytest.FixtureRequest) -> Iterator[Served]:
    """The dummy engine in tool mode: it calls tools and writes JSON for schemas."""
    with _served(request, DummySettings(tool_mode=True)) as served:
        yield served


@pytest.fixture(scope="module")
def one_slot(request: pytest.FixtureRequest) -> Iterator[Served]:
    """A slow echo (0.2 s to the first word, 20 words/s) with one request in flight at most."""
    settings = DummySettings(echo=True, first_token_delay=0.2, tokens_per_second=20)
    with _served(request, settings, max_in_flight=1) as served:
        yield served


@contextmanager
def holding_the_slot(url: str, token: str) -> Iterator[None]:
    """A stream on the prompt route holding ``one_slot``'s slot while the block runs."""
    headers = {"Authorization": f"Bearer {token}"}
    body = {"prompt": "w " * 40, "stream": True}
    with httpx.stream("POST", url, json=body, headers=headers) as native:
        lines = native.iter_lines()  # kept: a dropped iterator closes the connection
        next(lines)  # the first event: the slot is taken
        yield
