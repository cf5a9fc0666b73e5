"""The conformance kit (``promptwire.testing``) against the first-party backend that runs here:
``modal_dummy`` served as ``promptwire serve`` serves it (the backend found through its entry
point), in its default mode, echoing, and behind a bearer token in a real ``promptwire serve``
process. (``modal_exllama`` needs a GPU; its conformance run lives with its GPU tests.)"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from promptwire.cli import build_app
from promptwire.server import BackgroundServer, create_app
from promptwire.settings import PromptwireSettings
from promptwire.testing import EndpointConformanceTests
from promptwire_modal_dummy.engine import DummyEngine
from promptwire_modal_dummy.settings import DummySettings

from tests.support.cli_server import promptwire_serve
from tests.support.network import LOOPBACK_ONLY

pytestmark = LOOPBACK_ONLY

TOKEN = "conformance-token-0123"


def _served(backend: str, **overrides: object) -> BackgroundServer:
    app = build_app(
        backend, api_key=None, settings=PromptwireSettings(), overrides=dict(overrides) or None
    )
    return BackgroundServer(app)


class TestModalDummyConformance(EndpointConformanceTests):
    """Default mode: every prompt gets ``hello world``."""

    deterministic = True
    counts_words = True

    @pytest.fixture(scope="class")
    @classmethod
    def endpoint_url(cls) -> Iterator[str]:
        with _served("modal_dummy") as server:
            yield server.url


class TestModalDummyEchoConformance(EndpointConformanceTests):
    """Echo mode: replies contain the prompt, so the community Modal client is checked too."""

    echoes_prompt = True
    deterministic = True
    counts_words = True

    @pytest.fixture(scope="class")
    @classmethod
    def endpoint_url(cls) -> Iterator[str]:
        with _served("modal_dummy", echo=True) as server:
            yield server.url


class TestModalDummyToolModeConformance(EndpointConformanceTests):
    """Tool mode: protocol v1.2's tools and JSON are honoured (the kit's refusal checks run
    against the default mode above)."""

    deterministic = True
    counts_words = True

    @pytest.fixture(scope="class")
    @classmethod
    def endpoint_url(cls) -> Iterator[str]:
        with _served("modal_dummy", tool_mode=True) as server:
            yield server.url


class TestModalDummyServeWithTokenConformance(EndpointConformanceTests):
    """A real ``promptwire serve`` process with ``PROMPTWIRE_API_KEY`` set: the auth checks."""

    echoes_prompt = True
    deterministic = True
    counts_words = True

    @pytest.fixture(scope="class")
    @classmethod
    def endpoint_url(cls) -> Iterator[str]:
        env = {"PROMPTWIRE_API_KEY": TOKEN, "PROMPTWIRE_MODAL_DUMMY__ECHO": "true"}
        with promptwire_serve("--backend", "modal_dummy", env=env) as url:
            yield url

    @pytest.fixture
    def api_key(self) -> str:
        return TOKEN


class LoadsInTheBackground(DummyEngine):
    """Ready a while after ``start``, as an engine that loads its model in the background (the
    pattern the backend guide describes): ``/health`` answers 503 until then."""

    def __init__(self) -> None:
        super().__init__(DummySettings())
        self.ready_at = float("inf")

    async def start(self) -> None:
        self.ready_at = time.monotonic() + 1.5

    @property
    def ready(self) -> bool:
        return time.monotonic() >= self.ready_at


class TestAnEngineThatLoadsInTheBackground(EndpointConformanceTests):
    """The kit waits for ``/health`` to answer 200 first: it used to fail nine checks of a
    correct engine with "HTTP 503 the model is loading"."""

    deterministic = True
    counts_words = True

    @pytest.fixture(scope="class")
    @classmethod
    def endpoint_url(cls) -> Iterator[str]:
        with BackgroundServer(create_app(LoadsInTheBackground())) as server:
            yield server.url
